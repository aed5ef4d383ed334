"""Readers and images at the edges (issue #22, items 2 and 3): byte-order marks, qrels
outside the corpus, nested / empty class folders, class-name and label files, decompression
bombs and EXIF orientation. Every expected value is computed here from the layout."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

import crossgap_jax.data as cgd
from crossgap_jax import retrieval
from crossgap_jax.data.decoding import EXIF_ORIENTATION, ImageDecodeError, open_image
from crossgap_jax.data.loader import ImageBatchLoader

BOM = "\ufeff"


def _write(path, text, bom=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write((BOM if bom else "") + text)


def _beir(d, bom=False, qrels=None):
    _write(os.path.join(d, "corpus.jsonl"), "".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n" for i in range(4)),
        bom)
    _write(os.path.join(d, "queries.jsonl"), "".join(
        json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(3)), bom)
    _write(os.path.join(d, "qrels", "test.tsv"), qrels or (
        "q0\td0\t1\nq0\td1\t1\nq1\td2\t1\nq2\td3\t1\nq2\td1\t1\n"), bom)
    return str(d)


def _oracle_ap(scores, relevant_idx, r_total):
    """Brute force: AP over the full ranking (ties: pessimistic), R = r_total."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j in relevant_idx))
    hits, total = 0, 0.0
    for rank, j in enumerate(order, 1):
        if j in relevant_idx:
            hits += 1
            total += hits / rank
    return total / r_total if r_total else 0.0


def _features(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def test_bom_qrels_jsonl_give_the_same_task_and_numbers(tmp_path):
    plain = cgd.get_task("beir", _beir(tmp_path / "plain"))
    bom = cgd.get_task("beir", _beir(tmp_path / "bom", bom=True))
    assert bom.query.items == plain.query.items == ["q0", "q1", "q2"]
    assert bom.gallery.items == plain.gallery.items
    assert bom.qrels == plain.qrels
    qf, gf = _features(3, 0), _features(4, 1)
    res = []
    for task in (plain, bom):
        res.append(retrieval.evaluate(qf, gf, task.relevant(), backend="numpy"))
    assert res[0] == res[1] and res[0]["num_evaluated"] == 3


def test_bom_split_json_gives_the_same_split(tmp_path):
    rows = {"train": [["a/1.jpg", 0, "a"], ["b/1.jpg", 1, "b"]],
            "val": [["a/2.jpg", 0, "a"]], "test": [["b/2.jpg", 1, "b"], ["a/3.jpg", 0, "a"]]}
    out = []
    for bom in (False, True):
        d = tmp_path / str(bom) / "caltech-101"
        os.makedirs(d / "101_ObjectCategories")
        _write(str(d / "split_zhou_Caltech101.json"), json.dumps(rows), bom)
        out.append(cgd.get_dataset("caltech101", tmp_path / str(bom), "test"))
    assert out[0].items == out[1].items == ["b/2.jpg", "a/3.jpg"]
    assert out[0].labels.tolist() == out[1].labels.tolist() == [1, 0]
    assert out[0].classnames == out[1].classnames == ["a", "b"]


def test_bom_labels_and_classnames_files(tmp_path):
    for c in ("x",):
        os.makedirs(tmp_path / "all" / c)
    for i in range(2):
        Image.new("RGB", (4, 4)).save(tmp_path / f"img{i}.png")
    _write(str(tmp_path / "labels.txt"), "img0.png n00000001\nimg1.png n00000002\n", bom=True)
    _write(str(tmp_path / "names.txt"), "n00000001 cat, feline\nn00000002\tdog\n", bom=True)
    s = cgd.get_dataset(f"imagefolder?labels={tmp_path / 'labels.txt'}&classnames="
                        f"{tmp_path / 'names.txt'}", tmp_path, "all")
    assert sorted(s.items) == ["img0.png", "img1.png"]
    assert s.classnames == ["cat", "dog"]


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_qrels_missing_count_matches_a_brute_force_oracle(tmp_path, backend):
    qrels = "q0\td0\t1\nq0\tgone1\t1\nq1\td2\t1\nq1\tgone2\t2\nq1\tgone3\t0\nq2\tgone4\t1\n"
    d = _beir(tmp_path, qrels=qrels)
    qf, gf = _features(3, 2), _features(4, 3)
    scores = (qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ (
        gf / np.linalg.norm(gf, axis=1, keepdims=True)).T
    rel = {0: {0}, 1: {2}, 2: set()}
    absent = {0: 1, 1: 1, 2: 1}  # gone3 scores 0: not relevant
    for mode in ("drop", "count"):
        task = cgd.get_task("beir", d, qrels_missing=mode)
        a = task.qrels_audit
        assert (a.judged_pairs, a.relevant_pairs, a.zero_score_pairs, a.outside_pairs,
                a.outside_relevant_pairs, a.queries_all_outside) == (6, 5, 1, 4, 3, 1)
        assert a.outside_examples[:2] == ("q0 -> gone1", "q1 -> gone2")
        relevant = task.relevant()
        per = retrieval.evaluate_per_query(qf, gf, relevant, backend=backend)
        for i in range(3):
            r = len(rel[i]) + (absent[i] if mode == "count" else 0)
            assert per["num_relevant"][i] == r
            assert per["AP"][i] == pytest.approx(_oracle_ap(scores[i], rel[i], r), abs=1e-6)
        summary = retrieval.evaluate(qf, gf, relevant, backend=backend)
        want = [_oracle_ap(scores[i], rel[i], len(rel[i]) + absent[i]) for i in range(3)]
        if mode == "drop":
            want = want_drop = [_oracle_ap(scores[i], rel[i], len(rel[i])) for i in (0, 1)]
        assert summary["num_evaluated"] == len(want)
        assert summary["mAP"] == pytest.approx(100 * np.mean(want), abs=1e-4)
    assert want_drop  # both modes ran


def test_duplicate_qrels_lines_keep_the_last_score_and_are_counted(tmp_path):
    d = _beir(tmp_path, qrels="q0\td0\t1\nq0\td0\t0\nq1\td2\t1\nq2\td3\t1\nq2\td3\t2\n")
    task = cgd.get_task("beir", d, check=False)
    assert task.qrels["q0"] == {"d0": 0} and task.qrels["q2"] == {"d3": 2}
    assert task.qrels_audit.duplicate_pairs == 2
    assert task.positive_counts().tolist() == [0, 1, 1]


def test_imagefolder_walks_sub_folders_and_refuses_empty_classes(tmp_path, caplog):
    for rel in ("a/1.png", "a/deep/er/2.png", "b/3.png", "b/x/4.png"):
        os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / rel)
    s = cgd.get_dataset("imagefolder", tmp_path, "all")
    assert s.items == ["a/1.png", "a/deep/er/2.png", "b/3.png", "b/x/4.png"]
    assert s.labels.tolist() == [0, 0, 1, 1] and s.extra["from_subfolders"] == 2
    os.makedirs(tmp_path / "c" / "sub")  # a class folder without images
    with pytest.raises(cgd.DatasetLayoutError, match=r"c\b.*empty_classes=skip"):
        cgd.get_dataset("imagefolder", tmp_path, "all")
    with caplog.at_level(logging.WARNING):
        s = cgd.get_dataset("imagefolder?empty_classes=skip", tmp_path, "all")
    assert s.classnames == ["a", "b"] and s.extra["empty_classes_skipped"] == ["c"]
    assert "left out" in caplog.text


def test_wordnet_ids_warn_and_classnames_file_names_them(tmp_path, caplog):
    for c in ("n03444034", "n02123045"):
        os.makedirs(tmp_path / c)
        Image.new("RGB", (4, 4)).save(tmp_path / c / "1.png")
    with caplog.at_level(logging.WARNING):
        s = cgd.get_dataset("imagefolder", tmp_path, "all")
    assert s.classnames == ["n02123045", "n03444034"] and "WordNet ids" in caplog.text
    names = tmp_path.parent / "words.txt"
    _write(str(names), "n03444034\tgo-kart\nn02123045\ttabby, tabby cat\nn0\tunused\n")
    s = cgd.get_dataset(f"imagefolder?classnames={names}", tmp_path, "all")
    assert s.classnames == ["tabby", "go-kart"]
    _write(str(names), "n03444034\tcrane\nn02123045\tcrane, bird\n")
    s = cgd.get_dataset(f"imagefolder?classnames={names}", tmp_path, "all")
    assert s.classnames == ["crane (n02123045)", "crane (n03444034)"]
    _write(str(names), "n03444034\tgo-kart\n")
    with pytest.raises(cgd.DataFileError, match="no name for 1 of 2 classes"):
        cgd.get_dataset(f"imagefolder?classnames={names}", tmp_path, "all")


def test_labels_file_with_box_columns(tmp_path):
    """Tiny-ImageNet's val_annotations.txt: file, label, then four box numbers."""
    lines = []
    for i in range(8):
        Image.new("RGB", (4, 4)).save(tmp_path / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\tn0000000{i % 2}\t{i}\t{i + 1}\t{i + 2}\t{i + 3}\n")
    _write(str(tmp_path / "ann.txt"), "".join(lines))
    s = cgd.get_dataset(f"imagefolder?labels={tmp_path / 'ann.txt'}", tmp_path, "all")
    assert s.labels.tolist() == [i % 2 for i in range(8)]
    assert s.extra["distinct_labels"] == 2 and "field 2" in s.extra["label_rule"]
    s3 = cgd.get_dataset(f"imagefolder?labels={tmp_path / 'ann.txt'}&label_column=3",
                         tmp_path, "all")
    assert s3.extra["distinct_labels"] == 8 and "field 3" in s3.extra["label_rule"]
    # space-separated extra columns: the default (rest of the line) is named in the refusal
    _write(str(tmp_path / "ann2.txt"), "".join(ln.replace("\t", " ") for ln in lines))
    q = cgd.get_dataset(f"imagefolder?labels={tmp_path / 'ann2.txt'}", tmp_path, "all")
    assert q.extra["distinct_labels"] == 8
    g = cgd.get_dataset(f"imagefolder?labels={tmp_path / 'ann.txt'}", tmp_path, "all")
    task = cgd.RetrievalTask("t", q, g, "label")
    with pytest.raises(cgd.DegenerateTaskError, match="8 distinct labels for 8 images.*"
                       "label_column=K"):
        task.check_informative()
    fixed = cgd.get_dataset(f"imagefolder?labels={tmp_path / 'ann2.txt'}&label_column=2",
                            tmp_path, "all")
    assert fixed.labels.tolist() == s.labels.tolist()


def _split(paths, **kw):
    return cgd.ImageSplit(name="t", split="all", items=[os.path.basename(p) for p in paths],
                          paths=[str(p) for p in paths], **kw)


def test_decompression_bomb_is_skipped_or_named(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100 x 100 > 2 x 1000
    split = _split([tmp_path / "bomb.png", tmp_path / "ok.png"])
    loader = ImageBatchLoader(split, 2, image_size=8, num_threads=1)
    batches = list(loader)
    rep = loader.report()
    assert (rep["skipped"], rep["decoded"], rep["skipped_names"]) == (1, 1, ["bomb.png"])
    assert batches[0].mask.tolist() == [False, True]
    with pytest.raises(ImageDecodeError) as e:
        list(ImageBatchLoader(split, 2, image_size=8, num_threads=1, on_error="raise"))
    msg = str(e.value)
    assert "bomb.png" in msg and "MAX_IMAGE_PIXELS" in msg and "2,000" in msg
    assert "\n" not in msg


def _oriented_jpeg(path, orientation):
    im = Image.new("RGB", (20, 10))
    im.paste((255, 0, 0), (0, 0, 5, 10))  # a red band on the left
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, quality=95, exif=exif)


@pytest.mark.parametrize("fast", [False, True])
def test_exif_orientation_counted_and_applied_on_request(tmp_path, fast):
    _oriented_jpeg(tmp_path / "turned.jpg", 6)
    Image.new("RGB", (20, 10)).save(tmp_path / "plain.jpg")
    paths = [tmp_path / "turned.jpg", tmp_path / "plain.jpg"]
    with Image.open(paths[0]) as ref_im:
        ref_raw = np.asarray(ref_im.convert("RGB"))
        ref_up = np.asarray(ImageOps.exif_transpose(ref_im).convert("RGB"))
    for transpose, want in ((False, ref_raw), (True, ref_up)):
        split = _split(paths, exif_transpose=transpose)
        img = split.open_image(0, draft_size=4 if fast else None)
        if not fast:
            np.testing.assert_array_equal(np.asarray(img), want)
        assert img.size == want.shape[1::-1] or fast
        assert img.info[EXIF_ORIENTATION] == 6
        loader = ImageBatchLoader(split, 2, image_size=8, num_threads=1, fast_decode=fast)
        list(loader)
        rep = loader.report()
        assert (rep["exif_oriented"], rep["exif_oriented_names"], rep["exif_transpose"]) == (
            1, ["turned.jpg"], transpose)
    assert EXIF_ORIENTATION not in open_image(paths[1]).info


def test_qrels_audit_reaches_the_record_and_the_table(tmp_path):
    from crossgap_jax.pipeline.measure import evaluate_task
    from crossgap_jax.pipeline.report import qrels_note
    from crossgap_jax.pipeline.store import FeatureSet

    d = _beir(tmp_path, qrels="q0\td0\t1\nq0\tgone\t1\nq1\td2\t1\nq1\td1\t0\nq2\td3\t1\n")
    for mode, rule in (("drop", "left out of R"), ("count", "counted in R")):
        task = cgd.get_task("beir", d, qrels_missing=mode)
        m = evaluate_task(task, FeatureSet(task.query.items, _features(3, 0), {}, {}),
                          FeatureSet(task.gallery.items, _features(4, 1), {}, {}))
        assert m["qrels_missing"] == mode
        assert (m["qrels_audit"]["outside_pairs"], m["qrels_audit"]["zero_score_pairs"],
                m["qrels_audit"]["outside_examples"]) == (1, 1, ["q0 -> gone"])
        note = qrels_note(m)
        assert note.startswith("Qrels: 1 of 5 judged pairs point outside the corpus "
                               "(e.g. q0 -> gone)") and rule in note


def test_exif_orientation_reaches_the_record_and_the_table(tmp_path, tiny_ckpt):
    """Through ``encode``: the record counts the oriented image, the table line says whether
    it was turned, and the stored features equal an independent encoding of the image as
    stored (default) or turned upright by PIL (``--exif-transpose``)."""
    from crossgap_jax.cli import main
    from crossgap_jax.models import load_clip
    from crossgap_jax.pipeline.report import provenance_header
    from crossgap_jax.pipeline.store import load_features

    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    _oriented_jpeg(root / "a" / "turned.jpg", 6)
    Image.new("RGB", (20, 10), (0, 0, 255)).save(root / "b" / "plain.jpg")
    clip = load_clip(tiny_ckpt)
    for transpose, words in ((False, "encoded as stored"), (True, "turned upright")):
        run_dir = tmp_path / f"run{int(transpose)}"
        assert main(["--quiet", "encode", "--dataset", "imagefolder", "--data-root", str(root),
                     "--checkpoint", tiny_ckpt, "--run-dir", str(run_dir), "--batch-size", "2",
                     *(["--exif-transpose"] if transpose else [])]) == 0
        (record,) = (run_dir / "records").glob("encode-*.json")
        prov = json.loads(record.read_text())["provenance"]
        assert prov["data"]["imagefolder/all"]["exif_oriented"] == 1
        assert prov["settings"]["exif_transpose"] is transpose
        assert f"1 image with an EXIF orientation, {words}" in provenance_header(prov, "t")
        (feats,) = (run_dir / "features" / "imagefolder").glob("*.npz")
        fs = load_features(str(feats))
        assert fs.oriented == {"a/turned.jpg": 6}
        with Image.open(root / "a" / "turned.jpg") as im:
            im = ImageOps.exif_transpose(im) if transpose else im
            want = clip.encode_image(clip.preprocess([im.convert("RGB")]))
        np.testing.assert_allclose(fs.features[fs.items.index("a/turned.jpg")],
                                   np.asarray(want)[0], rtol=1e-5, atol=1e-6)


def _tiny_imagenet(root):
    """Tiny-ImageNet's layout in small: train/<wnid>/images/*.JPEG (+ a boxes file),
    val/images/*.JPEG with val/val_annotations.txt (file, wnid, box), an unlabelled
    test/images/, and words.txt naming the wnids."""
    wnids = ["n01443537", "n02085620"]
    rng = np.random.default_rng(0)
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        (root / "train" / w / f"{w}_boxes.txt").write_text("x\t0\t0\t1\t1\n")
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
                root / "train" / w / "images" / f"{w}_{i}.JPEG", format="JPEG")
    (root / "val" / "images").mkdir(parents=True)
    (root / "test" / "images").mkdir(parents=True)
    ann = []
    for i, w in enumerate([wnids[0], wnids[1], wnids[1], wnids[0]]):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
            root / "val" / "images" / f"val_{i}.JPEG", format="JPEG")
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
            root / "test" / "images" / f"test_{i}.JPEG", format="JPEG")
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\n"
                                    "n02085620\tChihuahua\nn09999999\tunused\n")
    return wnids


def test_tiny_imagenet_layout_val_queries_against_train(tmp_path):
    """The labels file inside val/ labels val only (train keeps its class folders); the
    task defaults to val queries against the train gallery (so does a query split given
    alone); labels match an oracle built from the files, names from words.txt."""
    wnids = _tiny_imagenet(tmp_path)
    ann = tmp_path / "val" / "val_annotations.txt"
    name = f"imagefolder?labels={ann}&classnames={tmp_path / 'words.txt'}"
    for query_split in (None, "val"):
        task = cgd.get_task(name, str(tmp_path), query_split=query_split)
        assert (task.query.split, task.gallery.split) == ("val", "train")
        names = {"n01443537": "goldfish", "n02085620": "Chihuahua"}
        q_cls = [task.query.classnames[k] for k in task.query.labels]
        g_cls = [task.gallery.classnames[k] for k in task.gallery.labels]
        assert dict(zip(task.query.items, q_cls)) == {
            f"images/val_{i}.JPEG": names[w]
            for i, w in enumerate([wnids[0], wnids[1], wnids[1], wnids[0]])}
        assert dict(zip(task.gallery.items, g_cls)) == {
            f"{w}/images/{w}_{i}.JPEG": names[w] for w in wnids for i in range(3)}
    # the relevance a metric sees: same readable class on both sides
    rel = task.query.labels[:, None] == task.gallery.labels[None, :]
    assert rel.sum(1).tolist() == [3, 3, 3, 3]


def test_unknown_reader_options_are_refused_by_name(tmp_path):
    """An option the reader does not take (on the name or as a keyword) is a ValueError that
    names it and the valid ones, from get_dataset and get_task alike."""
    _tiny_imagenet(tmp_path)
    for call in (lambda: cgd.get_dataset("imagefolder?bogus=1", str(tmp_path), "train"),
                 lambda: cgd.get_task("imagefolder", str(tmp_path), gallery_spilt="train")):
        with pytest.raises(ValueError, match=r"imagefolder: unknown option '(bogus|"
                           r"gallery_spilt)'.*its options: labels, label_column, "
                           r"classnames, empty_classes, replacements"):
            call()


def test_reproduce_keeps_the_qrels_audit(tmp_path, tiny_ckpt):
    """``reproduce`` on a qrels task: the record, metrics.json and table.md carry the audit
    of judged pairs outside the corpus (they used to reach stderr only)."""
    from crossgap_jax.cli import main

    d = _beir(tmp_path / "beir", qrels="q0\td0\t1\nq0\tgone\t1\nq1\td2\t1\nq2\td3\t1\n")
    run_dir = tmp_path / "run"
    assert main(["--quiet", "reproduce", "--datasets", "beir", "--data-root", d,
                 "--checkpoint", tiny_ckpt, "--run-dir", str(run_dir), "--ovi-steps", "2",
                 "--oti-steps", "2", "--batch-size", "4"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for side in ("baseline", "inverted"):
        m = metrics["datasets"]["beir"][side]
        assert (m["qrels_missing"], m["qrels_audit"]["outside_pairs"],
                m["qrels_audit"]["outside_examples"]) == ("drop", 1, ["q0 -> gone"])
    table = (run_dir / "table.md").read_text()
    assert "- `beir`: Qrels: 1 of 4 judged pairs point outside the corpus (e.g. q0 -> gone)" \
        in table
