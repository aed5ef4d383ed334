"""``compare --layout isoclip`` end to end on the tiny model over tiny Places365 and
iNaturalist 2021 mini datasets (IsoCLIP's layouts, all vs all): every cell, average and
``summary.csv`` field recomputed here from the run's cached features with a brute-force
ranking (NumPy IsoCLIP and centring)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from support.run_oracles import cached_features, inverted_features, ref_isoclip, stack_rows

ISO = (3, 40)
# IsoCLIP's summary.csv header (simomagi/IsoCLIP src/retrieval.py: its parser's arguments in
# order, then metric_keys_master, folder_path, timestamp), then our row name.
ISOCLIP_HEADER = (
    ["dataroot", "dataset_name", "clip_model_name", "query_eval_type", "gallery_eval_type",
     "no_iso", "iso_ktop", "iso_kbottom", "query_split", "gallery_split", "use_open_clip",
     "open_clip_pretrained", "out_path", "mAP", "mAP_at_R", "precision_at_R", "recall_at_1",
     "mAP_easy", "mAP_medium", "mAP_hard", "mP@1_easy", "mP@1_medium", "mP@1_hard",
     "mP@5_easy", "mP@5_medium", "mP@5_hard", "mP@10_easy", "mP@10_medium", "mP@10_hard",
     "folder_path", "timestamp"] + ["method"])


def _jpeg(path, rgb, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 200, (16, 16, 3))  # dominates the class
    Image.fromarray(np.clip(np.array(rgb) // 4 + noise, 0, 255).astype(np.uint8)).save(path)


COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (180, 180, 40)]


def _datasets(root):
    """Tiny Places365 (IsoCLIP's val_large + places365_val.txt) and iNaturalist 2021 mini
    (annotations/train_mini.json); returns {dataset: {item: label}}."""
    places = {}
    for i in range(9):
        f, y = f"Places365_val_{i + 1:08d}.jpg", i % 3
        _jpeg(str(root / "Places365_val" / "val_large" / f), COLORS[y], i)
        places[f] = y
    (root / "Places365_val" / "places365_val.txt").write_text(
        "".join(f"{f} {y}\n" for f, y in places.items()))
    base = root / "iNaturalist2021_train"
    images, anns, inat = [], [], {}
    for i in range(8):
        y = (i * 3) % 4
        fn = f"train_mini/{y:05d}_sp/{i:04x}.jpg"
        _jpeg(str(base / fn), COLORS[y], 100 + i)
        images.append({"id": 50 + i, "file_name": fn})
        anns.append({"id": i, "image_id": 50 + i, "category_id": y})
        inat[fn] = y
    (base / "annotations").mkdir()
    (base / "annotations" / "train_mini.json").write_text(json.dumps(
        {"images": images, "annotations": anns[::-1],
         "categories": [{"id": c, "name": f"sp_{c}"} for c in range(4)]}))
    return {"places365": places, "inaturalist2021": inat}


def _brute(q, g, y):
    """Queries ``q`` against the gallery ``g`` of the same items, item i left out of query
    i's gallery (all vs all): mAP, mAP@R, P@R, R@1 in percent, ties pessimistic."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    s = q @ g.T
    out = {"mAP": [], "mAP_at_R": [], "precision_at_R": [], "recall_at_1": []}
    for i in range(len(q)):
        others = [j for j in range(len(g)) if j != i]
        order = sorted(others, key=lambda j: (-s[i, j], y[j] == y[i]))
        rel = np.array([y[j] == y[i] for j in order])
        r = int(rel.sum())
        ranks = np.flatnonzero(rel) + 1
        prec = np.arange(1, r + 1) / ranks
        out["mAP"].append(prec.mean())
        out["mAP_at_R"].append(prec[ranks <= r].sum() / r)
        out["precision_at_R"].append((ranks <= r).sum() / r)
        out["recall_at_1"].append(float(rel[0]))
    return {k: 100 * float(np.mean(v)) for k, v in out.items()}


@pytest.mark.slow
def test_compare_isoclip_layout_recomputed(tiny_ckpt, tmp_path):
    from crossgap_jax.cli import main
    from crossgap_jax.models import create_clip

    truth = _datasets(tmp_path)
    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    assert main(["--quiet", "compare", "--datasets", "places365,inaturalist2021", "--model",
                 "tiny", "--checkpoint", tiny_ckpt, "--data-root", str(tmp_path), "--run-dir",
                 str(run_dir), "--batch-size", "8", "--methods", "image,oti,isoclip,centered,text",
                 "--oti-steps", "2", "--isoclip-k", "3,40", "--layout", "isoclip",
                 "--output", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    wi, wt = (np.asarray(a, np.float64) for a in create_clip("tiny", seed=3)
              .projection_matrices())
    split = {"places365": "val", "inaturalist2021": "train_mini"}
    want: dict[str, dict[str, dict[str, float]]] = {}
    for ds, labels in truth.items():
        emb = cached_features(run_dir, ds, split[ds], True)
        pre = cached_features(run_dir, ds, split[ds], False)
        items = sorted(labels)
        assert sorted(emb) == items  # every image is a query and the gallery
        y = np.array([labels[i] for i in items])
        x = stack_rows(emb, items)
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        oti = stack_rows(inverted_features(run_dir, "oti", ds, split[ds]), items)
        feats = {"image": x, "oti": oti,
                 "isoclip": ref_isoclip(stack_rows(pre, items), wi, wt, *ISO, "image"),
                 "centered": u - u.mean(0)}
        want[ds] = {}
        for row, f in feats.items():
            # OTI queries against the image gallery; the others alike on both sides
            want[ds][row] = _brute(f, x if row == "oti" else f, y)
            cell = res["datasets"][ds]["cells"][row]
            for ours, theirs in (("mAP", "mAP"), ("mAP@R", "mAP_at_R"), ("P@R", "precision_at_R"),
                                 ("R@1", "recall_at_1")):
                assert cell["metrics"][ours] == pytest.approx(want[ds][row][theirs], abs=1e-4), \
                    (ds, row, ours)
        assert "text-side method" in res["datasets"][ds]["cells"]["text"]["skipped"]
    # the table: one line per row with a value, averages over the two datasets
    table = (run_dir / "compare" / "table.md").read_text()
    keys = ("mAP", "mAP_at_R", "precision_at_R", "recall_at_1")
    for row in ("image", "oti", "isoclip", "centered"):
        vals = [f"{want[ds][row][k]:.2f}" for ds in truth for k in keys]
        avg = [f"{np.mean([want[ds][row][k] for ds in truth]):.2f}" for k in keys]
        assert f"| {row} | " + " | ".join(vals + avg) + " |" in table, row
    assert "| text |" not in table and "left out):\n- text: text-side method; " in table
    assert "| method | places365 mAP | places365 mAP@R | places365 P@R | places365 R@1 |" in table
    # summary.csv: IsoCLIP's columns, one row per dataset and method
    with open(run_dir / "compare" / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ISOCLIP_HEADER
        rows = list(reader)
    assert [(r["dataset_name"], r["method"]) for r in rows] == [
        (ds, m) for ds in truth for m in ("image", "oti", "isoclip", "centered")]
    for r in rows:
        w = want[r["dataset_name"]][r["method"]]
        for k in keys:
            assert float(r[k]) == pytest.approx(w[k], abs=1e-4)
        iso = r["method"] == "isoclip"
        assert (r["no_iso"], r["iso_ktop"], r["iso_kbottom"]) == (
            (str(not iso), "3", "40") if iso else ("True", "-1", "-1"))
        assert r["query_eval_type"] == r["method"]
        assert r["gallery_eval_type"] == ("image" if r["method"] == "oti" else r["method"])
        assert r["query_split"] == r["gallery_split"] == split[r["dataset_name"]]
        assert r["dataroot"] == str(tmp_path) and r["clip_model_name"] == "tiny"
        assert r["mAP_easy"] == r["out_path"] == ""


def test_isoclip_values_revisitop_and_bad_layout():
    from crossgap_jax.pipeline.layouts import isoclip_values
    from crossgap_jax.pipeline.methods import check_methods, method_spec

    assert isoclip_values({"mAP_easy": 61.5, "mAP_medium": 40.0}) == {
        "mAP": 61.5, "mAP_at_R": None, "precision_at_R": None, "recall_at_1": None}
    assert method_spec("oti") == ("image", "oti", "image")
    assert method_spec("isotropic-window") == ("both", "isotropic-window", "isotropic-window")
    check_methods(["image", "isotropic-window"])  # any feature type is a method
    with pytest.raises(ValueError, match="unknown method 'isoclp'; did you mean 'isoclip'"):
        check_methods(["isoclp"])


def test_isoclip_table_says_why_rows_are_left_out():
    from crossgap_jax.pipeline.layouts import isoclip_table

    metrics = {"mAP": 50.0, "mAP@R": 40.0, "P@R": 45.0, "R@1": 60.0}
    cells = {"image": {"value": 50.0, "metrics": metrics},
             "pca": {"skipped": "pca needs --pca-k K[,K...]"},
             "text": {"skipped": "text-side method; a is an image retrieval task"}}
    other = dict(cells, text={"skipped": "text-side method; b is an image retrieval task"})
    res = {"rows": ["image", "pca", "text"],
           "datasets": {"a": {"cells": cells}, "b": {"cells": other}}}
    table = isoclip_table(res)
    assert "| image | 50.00 | 40.00 | 45.00 | 60.00 | 50.00 | 40.00 | 45.00 | 60.00 | 50.00 " \
        "| 40.00 | 45.00 | 60.00 |" in table
    assert table.endswith("Rows without a value on any dataset (left out):\n"
                          "- pca: pca needs --pca-k K[,K...]\n"
                          "- text: text-side method; a is an image retrieval task / "
                          "text-side method; b is an image retrieval task\n")
