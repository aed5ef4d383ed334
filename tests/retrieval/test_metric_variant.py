"""``metric_variant="authors"`` of the metrics core against a brute-force per-query loop.

The loop (``tests/support/reference_protocol.py``) is written from PAPER.md: on all-vs-all
splits the authors count R before removing the query itself (mAP@R sums R + 1 ranks, divides
by R), and queries without a relevant item count as 0 in every mean. The default
``"standard"`` variant is the definition (R after the removal; such queries left out).
"""

from __future__ import annotations

import numpy as np
import pytest
from support import reference_protocol as ref

from crossgap_jax import retrieval

KEYS = ("mAP", "mAP@R", "P@R", "R@1", "R@5", "R@10", "num_queries", "num_evaluated")


def _features(n, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("variant", ["standard", "authors"])
def test_all_vs_all_matches_brute_force(backend, variant):
    x = _features(40, seed=1)
    labels = np.array([0] * 12 + [1] * 15 + [2] * 12 + [3])  # class 3: a singleton
    rel = ref.relevance_from_keys(labels, labels)
    got = retrieval.evaluate(x, x, (labels, labels), exclude_self=True, backend=backend,
                             metric_variant=variant, chunk_size=16)
    want = ref.retrieval_metrics(x, x, rel, exclude_self=True, variant=variant)
    ref.assert_close(got, {k: want[k] for k in KEYS}, where=f"{backend}/{variant}")


def test_variants_differ_where_the_paper_says():
    x = _features(40, seed=1)
    labels = np.array([0] * 12 + [1] * 15 + [2] * 12 + [3])
    std = retrieval.evaluate(x, x, (labels, labels), exclude_self=True)
    auth = retrieval.evaluate(x, x, (labels, labels), exclude_self=True, metric_variant="authors")
    assert std["num_evaluated"] == 39 and auth["num_evaluated"] == 40
    assert auth["num_no_relevant"] == std["num_no_relevant"] == 1
    for k in ("mAP", "P@R", "R@1"):  # unaffected except for the extra zero
        assert auth[k] == pytest.approx(std[k] * 39 / 40, abs=1e-9)
    assert auth["mAP@R"] > std["mAP@R"] * 39 / 40 + 1e-3  # the extra rank counts


def test_authors_map_at_r_exact_case():
    """Three items on a line, labels [0, 0, 1]: for query 0 the ranking (self removed) is
    [item 2 (other class), item 1]; R = 1. Standard AP@R: nothing in the top 1 -> 0. Authors:
    R counted with the query = 2, so the hit at rank 2 counts: (1/2) / 1 = 0.5."""
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], np.float32)
    labels = np.array([0, 0, 1])
    pq_std = retrieval.evaluate_per_query(x, x, (labels, labels), exclude_self=True,
                                          backend="numpy")
    pq_auth = retrieval.evaluate_per_query(x, x, (labels, labels), exclude_self=True,
                                           backend="numpy", metric_variant="authors")
    assert pq_std["AP@R"][0] == 0.0 and pq_auth["AP@R"][0] == 0.5
    assert pq_std["AP"][0] == pq_auth["AP"][0] == 0.5
    assert pq_auth["num_relevant"][2] == 0  # item 2: no other item of its class
    s = retrieval.summarize(pq_auth, "authors")
    assert s["mAP@R"] == pytest.approx(100 * (0.5 + 0.5 + 0.0) / 3)


@pytest.mark.parametrize("variant", ["standard", "authors"])
def test_qrels_queries_without_relevant(variant):
    """Not all-vs-all: mAP@R is the definition's under both variants; a query without a
    relevant document is left out (standard) or counted as 0 (authors)."""
    q, g = _features(5, seed=2), _features(12, seed=3)
    qids, gids = [f"q{i}" for i in range(5)], [f"d{j}" for j in range(12)]
    qrels = {"q0": {"d1": 1, "d4": 1}, "q1": {"d2": 1}, "q2": {"d5": 1, "d6": 1, "d7": 1},
             "q3": {"d0": 1}}  # q4: none
    got = retrieval.evaluate(q, g, qrels, query_ids=qids, gallery_ids=gids,
                             metric_variant=variant)
    rel = ref.relevance_from_qrels({k: set(v) for k, v in qrels.items()}, qids, gids)
    want = ref.retrieval_metrics(q, g, rel, variant=variant)
    ref.assert_close(got, {k: want[k] for k in KEYS})


def test_bad_variant_is_named():
    x = _features(4)
    with pytest.raises(ValueError, match="metric_variant must be one of"):
        retrieval.evaluate(x, x, (np.zeros(4), np.zeros(4)), metric_variant="paper")
