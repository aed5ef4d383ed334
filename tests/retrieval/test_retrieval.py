"""Retrieval metrics: references (straightforward loop, torchmetrics, scikit-learn), tie rule,
relevance formats, chunking, backends and input checks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from support.compile_counter import CompileCounter
from torchmetrics.functional.retrieval import (
    retrieval_average_precision,
    retrieval_r_precision,
)

import crossgap_jax.retrieval as R
from crossgap_jax.retrieval.metrics import _from_ordered_uint32, _ordered_uint32

METRICS = ("AP", "AP@R", "P@R", "R@1", "R@5", "R@10")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def ranked_order(scores: np.ndarray, relevant: np.ndarray, ties: str = "pessimistic"):
    """Gallery indices best first; among equal scores non-relevant first (pessimistic)."""
    secondary = relevant if ties == "pessimistic" else ~relevant
    return np.lexsort((secondary, -scores.astype(np.float64)))


def reference_row(scores, relevant, ties="pessimistic", ks=(1, 5, 10)):
    """Per-query metrics by walking the ranked list, written from the definitions."""
    order = ranked_order(scores, relevant, ties)
    rel = relevant[order]
    n = int(rel.sum())
    out = {"num_relevant": n}
    if n == 0:
        return {**{k: 0.0 for k in METRICS}, "num_relevant": 0}
    hits, precisions, precisions_at_r = 0, [], []
    for pos, is_rel in enumerate(rel, start=1):
        if is_rel:
            hits += 1
            precisions.append(hits / pos)
            if pos <= n:
                precisions_at_r.append(hits / pos)
    out["AP"] = sum(precisions) / n
    out["AP@R"] = sum(precisions_at_r) / n
    out["P@R"] = rel[:n].sum() / n
    for k in ks:
        out[f"R@{k}"] = float(rel[:k].any())
    return out


def reference_matrix(scores, relevant, ties="pessimistic"):
    rows = [reference_row(s, r, ties) for s, r in zip(scores, relevant)]
    return {k: np.array([row[k] for row in rows]) for k in rows[0]}


def tie_free_scores(rng, q, g, low=0.01):
    """Random float32 scores in (low, 1) with no tie inside any row."""
    while True:
        s = rng.uniform(low, 1.0, size=(q, g)).astype(np.float32)
        if all(np.unique(row).size == g for row in s):
            return s


def random_relevance(rng, q, g, p=0.1):
    rel = rng.random((q, g)) < p
    rel[np.arange(q), rng.integers(0, g, q)] = True  # at least one relevant per row
    return rel


def dyadic_unit_vectors(rng, n, dim=16, norm_sq=1024):
    """Unit vectors whose entries are multiples of 1/32: norms and all dot products are exact
    in float32 whatever the summation order (so any BLAS blocking gives identical scores), and
    dot products are multiples of 1/1024, so ties occur."""
    scale = np.sqrt(norm_sq)
    rows = []
    while sum(len(r) for r in rows) < n:
        cand = rng.integers(-12, 13, size=(200_000, dim))
        rows.append(cand[(cand**2).sum(1) == norm_sq])
    x = np.concatenate(rows)[:n]
    return (x / scale).astype(np.float32)


def assert_metrics_equal(got, want, atol=1e-12, keys=METRICS):
    for k in keys:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol, err_msg=k)
    np.testing.assert_array_equal(got["num_relevant"], want["num_relevant"])


# ---------------------------------------------------------------------------------------------
# metric definitions against torchmetrics / scikit-learn (data without ties)
# ---------------------------------------------------------------------------------------------


def test_ap_equals_torchmetrics_and_sklearn_without_ties():
    rng = np.random.default_rng(0)
    scores = tie_free_scores(rng, 40, 257)
    rel = random_relevance(rng, 40, 257)
    rel[3] = True  # an all-relevant query
    ours = R.average_precision(scores, rel)
    tm = np.array([
        retrieval_average_precision(torch.from_numpy(s), torch.from_numpy(r)).item()
        for s, r in zip(scores, rel)
    ])
    sk = np.array([average_precision_score(r, s) for s, r in zip(scores, rel)])
    np.testing.assert_allclose(ours, tm, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, sk, rtol=0, atol=1e-12)
    assert ours[3] == 1.0
    assert ours.min() > 0 and ours.max() <= 1


def test_ap_on_negative_scores_matches_sklearn_and_shifted_torchmetrics():
    # torchmetrics >= 1.8 zeroes the relevance of items with score <= 0 (PR #3104); cosine
    # similarities can be negative and we keep the plain definition (as sklearn, and as
    # torchmetrics before that change). Shifting the scores by +2 in float64 keeps the
    # ranking and makes every score positive, so torchmetrics applies again.
    rng = np.random.default_rng(1)
    scores = rng.uniform(-1, 1, size=(20, 300)).astype(np.float32)
    rel = random_relevance(rng, 20, 300, p=0.2)
    ours = R.average_precision(scores, rel)
    sk = np.array([average_precision_score(r, s) for s, r in zip(scores, rel)])
    tm = np.array([
        retrieval_average_precision(torch.from_numpy(s).double() + 2, torch.from_numpy(r)).item()
        for s, r in zip(scores, rel)
    ])
    np.testing.assert_allclose(ours, sk, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, tm, rtol=0, atol=1e-6)


def test_all_metrics_equal_reference_and_torchmetrics_r_precision():
    rng = np.random.default_rng(2)
    scores = tie_free_scores(rng, 30, 200)
    rel = random_relevance(rng, 30, 200, p=0.15)
    got = R.per_query_metrics(scores, rel)
    want = reference_matrix(scores, rel)
    assert_metrics_equal(got, want)
    tm_rp = np.array([
        retrieval_r_precision(torch.from_numpy(s), torch.from_numpy(r)).item()
        for s, r in zip(scores, rel)
    ])
    np.testing.assert_allclose(got["P@R"], tm_rp, rtol=0, atol=1e-6)
    # mAP@R as in the authors' code: AP over the top R (torchmetrics' top_k=R divides by the
    # relevant items found in the top R instead, so it is not the same metric).
    for i in range(30):
        order = np.argsort(-scores[i])
        n = rel[i].sum()
        top = rel[i][order][:n]
        expect = (np.cumsum(top) * top / np.arange(1, n + 1)).sum() / n
        assert got["AP@R"][i] == pytest.approx(expect, abs=1e-12)
    assert 0 < got["AP@R"].mean() < got["AP"].mean()


# ---------------------------------------------------------------------------------------------
# ties
# ---------------------------------------------------------------------------------------------


def test_ties_follow_the_documented_rule():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=(25, 80)).astype(np.float32) / 4  # heavy ties
    rel = random_relevance(rng, 25, 80, p=0.3)
    for ties in ("pessimistic", "optimistic"):
        got = R.per_query_metrics(scores, rel, ties=ties)
        assert_metrics_equal(got, reference_matrix(scores, rel, ties))
        # torchmetrics on the same ranking (tie-broken by our rule into distinct scores)
        tm = []
        for s, r in zip(scores, rel):
            preds = np.empty(s.size)
            preds[ranked_order(s, r, ties)] = np.arange(s.size, 0, -1)
            tm.append(retrieval_average_precision(torch.from_numpy(preds),
                                                  torch.from_numpy(r)).item())
        np.testing.assert_allclose(got["AP"], tm, rtol=0, atol=1e-6)
    pess = R.per_query_metrics(scores, rel, ties="pessimistic")
    opt = R.per_query_metrics(scores, rel, ties="optimistic")
    assert (pess["AP"] <= opt["AP"] + 1e-15).all() and (pess["AP"] < opt["AP"]).any()


def test_torchmetrics_on_tied_scores_lies_between_the_two_rules():
    rng = np.random.default_rng(4)
    scores = (rng.integers(1, 8, size=(30, 60)) / 8).astype(np.float32)
    rel = random_relevance(rng, 30, 60, p=0.25)
    lo = R.average_precision(scores, rel, ties="pessimistic")
    hi = R.average_precision(scores, rel, ties="optimistic")
    tm = np.array([
        retrieval_average_precision(torch.from_numpy(s), torch.from_numpy(r)).item()
        for s, r in zip(scores, rel)
    ])
    assert (lo <= tm + 1e-6).all() and (tm <= hi + 1e-6).all()


def test_ties_do_not_depend_on_gallery_order():
    rng = np.random.default_rng(5)
    scores = (rng.integers(0, 5, size=(10, 50)) / 4).astype(np.float32)
    rel = random_relevance(rng, 10, 50, p=0.3)
    perm = rng.permutation(50)
    a = R.per_query_metrics(scores, rel)
    b = R.per_query_metrics(scores[:, perm], rel[:, perm])
    assert_metrics_equal(a, b, atol=0)


def test_hand_made_ties():
    # scores 0.9 (rel), 0.5 (non-rel), 0.5 (rel), 0.1 (rel)
    # pessimistic ranking: rel@1, non@2, rel@3, rel@4 -> AP = (1/1 + 2/3 + 3/4) / 3
    # optimistic ranking:  rel@1, rel@2, non@3, rel@4 -> AP = (1 + 1 + 3/4) / 3
    s = np.array([[0.5, 0.9, 0.1, 0.5]], np.float32)
    r = np.array([[False, True, True, True]])
    assert R.average_precision(s, r)[0] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert R.average_precision(s, r, ties="optimistic")[0] == pytest.approx((1 + 1 + 0.75) / 3)
    # -0.0 and +0.0 are the same score: pessimistic puts the relevant one second
    s0 = np.array([[0.0, -0.0]], np.float32)
    r0 = np.array([[False, True]])
    assert R.average_precision(s0, r0)[0] == 0.5
    assert R.average_precision(s0[:, ::-1], r0[:, ::-1])[0] == 0.5
    # two relevant zeros of opposite sign tie with a non-relevant zero: ranks 2 and 3
    s1 = np.array([[-0.0, 0.0, 0.0]], np.float32)
    r1 = np.array([[True, True, False]])
    assert R.average_precision(s1, r1)[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    for scores, rel in ((s, r), (s0, r0), (s1, r1)):
        np.testing.assert_allclose(
            R.per_query_metrics(scores, rel, backend="jax")["AP"],
            R.average_precision(scores, rel), rtol=0, atol=1e-7)


def test_ordered_uint32_keys_are_monotone_and_invertible():
    rng = np.random.default_rng(6)
    v = np.concatenate([rng.standard_normal(1000), [0.0, -1e-38, 1e-38, -np.inf, 3e38]])
    v = np.sort(v.astype(np.float32))
    k = _ordered_uint32(v)
    assert (np.diff(k.astype(np.int64)) >= 0).all()
    np.testing.assert_array_equal(_from_ordered_uint32(k), v)


# ---------------------------------------------------------------------------------------------
# queries without relevant items, all-relevant queries
# ---------------------------------------------------------------------------------------------


def test_no_relevant_queries_are_skipped_and_counted():
    rng = np.random.default_rng(7)
    q = dyadic_unit_vectors(rng, 12)
    g = dyadic_unit_vectors(rng, 40)
    rel = random_relevance(rng, 12, 40, p=0.2)
    rel[[2, 5]] = False  # no relevant item
    rel[7] = True  # every item relevant
    per = R.evaluate_per_query(q, g, rel)
    assert per["num_relevant"][2] == per["num_relevant"][5] == 0
    assert all(per[k][2] == 0 for k in METRICS)
    assert per["AP"][7] == per["AP@R"][7] == per["P@R"][7] == per["R@1"][7] == 1.0
    res = R.evaluate(q, g, rel)
    keep = np.ones(12, bool)
    keep[[2, 5]] = False
    assert res["num_skipped_no_relevant"] == 2
    assert res["num_evaluated"] == 10 and res["num_queries"] == 12
    assert res["mAP"] == pytest.approx(per["AP"][keep].mean() * 100, abs=1e-12)
    assert all(np.isfinite(v) for v in res.values())
    with pytest.raises(ValueError, match="no query has a relevant"):
        R.evaluate(q, g, np.zeros((12, 40), bool))


# ---------------------------------------------------------------------------------------------
# evaluate(): relevance formats, exclude_self, chunking, backends
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled():
    rng = np.random.default_rng(8)
    q = dyadic_unit_vectors(rng, 37)
    g = dyadic_unit_vectors(rng, 150)
    ql = rng.integers(0, 6, 37)
    gl = rng.integers(0, 6, 150)
    gl[gl == 5] = 4  # class 5 only among queries: those queries have no relevant item
    return q, g, ql, gl


def test_evaluate_labels_equals_mask_and_reference(labelled):
    q, g, ql, gl = labelled
    mask = ql[:, None] == gl[None, :]
    by_labels = R.evaluate_per_query(q, g, (ql, gl))
    by_mask = R.evaluate_per_query(q, g, mask)
    assert_metrics_equal(by_labels, by_mask, atol=0)
    # reference on the exact scores (dyadic features: the float32 scores are exact)
    want = reference_matrix(q @ g.T, mask)
    assert_metrics_equal(by_labels, want)
    # string labels work the same
    names = np.array(["cat", "dog", "eel", "fox", "gnu", "hen"])
    by_names = R.evaluate_per_query(q, g, (list(names[ql]), names[gl]))
    assert_metrics_equal(by_names, by_mask, atol=0)
    summary = R.evaluate(q, g, (ql, gl))
    valid = want["num_relevant"] > 0
    assert summary["mAP"] == pytest.approx(100 * want["AP"][valid].mean(), abs=1e-10)
    assert summary["num_skipped_no_relevant"] == int((~valid).sum()) > 0
    assert set(summary) >= {"mAP", "mAP@R", "P@R", "R@1", "R@5", "R@10"}


def test_evaluate_qrels(labelled):
    q, g, ql, gl = labelled
    mask = ql[:, None] == gl[None, :]
    qids = [f"q{i}" for i in range(len(q))]
    gids = [f"d{j}" for j in range(len(g))]
    qrels = {qids[i]: {gids[j] for j in np.flatnonzero(mask[i])} for i in range(len(q))}
    qrels["unknown-query"] = {"d1"}
    qrels[qids[0]] = set(qrels[qids[0]]) | {"not-in-gallery"}
    got = R.evaluate_per_query(q, g, qrels, query_ids=qids, gallery_ids=gids)
    assert_metrics_equal(got, R.evaluate_per_query(q, g, mask), atol=0)
    # BEIR graded format: grade 0 is not relevant
    graded = {qid: {d: 1 for d in docs} for qid, docs in qrels.items()}
    graded[qids[1]] = {**graded[qids[1]], gids[0]: 0}
    assert not mask[1, 0]
    got2 = R.evaluate_per_query(q, g, graded, query_ids=qids, gallery_ids=gids)
    assert_metrics_equal(got2, got, atol=0)
    # integer ids default to the row indices
    int_qrels = {i: list(np.flatnonzero(mask[i])) for i in range(len(q))}
    assert_metrics_equal(R.evaluate_per_query(q, g, int_qrels), got, atol=0)
    with pytest.raises(ValueError, match="match no"):
        R.evaluate(q, g, {1: ["d1"]}, query_ids=qids, gallery_ids=gids)


def test_exclude_self(labelled):
    q, _, ql, _ = labelled
    scores = q @ q.T
    mask = ql[:, None] == ql[None, :]
    got = R.evaluate_per_query(q, q, (ql, ql), exclude_self=True)
    # reference: drop column i from row i
    n = len(q)
    keep = ~np.eye(n, dtype=bool)
    want = reference_matrix(scores[keep].reshape(n, n - 1), mask[keep].reshape(n, n - 1))
    assert_metrics_equal(got, want)
    assert (got["num_relevant"] == mask.sum(1) - 1).all()
    # the mask and qrels paths agree, and without exclusion each query finds itself first
    mask_before = mask.copy()
    assert_metrics_equal(R.evaluate_per_query(q, q, mask, exclude_self=True), got, atol=0)
    np.testing.assert_array_equal(mask, mask_before)  # the caller's matrix is not modified
    qrels = {i: np.flatnonzero(mask[i]).tolist() for i in range(n)}
    assert_metrics_equal(R.evaluate_per_query(q, q, qrels, exclude_self=True), got, atol=0)
    assert (R.evaluate_per_query(q, q, (ql, ql))["R@1"] == 1).all()
    with pytest.raises(ValueError, match="Q == G"):
        R.evaluate(q, q[:-1], (ql, ql[:-1]), exclude_self=True)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 1000])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_chunked_equals_unchunked(labelled, chunk_size, num_threads):
    q, g, ql, gl = labelled
    full = R.evaluate_per_query(q, g, (ql, gl), chunk_size=len(q), num_threads=1)
    got = R.evaluate_per_query(q, g, (ql, gl), chunk_size=chunk_size, num_threads=num_threads)
    assert_metrics_equal(got, full, atol=0)
    got_self = R.evaluate_per_query(q, q, (ql, ql), exclude_self=True, chunk_size=chunk_size,
                                    num_threads=num_threads)
    full_self = R.evaluate_per_query(q, q, (ql, ql), exclude_self=True, chunk_size=len(q))
    assert_metrics_equal(got_self, full_self, atol=0)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_numpy_backend_equals_jax_backend(labelled, ties):
    q, g, ql, gl = labelled
    mask = ql[:, None] == gl[None, :]
    for relevant in ((ql, gl), mask):
        a = R.evaluate_per_query(q, g, relevant, backend="numpy", ties=ties)
        b = R.evaluate_per_query(q, g, relevant, backend="jax", ties=ties, chunk_size=16)
        assert_metrics_equal(b, a, atol=1e-6)
    a = R.evaluate_per_query(q, q, (ql, ql), exclude_self=True, backend="numpy", ties=ties)
    b = R.evaluate_per_query(q, q, (ql, ql), exclude_self=True, backend="jax", ties=ties,
                             chunk_size=10)
    assert_metrics_equal(b, a, atol=1e-6)


def test_jax_backend_compiles_once_per_chunk_shape(labelled):
    from crossgap_jax.retrieval import engine

    q, g, ql, gl = labelled
    name = engine._jax_block_labels.__name__
    # 37 queries in chunks of 12: three full chunks and a padded last one, one compilation
    # (a fresh chunk shape: 13 columns of 37 + 3 is not used elsewhere in this module)
    with CompileCounter(name) as first:
        R.evaluate_per_query(q, g, (ql, gl), backend="jax", chunk_size=13)
    assert first.compiles == 1, first.logs
    # 39 queries pad to the same 39 rows: no new compilation
    q39 = np.concatenate([q, q[:2]])
    ql39 = np.concatenate([ql, ql[:2]])
    with CompileCounter(name) as again:
        R.evaluate_per_query(q39, g, (ql39, gl), backend="jax", chunk_size=13)
    assert again.compiles == 0, again.logs


def test_jax_kernel_on_scores_equals_numpy():
    rng = np.random.default_rng(9)
    scores = (rng.integers(0, 40, size=(23, 90)) / 40).astype(np.float32)
    rel = random_relevance(rng, 23, 90, p=0.2)
    rel[4] = False
    for ties in ("pessimistic", "optimistic"):
        a = R.per_query_metrics(scores, rel, ties=ties, recall_ks=(1, 3, 200))
        b = R.per_query_metrics(scores, rel, ties=ties, recall_ks=(1, 3, 200), backend="jax",
                                chunk_size=8)
        assert_metrics_equal(b, a, atol=1e-6, keys=("AP", "AP@R", "P@R", "R@1", "R@3", "R@200"))


def test_features_are_normalised_and_jax_inputs_accepted(labelled):
    q, g, ql, gl = labelled
    base = R.evaluate_per_query(q, g, (ql, gl))
    rng = np.random.default_rng(10)
    # powers of two keep the dyadic features exact after normalisation
    qs = q * (2.0 ** rng.integers(-3, 4, size=(len(q), 1))).astype(np.float32)
    gs = g * (2.0 ** rng.integers(-3, 4, size=(len(g), 1))).astype(np.float32)
    assert_metrics_equal(R.evaluate_per_query(qs, gs, (ql, gl)), base, atol=0)
    got = R.evaluate_per_query(jnp.asarray(qs), jnp.asarray(gs), (jnp.asarray(ql), gl),
                               backend="numpy")
    assert_metrics_equal(got, base, atol=0)
    sim = R.cosine_similarity(qs, gs)
    np.testing.assert_array_equal(sim, q @ g.T)
    np.testing.assert_allclose(np.asarray(R.cosine_similarity(jnp.asarray(qs), gs)), q @ g.T,
                               atol=1e-6)


def test_recall_ks_and_progress(labelled, capsys):
    q, g, ql, gl = labelled
    res = R.evaluate(q, g, (ql, gl), recall_ks=(1, 2, 1000), progress=True, chunk_size=8)
    assert res["R@1"] <= res["R@2"] <= res["R@1000"] == 100.0
    assert "R@5" not in res


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_error(labelled):
    q, g, ql, gl = labelled
    mask = ql[:, None] == gl[None, :]
    bad_nan = q.copy()
    bad_nan[3, 2] = np.nan
    zero = g.copy()
    zero[5] = 0
    cases = [
        (lambda: R.evaluate(q, g[:, :8], mask), "dim"),
        (lambda: R.evaluate(bad_nan, g, mask), "NaN"),
        (lambda: R.evaluate(q, zero, mask), "zero"),
        (lambda: R.evaluate(q, g, (ql[:-1], gl)), "query labels"),
        (lambda: R.evaluate(q, g, (ql, gl[:-2])), "gallery labels"),
        (lambda: R.evaluate(q, g, mask[:, :-1]), "shape"),
        (lambda: R.evaluate(q, g, mask.astype(np.float32)), "bool"),
        (lambda: R.evaluate(q, g, (ql, gl, gl)), "tuple"),
        (lambda: R.evaluate(q[0], g, mask), "2-D"),
        (lambda: R.evaluate(q, g, mask, ties="random"), "ties"),
        (lambda: R.evaluate(q, g, mask, backend="torch"), "backend"),
        (lambda: R.evaluate(q, g, mask, chunk_size=0), "chunk_size"),
        (lambda: R.evaluate(q, g, mask, recall_ks=(0,)), "recall_ks"),
        (lambda: R.evaluate(q, g, mask, query_ids=range(len(q))), "qrels"),
        (lambda: R.evaluate(q, g, {0: [1]}, query_ids=[0, 1]), "query_ids"),
        (lambda: R.average_precision(np.zeros((2, 3)), np.zeros((2, 4), bool)), "shape"),
        (lambda: R.average_precision(np.full((1, 3), np.nan), np.ones((1, 3), bool)), "NaN"),
        (lambda: R.per_query_metrics(np.array([[-np.inf, 1.0]]), np.array([[True, True]])),
         "-inf"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()


def test_one_dimensional_scores():
    s = np.array([0.2, 0.3, 0.5], np.float32)
    r = np.array([True, False, True])
    # torchmetrics' docstring example: 0.8333
    assert R.average_precision(s, r) == pytest.approx([(1 + 2 / 3) / 2])
