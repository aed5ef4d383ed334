"""The CLI as a user meets it (issue 13 items 1, 3, 4, 5, 9): every command on the shipped
demo model given by ``--checkpoint FILE`` alone or ``--pretrained demo``, per-command
records that nothing else rewrites, 0644 result files, ``--output``, ``--quiet``, and
tables that name what produced them (published rows only beside their own model)."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from crossgap_jax import __version__
from crossgap_jax.cli import main
from crossgap_jax.demo import DEMO_CHECKPOINT
from crossgap_jax.models import create_clip
from crossgap_jax.models.checkpoint.native import native_config, save_native
from crossgap_jax.models.checkpoint.pretrained import OPENAI_RELEASES, openai_release
from crossgap_jax.pipeline import report, tasks
from crossgap_jax.pipeline import run as runmod
from crossgap_jax.pipeline.presets import preset
from crossgap_jax.pipeline.published import PUBLISHED, published_for

DEMO_ARCH = native_config(DEMO_CHECKPOINT).name  # whatever model the shipped file holds


@pytest.fixture(autouse=True)
def _offline_umask(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """A generic image folder (no split sub-folders): 3 classes x 4 random images."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for c in ("cat", "dog", "fox"):
        (root / c).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _record(run_dir, command):
    (path,) = sorted((run_dir / "records").glob(f"{command}-*.json"))
    return path, json.loads(path.read_text())


@pytest.mark.slow
def test_every_command_on_the_demo_model(imagefolder, shared_data, tmp_path, capsys):
    run = tmp_path / "run"
    out = tmp_path / "out"
    folder = ["--data-root", str(imagefolder), "--run-dir", str(run)]
    ckpt = ["--checkpoint", DEMO_CHECKPOINT]  # alone: no --model, no --preset
    demo = ["--pretrained", "demo"]
    steps = ["--batch-size", "8", "--oti-steps", "2"]

    assert main(["--quiet", "encode", "--dataset", "imagefolder", *ckpt, *folder]) == 0
    assert main(["--quiet", "oti", "--dataset", "imagefolder", *demo, *folder, *steps]) == 0
    assert main(["--quiet", "ovi", "--dataset", "coco_text", *ckpt, "--data-root",
                 str(shared_data), "--run-dir", str(run), "--max-queries", "3",
                 "--max-gallery", "6", "--batch-size", "8", "--ovi-steps", "2"]) == 0
    capsys.readouterr()

    # retrieve: a printed table; all-vs-all folder: both caps apply to the one set.
    assert main(["--quiet", "retrieve", "--dataset", "imagefolder", "--query-type", "oti",
                 *demo, *folder, *steps, "--max-queries", "6", "--max-gallery", "5",
                 "--output", str(out / "retrieve.json")]) == 0
    printed = capsys.readouterr().out
    assert "| imagefolder | oti -> image | all/all |" in printed
    _, rec = _record(run, "retrieve")
    res = rec["results"]
    assert res["num_queries"] == 5 and res["num_gallery"] == 5
    # Brute force: a query is skipped when no other chosen item shares its class.
    from crossgap_jax.data import get_task

    task = tasks.limit_task(get_task("imagefolder", str(imagefolder)), 6, 5, seed=0)
    labels = np.asarray(task.query.labels)
    no_pos = sum(int((labels == lab).sum() == 1) for lab in labels)
    assert res["num_skipped_no_relevant"] == no_pos
    assert res["num_evaluated"] == 5 - no_pos
    assert f"| {5 - no_pos}/5 | {no_pos} | 0 | 5 |" in printed

    # retrieve --split: the split whose captions are used.
    assert main(["--quiet", "retrieve", "--dataset", "coco_text", "--split", "test", *demo,
                 "--data-root", str(shared_data), "--run-dir", str(tmp_path / "coco"),
                 "--max-queries", "3", "--max-gallery", "9"]) == 0
    _, rec = _record(tmp_path / "coco", "retrieve")
    assert rec["results"]["query_split"] == "test_queries" and rec["results"]["num_queries"] == 3
    assert rec["arguments"]["split"] == "test"
    capsys.readouterr()

    # classify: an image folder without split folders works without --split.
    assert main(["--quiet", "classify", "--dataset", "imagefolder", "--variants", "inter,oti",
                 *ckpt, *folder, *steps, "--output", str(out / "classify.json")]) == 0
    _, rec = _record(run, "classify")
    assert rec["results"]["split"] == "all" and rec["results"]["num_images"] == 12
    assert rec["results"]["inter"]["num_samples"] == 12

    # reproduce: per-dataset roots (the folder is its own root; coco under the default).
    assert main(["--quiet", "reproduce", "--datasets", "imagefolder,coco_text", *demo,
                 "--data-root", str(shared_data), "--data-root", f"imagefolder={imagefolder}",
                 "--run-dir", str(run), "--max-queries", "4", "--max-gallery", "8",
                 "--batch-size", "8", "--oti-steps", "2", "--ovi-steps", "2",
                 "--output", str(out / "reproduce.json")]) == 0
    table = (run / "table.md").read_text()
    assert f"model: `{DEMO_ARCH}`" in table
    assert f"checkpoint sha256: `{_sha256(DEMO_CHECKPOINT)}`" in table
    assert "preset (settings): `demo`" in table and "oti_steps=2" in table
    assert "learning_rate=0.02" in table and f"crossgap_jax {__version__}" in table
    assert "Caveat: subset run** (--max-queries 4, --max-gallery 8)" in table
    assert "*paper" not in table and "No paper row" in table  # not OpenAI's model
    assert "| imagefolder |" in table and "| coco_text |" in table

    # analyze: a short human header (not raw JSON); the curve ends at the final step even
    # when --record-steps leaves it out.
    earlier = {p: p.read_bytes() for p in [*(run / "records").glob("*.json"),
                                            run / "metrics.json", run / "table.md"]}
    capsys.readouterr()
    assert main(["--quiet", "analyze", "--dataset", "imagefolder", "--num-tokens", "1",
                 "--record-steps", "1", *ckpt, *folder, *steps,
                 "--output", str(out / "analyze.json")]) == 0
    printed = capsys.readouterr().out
    assert f"checkpoint sha256: {_sha256(DEMO_CHECKPOINT)}" in printed
    assert f"model {DEMO_ARCH}, preset demo" in printed and "oti_steps=2" in printed
    curve = printed.split("OTI->image mAP, R=1: ")[1].splitlines()[0]
    assert [c.split("@")[1] for c in curve.split(", ")] == ["1", "2"]
    assert "analysis.json" in printed and not printed.lstrip().startswith("{")
    assert {p: p.read_bytes() for p in earlier} == earlier  # analyze rewrote no one's files

    # One record per command, none rewritten by a later one; no shared config.json.
    records = {p.name.split("-")[0]: p for p in (run / "records").glob("*.json")}
    assert set(records) == {"encode", "oti", "ovi", "retrieve", "classify", "reproduce",
                            "analyze"}
    assert not (run / "config.json").exists()
    before = {k: p.read_bytes() for k, p in records.items()}
    metrics = (run / "metrics.json").read_bytes()
    assert main(["--quiet", "classify", "--dataset", "imagefolder", "--variants", "inter,oti",
                 *ckpt, *folder, "--batch-size", "8", "--oti-steps", "3"]) == 0
    assert {k: p.read_bytes() for k, p in records.items()} == before
    assert (run / "metrics.json").read_bytes() == metrics
    assert len(list((run / "records").glob("classify-*.json"))) == 2

    # --output holds the command's record; result files are 0644 under umask 022.
    for cmd in ("retrieve", "classify", "reproduce", "analyze"):
        assert json.loads((out / f"{cmd}.json").read_text()) == json.loads(
            records[cmd].read_text())
    written = [*records.values(), run / "metrics.json", run / "table.md",
               *(out.glob("*.json"))]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {"0o644"}


@pytest.mark.slow
def test_reproduce_writes_finished_table_then_reports_failure(imagefolder, shared_data,
                                                               tmp_path, capsys, monkeypatch):
    real = runmod.Run.task

    def task(self, dataset, split=None):
        if dataset == "caltech101":
            raise OSError("disk on fire")
        return real(self, dataset, split)

    monkeypatch.setattr(runmod.Run, "task", task)
    run = tmp_path / "run"
    rc = main(["--quiet", "reproduce", "--datasets", "imagefolder,caltech101",
               "--pretrained", "demo", "--data-root", str(shared_data), "--data-root",
               f"imagefolder={imagefolder}", "--run-dir", str(run), "--max-queries", "3",
               "--batch-size", "8", "--oti-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "dataset 'caltech101' failed: OSError: disk on fire" in err
    table = (run / "table.md").read_text()
    assert "| imagefolder |" in table and "| caltech101 |" not in table
    _, rec = _record(run, "reproduce")
    assert list(rec["results"]["datasets"]) == ["imagefolder"]


def test_quiet_silences_bars_and_info_everywhere(imagefolder, tmp_path, capsys, monkeypatch):
    common = ["--dataset", "imagefolder", "--data-root", str(imagefolder),
              "--pretrained", "demo"]
    assert main(["encode", *common, "--run-dir", str(tmp_path / "a")]) == 0
    loud = capsys.readouterr().err
    assert "encode imagefolder/all" in loud and "100%" in loud  # the control: a bar
    for argv in (["encode", "--quiet", *common, "--run-dir", str(tmp_path / "b")],
                 ["--quiet", "encode", *common, "--run-dir", str(tmp_path / "c")]):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert "%" not in err and "█" not in err and "INFO" not in err, err

    calls = []
    import crossgap_jax.demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda **kw: calls.append(kw))
    assert main(["demo", "--quiet", "--quick", "--out", str(tmp_path / "d")]) == 0
    assert main(["--quiet", "demo", "--out", str(tmp_path / "d")]) == 0
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    assert [c["progress"] for c in calls] == [False, False, True]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"crossgap-jax {__version__}"


def test_list_shows_the_demo_model(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"demo               {DEMO_ARCH}  {DEMO_CHECKPOINT}" in out


@pytest.mark.slow
def test_native_file_carries_its_architecture(imagefolder, tmp_path):
    """An unregistered architecture loads from its file alone; a registered name too; an
    explicit --model naming the same shapes is accepted."""
    clip = create_clip("tiny", seed=2)
    custom = clip.config.replace(name="my-net")
    f_custom = str(tmp_path / "custom.safetensors")
    save_native(f_custom, custom, clip.params)
    f_tiny = str(tmp_path / "tiny.safetensors")
    save_native(f_tiny, clip.config, clip.params)
    folder = ["--dataset", "imagefolder", "--data-root", str(imagefolder)]
    for ckpt, extra, model in ((f_custom, [], "my-net"), (f_tiny, [], "tiny"),
                               (f_custom, ["--model", "tiny"], "tiny")):
        run = tmp_path / f"run-{model}-{len(extra)}"
        assert main(["--quiet", "encode", *folder, "--checkpoint", ckpt, *extra,
                     "--run-dir", str(run)]) == 0
        _, rec = _record(run, "encode")
        assert rec["provenance"]["model"] == model
        assert rec["provenance"]["checkpoint_sha256"] == _sha256(ckpt)
        assert rec["results"]["shape"] == [12, 32]
    assert runmod.default_run_dir(preset("clip_vitb32", model="my-net")) == \
        os.path.join("results", "my-net")
    assert runmod.default_run_dir(preset("clip_vitb32")) == \
        os.path.join("results", "clip_vitb32")


def test_published_rows_follow_the_model_and_weights():
    sha_b32 = openai_release("ViT-B/32")[1]
    assert "ViT-B/32" in OPENAI_RELEASES
    assert published_for("ViT-B/32", "openai") == ("clip_vitb32", PUBLISHED["clip_vitb32"])
    assert published_for("ViT-B/32", None, sha_b32)[0] == "clip_vitb32"  # local copy
    assert published_for("ViT-B/32", None, "0" * 64) is None  # another file
    assert published_for("ViT-B/32", "demo") is None
    assert published_for(DEMO_ARCH, "demo") is None
    assert published_for("ViT-L-14", "datacomp_xl_s13b_b90k")[0] == "openclip_vitl14"
    assert published_for("ViT-B-32", "openai") is None  # not the preset's weights


def _results(model, pretrained, sha, max_queries=None):
    prov = {"model": model, "pretrained": pretrained, "checkpoint": "x",
            "checkpoint_sha256": sha, "preset": "clip_vitb32",
            "settings": {"oti_steps": 150, "learning_rate": 0.02},
            "subset": {"max_queries": max_queries, "max_gallery": None},
            "text_sources": {}, "version": __version__}
    m = {"mAP": 40.0, "num_queries": 50, "num_evaluated": 49, "num_skipped_no_relevant": 1,
         "num_query_items_missing": 0}
    return report.summarize({"provenance": prov, "datasets": {
        "caltech101": {"modality": "image", "baseline": dict(m), "inverted": dict(m, mAP=42.5)}}})


def test_table_headers_and_published_rows():
    sha = openai_release("ViT-B/32")[1]
    openai = report.results_table(_results("ViT-B/32", "openai", sha))
    assert "| *paper (avg. over its datasets)* | image->image vs OTI->image | 39.2 | 41.2 | " \
           "+2.0 |" in openai
    assert "published averages of `clip_vitb32`" in openai and "Caveat" not in openai
    assert "| caltech101 | image->image vs OTI->image | 40.00 | 42.50 | +2.50 | - | 49/50 | 1 | " \
        "0 |" in openai  # no ci95 in these results: no interval
    demo = report.results_table(_results("crossgap-digits", "demo", "ab" * 32, max_queries=50))
    assert "*paper" not in demo and "No paper row" in demo
    assert "> **Caveat: subset run** (--max-queries 50, --max-gallery None)" in demo
    assert "model: `crossgap-digits`" in demo and f"`{'ab' * 32}`" in demo
    assert "oti_steps=150" in demo and f"crossgap_jax {__version__}" in demo


def test_limit_task_all_vs_all_applies_both_caps():
    from crossgap_jax.data import ImageSplit, RetrievalTask

    q = ImageSplit(name="x", split="all", items=[f"i{k}" for k in range(20)],
                   paths=[f"/p{k}" for k in range(20)], labels=np.arange(20) % 4,
                   classnames=["a", "b", "c", "d"])
    task = RetrievalTask("x", q, q, "label", exclude_self=True)
    small = tasks.limit_task(task, 10, 6, seed=0)
    assert len(small.query) == 6 and small.gallery is small.query
    assert len(tasks.limit_task(task, None, 7, seed=0).query) == 7
    assert len(tasks.limit_task(task, 3, None, seed=0).query) == 3


@pytest.mark.parametrize("kind", ["label", "qrels"])
def test_limit_task_gallery_gives_every_query_a_positive(kind):
    """--max-gallery keeps one positive of each chosen query before any other item (the
    case the old rule failed: early queries' many positives filled the cap)."""
    from crossgap_jax.data import ImageSplit, RetrievalTask

    rng = np.random.default_rng(1)
    g_labels = np.repeat(np.arange(10), [40, 40, 40, 1, 1, 1, 1, 1, 1, 1])
    g = ImageSplit(name="x", split="train", items=[f"g{k}" for k in range(len(g_labels))],
                   paths=[f"/g{k}" for k in range(len(g_labels))], labels=g_labels,
                   classnames=[str(c) for c in range(10)])
    q_labels = rng.permutation(np.arange(30) % 10)
    q = ImageSplit(name="x", split="test", items=[f"q{k}" for k in range(30)],
                   paths=[f"/q{k}" for k in range(30)], labels=q_labels,
                   classnames=g.classnames)
    qrels = ({f"q{i}": {f"g{j}": 1 for j in np.flatnonzero(g_labels == lab)}
              for i, lab in enumerate(q_labels)} if kind == "qrels" else None)
    task = RetrievalTask("x", q, g, kind, qrels=qrels)
    small = tasks.limit_task(task, 12, 15, seed=0)
    assert len(small.gallery) == 15 and len(small.query) == 12
    keep = set(small.gallery.items)
    for item, lab in zip(small.query.items, small.query.labels):  # brute force
        assert any(f"g{j}" in keep for j in np.flatnonzero(g_labels == lab)), item
    assert small.gallery.items == tasks.limit_task(task, 12, 15, seed=0).gallery.items


def test_readme_demo_snippet_loads_the_demo_model():
    import crossgap_jax as cg
    from crossgap_jax.models.checkpoint.native import native_config

    demo = cg.load_clip(DEMO_CHECKPOINT)
    assert demo.config == native_config(DEMO_CHECKPOINT)


def test_checkpoint_paths_vs_hub_ids():
    from crossgap_jax.cli.checks import _looks_like_path

    assert not _looks_like_path("openai/clip-vit-base-patch32")
    assert not _looks_like_path("openai")
    assert _looks_like_path("/no/such/model.pt") and _looks_like_path("ckpt/b32.safetensors")
    assert _looks_like_path("./weights")


def test_demo_model_defaults_to_the_demo_preset(tmp_path, imagefolder):
    """Without --preset, the shipped demo model runs under the ``demo`` preset (its own
    settings), however it is named; any other model keeps the OpenAI ViT-B/32 preset."""
    import argparse

    from crossgap_jax.cli.checks import default_preset

    link = tmp_path / "weights.safetensors"
    link.symlink_to(DEMO_CHECKPOINT)
    ns = argparse.Namespace
    assert default_preset(ns(pretrained="demo", checkpoint=None)) == "demo"
    assert default_preset(ns(pretrained=None, checkpoint=str(link))) == "demo"
    assert default_preset(ns(pretrained=None, checkpoint=str(imagefolder))) == "clip_vitb32"
    assert default_preset(ns(pretrained="openai", checkpoint=None)) == "clip_vitb32"
    run = tmp_path / "run"
    assert main(["--quiet", "encode", "--dataset", "imagefolder", "--checkpoint", str(link),
                 "--data-root", str(imagefolder), "--run-dir", str(run)]) == 0
    _, rec = _record(run, "encode")
    assert rec["provenance"]["preset"] == "demo"


def test_retrieve_gallery_count_leaves_out_unreadable_images(tmp_path, capsys):
    """A corrupt image is skipped (default ``--on-error skip``): the gallery ranked, the
    table's gallery cell and the record count only the readable images, and say how many
    were left out."""
    root = tmp_path / "imgs"
    rng = np.random.default_rng(2)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    (root / "dog" / "3.png").write_bytes(b"not a png")
    run = tmp_path / "run"
    assert main(["--quiet", "retrieve", "--dataset", "imagefolder", "--query-type", "image",
                 "--pretrained", "demo", "--data-root", str(root), "--run-dir", str(run)]) == 0
    printed = capsys.readouterr().out
    _, rec = _record(run, "retrieve")
    res = rec["results"]
    assert res["num_gallery"] == 6 and res["num_gallery_items_missing"] == 1
    assert res["num_query_items_missing"] == 1
    assert "| 6 (1 unreadable, left out) |" in printed
