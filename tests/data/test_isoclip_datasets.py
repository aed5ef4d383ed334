"""IsoCLIP's two extra image datasets (simomagi/IsoCLIP): Places365 (val vs val) and
iNaturalist 2021 mini (train_mini vs itself), read from tiny files in their layouts. Every
expected item list, label and score is computed here from the files written."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

import crossgap_jax.data as cgd
from crossgap_jax import retrieval
from crossgap_jax.data.types import DataFileError, DatasetLayoutError

CATEGORIES = ["/a/airfield", "/a/apartment_building/outdoor", "/b/bazaar/indoor", "/c/canyon"]


def _write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def _places_official(base, n=14, seed=0, images="val_large", lists=""):
    """IsoCLIP's layout: flat image folder + places365_val.txt (shuffled lines) +
    categories_places365.txt. Returns {file: label}."""
    rng = random.Random(seed)
    truth = {f"Places365_val_{i:08d}.jpg": rng.randrange(len(CATEGORIES))
             for i in rng.sample(range(1, 10 * n), n)}
    for f in truth:
        _touch(os.path.join(base, images, f))
    _touch(os.path.join(base, images, "readme.jpg"))  # not a Places365_val_ file: ignored
    lines = [f"{f} {y}" for f, y in truth.items()]
    rng.shuffle(lines)
    lst = os.path.join(base, lists) if lists else base
    _write(os.path.join(lst, "places365_val.txt"), "\n".join(lines) + "\n")
    _write(os.path.join(lst, "categories_places365.txt"),
           "".join(f"{c} {i}\n" for i, c in enumerate(CATEGORIES)))
    return truth


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_ap(x, y):
    """All vs all, the query removed: mean AP over queries with a positive (percent)."""
    s = x @ x.T
    aps = []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        order = sorted(others, key=lambda j: (-s[i, j], y[j] == y[i]))  # ties: pessimistic
        rel = [y[j] == y[i] for j in order]
        if not any(rel):
            continue
        hits, tot = 0, 0.0
        for rank, r in enumerate(rel, 1):
            if r:
                hits += 1
                tot += hits / rank
        aps.append(tot / hits)
    return 100 * float(np.mean(aps))


def test_places365_isoclip_layout_items_labels_and_task(tmp_path):
    truth = _places_official(str(tmp_path / "Places365_val"))
    split = cgd.get_dataset("places365", tmp_path, "val")
    want = sorted(truth)  # IsoCLIP: the sorted folder listing
    assert split.items == want
    assert split.labels.tolist() == [truth[f] for f in want]
    assert split.paths == [str(tmp_path / "Places365_val" / "val_large" / f) for f in want]
    assert split.classnames == ["airfield", "apartment building outdoor", "bazaar indoor",
                                "canyon"]
    task = cgd.get_task("places365", tmp_path, check=False)
    assert task.query is task.gallery and task.exclude_self and task.relevance == "label"
    assert (task.query.split, len(task.query)) == ("val", len(truth))
    x = _unit(np.random.default_rng(1).standard_normal((len(want), 6)))
    y = np.array([truth[f] for f in want])
    got = retrieval.evaluate(x, x, task.relevant(), backend="numpy")
    assert got["mAP"] == pytest.approx(_brute_ap(x, y), abs=1e-6)


def test_places365_small_images_filelist_folder_and_train(tmp_path):
    base = tmp_path / "places365"
    truth = _places_official(str(base), n=6, seed=3, images="val_256",
                             lists="filelist_places365-standard")
    train = {"/a/airfield/00000001.jpg": 0, "/c/canyon/00000002.jpg": 3,
             "/a/airfield/00000003.jpg": 0}
    _write(str(base / "filelist_places365-standard" / "places365_train_standard.txt"),
           "".join(f"{f} {y}\n" for f, y in train.items()))
    for f in train:
        _touch(str(base / "data_256" / f.lstrip("/")))
    val = cgd.get_dataset("places", tmp_path, "val")  # the alias
    assert val.items == sorted(truth) and val.root == str(base / "val_256")
    tr = cgd.get_dataset("places365", tmp_path, "train")
    assert tr.items == [f.lstrip("/") for f in train]  # the list file's order
    assert tr.labels.tolist() == list(train.values())
    assert tr.paths[1] == str(base / "data_256" / "c" / "canyon" / "00000002.jpg")


def test_places365_easy_format(tmp_path):
    base = tmp_path / "places365_standard"
    folders = {"airfield": 2, "apartment_building-outdoor": 1, "canyon": 3}
    for f, n in folders.items():
        for i in range(n):
            _touch(str(base / "val" / f / f"Places365_val_{i:08d}.jpg"))
    # without categories_places365.txt: the sorted folders are the classes
    s = cgd.get_dataset("places365", tmp_path, "val")
    assert s.items == [f"{f}/Places365_val_{i:08d}.jpg" for f in sorted(folders)
                       for i in range(folders[f])]
    assert s.labels.tolist() == [0, 0, 1, 2, 2, 2]
    # with it: each folder is its category's label
    _write(str(base / "categories_places365.txt"),
           "".join(f"{c} {i}\n" for i, c in enumerate(CATEGORIES)))
    s = cgd.get_dataset("places365", tmp_path, "val")
    assert s.labels.tolist() == [0, 0, 1, 3, 3, 3]
    assert s.classnames[1] == "apartment building outdoor" and len(s.classnames) == 4
    _touch(str(base / "val" / "glacier" / "x.jpg"))
    with pytest.raises(DataFileError, match="glacier.*categories_places365.txt"):
        cgd.get_dataset("places365", tmp_path, "val")


def test_places365_bad_input(tmp_path):
    with pytest.raises(DatasetLayoutError, match="places365.*val_large"):
        cgd.get_dataset("places365", tmp_path, "val")
    base = tmp_path / "Places365_val"
    truth = _places_official(str(base), n=4)
    with pytest.raises(ValueError, match="unknown split 'test'; valid splits: val, train"):
        cgd.get_dataset("places365", tmp_path, "test")
    with pytest.raises(DatasetLayoutError, match="split 'train' not found.*"
                                                 "places365_train_standard.txt"):
        cgd.get_dataset("places365", tmp_path, "train")
    _touch(str(base / "val_large" / "Places365_val_99999999.jpg"))  # no label
    with pytest.raises(DataFileError, match="1 images of .* have no label"):
        cgd.get_dataset("places365", tmp_path, "val")
    os.remove(base / "val_large" / "Places365_val_99999999.jpg")
    with open(base / "places365_val.txt", "a") as f:
        f.write("Places365_val_00000000.jpg\n")
    with pytest.raises(DataFileError, match=r"places365_val.txt:\d+: expected '<file> <label>'"):
        cgd.get_dataset("places365", tmp_path, "val")
    assert len(truth) == 4


def _inat(base, cat_ids, n_per, seed=0, where="annotations", split="train_mini"):
    """A train_mini-style JSON (images and annotations shuffled). Returns the images list
    in file order and {image id: category id}."""
    rng = random.Random(seed)
    images, cat_of = [], {}
    uid = 1000
    for c in cat_ids:
        for _ in range(n_per):
            uid += rng.randrange(1, 5)
            images.append({"id": uid, "file_name": f"{split}/{c:05d}_Sp_{c}/{uid:x}.jpg"})
            cat_of[uid] = c
    rng.shuffle(images)
    anns = [{"id": i, "image_id": im, "category_id": c} for i, (im, c) in enumerate(
        cat_of.items())]
    rng.shuffle(anns)
    cats = [{"id": c, "name": f"Genus_{c} species", "common_name": f"c{c}"} for c in cat_ids]
    doc = {"info": {}, "images": images, "annotations": anns, "categories": cats}
    _write(os.path.join(base, where, f"{split}.json") if where else
           os.path.join(base, f"{split}.json"), json.dumps(doc))
    for im in images:
        _touch(os.path.join(base, im["file_name"]))
    return images, cat_of


def test_inaturalist_isoclip_layout_items_labels_and_task(tmp_path):
    base = str(tmp_path / "iNaturalist2021_train")
    images, cat_of = _inat(base, [0, 1, 2, 3], 3)
    s = cgd.get_dataset("inaturalist2021", tmp_path, "train_mini")
    assert s.items == [im["file_name"] for im in images]  # the JSON's order
    assert s.labels.tolist() == [cat_of[im["id"]] for im in images]  # ids 0..C-1: the id
    assert s.paths[0] == os.path.join(base, images[0]["file_name"])
    assert s.classnames == [f"Genus {c} species" for c in range(4)]
    task = cgd.get_task("mini_inaturalist", tmp_path, check=False)
    assert task.query is task.gallery and task.exclude_self
    assert task.query.split == "train_mini"
    x = _unit(np.random.default_rng(2).standard_normal((len(images), 5)))
    y = np.array([cat_of[im["id"]] for im in images])
    got = retrieval.evaluate(x, x, task.relevant(), backend="numpy")
    assert got["mAP"] == pytest.approx(_brute_ap(x, y), abs=1e-6)


def test_inaturalist_sparse_category_ids_and_json_at_top(tmp_path):
    base = str(tmp_path / "inat2021")
    ids = [7, 3, 42]
    images, cat_of = _inat(base, ids, 2, seed=5, where="", split="val")
    s = cgd.get_dataset("inaturalist2021", tmp_path, "val")
    order = sorted(ids)
    assert s.labels.tolist() == [order.index(cat_of[im["id"]]) for im in images]
    assert s.extra["category_ids"] == order
    assert s.classnames == [f"Genus {c} species" for c in order]
    with pytest.raises(DatasetLayoutError, match="no train_mini.json"):
        cgd.get_dataset("inaturalist2021", tmp_path, "train_mini")


def test_inaturalist_bad_input(tmp_path):
    with pytest.raises(DatasetLayoutError, match="inaturalist2021.*train_mini.json"):
        cgd.get_dataset("inaturalist2021", tmp_path)
    base = tmp_path / "iNaturalist2021_train"
    _inat(str(base), [0, 1], 2)
    path = base / "annotations" / "train_mini.json"
    doc = json.loads(path.read_text())
    for change, match in (
        (lambda d: d.pop("categories"), "no 'categories' list"),
        (lambda d: d["annotations"].pop(0), "1 images have no annotation"),
        (lambda d: d["annotations"][0].update(category_id=9), r"category ids \[9\] absent"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] lacks id, file_name"),
        (lambda d: d["images"][1].update(id=d["images"][0]["id"]),
         "image ids listed more than once"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0], category_id=1 - d[
            "annotations"][0]["category_id"])), "annotated with two categories"),
        (lambda d: d["annotations"][0].update(image_id=-7), r"1 annotations name image ids "
         r"absent from 'images', e.g. \[-7\]"),
    ):
        bad = json.loads(json.dumps(doc))
        change(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(DataFileError, match=match):
            cgd.get_dataset("inaturalist2021", tmp_path)
    for nameless in (None, ""):
        bad = json.loads(json.dumps(doc))
        bad["images"][1]["file_name"] = nameless
        path.write_text(json.dumps(bad))
        with pytest.raises(DataFileError) as e:
            cgd.get_dataset("inaturalist2021", tmp_path)
        assert str(e.value) == (f"{path}: 1 entries of 'images' have no file_name (null or "
                                f"empty), e.g. image id(s) [{doc['images'][1]['id']}]")
    path.write_text('{"images": [')
    with pytest.raises(DataFileError, match="not valid JSON"):
        cgd.get_dataset("inaturalist2021", tmp_path)
    with pytest.raises(ValueError, match="unknown split 'mini'"):
        cgd.get_dataset("inaturalist2021", tmp_path, "mini")


def test_places365_size_warning_once_per_root_and_split(tmp_path, caplog):
    for name in ("a", "b"):
        _places_official(str(tmp_path / name / "Places365_val"), n=5)
    with caplog.at_level("WARNING", logger="crossgap_jax.data.sources.places365"):
        for _ in range(3):
            cgd.get_dataset("places365", tmp_path / "a", "val")
        cgd.get_dataset("places365", tmp_path / "b", "val")
    said = [r.getMessage() for r in caplog.records]
    assert said == ["places365/val: 5 images, IsoCLIP's protocol has 36500"] * 2
