"""Every number ``reproduce`` / ``classify`` report equals the reference protocol's.

Tiny-model runs through the package's pipeline (the CLI, in process) on real Caltech101,
COCO and CISI subsets, a miniature all-vs-all (CUB-like) layout and a miniature revisitop
layout with +1M-style distractors; then ``tests/support/reference_protocol.py`` (plain NumPy written
from PAPER.md, importing nothing of the package) recomputes each reported metric from the
features the run cached and the ground truth read from the dataset files, to 1e-6.

IsoCLIP retrieval / NCM and the summaries-replaced texts are covered by their own test files
(``test_isoclip*.py``, ``test_authors_assets*.py``); the helpers here take any run folder.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from support import reference_protocol as ref
from support.reference_protocol import assert_reproduce_matches_reference

from crossgap_jax.cli import main


def _args(tiny_ckpt, data_root, run_dir, *extra):
    return ["--quiet", *extra, "--model", "tiny", "--checkpoint", tiny_ckpt, "--data-root",
            str(data_root), "--run-dir", str(run_dir), "--batch-size", "8", "--oti-steps", "3",
            "--ovi-steps", "2"]


def _reproduce(tiny_ckpt, data_root, run_dir, datasets, *extra) -> dict:
    argv = _args(tiny_ckpt, data_root, run_dir, "reproduce", "--datasets", datasets)
    assert main([*argv, *extra]) == 0
    return json.loads((run_dir / "metrics.json").read_text())


def _check_recorded(run_dir, metrics, variant, reduction="per_example"):
    """The switches are in metrics.json, table.md and the reproduce records."""
    cfg = metrics["config"]
    settings = [json.loads(p.read_text())["provenance"]["settings"]
                for p in (run_dir / "records").glob("reproduce-*.json")]
    assert {"metric_variant": variant, "loss_reduction": reduction}.items() <= max(
        (s for s in settings if s["metric_variant"] == variant
         and s["loss_reduction"] == reduction), key=len).items()
    assert cfg["metric_variant"] == metrics["metric_variant"] == variant
    assert cfg["loss_reduction"] == metrics["loss_reduction"] == reduction
    table = (run_dir / "table.md").read_text()
    assert f"Metric variant: `{variant}`" in table and f"loss reduction: `{reduction}`" in table
    for entry in metrics["datasets"].values():
        b = entry["baseline"].get("mAP", entry["baseline"].get("mAP_medium"))
        i = entry["inverted"].get("mAP", entry["inverted"].get("mAP_medium"))
        assert f"| {b:.2f} | {i:.2f} |" in table
        assert entry["baseline"].get("metric_variant", variant) == variant


# ---------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_label_caption_qrels_both_variants(tiny_ckpt, shared_data, tmp_path):
    run_dir = tmp_path / "run"
    # A gallery smaller than the query set: --max-gallery gives one positive per query while
    # it can, so with 6 items some of the 12 queries keep none (the case the variants differ on).
    limits = ("--max-queries", "12", "--max-gallery", "6")
    std = _reproduce(tiny_ckpt, shared_data, run_dir, "caltech101,coco_text,cisi", *limits)
    _check_recorded(run_dir, std, "standard")
    assert_reproduce_matches_reference(run_dir, shared_data, "standard")
    # The CISI and Caltech101 subsets have queries without any relevant item: left out by the
    # definition.
    assert std["datasets"]["cisi"]["baseline"]["num_evaluated"] < 12
    assert std["datasets"]["caltech101"]["baseline"]["num_evaluated"] < 12
    # Same features and inversions, the authors' metric variant (reuses the cache).
    auth = _reproduce(tiny_ckpt, shared_data, run_dir, "caltech101,coco_text,cisi", *limits,
                      "--metric-variant", "authors")
    _check_recorded(run_dir, auth, "authors")
    assert_reproduce_matches_reference(run_dir, shared_data, "authors")
    cisi_std, cisi_auth = std["datasets"]["cisi"]["baseline"], auth["datasets"]["cisi"]["baseline"]
    n_eval = cisi_std["num_evaluated"]
    assert cisi_auth["mAP"] == pytest.approx(cisi_std["mAP"] * n_eval / 12, abs=1e-9)
    # Not all-vs-all: per query, mAP@R is the same under both variants (only the zeros of
    # the queries without a positive join the authors' mean).
    cal_std, cal_auth = (r["datasets"]["caltech101"]["baseline"] for r in (std, auth))
    assert cal_auth["mAP@R"] == pytest.approx(
        cal_std["mAP@R"] * cal_std["num_evaluated"] / 12, abs=1e-9)


def _jpeg(path, seed, size=(36, 28)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, 1, 3))  # a colour per image plus noise
    arr = np.clip(base + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG")


def _mini_cub(root) -> str:
    """CUB-200-2011 layout: 3 classes with 4, 3 and 1 images (the last: no positive once the
    query itself is removed)."""
    d = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    per_class = [4, 3, 1]
    imgs, labs, tts = [], [], []
    k = 0
    for c, (cname, n) in enumerate(zip(classes, per_class)):
        for _ in range(n):
            k += 1
            rel = f"{cname}/{cname.split('.')[1]}_{k:04d}.jpg"
            _jpeg(str(d / "images" / rel), seed=k)
            imgs.append(f"{k} {rel}\n")
            labs.append(f"{k} {c + 1}\n")
            tts.append(f"{k} {k % 2}\n")
    os.makedirs(d, exist_ok=True)
    (d / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    (d / "images.txt").write_text("".join(imgs))
    (d / "image_class_labels.txt").write_text("".join(labs))
    (d / "train_test_split.txt").write_text("".join(tts))
    return str(d)


@pytest.mark.slow
def test_all_vs_all_both_variants(tiny_ckpt, tmp_path):
    data = tmp_path / "data"
    cub = _mini_cub(data)
    run_dir = tmp_path / "run"
    labels = ref.cub_labels(cub)
    results = {}
    for variant in ("standard", "authors"):
        m = _reproduce(tiny_ckpt, data, run_dir, "cub2011", "--metric-variant", variant)
        _check_recorded(run_dir, m, variant)
        fs = ref.feature_file(str(run_dir), "cub2011", split="all")
        rel = ref.relevance_from_keys([labels[i] for i in fs["items"]],
                                      [labels[i] for i in fs["items"]])
        oti = ref.rows(ref.inverted(str(run_dir), "oti", "cub2011", "all"), fs["items"])
        for side, qf in (("baseline", fs["features"]), ("inverted", oti)):
            want = ref.retrieval_metrics(qf, fs["features"], rel, exclude_self=True,
                                         variant=variant)
            ref.assert_close(m["datasets"]["cub2011"][side], want, where=f"cub/{side}/{variant}")
        results[variant] = m["datasets"]["cub2011"]["baseline"]
    std, auth = results["standard"], results["authors"]
    assert std["num_evaluated"] == 7 and auth["num_evaluated"] == 8  # the singleton class
    # mAP: the same per-query values, one extra zero in the authors' mean.
    assert auth["mAP"] == pytest.approx(std["mAP"] * 7 / 8, abs=1e-9)


def _mini_revisitop(root, name="roxford5k", distractors=3) -> dict:
    d = root / name
    imlist = [f"all_souls_{i:06d}" for i in range(6)]
    qimlist = ["all_souls_q0", "radcliffe_q1", "magdalen_q2"]
    for s, n in enumerate(imlist + qimlist):
        _jpeg(str(d / "jpg" / f"{n}.jpg"), seed=100 + s)
    gnd = [{"bbx": [1.0, 1.0, 20.0, 18.0], "easy": [0, 1], "hard": [2], "junk": [4]},
           {"bbx": [0.0, 0.0, 10.0, 10.0], "easy": [3], "hard": [5], "junk": []},
           {"bbx": [0.0, 0.0, 10.0, 10.0], "easy": [], "hard": [1, 4], "junk": [0]}]
    cfg = {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}
    with open(d / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(cfg, f)
    for k in range(distractors):
        _jpeg(str(root / "revisitop1m" / "jpg" / f"{k % 2:03d}" / f"d{k}.jpg"), seed=500 + k)
    return cfg


def test_revisitop_with_distractors(tiny_ckpt, tmp_path):
    data = tmp_path / "data"
    cfg = _mini_revisitop(data)
    run_dir = tmp_path / "run"
    m = _reproduce(tiny_ckpt, data, run_dir, "roxford5k")  # crashed before (issue 11, item 7)
    _check_recorded(run_dir, m, "standard")
    entry = m["datasets"]["roxford5k"]
    gnd = ref.revisitop_gnd(str(data / "roxford5k" / "gnd_roxford5k.pkl"))["gnd"]
    q = ref.feature_file(str(run_dir), "roxford5k", split="query")
    g = ref.feature_file(str(run_dir), "roxford5k", split="gallery+1m")
    # The gallery: the imlist in order, then every revisitop1m/jpg/*/*.jpg.
    assert g["items"][:6] == cfg["imlist"] and len(g["items"]) == 9
    assert q["items"] == cfg["qimlist"]
    oti = ref.rows(ref.inverted(str(run_dir), "oti", "roxford5k", "query"), q["items"])
    for side, qf in (("baseline", q["features"]), ("inverted", oti)):
        want = ref.revisitop_metrics(qf, g["features"], gnd)
        ref.assert_close(entry[side], want, where=f"roxford5k/{side}")
    assert entry["baseline"]["gallery_size"] == 9 and entry["baseline"]["num_distractors"] == 3
    table = (run_dir / "table.md").read_text()
    assert "roxford5k (Medium; +1M distractors, gallery 9)" in table
    # The distractors matter: without them the numbers are those of the 6-image gallery.
    m0 = _reproduce(tiny_ckpt, data, tmp_path / "run0", "roxford5k", "--revisitop1m", "none")
    g0 = ref.feature_file(str(tmp_path / "run0"), "roxford5k", split="gallery")
    ref.assert_close(m0["datasets"]["roxford5k"]["baseline"],
                     ref.revisitop_metrics(q["features"], g0["features"], gnd))
    assert "roxford5k (Medium; gallery 6)" in (tmp_path / "run0" / "table.md").read_text()


@pytest.mark.slow
def test_zero_shot_variants(tiny_ckpt, shared_data, tmp_path, monkeypatch):
    """inter / OTI / OVI zero-shot accuracies, and the texts that went into them: class
    names with ``_`` replaced by a space, CoOp's prompt for the classifier, the authors' OVI
    template ``"a photo of {}"`` for the inverted class prompts."""
    from crossgap_jax.pipeline import run as run_mod

    seen = []
    original = run_mod.Run.features

    def spy(self, split, template="{}", project=True):
        if split.modality == "text":
            seen.append((list(split.texts), template))
        return original(self, split, template=template, project=project)

    monkeypatch.setattr(run_mod.Run, "features", spy)
    run_dir = tmp_path / "run"
    argv = _args(tiny_ckpt, shared_data, run_dir, "classify", "--dataset", "caltech101",
                 "--max-queries", "10")
    assert main(argv) == 0
    (record,) = (run_dir / "records").glob("classify-*.json")
    res = json.loads(record.read_text())["results"]
    labels, classnames = ref.coop_split(
        os.path.join(shared_data, "caltech101", "split_zhou_Caltech101.json"))
    assert any("_" in c for c in classnames)  # the real names have underscores
    cleaned = [c.replace("_", " ") for c in classnames]
    assert (cleaned, "a photo of a {}.") in seen and (cleaned, "a photo of {}") in seen
    assert res["prompt"] == "a photo of a {}." and res["ovi_prompt"] == "a photo of {}"

    coop = ref.feature_file(str(run_dir), "caltech101-classnames", template="a photo of a {}.")
    ovi_in = ref.feature_file(str(run_dir), "caltech101-classnames", template="a photo of {}")
    assert ovi_in["items"] == coop["items"] == [f"class{k:05d}" for k in range(100)]
    want = ref.expected_zero_shot(run_dir, str(shared_data))
    for variant in ("inter", "oti", "ovi"):
        ref.assert_close(res[variant], want[variant], where=variant)
    assert res["inter"]["num_samples"] == 10
