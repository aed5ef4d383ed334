"""Every layout reader on a miniature copy of the real download's structure (tmp dirs).

The miniatures reproduce the real file names, folder nesting and file formats with a
handful of tiny generated JPEGs, so the readers are exercised exactly as on the real data.
"""

from __future__ import annotations

import csv
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

import crossgap_jax.data as cgd
from crossgap_jax.data import DatasetLayoutError, ImageSplit, TextSplit


def _jpeg(path, size=(24, 16), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path, "JPEG")


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _decodes(split: ImageSplit):
    for i in range(len(split)):
        assert split.open_image(i).mode == "RGB"


# ----------------------------------------------------------------------------- CoOp


def _coop_split(img_dir, classes, per_split=(2, 1, 1)):
    """Images under img_dir/<folder>/ and the CoOp split dict for them."""
    split = {"train": [], "val": [], "test": []}
    k = 0
    for label, (folder, cname) in enumerate(classes):
        for part, n in zip(("train", "val", "test"), per_split):
            for _ in range(n):
                rel = f"{folder}/image_{k:04d}.jpg"
                _jpeg(os.path.join(img_dir, rel), seed=k)
                split[part].append([rel, label, cname])
                k += 1
    return split


@pytest.mark.parametrize(
    "name,folder,image_dir,split_file",
    [
        ("caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
        ("dtd", "dtd", "images", "split_zhou_DescribableTextures.json"),
        ("eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json"),
        ("food101", "food-101", "images", "split_zhou_Food101.json"),
        ("oxford_flowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
        ("oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
        ("stanford_cars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
        ("sun397", "sun397", "SUN397", "split_zhou_SUN397.json"),
        ("ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    ],
)
@pytest.mark.parametrize("json_inside", [False, True])
def test_coop_layouts(tmp_path, name, folder, image_dir, split_file, json_inside):
    ds = tmp_path / folder
    img = ds / image_dir if image_dir else ds
    split = _coop_split(str(img), [("Faces", "face"), ("leopards", "leopard"), ("a_b", "a b")])
    _write(str((img if json_inside else ds) / split_file), json.dumps(split))
    for part, n in (("train", 6), ("val", 3), ("test", 3)):
        s = cgd.get_dataset(name, tmp_path, part)
        assert isinstance(s, ImageSplit) and len(s) == n and s.split == part
        assert s.classnames == ["face", "leopard", "a b"]
        assert s.items == [r[0] for r in split[part]]
        assert s.labels.tolist() == [r[1] for r in split[part]]
        assert not s.missing_files()
    _decodes(cgd.get_dataset(name, tmp_path, "test"))
    # The dataset folder itself is accepted as root, too.
    assert len(cgd.get_dataset(name, ds, "train")) == 6
    task = cgd.get_task(name, tmp_path)
    assert (task.query.split, task.gallery.split, task.relevance) == ("test", "train", "label")
    assert not task.exclude_self


def test_shared_data_caltech_layout(tmp_path):
    """The shared data's layout: <root>/caltech101/{101_ObjectCategories/, split json}."""
    ds = tmp_path / "caltech101"
    split = _coop_split(str(ds / "101_ObjectCategories"), [("Faces", "face")])
    _write(str(ds / "split_zhou_Caltech101.json"), json.dumps(split))
    assert len(cgd.get_dataset("caltech101", tmp_path, "test")) == 1


def test_coop_wrong_root_names_layout(tmp_path):
    (tmp_path / "caltech-101").mkdir()
    with pytest.raises(DatasetLayoutError) as e:
        cgd.get_dataset("caltech101", tmp_path, "test")
    msg = str(e.value)
    assert "split_zhou_Caltech101.json" in msg and "101_ObjectCategories" in msg
    assert str(tmp_path / "caltech-101") in msg
    with pytest.raises(ValueError, match="valid splits"):
        cgd.get_dataset("caltech101", tmp_path, "bogus")


def test_fgvc_aircraft(tmp_path):
    d = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "Cessna 172"]
    _write(str(d / "variants.txt"), "\n".join(variants) + "\n")
    rows = {"train": ["1025794 707-320", "1340192 Cessna 172"], "val": ["0056978 A300B4"],
            "test": ["0062765 Cessna 172", "1025795 707-320"]}
    for part, lines in rows.items():
        _write(str(d / f"images_variant_{part}.txt"), "\n".join(lines) + "\n")
        for ln in lines:
            _jpeg(str(d / "images" / f"{ln.split()[0]}.jpg"))
    s = cgd.get_dataset("fgvc_aircraft", tmp_path, "test")
    assert s.items == ["0062765.jpg", "1025795.jpg"] and s.labels.tolist() == [2, 0]
    assert s.classnames == variants
    _decodes(s)
    with pytest.raises(ValueError, match="train, val, test|test, train, val"):
        cgd.get_dataset("fgvc_aircraft", tmp_path, "trainval")


def test_imagenet_coop_layout(tmp_path):
    d = tmp_path / "imagenet"
    _write(str(d / "classnames.txt"), "n01440764 tench\nn01443537 goldfish\n")
    for part in ("train", "val"):
        for w in ("n01440764", "n01443537"):
            for k in range(2):
                _jpeg(str(d / "images" / part / w / f"{w}_{part}{k}.JPEG"))
    tr = cgd.get_dataset("imagenet", tmp_path, "train")
    te = cgd.get_dataset("imagenet", tmp_path, "test")
    assert len(tr) == 4 and len(te) == 4 and te.split == "test"
    assert te.classnames == ["tench", "goldfish"] and te.labels.tolist() == [0, 0, 1, 1]
    assert te.items[0] == "n01440764/n01440764_val0.JPEG"
    _decodes(te)


def test_imagenet_ilsvrc_flat_val(tmp_path):
    d = tmp_path / "imagenet"
    base = d / "ILSVRC" / "Data" / "CLS-LOC"
    for w in ("n01440764", "n01443537"):
        _jpeg(str(base / "train" / w / f"{w}_1.JPEG"))
    _jpeg(str(base / "val" / "ILSVRC2012_val_00000001.JPEG"))
    _jpeg(str(base / "val" / "ILSVRC2012_val_00000002.JPEG"))
    _write(str(d / "LOC_val_solution.csv"),
           "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n"
           "ILSVRC2012_val_00000002,n01440764 1 2 3 4 n01440764 5 6 7 8\n")
    te = cgd.get_dataset("imagenet", tmp_path, "test")
    assert te.items == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    assert te.labels.tolist() == [1, 0] and te.classnames == ["n01440764", "n01443537"]


def test_cub(tmp_path):
    d = tmp_path / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    _write(str(d / "classes.txt"), "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    imgs, labs, tts = [], [], []
    for i in range(6):
        c = classes[i % 2]
        rel = f"{c}/{c.split('.')[1]}_{i:04d}.jpg"
        _jpeg(str(d / "images" / rel), seed=i)
        imgs.append(f"{i + 1} {rel}\n")
        labs.append(f"{i + 1} {i % 2 + 1}\n")
        tts.append(f"{i + 1} {int(i < 3)}\n")
    _write(str(d / "images.txt"), "".join(imgs))
    _write(str(d / "image_class_labels.txt"), "".join(labs))
    _write(str(d / "train_test_split.txt"), "".join(tts))
    s = cgd.get_dataset("cub2011", tmp_path)
    assert s.split == "all" and len(s) == 6 and s.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert s.classnames == ["Black footed Albatross", "Laysan Albatross"]
    assert len(cgd.get_dataset("cub2011", tmp_path, "train")) == 3
    _decodes(s)
    task = cgd.get_task("cub2011", tmp_path)
    assert task.exclude_self and task.query is task.gallery
    assert task.positives(0).tolist() == [2, 4]


def test_sop(tmp_path):
    d = tmp_path / "Stanford_Online_Products"
    lines = ["image_id class_id super_class_id path"]
    for i, (cls, sup, folder) in enumerate([(11319, 1, "bicycle_final"),
                                            (11319, 1, "bicycle_final"),
                                            (11320, 2, "cabinet_final")]):
        rel = f"{folder}/{cls}_{i}.JPG"
        _jpeg(str(d / rel), seed=i)
        lines.append(f"{i + 1} {cls} {sup} {rel}")
    _write(str(d / "Ebay_test.txt"), "\n".join(lines) + "\n")
    s = cgd.get_dataset("sop", tmp_path)
    assert s.split == "test" and s.labels.tolist() == [11319, 11319, 11320]
    assert s.groups.tolist() == [0, 0, 1]
    assert s.extra["superclass_names"] == ["bicycle", "cabinet"]
    _decodes(s)
    task = cgd.get_task("sop", tmp_path)
    assert task.exclude_self and task.positives(0).tolist() == [1]


def _revisitop(tmp_path, name="roxford5k"):
    d = tmp_path / name
    imlist = [f"all_souls_{i:06d}" for i in range(5)]
    qimlist = ["all_souls_q0", "radcliffe_q1"]
    for n in imlist + qimlist:
        _jpeg(str(d / "jpg" / f"{n}.jpg"), size=(40, 30))
    gnd = [{"bbx": [4.0, 3.0, 20.0, 18.0], "easy": [0, 1], "hard": [2], "junk": [4]},
           {"bbx": [0.0, 0.0, 10.0, 10.0], "easy": [3], "hard": [], "junk": []}]
    with open(d / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return d


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_revisitop(tmp_path, name):
    _revisitop(tmp_path, name)
    task = cgd.get_task(name, tmp_path)
    assert len(task.query) == 2 and len(task.gallery) == 5 and task.relevance == "revisitop"
    assert task.positives(0, "medium").tolist() == [0, 1, 2]
    assert task.ignored(0, "hard").tolist() == [0, 1, 4]
    assert task.query.open_image(0).size == (40, 30)  # the authors did not crop
    cropped = cgd.get_dataset(name, tmp_path, "query", crop_queries=True)
    assert cropped.open_image(0).size == (16, 15)
    assert cropped.open_image(0, draft_size=8).size == (16, 15)  # crop wins over draft


def test_imagefolder(tmp_path):
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            for k in range(2):
                _jpeg(str(tmp_path / split / c / f"{k}.png"))
    s = cgd.get_dataset("imagefolder", tmp_path, "test")
    assert s.items == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    assert s.classnames == ["cat", "dog"]
    task = cgd.get_task("imagefolder", tmp_path)
    assert (task.query.split, task.gallery.split) == ("test", "train")
    flat = tmp_path / "train"
    task = cgd.get_task("imagefolder", flat)
    assert task.query.split == "all" and task.exclude_self
    qg = tmp_path / "qg"
    for split in ("query", "gallery"):
        _jpeg(str(qg / split / "cat" / "0.jpg"))
    task = cgd.get_task("imagefolder", qg)
    assert (task.query.split, task.gallery.split, task.exclude_self) == ("query", "gallery", False)


# ----------------------------------------------------------------------------- captions


def test_karpathy_json(tmp_path):
    images = []
    for i, split in enumerate(["test", "test", "val", "train", "restval"]):
        sents = [{"raw": f" caption {i}.{k} "} for k in range(6 if i == 0 else 5)]
        images.append({"filepath": "val2014", "filename": f"COCO_val2014_{i:012d}.jpg",
                       "split": split, "sentences": sents, "cocoid": i})
    _write(str(tmp_path / "coco" / "dataset_coco.json"), json.dumps({"images": images}))
    s = cgd.get_dataset("coco_text", tmp_path, "test")
    assert len(s) == 11  # every caption by default (image 0 has 6), as the authors
    assert s.items[0] == "COCO_val2014_000000000000#0" and s.texts[0] == "caption 0.0"
    assert len(cgd.get_dataset("coco_text", tmp_path, "test", captions_per_image=5)) == 10
    assert len(cgd.get_dataset("coco_text", tmp_path, "train")) == 10  # train + restval
    task = cgd.get_task("coco_text", tmp_path)
    assert len(task.query) == 2 and len(task.gallery) == 9 and task.relevance == "group"
    assert task.positives(1).tolist() == [5, 6, 7, 8]


def test_flickr_karpathy_json_default_val(tmp_path):
    images = [{"filename": f"{100 + i}.jpg", "split": sp,
               "sentences": [{"raw": f"c{i}{k}"} for k in range(5)]}
              for i, sp in enumerate(["val", "test", "val"])]
    _write(str(tmp_path / "flickr30k" / "dataset_flickr30k.json"), json.dumps({"images": images}))
    task = cgd.get_task("flickr30k_text", tmp_path)
    assert task.query.items == ["100#0", "102#0"] and len(task.gallery) == 8


def test_caption_lines_file(tmp_path):
    lines = [f"image {i // 5} caption {i % 5}" for i in range(15)]
    _write(str(tmp_path / "coco_karpathy" / "test5k_captions.txt"), "\n".join(lines) + "\n")
    task = cgd.get_task("coco_text", tmp_path)
    assert task.query.texts == ["image 0 caption 0", "image 1 caption 0", "image 2 caption 0"]
    assert len(task.gallery) == 12 and task.gallery.items[0] == "00000#1"
    _write(str(tmp_path / "bad.txt"), "a\nb\nc\n")
    with pytest.raises(ValueError, match="multiple of 5"):
        cgd.get_dataset("coco_text", tmp_path, "test", captions_file="bad.txt")


def test_nocaps_json(tmp_path):
    data = {
        "images": [{"id": 0, "file_name": "0013ea2087020901.jpg", "domain": "in-domain"},
                   {"id": 1, "file_name": "00223d6a2d8e5d0e.jpg", "domain": "out-domain"}],
        "annotations": [{"image_id": i, "id": 100 * i + (9 - k), "caption": f"im{i} c{9 - k}"}
                        for i in range(2) for k in range(10)],
    }
    _write(str(tmp_path / "nocaps" / "nocaps_val_4500_captions.json"), json.dumps(data))
    s = cgd.get_dataset("nocaps_text", tmp_path)
    assert s.split == "val" and len(s) == 20  # all 10 captions by default
    assert s.items[0] == "0013ea2087020901#0" and s.texts[0] == "im0 c0"  # ordered by id
    assert s.extra["domains"] == ["in-domain", "out-domain"]
    task = cgd.get_task("nocaps_text", tmp_path)
    assert len(task.query) == 2 and len(task.gallery) == 18


def test_captions_wrong_root(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        cgd.get_dataset("coco_text", tmp_path, "test")
    assert "dataset_coco.json" in str(e.value) and "test5k_captions.txt" in str(e.value)


# ----------------------------------------------------------------------------- IMDB


def test_imdb_acl_folders(tmp_path):
    for part in ("train", "test"):
        for pol in ("neg", "pos"):
            for i in (10, 2):
                _write(str(tmp_path / "aclImdb" / part / pol / f"{i}_{7 if pol == 'pos' else 2}"
                           ".txt"), f"{part} {pol} {i} <br />")
    _write(str(tmp_path / "aclImdb" / "train" / "unsup" / "0_0.txt"), "unlabelled")
    s = cgd.get_dataset("imdb_text", tmp_path)
    assert s.split == "all" and len(s) == 8
    assert s.items[:2] == ["train/neg/2_2.txt", "train/neg/10_2.txt"]  # numeric id order
    assert s.labels.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert len(cgd.get_dataset("imdb_text", tmp_path, "test")) == 4
    task = cgd.get_task("imdb_text", tmp_path)
    assert task.query.texts == ["a positive review of a movie.", "a negative review of a movie."]
    assert task.positives(0).tolist() == [2, 3, 6, 7]


def test_imdb_csv(tmp_path):
    os.makedirs(tmp_path / "imdb")
    with open(tmp_path / "imdb" / "IMDB Dataset.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        w.writerow(["Great, \"multi\"\nline film", "positive"])
        w.writerow(["Awful", "negative"])
    s = cgd.get_dataset("imdb_text", tmp_path)
    assert s.texts == ["Great, \"multi\"\nline film", "Awful"] and s.labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match="only the split 'all'"):
        cgd.get_dataset("imdb_text", tmp_path, "test")


# ----------------------------------------------------------------------------- 20 Newsgroups


def _mini_newsgroups(base):
    groups = ["sci.space", "alt.atheism", "rec.autos"]
    for part, n in (("train", 4), ("test", 3)):
        for g in groups:
            for k in range(n):
                # latin-1 bytes that are not valid UTF-8
                data = f"From: x\n\n{part} {g} {k} caf\xe9".encode("latin-1")
                p = base / f"20news-bydate-{part}" / g / str(50000 + 7 * k)
                os.makedirs(p.parent, exist_ok=True)
                p.write_bytes(data)
    return groups


@pytest.mark.parametrize("subset", ["test", "train", "all"])
def test_newsgroups_matches_sklearn(tmp_path, subset):
    """Order, labels and texts equal sklearn's fetch_20newsgroups on the same folders."""
    import codecs

    sk = pytest.importorskip("sklearn.datasets")
    from sklearn.datasets._base import _pkl_filepath

    _mini_newsgroups(tmp_path / "20newsgroups")
    home = tmp_path / "skl_home"
    home.mkdir()
    cache = {p: sk.load_files(str(tmp_path / "20newsgroups" / f"20news-bydate-{p}"),
                              encoding="latin1") for p in ("train", "test")}
    with open(_pkl_filepath(str(home), "20news-bydate.pkz"), "wb") as f:
        f.write(codecs.encode(pickle.dumps(cache), "zlib_codec"))
    ref = sk.fetch_20newsgroups(data_home=str(home), subset=subset, download_if_missing=False)
    s = cgd.get_dataset("newsgroup_text", tmp_path, subset)
    assert s.texts == list(ref.data)
    assert s.labels.tolist() == ref.target.tolist()
    assert s.classnames == list(ref.target_names)
    ref_items = ["/".join(p.split(os.sep)[-3:]).replace("20news-bydate-", "")
                 for p in ref.filenames]
    assert s.items == ref_items
    assert "café" in s.texts[0]


def test_newsgroups_queries(tmp_path):
    _mini_newsgroups(tmp_path)
    q = cgd.get_dataset("newsgroup_text", tmp_path, "queries")
    assert len(q) == 20 and q.texts[0] == "a post about atheism."
    assert q.labels.tolist() == list(range(20))
    assert all(t.startswith("a post about") for t in q.texts)
    assert len(set(q.texts)) == 20
    custom = cgd.get_dataset("newsgroup_text", tmp_path, "queries",
                             descriptions={"sci.space": "outer space"})
    assert "outer space" in custom.texts


# ----------------------------------------------------------------------------- BEIR / CISI


def _beir_jsonl(d):
    _write(str(d / "corpus.jsonl"),
           "".join(json.dumps(r) + "\n" for r in [{"_id": "d1", "title": "T1", "text": "one"},
                                                   {"_id": "d2", "title": "", "text": "two"},
                                                   {"_id": "d3", "text": "three"}]))
    _write(str(d / "queries.jsonl"),
           "".join(json.dumps(r) + "\n" for r in [{"_id": "q1", "text": "first?"},
                                                   {"_id": "q2", "text": "second?"},
                                                   {"_id": "q3", "text": "unjudged"}]))
    _write(str(d / "qrels" / "test.tsv"), "query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td1\t2\n"
           "q2\td3\t0\n")


def test_beir_jsonl_generic_and_named(tmp_path):
    _beir_jsonl(tmp_path / "NanoSciFact")
    task = cgd.get_task("nanoscifact", tmp_path)
    assert task.query.items == ["q1", "q2"]  # q3 has no qrels
    assert task.gallery.texts == ["T1 one", "two", "three"]
    assert task.positives(0).tolist() == [1] and task.positives(1).tolist() == [0]
    assert task.qrels["q2"] == {"d1": 2, "d3": 0}
    g = cgd.get_task("beir", tmp_path / "NanoSciFact", include_title=False)
    assert g.gallery.texts[0] == "one"
    q = cgd.get_dataset("beir", tmp_path / "NanoSciFact", "queries", keep_unjudged_queries=True)
    assert len(q) == 3


def test_nanobeir_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    d = tmp_path / "NanoNFCorpus"
    for what, table in {
        "corpus": {"_id": ["MED-1", "MED-2"], "text": ["aspirin", "statins"]},
        "queries": {"_id": ["PLAIN-1"], "text": ["heart"]},
        "qrels": {"query-id": ["PLAIN-1"], "corpus-id": ["MED-2"]},
    }.items():
        os.makedirs(d / what)
        pq.write_table(pa.table(table), str(d / what / "train-00000-of-00001.parquet"))
    task = cgd.get_task("nanonfcorpus", tmp_path)
    assert task.gallery.items == ["MED-1", "MED-2"] and task.positives(0).tolist() == [1]
    assert [e.found for e in cgd.list_datasets(tmp_path) if e.name == "nanonfcorpus"] == [str(d)]
    # The sentence-transformers "-bm25" variant: relevance/ with lists of positive ids.
    os.remove(d / "qrels" / "train-00000-of-00001.parquet")
    os.makedirs(d / "relevance")
    pq.write_table(pa.table({"query-id": ["PLAIN-1"], "positive-corpus-ids": [["MED-1"]],
                             "bm25-ranked-ids": [["MED-1", "MED-2"]]}),
                   str(d / "relevance" / "train-00000-of-00001.parquet"))
    assert cgd.get_task("nanonfcorpus", tmp_path).positives(0).tolist() == [0]


def test_cisi_miniature(tmp_path):
    d = tmp_path / "cisi"
    _write(str(d / "CISI.ALL"), ".I 1\n.T\nTitle one\n.A\nAuthor\n.W\n   Abstract\nline two\n"
           ".X\n1 5 1\n.I 2\n.T\nTitle two\n.W\nSecond.\n")
    _write(str(d / "CISI.QRY"), ".I 1\n.W\nWhat is one?\n.I 2\n.T\nQ2 title\n.W\nTwo?\n")
    _write(str(d / "CISI.REL"), "     1     2\t0\t0.000000\n")
    task = cgd.get_task("cisi", tmp_path)
    assert task.gallery.texts == ["Title one Abstract line two", "Title two Second."]
    assert task.query.items == ["1"] and task.positives(0).tolist() == [1]


# ----------------------------------------------------------------------------- generic text


def test_jsonl_and_replacements(tmp_path):
    p = tmp_path / "texts.jsonl"
    _write(str(p), "".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "text": "alpha", "label": "x"}, {"id": "b", "text": "beta", "label": "y"},
        {"id": "c", "text": "gamma", "label": "x"}]))
    s = cgd.get_dataset("jsonl", p)
    assert s.classnames == ["x", "y"] and s.labels.tolist() == [0, 1, 0]
    task = cgd.get_task("jsonl", p)
    assert task.exclude_self and task.positives(0).tolist() == [2]
    rep_json = tmp_path / "summaries.json"
    _write(str(rep_json), json.dumps({"b": "BETA (summary)"}))
    rep_jsonl = tmp_path / "summaries.jsonl"
    _write(str(rep_jsonl), json.dumps({"_id": "c", "summary": "G"}) + "\n")
    assert cgd.load_text_replacements(rep_json) == {"b": "BETA (summary)"}
    assert cgd.load_text_replacements(rep_jsonl) == {"c": "G"}
    t = cgd.get_task("jsonl", p, replacements=str(rep_json))
    assert t.gallery.texts == ["alpha", "BETA (summary)", "gamma"]
    assert t.query.texts == ["alpha", "beta", "gamma"]  # only the gallery is replaced
    s2 = cgd.get_dataset("jsonl", p, replacements={"c": "G"})
    assert isinstance(s2, TextSplit) and s2.texts[2] == "G"


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_listing(tmp_path):
    expected_image = {"cub2011", "roxford5k", "rparis6k", "sop", "caltech101", "dtd", "eurosat",
                      "fgvc_aircraft", "food101", "imagenet", "oxford_flowers", "oxford_pets",
                      "stanford_cars", "sun397", "ucf101", "places365", "inaturalist2021"}
    expected_text = {"coco_text", "flickr30k_text", "nocaps_text", "imdb_text", "newsgroup_text",
                     "nanoclimatefever", "nanodbpedia", "nanofever", "nanonfcorpus", "nanonq",
                     "nanoscidocs", "nanoscifact", "cisi"}
    assert set(cgd.IMAGE_DATASETS) == expected_image
    assert set(cgd.TEXT_DATASETS) == expected_text
    entries = {e.name: e for e in cgd.list_datasets(tmp_path)}
    # Only the data shipped inside the package (the demo's) is found without a root.
    assert all(e.found is None for n, e in entries.items() if not cgd.dataset_info(n).packaged)
    assert {n for n in entries if cgd.dataset_info(n).packaged} == {"demo_caltech101",
                                                                     "demo_caltech101_text"}
    assert entries["caltech101"].query_split == "test"
    assert entries["cub2011"].gallery_split == "all"
    assert cgd.dataset_info("CUB").name == "cub2011"
    assert cgd.dataset_info("20newsgroups").name == "newsgroup_text"
    with pytest.raises(KeyError, match="unknown dataset"):
        cgd.get_dataset("nope", tmp_path)


def test_root_from_env(tmp_path, monkeypatch):
    ds = tmp_path / "caltech101"
    split = _coop_split(str(ds / "101_ObjectCategories"), [("Faces", "face")])
    _write(str(ds / "split_zhou_Caltech101.json"), json.dumps(split))
    monkeypatch.setenv("CROSSGAP_SHARED_DATA", str(tmp_path))
    assert len(cgd.get_dataset("caltech101", split="train")) == 2
    monkeypatch.delenv("CROSSGAP_SHARED_DATA")
    with pytest.raises(ValueError, match="CROSSGAP_SHARED_DATA"):
        cgd.get_dataset("caltech101", split="train")


def test_missing_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        cgd.get_dataset("cub2011", tmp_path / "nope")


@pytest.mark.parametrize("name,needle", [
    ("cub2011", "image_class_labels.txt"), ("sop", "Ebay_test.txt"),
    ("roxford5k", "gnd_roxford5k.pkl"), ("imagenet", "classnames.txt"),
    ("fgvc_aircraft", "variants.txt"), ("imdb_text", "aclImdb"),
    ("newsgroup_text", "20news-bydate-test"), ("nanofever", "NanoFEVER"), ("cisi", "CISI.REL"),
])
def test_wrong_root_messages(tmp_path, name, needle):
    with pytest.raises(DatasetLayoutError) as e:
        cgd.get_dataset(name, tmp_path)
    assert needle in str(e.value) and str(tmp_path) in str(e.value)
