"""One measurement path: the comparison functions against independent references, the demo
and ``reproduce`` giving identical numbers on the same task and model, runs that write
nothing until a command does, and the typed preset."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from support.tiny_models import tiny_clip

from crossgap_jax.pipeline.compare import Bootstrap, compare_retrieval, compare_zero_shot
from crossgap_jax.pipeline.measure import measure
from crossgap_jax.pipeline.presets import PRESETS, Preset, get_preset, preset
from crossgap_jax.pipeline.settings import RunSettings
from crossgap_jax.retrieval import paired_bootstrap_ci


# ---------------------------------------------------------------- the comparison functions
def _dyadic(rng, n, d):
    """Features with dyadic entries (exact in float32 and float64)."""
    return rng.integers(-8, 9, size=(n, d)).astype(np.float64) / 8.0


def test_compare_retrieval_matches_sklearn_and_the_bootstrap():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)  # continuous features: no tied scores
    q_base, q_inv, g = (rng.normal(size=(n, 6)) for n in (12, 12, 30))
    ql, gl = rng.integers(0, 3, 12), rng.integers(0, 3, 30)
    boot = Bootstrap(samples=300, seed=3)
    c = compare_retrieval(q_base, q_inv, g, (ql, gl), bootstrap=boot, backend="numpy",
                          progress=False)

    def aps(q):
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        s = qn @ gn.T
        return np.array([average_precision_score(gl == ql[i], s[i]) for i in range(len(q))])

    ap_b, ap_i = aps(q_base), aps(q_inv)
    assert c["baseline"]["mAP"] == pytest.approx(100 * ap_b.mean(), abs=1e-6)
    assert c["inverted"]["mAP"] == pytest.approx(100 * ap_i.mean(), abs=1e-6)
    assert c["difference"] == pytest.approx(100 * (ap_i.mean() - ap_b.mean()), abs=1e-6)
    want = paired_bootstrap_ci(ap_b, ap_i, samples=300, seed=3)
    assert c["ci95"] == pytest.approx(want, abs=1e-6)
    assert compare_retrieval(q_base, q_inv, g, (ql, gl), backend="numpy",
                             progress=False)["ci95"] is None


def test_compare_zero_shot_matches_a_brute_force_argmax():
    rng = np.random.default_rng(1)
    x_b, x_i = _dyadic(rng, 40, 5), _dyadic(rng, 40, 5)
    w = _dyadic(rng, 4, 5) + np.eye(4, 5)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    y = rng.integers(0, 4, 40)
    c = compare_zero_shot(x_b, w, x_i, w, y, bootstrap=Bootstrap(samples=200, seed=5))
    ok_b = np.argmax(x_b @ w.T, axis=1) == y
    ok_i = np.argmax(x_i @ w.T, axis=1) == y
    assert c["baseline"]["top1"] == pytest.approx(100 * ok_b.mean())
    assert c["inverted"]["top1"] == pytest.approx(100 * ok_i.mean())
    np.testing.assert_array_equal(c["top1_correct"]["baseline"], ok_b)
    assert c["ci95"] == pytest.approx(paired_bootstrap_ci(ok_b, ok_i, samples=200, seed=5))


def test_bootstrap_and_measure_reject_bad_input():
    with pytest.raises(ValueError, match="samples"):
        Bootstrap(samples=0)
    with pytest.raises(ValueError, match="level"):
        Bootstrap(level=1.5)
    with pytest.raises(ValueError, match="comparison must be one of"):
        measure(None, "caltech101", "zero-shot")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the typed preset
def test_preset_is_typed_frozen_and_rejects_bad_fields():
    p = preset("clip_vitl14", oti_steps=50)
    assert (p.oti_steps, p.ovi_num_pseudo_tokens, p.learning_rate) == (50, 4, 2e-2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.oti_steps = 3  # type: ignore[misc]
    with pytest.raises(KeyError, match="unknown preset key.*'lr'.*learning_rate"):
        preset("clip_vitb32", lr=1.0)
    with pytest.raises(TypeError, match="'oti_steps' must be an int, got '50'"):
        preset("clip_vitb32", oti_steps="50")
    with pytest.raises(TypeError, match="'seed' must be an int"):
        Preset("x", "ViT-B/32", seed=True)
    with pytest.raises(ValueError, match="'batch_size' must be >= 1"):
        preset("clip_vitb32", batch_size=0)
    with pytest.raises(ValueError, match="template_sentence.*exactly one"):
        preset("clip_vitb32", template_sentence="a photo")
    with pytest.raises(TypeError, match="'learning_rate' must be a finite number"):
        preset("clip_vitb32", learning_rate=float("nan"))
    # The dict form (records) round-trips, and text is parsed only by get_preset.
    assert Preset.from_dict(p.as_dict()) == p
    assert get_preset("clip_vitl14", oti_steps="50") == p.as_dict()
    with pytest.raises(ValueError, match="'oti_steps' must be an int, got 'many'"):
        get_preset("clip_vitb32", oti_steps="many")


def test_preset_defaults_are_the_inversion_settings():
    from crossgap_jax.inversion.config import ExecutionSettings, OTISettings, OVISettings

    p = PRESETS["clip_vitb32"]
    oti, ovi = p.inversion("oti", record_steps=(5, 1)), p.inversion("ovi")
    assert oti == OTISettings(record_steps=(1, 5))
    assert ovi == OVISettings()
    assert p.execution() == ExecutionSettings()
    assert PRESETS["clip_vitl14"].inversion("ovi").num_tokens == 4


# ---------------------------------------------------------------- runs write nothing
def test_making_a_run_writes_nothing(tmp_path):
    from crossgap_jax.inversion import OVISettings
    from crossgap_jax.pipeline.run import Run, inversion_key_fields

    run_dir = tmp_path / "run"
    run = Run(str(run_dir), RunSettings(preset("clip_vitb32")), tiny_clip(0))
    assert not run_dir.exists()
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.settings = RunSettings(preset("demo"))  # type: ignore[misc]
    assert run.preset is run.settings.preset  # stored, not re-parsed
    assert run.preset == PRESETS["clip_vitb32"]
    settings, execution = run.inversion_settings("ovi")
    assert isinstance(settings, OVISettings) and execution.batch_size == 64
    assert inversion_key_fields(settings, execution) == {"steps": 1000, "learning_rate": 2e-2,
                                                         "weight_decay": 0.01, "seed": 0,
                                                         "batch_size": 64, "num_tokens": 1}


# ---------------------------------------------------------------- demo == reproduce
@pytest.mark.slow
def test_demo_and_reproduce_give_identical_numbers(tmp_path):
    """The demo's measurements (demo.measure) and ``crossgap-jax reproduce --preset demo``
    on the same registered datasets and model give the same numbers and intervals."""
    from crossgap_jax import demo
    from crossgap_jax.cli import main

    if not (os.path.isfile(demo.DEMO_CHECKPOINT) and os.path.isfile(demo.DEMO_DATA)):
        pytest.skip("shipped demo assets missing")
    settings = demo.DemoSettings(oti_steps=2, ovi_steps=2, record_steps=(1, 2),
                                 num_tokens=(1,), bootstrap_samples=2000)
    assert settings.concurrent  # the demo's text claim in a second thread; reproduce's not
    run = demo.demo_run(str(tmp_path / "demo"), settings, progress=False)
    res = demo.measure(run, settings, analysis_dir=str(tmp_path / "analysis"))
    run_dir = tmp_path / "demo" / "run"  # the demo's run folder: its cached features
    assert main(["--quiet", "reproduce", "--preset", "demo", "--datasets",
                 f"{demo.IMAGE_DATASET},{demo.TEXT_DATASET}", "--oti-steps", "2",
                 "--ovi-steps", "2", "--batch-size", str(settings.batch_size),
                 "--run-dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key, ds in (("image", demo.IMAGE_DATASET), ("text", demo.TEXT_DATASET)):
        cli, m = metrics["datasets"][ds], res["measurements"][key]
        for side in ("baseline", "inverted"):
            for k in ("mAP", "mAP@R", "P@R", "R@1"):
                assert cli[side][k] == pytest.approx(m[side][k], abs=1e-4), (ds, side, k)
        assert cli["ci95"] == pytest.approx(m["ci95"], abs=1e-3)
        claim = next(c for c in res["claims"] if c["key"] == key)
        assert claim["baseline"] == cli["baseline"]["mAP"]
    # Same settings and model as the demo's run: the provenance names the demo preset.
    assert metrics["provenance"]["preset"] == "demo"
    assert metrics["provenance"]["checkpoint_sha256"] == run.config["checkpoint_sha256"]
    # analyze's curve ends at the final OTI step.
    assert res["analysis"]["curves"]["R=1"]["steps"][-1] == settings.oti_steps


@pytest.mark.slow
def test_concurrent_claims_report_a_failed_text_side(tmp_path):
    """With ``concurrent=True`` an error of the text claim's thread (here an unknown text
    dataset) reaches the caller with its own type and message, and nothing is returned."""
    from crossgap_jax import demo
    from crossgap_jax.pipeline import measure_claims

    if not (os.path.isfile(demo.DEMO_CHECKPOINT) and os.path.isfile(demo.DEMO_DATA)):
        pytest.skip("shipped demo assets missing")
    settings = demo.DemoSettings(oti_steps=1, ovi_steps=1, record_steps=(1,), num_tokens=(1,))
    run = demo.demo_run(str(tmp_path / "demo"), settings, progress=False)
    with pytest.raises(Exception, match="no_such_text_dataset") as err:
        measure_claims(run, demo.IMAGE_DATASET, "no_such_text_dataset", concurrent=True,
                       analysis_dir=str(tmp_path / "analysis"))
    with pytest.raises(type(err.value)):  # the same error as without the thread
        measure_claims(run, demo.IMAGE_DATASET, "no_such_text_dataset",
                       analysis_dir=str(tmp_path / "analysis"))
