"""The one relevance representation (``retrieval.Relevance``): every kind against a brute-force
(Q, G) matrix written here, as a task builds it and as ``retrieval.evaluate`` reads it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crossgap_jax.data as cgd
from crossgap_jax import retrieval


def _check(rel: retrieval.Relevance, want: np.ndarray, exclude_self: bool, absent=None):
    """``rel`` against the brute-force matrix ``want`` (self not removed)."""
    q, g = want.shape
    assert (rel.num_queries, rel.num_gallery, rel.exclude_self) == (q, g, exclude_self)
    assert np.array_equal(rel.block(0, q), want)
    for a in range(q):
        assert np.array_equal(rel.block(a, min(q, a + 2)), want[a : a + 2])
    own = np.zeros(q, bool) if not exclude_self else want[np.arange(q), np.arange(q)]
    pos = [[j for j in range(g) if want[i, j] and not (exclude_self and j == i)]
           for i in range(q)]
    assert [p.tolist() for p in rel.positives_each()] == pos
    assert [rel.positives(i).tolist() for i in range(q)] == pos
    assert rel.gallery_counts().tolist() == [len(p) for p in pos]
    extra = np.zeros(q, np.int64) if absent is None else np.asarray(absent)
    assert rel.num_relevant().tolist() == (want.sum(1) - own + extra).tolist()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=7),
       st.lists(st.integers(0, 3), min_size=1, max_size=7), st.booleans())
def test_kinds_agree_with_the_brute_force_matrix(ql, gl, same):
    if same:
        gl = ql
    want = np.array([[a == b for b in gl] for a in ql], bool)
    lab = retrieval.LabelRelevance(ql, gl, exclude_self=same)
    _check(lab, want, same)
    _check(retrieval.MaskRelevance(want, exclude_self=same), want, same)
    sp = retrieval.SparseRelevance.from_lists([np.flatnonzero(r)[::-1] for r in want], len(gl),
                                        exclude_self=same)
    _check(sp, want, same)
    qrels = {f"q{i}": {f"d{j}": int(want[i, j]) for j in range(len(gl))} for i in range(len(ql))}
    _check(retrieval.qrels_relevance(qrels, [f"q{i}" for i in range(len(ql))],
                               [f"d{j}" for j in range(len(gl))], exclude_self=same), want, same)


def _images(labels, split):
    n = len(labels)
    return cgd.ImageSplit("toy", split, items=[f"{split}{i}" for i in range(n)],
                          paths=[f"/nowhere/{split}{i}.jpg" for i in range(n)], labels=labels)


def test_task_relevant_of_subsets_and_all_vs_all():
    q, g = _images([0, 1, 2], "q"), _images([1, 0, 1, 2, 2], "g")
    task = cgd.RetrievalTask("toy", q, g, "label")
    want = np.array([[a == b for b in g.labels] for a in q.labels])
    _check(task.relevant(), want, False)
    assert task.relevant() is task.relevant()  # built once per task
    qs, gs = q.subset([2, 0]), g.subset([4, 1, 3])
    _check(task.relevant(qs, gs), want[[2, 0]][:, [4, 1, 3]], False)
    s = _images([0, 1, 0, 0], "s")
    avs = cgd.RetrievalTask("toy", s, s, "label", exclude_self=True)
    _check(avs.relevant(), np.array([[a == b for b in s.labels] for a in s.labels]), True)
    with pytest.raises(ValueError, match="exclude_self needs the same query and gallery"):
        avs.relevant(s.subset([0, 1]), s.subset([1, 2]))


def test_qrels_task_relevant_counts_outside_documents_only_under_count():
    q = cgd.TextSplit("b", "queries", items=["q1", "q2"], texts=["x", "y"],
                      qrels={"q1": {"d2": 1, "d9": 1, "d1": 0}, "q2": {"d1": 2, "d8": 3}})
    g = cgd.TextSplit("b", "corpus", items=["d1", "d2", "d3"], texts=["1", "2", "3"])
    want = np.array([[0, 1, 0], [1, 0, 0]], bool)
    for mode, absent in (("drop", [0, 0]), ("count", [1, 1])):
        task = cgd.RetrievalTask("b", q, g, "qrels", qrels=q.qrels, qrels_missing=mode)
        rel = task.relevant()
        _check(rel, want, False, absent)
        assert rel.unretrievable.tolist() == absent
        _check(task.relevant(q.subset([1]), g), want[[1]], False, absent[1:])


def test_evaluate_takes_a_relevance_and_refuses_options_twice():
    rng = np.random.default_rng(0)
    qf, gf = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    ql, gl = [0, 1, 2], [1, 0, 1, 2, 2]
    rel = retrieval.LabelRelevance(ql, gl)
    assert retrieval.evaluate(qf, gf, rel, backend="numpy") == retrieval.evaluate(
        qf, gf, (ql, gl), backend="numpy")
    with pytest.raises(ValueError, match="carries its own"):
        retrieval.evaluate(qf, gf, rel, unretrievable=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="relevance is 3x5, the features 3x4"):
        retrieval.evaluate(qf, gf[:4], rel)
    with pytest.raises(ValueError, match="exclude_self needs"):
        retrieval.LabelRelevance(ql, gl, exclude_self=True)
    with pytest.raises(ValueError, match="unretrievable must be"):
        retrieval.LabelRelevance(ql, gl, unretrievable=[-1, 0, 0])
