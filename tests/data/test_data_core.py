"""The data model: splits, subsets, text replacements, retrieval-task relevance."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap_jax.data import ImageSplit, RetrievalTask, TextSplit, first_caption_split


def _images(labels, name="toy", split="s"):
    n = len(labels)
    return ImageSplit(name, split, items=[f"im{i}" for i in range(n)],
                      paths=[f"/nowhere/im{i}.jpg" for i in range(n)], labels=labels,
                      classnames=["a", "b", "c"])


def test_image_split_validation():
    with pytest.raises(ValueError, match="unique"):
        ImageSplit("x", "s", items=["a", "a"], paths=["p", "q"])
    with pytest.raises(ValueError, match="paths"):
        ImageSplit("x", "s", items=["a", "b"], paths=["p"])
    with pytest.raises(ValueError, match="exactly one"):
        ImageSplit("x", "s", items=["a"])
    with pytest.raises(ValueError, match="labels"):
        ImageSplit("x", "s", items=["a"], paths=["p"], labels=[0, 1])
    s = _images([0, 1, 2, 1])
    assert len(s) == 4 and s.labels.dtype == np.int64
    sub = s.subset([3, 0])
    assert sub.items == ["im3", "im0"] and sub.labels.tolist() == [1, 0]
    assert sub.paths == ["/nowhere/im3.jpg", "/nowhere/im0.jpg"]
    assert s.missing_files() == s.paths


def test_text_split_subset_and_replacements():
    t = TextSplit("x", "q", items=["q1", "q2", "q3"], texts=["a", "b", "c"],
                  qrels={"q1": {"d": 1}, "q3": {"e": 2}})
    sub = t.subset([2])
    assert sub.items == ["q3"] and sub.qrels == {"q3": {"e": 2}}
    r = t.with_texts({"q2": "B"})
    assert r.texts == ["a", "B", "c"] and t.texts == ["a", "b", "c"]
    assert r.extra["replaced"] == 1
    with pytest.raises(KeyError, match="not items"):
        t.with_texts({"zz": "?"})
    assert t.with_texts({"zz": "?"}, strict=False).texts == t.texts


def test_label_task_positives_and_matrix():
    q = _images([0, 1], split="q")
    g = _images([1, 0, 1, 2], split="g")
    task = RetrievalTask("toy", q, g, "label")
    assert task.positives(0).tolist() == [1]
    assert task.positives(1).tolist() == [0, 2]
    assert task.ignored(0).size == 0
    rel, ign = task.relevance_matrix()
    np.testing.assert_array_equal(rel, [[0, 1, 0, 0], [1, 0, 1, 0]])
    assert not ign.any()


def test_exclude_self():
    s = _images([0, 1, 0, 0])
    task = RetrievalTask("toy", s, s, "label", exclude_self=True)
    assert task.positives(0).tolist() == [2, 3]
    assert task.ignored(0).tolist() == [0]
    rel, ign = task.relevance_matrix()
    assert not rel[np.arange(4), np.arange(4)].any()
    assert ign[np.arange(4), np.arange(4)].all()


def test_group_task_from_captions():
    t = TextSplit("c", "test", items=[f"{i // 3}#{i % 3}" for i in range(9)],
                  texts=[f"cap{i}" for i in range(9)], groups=[0, 0, 0, 1, 1, 1, 2, 2, 2])
    q, g = first_caption_split(t)
    assert q.items == ["0#0", "1#0", "2#0"]
    assert g.items == ["0#1", "0#2", "1#1", "1#2", "2#1", "2#2"]
    task = RetrievalTask("c", q, g, "group")
    assert task.positives(1).tolist() == [2, 3]


def test_qrels_task():
    q = TextSplit("b", "queries", items=["q1", "q2"], texts=["x", "y"],
                  qrels={"q1": {"d2": 1, "d9": 1, "d1": 0}, "q2": {"d1": 2}})
    g = TextSplit("b", "corpus", items=["d1", "d2", "d3"], texts=["1", "2", "3"])
    task = RetrievalTask("b", q, g, "qrels", qrels=q.qrels)
    assert task.positives(0).tolist() == [1]  # d9 not in corpus, d1 has grade 0
    assert task.positives(1).tolist() == [0]
    with pytest.raises(ValueError):
        RetrievalTask("b", q, g, "qrels")


def test_revisitop_protocols():
    q = ImageSplit("r", "query", items=["q"], paths=["q.jpg"])
    g = ImageSplit("r", "gallery", items=[f"g{i}" for i in range(6)],
                   paths=[f"g{i}.jpg" for i in range(6)])
    gnd = [{"easy": np.array([0, 1]), "hard": np.array([2]), "junk": np.array([5])}]
    task = RetrievalTask("r", q, g, "revisitop", gnd=gnd)
    assert task.positives(0, "easy").tolist() == [0, 1]
    assert task.ignored(0, "easy").tolist() == [2, 5]
    assert task.positives(0, "medium").tolist() == [0, 1, 2]
    assert task.ignored(0, "medium").tolist() == [5]
    assert task.positives(0, "hard").tolist() == [2]
    assert task.ignored(0, "hard").tolist() == [0, 1, 5]


def test_relevance_matrix_refuses_huge():
    s = _images([0, 1, 0, 0])
    with pytest.raises(MemoryError):
        RetrievalTask("toy", s, s, "label").relevance_matrix(max_elements=10)


def test_task_needs_labels():
    s = ImageSplit("x", "s", items=["a"], paths=["p"])
    with pytest.raises(ValueError, match="labels"):
        RetrievalTask("x", s, s, "label")
