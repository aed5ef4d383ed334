"""Issue 22 item 9: what a reader sees. ``reproduce``'s table gives each gain's 95% interval
(the numbers of metrics.json), ``indicators`` prints a provenance-headed table of its
fields, figures name model and dataset, ``list`` says when no data root is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support.tiny_models import tiny_clip

from crossgap_jax import __version__
from crossgap_jax.pipeline import provenance, report
from crossgap_jax.retrieval import INDICATOR_FIELDS, misalignment_indicators

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _prov():
    return {"model": "ViT-X", "pretrained": None, "checkpoint": "x", "checkpoint_sha256": "cd" * 32,
            "preset": "clip_vitb32", "settings": {"oti_steps": 5},
            "subset": {"max_queries": None, "max_gallery": None}, "text_sources": {},
            "version": __version__}


def test_reproduce_table_gives_each_gain_with_the_interval_of_metrics_json(tmp_path):
    m = {"mAP": 40.0, "num_queries": 50, "num_evaluated": 50, "num_skipped_no_relevant": 0,
         "num_query_items_missing": 0}
    res = report.summarize({"provenance": _prov(), "datasets": {
        "caltech101": {"modality": "image", "baseline": dict(m), "inverted": dict(m, mAP=42.5),
                       "difference": 2.5, "ci95": [0.123456, 4.987654]},
        "cisi": {"modality": "text", "baseline": dict(m), "inverted": dict(m, mAP=38.0),
                 "difference": -2.0, "ci95": [-3.5, -0.25]},
        "roxford5k": {"modality": "image", "baseline": {"mAP_medium": 30.0},
                      "inverted": {"mAP_medium": 31.0}, "difference": 1.0, "ci95": None}}})
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(res))  # as reproduce writes it
    saved = json.loads(path.read_text())
    table = report.results_table(saved)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and " vs " in line}
    for ds in ("caltech101", "cisi"):
        lo, hi = saved["datasets"][ds]["ci95"]
        assert rows[ds][5] == f"[{lo:+.2f}, {hi:+.2f}]"
        assert rows[ds][4] == f"{saved['datasets'][ds]['difference']:+.2f}"
    assert rows["caltech101"][5] == "[+0.12, +4.99]" and rows["cisi"][5] == "[-3.50, -0.25]"
    (rox,) = [r for k, r in rows.items() if k.startswith("roxford5k")]
    assert rox[5] == "-"
    assert "| gain | gain 95% interval |" in table and "paired bootstrap" in table


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from crossgap_jax.pipeline.presets import preset
    from crossgap_jax.pipeline.run import Run
    from crossgap_jax.pipeline.settings import RunSettings

    return Run(str(tmp_path_factory.mktemp("run")),
               RunSettings(preset("clip_vitb32", model="tiny")),
               tiny_clip(3), progress=False)


def test_indicators_table_says_what_each_field_is(tiny_run):
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(12, 8)), rng.normal(size=(3, 8))
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    ind = misalignment_indicators(x, y, text=t, text_labels=np.arange(3))
    ind["oti-image"] = ind["image-image"]  # a third pair type, as the pipeline names it
    res = {"dataset": "toy", "split": "test", "num_classes": 3, "indicators": ind,
           "figure": "f.png"}
    table = report.indicators_table(provenance(tiny_run), res)
    assert table.startswith("# Misalignment indicators\n") and "model: `tiny`" in table
    assert f"crossgap_jax {__version__}" in table and "checkpoint sha256" in table
    rows = [line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| pair type")]
    got = {(r[0].strip("| "), r[1]): (r[2], r[3].rstrip(" |")) for r in rows}
    for pair in ("image-image", "text-image", "oti-image"):
        assert got[(pair, "overlap")] == (f"{ind[pair]['overlap']:.4f}",
                                          INDICATOR_FIELDS["overlap"])
        assert got[(pair, "AUROC")] == (f"{ind[pair]['auroc']:.4f}", INDICATOR_FIELDS["auroc"])
        same = ind[pair]["same"]
        assert got[(pair, "same-class pairs")][0] == (
            f"{same['count']} (cosine {same['mean']:.4f} +- {same['std']:.4f})")
    # 12 images in 3 classes of 4: 3 * 6 same-class and 66 - 18 different-class pairs
    assert got[("image-image", "same-class pairs")][0].startswith("18 (")
    assert got[("image-image", "different-class pairs")][0].startswith("48 (")
    assert got[("text-image", "modality gap")] == (
        f"{ind['modality_gap']['text-image']:.4f}", INDICATOR_FIELDS["modality_gap"])
    c = ind["closer_to_other_class"]
    assert got[("image-image", "closer to another class")][0].startswith(f"{c['fraction']:.4f} ")


def test_analysis_figures_name_model_and_dataset(tmp_path, monkeypatch):
    from crossgap_jax.pipeline import analyze

    titles = []
    monkeypatch.setattr(analyze, "save_figure",
                        lambda fig, path, dpi: titles.append(fig._suptitle.get_text()))
    result = {"dataset": "caltech101", "model": "ViT-B/32", "baseline_mAP": 40.0,
              "curves": {"R=1": {"steps": [1, 2], "mAP": [41.0, 42.0]}},
              "mean_loss": {"R=1": [0.5, 0.4]}, "modality_gap": {"image-text": 0.8},
              "distributions": {}}
    analyze.plot_analysis(result, str(tmp_path))
    assert titles == ["ViT-B/32 on caltech101"] * 3


def test_indicator_figure_names_model_and_dataset(tmp_path, monkeypatch):
    from PIL import Image

    from crossgap_jax.pipeline import baselines
    from crossgap_jax.pipeline.presets import preset
    from crossgap_jax.pipeline.run import Run
    from crossgap_jax.pipeline.settings import RunSettings

    rng = np.random.default_rng(1)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / c / f"{i}.png")
    run = Run(str(tmp_path / "run"), RunSettings(preset("clip_vitb32", model="tiny")),
              tiny_clip(3), data_root=str(tmp_path / "imgs"), progress=False)
    seen = []
    monkeypatch.setattr(baselines, "plot_indicators",
                        lambda res, path, title: seen.append(title) or path)
    res = baselines.indicators(run, "imagefolder", pairs=("image-image",))
    assert seen == [f"tiny on imagefolder ({res['split']})"]


def test_list_says_no_data_root_was_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CROSSGAP_SHARED_DATA"}
    out = subprocess.run([sys.executable, "-m", "crossgap_jax.cli", "list"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("datasets (no data root set: pass --data-root or set $CROSSGAP_SHARED_DATA; only "
            "the packaged ones are found):") in out.stdout
    out = subprocess.run([sys.executable, "-m", "crossgap_jax.cli", "list", "--data-root",
                          str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert f"datasets (found under the data root {tmp_path}):" in out.stdout


def test_table_header_names_the_jax_settings():
    """The JAX settings of the record (``provenance["jax"]``, from ``jax_numerics``) appear in
    the table header as one line."""
    from crossgap_jax.inversion import jax_numerics
    from crossgap_jax.pipeline.report import provenance_header

    jx = jax_numerics()
    head = provenance_header({"settings": {}, "jax": jx}, "t").splitlines()
    want = (f"- JAX {jx['jax_version']}: backend `{jx['backend']}` ({jx['device_kind']}), "
            f"x64 {'on' if jx['jax_enable_x64'] else 'off'}, matmul precision "
            f"{jx['jax_default_matmul_precision'] or 'default'}")
    assert want in head
    assert not any(line.startswith("- JAX") for line in
                   provenance_header({"settings": {}}, "t").splitlines())


def test_data_lines_name_root_fingerprint_and_image_notes():
    """Each split's data line: root, fingerprint, item count, and the counts a reader must
    see (EXIF orientation, images from sub-folders, empty class folders left out)."""
    from crossgap_jax.pipeline.report import _data_lines

    data = {"imagefolder/train": {"root": "/d/train", "mode": "stat", "digest": "ab" * 16,
                                  "num_items": 6, "exif_oriented": 1, "from_subfolders": 6,
                                  "empty_classes_skipped": ["n0", "n1"]},
            "x-classnames/classes": {"root": None, "mode": "texts", "digest": "cd" * 16,
                                     "num_items": 2}}
    assert _data_lines(data) == [
        "- data `imagefolder/train`: root `/d/train`, fingerprint `stat:abababababababab` "
        "(6 items); 1 image with an EXIF orientation, encoded as stored (the authors' "
        "default; --exif-transpose turns them); 6 images from sub-folders of class folders; "
        "empty class folders left out: n0, n1",
        "- data `x-classnames/classes`: root `none (texts made here)`, fingerprint "
        "`texts:cdcdcdcdcdcdcdcd` (2 items)"]
    assert "turned upright (--exif-transpose)" in _data_lines(data, exif_transpose=True)[0]
