"""The controlled experiment's shell: train each variant (``crossgap_jax.train``), then
measure it with the pipeline's :func:`~crossgap_jax.pipeline.claims.measure_claims` (the
function the demo uses; every number through :func:`crossgap_jax.pipeline.measure.measure`).

    python -m crossgap_jax.experiment --data-root ../shared/data --out docs/experiments.md

Same data (the CoOp *train* split of Caltech101 at 64 px, 4,128 images, 100 classes), same
architecture (``crossgap-caltech``), same seed, same schedule; only the loss differs
(:data:`crossgap_jax.train.VARIANT_DESCRIPTIONS`). Each model is measured on held-out items
only: the registered task ``caltech101`` (CoOp *test* images as queries vs the *train*
images, relevant = same class; zero-shot on the test images) and ``demo_caltech101_text``
(captions of the 100 classes from templates never used in training). Nothing is tuned on the
test split; the CoOp *val* split is not used.

Everything is cached under ``--work-dir``: each variant's training run (resumable, reused
when its recipe matches) and its pipeline run folder (features and inversions keyed by the
weights' content), so a rerun only redoes what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from crossgap_jax.data import TEXT_NAME
from crossgap_jax.experiment.report import NAMES, plot_variants, train_seconds, write_report
from crossgap_jax.fileio import atomic_write_json, ensure_dir, jsonable
from crossgap_jax.models import default_cache_dir
from crossgap_jax.pipeline import Bootstrap, RunSettings, make_run, measure_claims, preset
from crossgap_jax.train import VARIANT_DESCRIPTIONS, VARIANTS, train
from crossgap_jax.train.configs import caltech_train_config
from crossgap_jax.train.data import OBJECT_TRAIN_TEMPLATES, coop_data

DATASET = "caltech101"
IMAGE_SIZE = 64
COMMAND = "python -m crossgap_jax.experiment"
PAPER_PRESET = "clip_vitb32"  # the published model whose averages are set beside each claim


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    """What the experiment trains and measures.

    Attributes:
        steps: training steps per variant (the recipe:
            :func:`crossgap_jax.train.configs.caltech_train_config`).
        seed: training seed, inversion init and bootstrap seed.
        oti_steps, ovi_steps: inversion steps (the paper's 150 and 1000).
        record_steps: OTI steps whose features are evaluated (the Fig. 2a curve).
        num_tokens: the R values of the OTI analysis.
        batch_size: items per compiled inversion / encoding batch (no effect on results).
        bootstrap_samples: resamples of the paired bootstrap intervals.
        max_queries: measure on a seeded subset of the test images (``--quick`` only).
        quick: a smoke test (the report says its numbers mean nothing).
    """

    steps: int = 600
    seed: int = 0
    oti_steps: int = 150
    ovi_steps: int = 1000
    record_steps: tuple[int, ...] = (1, 5, 10, 25, 50, 100, 150)
    num_tokens: tuple[int, ...] = (1,)
    batch_size: int = 512
    bootstrap_samples: int = 2000
    max_queries: int | None = None
    quick: bool = False


FULL = ExperimentSettings()
QUICK = ExperimentSettings(steps=20, oti_steps=20, ovi_steps=10, record_steps=(1, 5, 20),
                           bootstrap_samples=200, max_queries=200, quick=True)


def variant_dir(work_dir: str, variant: str) -> str:
    return os.path.join(work_dir, variant.replace("+", "_plus_"))


def train_variant(variant: str, train_set, work_dir: str, settings: ExperimentSettings, *,
                  retrain: bool = False, progress: bool = True) -> tuple[str, dict]:
    """Train ``variant`` into ``variant_dir(work_dir, variant)`` unless a finished run with
    the same recipe is there (a partial run resumes).

    Returns:
        ``(checkpoint path, history dict)`` (``history.json`` of
        :func:`crossgap_jax.train.train`).
    """
    cfg = caltech_train_config(variant, settings.steps, settings.seed)
    d = variant_dir(work_dir, variant)
    ckpt, hist_path = os.path.join(d, "model.safetensors"), os.path.join(d, "history.json")
    if not retrain and os.path.isfile(ckpt) and os.path.isfile(hist_path):
        with open(hist_path) as f:
            hist = json.load(f)
        if hist["config"] == jsonable(cfg.to_dict()):
            print(f"[{variant}] reusing the finished training run in {d}")
            return ckpt, hist
    print(f"[{variant}] training {VARIANT_DESCRIPTIONS[variant]} for {settings.steps} "
          "steps ...")
    train(cfg, train_set, OBJECT_TRAIN_TEMPLATES, out_dir=d, resume=not retrain,
          progress=progress, metadata={"command": COMMAND,
                                       "data": f"{DATASET} CoOp train split"})
    with open(hist_path) as f:
        return ckpt, json.load(f)


def measure_variant(checkpoint: str, out_dir: str, data_root: str | None,
                    settings: ExperimentSettings, *, progress: bool = True) -> dict:
    """The paper's claims on one trained model: :func:`crossgap_jax.pipeline.measure_claims`
    over ``caltech101`` (from ``data_root``) and ``demo_caltech101_text``, with a pipeline
    run (features, inversions) cached in ``<out_dir>/run``.

    Returns:
        ``measure_claims``'s dict plus ``"temperature"`` (the model's ``exp(-logit_scale)``)
        and ``"config"`` (the run's resolved settings).
    """
    cfg = dataclasses.replace(preset("demo"), name="caltech_experiment",
                              pretrained=None).replace(
        oti_steps=settings.oti_steps, ovi_steps=settings.ovi_steps,
        batch_size=settings.batch_size, seed=settings.seed)
    run = make_run(os.path.join(out_dir, "run"),
                   RunSettings(cfg, record_steps=tuple(settings.record_steps),
                               max_queries=settings.max_queries),
                   checkpoint=os.path.abspath(checkpoint),
                   roots={DATASET: data_root} if data_root else None, progress=progress)
    res = measure_claims(run, DATASET, TEXT_NAME,
                         bootstrap=Bootstrap(samples=settings.bootstrap_samples,
                                             seed=settings.seed),
                         num_tokens=settings.num_tokens,
                         analysis_dir=os.path.join(out_dir, "analysis"),
                         paper_preset=PAPER_PRESET, log=print)
    temperature = float(np.exp(-np.asarray(run.clip.params["logit_scale"])))
    return dict(res, temperature=temperature, config=run.config)


def run_experiment(data_root: str | None, out: str, *, work_dir: str | None = None,
                   variants: tuple[str, ...] = VARIANTS,
                   settings: ExperimentSettings = FULL, retrain: bool = False,
                   progress: bool = True, command: str = COMMAND) -> dict[str, dict]:
    """Train (or reuse) and measure every variant, then write the report ``out`` (Markdown),
    its figure ``<stem>_caltech101.png`` and JSON ``<stem>_caltech101.json`` beside it.

    Returns:
        variant -> ``{"variant", "description", "checkpoint", "train_config",
        "train_seconds", "final_train", "measure_seconds", "results": measure_variant()}``.
    """
    quick = settings.quick
    work = work_dir or os.path.join(default_cache_dir(), "experiment_caltech101"
                                    + ("_quick" if quick else ""))
    train_set = coop_data(DATASET, data_root, "train", IMAGE_SIZE, progress=progress)
    runs: dict[str, dict] = {}
    for v in variants:
        ckpt, hist = train_variant(v, train_set, work, settings, retrain=retrain,
                                   progress=progress)
        t0 = time.time()
        res = measure_variant(ckpt, variant_dir(work, v), data_root, settings,
                              progress=progress)
        runs[v] = {"variant": v, "description": VARIANT_DESCRIPTIONS[v],
                   "checkpoint": ckpt, "train_config": hist["config"],
                   "train_seconds": train_seconds(hist),
                   "final_train": hist["history"][-1] if hist["history"] else {},
                   "measure_seconds": time.time() - t0, "results": res}
    out_dir = os.path.dirname(os.path.abspath(out))
    ensure_dir(out_dir)
    stem = os.path.splitext(os.path.basename(out))[0]
    figure = plot_variants(runs, os.path.join(out_dir, f"{stem}_caltech101.png"))
    atomic_write_json(os.path.join(out_dir, f"{stem}_caltech101.json"),
                      jsonable({"settings": dataclasses.asdict(settings), "runs": runs}),
                      indent=1, sort_keys=False)
    write_report(runs, out, figure, command=command, settings=settings,
                 num_train=len(train_set), quick=quick)
    print(f"wrote {out}, {figure}")
    return runs


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None,
                   help="data root with caltech101/ (default: $CROSSGAP_SHARED_DATA)")
    p.add_argument("--out", default="docs/experiments.md", help="markdown report path")
    p.add_argument("--work-dir", default=None,
                   help="models and runs cache (default: <cache>/experiment_caltech101)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                   help=f"which variants ({', '.join(f'{v}: {NAMES[v]}' for v in VARIANTS)})")
    p.add_argument("--steps", type=int, default=FULL.steps, help="training steps")
    p.add_argument("--seed", type=int, default=FULL.seed)
    p.add_argument("--retrain", action="store_true", help="train again from scratch")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 20 training steps, short inversions, 200 test images")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.data_root is None and not os.environ.get("CROSSGAP_SHARED_DATA"):
        p.error("give --data-root or set CROSSGAP_SHARED_DATA")
    base = QUICK if a.quick else FULL
    settings = dataclasses.replace(base, seed=a.seed,
                                   steps=a.steps if a.steps != FULL.steps else base.steps)
    args = sys.argv[1:] if argv is None else argv
    command = " ".join([COMMAND, *(x for x in args if x != "--no-progress")])
    return run_experiment(a.data_root, a.out, work_dir=a.work_dir, variants=tuple(a.variants),
                          settings=settings, retrain=a.retrain, progress=not a.no_progress,
                          command=command)
