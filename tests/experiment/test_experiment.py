"""The controlled experiment (crossgap_jax.experiment): trains with crossgap_jax.train and
takes every number from the pipeline's measure (one protocol with reproduce and the demo)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from crossgap_jax import experiment
from crossgap_jax.experiment.run import variant_dir
from crossgap_jax.pipeline import Bootstrap, RunSettings, make_run, preset
from crossgap_jax.pipeline.measure import measure


@pytest.mark.slow
def test_experiment_numbers_come_from_measure_and_reruns_reuse_the_work(
        tmp_path, shared_data, capsys):
    out = tmp_path / "docs" / "exp.md"
    work = tmp_path / "work"
    argv = ["--data-root", str(shared_data), "--variants", "clip", "--steps", "2", "--quick",
            "--out", str(out), "--work-dir", str(work), "--no-progress"]
    runs = experiment.main(argv)
    run = runs["clip"]
    res = run["results"]
    settings = experiment.QUICK
    assert run["train_config"]["steps"] == 2 and run["train_config"]["variant"] == "clip"
    assert res["image"]["num_queries"] == settings.max_queries
    assert res["image"]["num_gallery"] == 4128  # the CoOp train split
    assert (res["text"]["num_queries"], res["text"]["num_gallery"]) == (100, 700)

    # The same numbers from the pipeline's measure() on a run made independently over the
    # experiment's cached features and inversions (same weights, settings, datasets).
    cfg = dataclasses.replace(preset("demo"), name="caltech_experiment",
                              pretrained=None).replace(
                 oti_steps=settings.oti_steps, ovi_steps=settings.ovi_steps,
                 batch_size=settings.batch_size, seed=settings.seed)
    vdir = variant_dir(str(work), "clip")
    direct = make_run(os.path.join(vdir, "run"),
                      RunSettings(cfg, record_steps=(1, 5, 20),
                                  max_queries=settings.max_queries),
                      checkpoint=run["checkpoint"], roots={"caltech101": str(shared_data)},
                      progress=False)
    boot = Bootstrap(samples=settings.bootstrap_samples, seed=settings.seed)
    claims = {c["key"]: c for c in res["claims"]}
    for key, ds, comparison in (("image", "caltech101", "retrieval"),
                                ("zero_shot", "caltech101", "zero_shot")):
        m = measure(direct, ds, comparison, bootstrap=boot)
        assert claims[key]["baseline"] == pytest.approx(m["baseline_value"], abs=1e-9)
        assert claims[key]["inverted"] == pytest.approx(m["inverted_value"], abs=1e-9)
        assert claims[key]["ci95"] == pytest.approx(m["ci95"], abs=1e-9)
    assert res["analysis"]["baseline_mAP"] == pytest.approx(claims["image"]["baseline"])
    assert res["analysis"]["curves"]["R=1"]["mAP"][-1] == pytest.approx(
        claims["image"]["inverted"], abs=1e-9)

    # The report shows those numbers with the pipeline's verdicts; JSON and figure beside.
    text = out.read_text()
    assert "QUICK MODE" in text
    for key in ("image", "text", "zero_shot"):
        c = claims[key]
        assert f"{c['baseline']:.1f}" in text and f"{c['inverted']:.1f}" in text
        assert c["verdict"] in ("holds", "does not hold", "inconclusive")
    assert (out.parent / "exp_caltech101.png").stat().st_size > 10_000
    saved = json.loads((out.parent / "exp_caltech101.json").read_text())
    assert saved["runs"]["clip"]["results"]["claims"] == res["claims"]

    # A rerun reuses the trained model and the run's cached work: same numbers.
    capsys.readouterr()
    again = experiment.main(argv)["clip"]["results"]
    assert "reusing the finished training run" in capsys.readouterr().out
    assert again["claims"] == res["claims"]
