"""End-to-end pipeline and CLI tests on a tiny model over the real data (subsets)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support import reference_protocol as ref

from crossgap_jax.cli import main
from crossgap_jax.models import create_clip
from crossgap_jax.models.checkpoint.native import save_native
from crossgap_jax.pipeline.presets import get_preset
from crossgap_jax.pipeline.store import StaleArtifactError, load_features


def _common(tiny_ckpt, shared_data, run_dir, *extra, steps=True):
    steps_args = ["--oti-steps", "4", "--ovi-steps", "3"] if steps else []
    return ["--model", "tiny", "--checkpoint", tiny_ckpt, "--data-root", str(shared_data),
            "--run-dir", str(run_dir), "--batch-size", "8", *steps_args, *extra]


def test_presets_resolve_and_reject_unknown():
    cfg = get_preset("clip_vitl14", oti_steps="50")
    assert cfg["oti_steps"] == 50 and cfg["ovi_num_pseudo_tokens"] == 4
    assert cfg["learning_rate"] == 2e-2 and cfg["template_sentence"] == "a photo of {}"
    with pytest.raises(KeyError, match="known"):
        get_preset("nope")
    with pytest.raises(KeyError, match="unknown preset key"):
        get_preset("clip_vitb32", lr=1.0)


# slow (issue 14 item 8): ~25 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_reproduce_end_to_end(tiny_ckpt, shared_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["--quiet", "reproduce", "--datasets", "caltech101,coco_text",
            *_common(tiny_ckpt, shared_data, run_dir, "--max-queries", "12",
                     "--max-gallery", "40")]
    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = (run_dir / "table.md").read_text()
    assert set(metrics["datasets"]) == {"caltech101", "coco_text"}
    # Every reported number equals the NumPy reference protocol on the cached features.
    ref.assert_reproduce_matches_reference(run_dir, str(shared_data))
    for entry in metrics["datasets"].values():
        for side in ("baseline", "inverted"):
            assert entry[side]["num_evaluated"] > 0
    assert metrics["datasets"]["caltech101"]["inverted"]["query_type"] == "oti"
    assert metrics["datasets"]["coco_text"]["inverted"]["query_type"] == "ovi"
    # A tiny random model under clip_vitb32's settings: no published (OpenAI) row.
    assert "OTI->image" in table and "*paper" not in table and "No paper row" in table
    (record,) = (run_dir / "records").glob("reproduce-*.json")
    prov = json.loads(record.read_text())["provenance"]
    assert prov["model"] == "tiny" and prov["settings"]["oti_steps"] == 4
    assert prov["subset"] == {"max_queries": 12, "max_gallery": 40}
    # A second run reuses every artefact: no inversion shard is rewritten.
    shards = sorted(p for p in (run_dir / "inversions").rglob("*") if p.is_file())
    mtimes = [p.stat().st_mtime_ns for p in shards]
    assert main(argv) == 0
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    assert json.loads((run_dir / "metrics.json").read_text())["datasets"] == metrics["datasets"]


# slow (issue 14 item 8): ~35 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_feature_cache_refuses_other_model(tiny_ckpt, shared_data, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["--quiet", "encode", "--dataset", "coco_text", "--split", "test",
                 *_common(tiny_ckpt, shared_data, run_dir, steps=False)]) == 0
    (path,) = list((run_dir / "features").rglob("*.npz"))
    fs = load_features(str(path))
    assert fs.features.shape == (25000, 32) and len(set(fs.items)) == 25000
    other = create_clip("tiny", seed=4)
    from crossgap_jax.pipeline.store import model_fingerprint

    expect = dict(fs.meta, model=model_fingerprint(other))
    with pytest.raises(StaleArtifactError, match="params_sha256"):
        load_features(str(path), expect=expect)


def test_wrong_root_names_expected_layout(tiny_ckpt, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["--quiet", "encode", "--dataset", "caltech101", "--split", "test",
               "--model", "tiny", "--checkpoint", tiny_ckpt, "--data-root", str(empty),
               "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "split_zhou_Caltech101.json" in err


@pytest.mark.slow  # > 20 s of the fast lane (issue 14 item 8)
def test_classify_and_analyze(tiny_ckpt, shared_data, tmp_path):
    run_dir = tmp_path / "run"
    common = _common(tiny_ckpt, shared_data, run_dir, "--max-queries", "10")
    assert main(["--quiet", "classify", "--dataset", "caltech101", *common]) == 0
    (record,) = (run_dir / "records").glob("classify-*.json")
    res = json.loads(record.read_text())["results"]
    assert res["num_classes"] == 100 and res["prompt"] == "a photo of a {}."
    want = ref.expected_zero_shot(run_dir, str(shared_data))
    for variant in ("inter", "oti", "ovi"):
        ref.assert_close(res[variant], want[variant], where=variant)
        assert res[variant]["num_samples"] == 10
    common = _common(tiny_ckpt, shared_data, run_dir, "--max-queries", "10", "--max-gallery",
                     "30", "--oti-steps", "4", steps=False)
    assert main(["--quiet", "analyze", "--dataset", "caltech101", "--num-tokens", "1,2",
                 "--record-steps", "1,2,4", *common]) == 0
    out = run_dir / "analysis" / "caltech101"
    result = json.loads((out / "analysis.json").read_text())
    assert set(result["curves"]) == {"R=1", "R=2"}
    assert result["curves"]["R=1"]["steps"] == [1, 2, 4]
    assert all(np.isfinite(result["curves"]["R=2"]["mAP"]))
    assert 0.0 <= result["modality_gap"]["image-text"] <= 2.0
    for png in ("map_vs_steps.png", "loss.png", "similarities.png"):
        assert (out / png).stat().st_size > 1000


@pytest.mark.slow
def test_killed_inversion_resumes_without_loss_or_duplicates(tiny_ckpt, shared_data, tmp_path):
    """Kill the CLI mid-OTI, restart it, and compare with an uninterrupted run."""
    common = ["--model", "tiny", "--checkpoint", tiny_ckpt, "--data-root", str(shared_data),
              "--batch-size", "8", "--shard-size", "8", "--oti-steps", "500",
              "--max-queries", "64", "--max-gallery", "64"]
    cmd = [sys.executable, "-m", "crossgap_jax.cli", "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "oti", "--dataset", "caltech101", "--run-dir", str(killed),
                             *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    shards: list = []
    while time.time() < deadline and proc.poll() is None:
        shards = [p for p in killed.rglob("*.npz") if "inversions" in str(p)]
        if shards:
            break
        time.sleep(0.05)
    assert shards, "no shard appeared before the deadline"
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len([p for p in killed.rglob("*.npz") if "inversions" in str(p)])
    subprocess.run([*cmd, "oti", "--dataset", "caltech101", "--run-dir", str(killed), *common],
                   check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run([*cmd, "oti", "--dataset", "caltech101", "--run-dir", str(clean), *common],
                   check=True, capture_output=True)
    from crossgap_jax.inversion.resumable import load_inverted

    (dir_a,) = {p.parent for p in killed.rglob("*.npz") if "inversions" in str(p)}
    (dir_b,) = {p.parent for p in clean.rglob("*.npz") if "inversions" in str(p)}
    names_a, arr_a = load_inverted(str(dir_a))
    names_b, arr_b = load_inverted(str(dir_b))
    assert 1 <= n_before < 8, "the kill should land between the first and the last shard"
    assert list(names_a) == list(names_b) and len(set(names_a)) == len(names_a) == 64
    np.testing.assert_allclose(arr_a["features"], arr_b["features"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(arr_a["losses"], arr_b["losses"], rtol=0, atol=1e-6)
    assert os.path.exists(dir_a)


def test_retrieve_isoclip_feature_type(tiny_ckpt, shared_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = _common(tiny_ckpt, shared_data, run_dir, "--max-queries", "10", "--max-gallery", "40")
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "isoclip",
                 "--gallery-type", "isoclip", "--isoclip-k", "4,40", *common]) == 0
    (record,) = (run_dir / "records").glob("retrieve-*.json")
    out = json.loads(record.read_text())["results"]
    # the values are recomputed independently in tests/baselines/test_isoclip.py; here: the plumbing
    assert out["num_queries"] == 10 and out["query_type"] == out["gallery_type"] == "isoclip"
    # Pre-projection features are cached separately from the projected ones.
    metas = [load_features(str(p)).meta for p in (run_dir / "features").rglob("*.npz")]
    assert metas and all(m["projected"] is False for m in metas)
    assert {load_features(str(p)).features.shape[1]
            for p in (run_dir / "features").rglob("*.npz")} == {128}  # tiny vision width
    # A bad combination is a clear error, not a silent result.
    rc = main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "ovi", *common])
    assert rc == 2 and "OVI inverts text features" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["slip-tiny", "siglip-tiny"])
@pytest.mark.slow  # > 20 s of the fast lane (issue 14 item 8)
def test_reproduce_other_families(arch, shared_data, tmp_path):
    """The pipeline runs every family through the same commands (presets of SigLIP/SLIP)."""
    from support.family_factories import train_spiece

    clip = create_clip(arch, seed=1)
    ckpt = str(tmp_path / f"{arch}.safetensors")
    save_native(ckpt, clip.config, clip.params)
    extra = []
    if arch == "siglip-tiny":
        extra = ["--tokenizer", train_spiece(str(tmp_path / "spiece.model"), vocab_size=200)]
    preset = "siglip_vitb16" if arch.startswith("siglip") else "slip_vitb16"
    run_dir = tmp_path / "run"
    assert main(["--quiet", "reproduce", "--preset", preset, "--datasets",
                 "caltech101,coco_text", *_common(ckpt, shared_data, run_dir, "--model", arch,
                                                  "--max-queries", "8", "--max-gallery", "24",
                                                  *extra)]) == 0
    ref.assert_reproduce_matches_reference(run_dir, str(shared_data))
    (record,) = (run_dir / "records").glob("reproduce-*.json")
    prov = json.loads(record.read_text())["provenance"]
    assert prov["preset"] == preset and prov["model"] == arch


def test_reproduce_builds_its_provenance_and_table_once(tiny_ckpt, shared_data, tmp_path,
                                                        monkeypatch):
    """One ``reproduce`` command builds the provenance once and the results table once; the
    record carries exactly what ``metrics.json`` and ``table.md`` hold (issue 23, item 6)."""
    from crossgap_jax.cli import commands
    from crossgap_jax.pipeline import records, report
    from crossgap_jax.pipeline import reproduce as reproduce_mod

    calls = {"provenance": 0, "results_table": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    prov = counted("provenance", records.provenance)
    table = counted("results_table", report.results_table)
    for mod in (records, reproduce_mod, commands):
        if hasattr(mod, "provenance"):
            monkeypatch.setattr(mod, "provenance", prov)
        if hasattr(mod, "results_table"):
            monkeypatch.setattr(mod, "results_table", table)
    run_dir = tmp_path / "run"
    assert main(["--quiet", "reproduce", "--datasets", "caltech101",
                 *_common(tiny_ckpt, shared_data, run_dir, "--max-queries", "3",
                          "--max-gallery", "6", steps=False),
                 "--oti-steps", "1", "--ovi-steps", "1"]) == 0
    assert calls == {"provenance": 1, "results_table": 1}
    (path,) = (run_dir / "records").glob("reproduce-*.json")
    record = json.loads(path.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert record["provenance"] == metrics["provenance"] == record["results"]["provenance"]
    assert record["table"] == (run_dir / "table.md").read_text()
