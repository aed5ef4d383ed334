"""The readers on the real shared data (skipped with a reason when it is absent).

The data root is ``$CROSSGAP_SHARED_DATA``, else ``../shared/data`` next to the repository.
"""

from __future__ import annotations

import codecs
import os
import pickle

import numpy as np
import pytest

import crossgap_jax.data as cgd


def _shared_root() -> str:
    env = os.environ.get("CROSSGAP_SHARED_DATA")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.normpath(os.path.join(repo, "..", "shared", "data"))


ROOT = _shared_root()


def _need(*parts: str) -> str:
    path = os.path.join(ROOT, *parts)
    if not os.path.exists(path):
        pytest.skip(f"real data not found: {path} (set CROSSGAP_SHARED_DATA to the data root)")
    return path


def test_list_datasets_finds_shared_data():
    _need()
    found = {e.name: e.found for e in cgd.list_datasets(ROOT) if e.found}
    for name, part in [("caltech101", "caltech101"), ("coco_text", "coco_karpathy"),
                       ("newsgroup_text", "20newsgroups"), ("cisi", "cisi")]:
        if os.path.exists(os.path.join(ROOT, part)):
            assert name in found, name


def test_caltech101_coop_split_counts():
    _need("caltech101", "split_zhou_Caltech101.json")
    sizes = {}
    for split in ("train", "val", "test"):
        s = cgd.get_dataset("caltech101", ROOT, split)
        sizes[split] = len(s)
        assert len(np.unique(s.labels)) == 100 and len(s.classnames) == 100
        assert not s.missing_files()
    assert sizes == {"train": 4128, "val": 1649, "test": 2465}
    task = cgd.get_task("caltech101", ROOT)
    assert (len(task.query), len(task.gallery)) == (2465, 4128)
    assert task.query.classnames[0] == "face"
    assert "BACKGROUND_Google" not in {i.split("/")[0] for i in task.gallery.items}
    rel, _ = task.relevance_matrix()
    assert rel.sum(1).min() > 0  # every query has positives in the gallery


# slow (issue 14 item 8): ~8 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_caltech101_test_split_decodes():
    """Every test image decodes and preprocesses (exact mode) into the fixed batch shape."""
    _need("caltech101", "101_ObjectCategories")
    split = cgd.get_dataset("caltech101", ROOT, "test")
    loader = cgd.ImageBatchLoader(split, 128, on_error="raise", fast_decode=False)
    seen = 0
    for b in loader:
        assert b.images.shape == (128, 224, 224, 3) and b.images.dtype == np.float32
        assert np.isfinite(b.images).all()
        seen += int(b.mask.sum())
    assert seen == 2465 and loader.report()["skipped"] == 0


@pytest.mark.slow
def test_caltech101_every_image_decodes():
    """Every image of 101_ObjectCategories (read as a generic class-folder dataset) decodes."""
    folder = _need("caltech101", "101_ObjectCategories")
    s = cgd.get_dataset("imagefolder", folder)
    assert len(s.classnames) == 102  # 101 classes + BACKGROUND_Google (Faces_easy too)
    assert len(s) > 9000
    for i in range(len(s)):
        assert s.open_image(i).mode == "RGB"


def test_coco_karpathy_5k():
    _need("coco_karpathy", "test5k_captions.txt")
    task = cgd.get_task("coco_text", ROOT)
    assert len(task.query) == 5000 and len(task.gallery) == 20000
    assert task.relevance == "group"
    assert all(len(task.positives(i)) == 4 for i in (0, 1234, 4999))
    assert task.query.texts[0] and not task.query.texts[0].startswith(" ")


def test_newsgroups_test_matches_sklearn(tmp_path):
    folder = _need("20newsgroups", "20news-bydate-test")
    split = cgd.get_dataset("newsgroup_text", ROOT, "test")
    assert len(split) == 7532 and len(split.classnames) == 20
    assert sorted(np.unique(split.labels).tolist()) == list(range(20))
    # sklearn's own fetch_20newsgroups on these files (its download step replaced by a
    # cache built with its load_files, exactly as _download_20newsgroups builds it).
    sk = pytest.importorskip("sklearn.datasets")
    from sklearn.datasets._base import _pkl_filepath

    home = str(tmp_path)
    test = sk.load_files(folder, encoding="latin1")
    with open(_pkl_filepath(home, "20news-bydate.pkz"), "wb") as f:
        f.write(codecs.encode(pickle.dumps({"train": test, "test": test}), "zlib_codec"))
    ref = sk.fetch_20newsgroups(data_home=home, subset="test", download_if_missing=False)
    assert split.labels.tolist() == ref.target.tolist()
    assert split.texts == list(ref.data)
    assert split.items == ["test/" + "/".join(p.split(os.sep)[-2:]) for p in ref.filenames]
    task = cgd.get_task("newsgroup_text", ROOT)
    assert len(task.query) == 20 and task.query.classnames == split.classnames


def test_cisi_qrels():
    _need("cisi", "CISI.REL")
    task = cgd.get_task("cisi", ROOT)
    assert len(task.gallery) == 1460 and len(task.query) == 76
    assert sum(len(v) for v in task.qrels.values()) == 3114
    assert all(len(task.positives(i)) == len(task.qrels[q])
               for i, q in enumerate(task.query.items))  # every judged doc is in the corpus
    everything = cgd.get_dataset("cisi", ROOT, "queries", keep_unjudged_queries=True)
    assert len(everything) == 112
    assert task.gallery.texts[0].startswith("18 Editions of the Dewey Decimal Classifications")
