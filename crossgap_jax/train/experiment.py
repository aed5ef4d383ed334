"""The controlled experiment: CLIPs trained on Caltech101 that differ in one factor.

    python -m crossgap_jax.train.experiment --data-root ../shared/data --out docs/experiments.md

Same data (the CoOp *train* split of Caltech101 at 64 px, 4,128 images, 100 classes), same
architecture (``crossgap-caltech``), same seed, same schedule; only the loss differs:

(a) ``clip``: CLIP's symmetric InfoNCE, learned temperature;
(b) ``clip+slip``: (a) + SLIP's SimCLR NT-Xent between two augmented views of each image,
    on an MLP head over the image trunk;
(c) ``clip-t1``: (a) with the temperature fixed to 1;
(b') ``clip+intra``: (a) + the same NT-Xent on the joint image embedding itself.

Each model is then measured on held-out items only (CoOp *test* images as queries / for
zero-shot, captions from templates never used in training) with
:func:`~crossgap_jax.train.evaluate.evaluate_claims`, and the report (markdown + figure +
JSON) is written. Trained models and results are cached under ``--work-dir`` so a rerun only
redoes what is missing (training is resumable from periodic checkpoints). Nothing is tuned
on the test split; the CoOp *val* split is not used at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from crossgap_jax.fileio import atomic_write_json, ensure_dir, jsonable
from crossgap_jax.models import CLIP, load_native
from crossgap_jax.train.configs import VARIANT_DESCRIPTIONS, VARIANTS, AugmentConfig, TrainConfig
from crossgap_jax.train.data import (
    OBJECT_HELDOUT_TEMPLATES,
    OBJECT_TRAIN_TEMPLATES,
    coop_data,
    default_cache_dir,
)
from crossgap_jax.train.evaluate import evaluate_claims
from crossgap_jax.train.experiment_report import (  # noqa: F401  (NAMES: re-exported)
    NAMES,
    _train_seconds,
    write_report,
)
from crossgap_jax.train.report import plot_claims
from crossgap_jax.train.trainer import train

DATASET = "caltech101"


def caltech_train_config(variant: str, steps: int = 600, seed: int = 0,
                         batch_size: int = 128) -> TrainConfig:
    """The shared recipe; ``variant`` is the only factor that changes."""
    return TrainConfig(
        arch="crossgap-caltech", variant=variant, steps=steps, batch_size=batch_size,
        learning_rate=1e-3, warmup_steps=min(100, steps // 10), weight_decay=0.1,
        text_length=24,
        augment=AugmentConfig(crop_scale=(0.5, 1.0), flip=True, brightness=0.3,
                              contrast=0.3),
        seed=seed, log_every=25, checkpoint_every=100,
    )


EVAL_VERSION = 2  # bump when evaluate_claims' output changes: cached results are redone
EVAL_SETTINGS = dict(num_query_templates=1, oti_steps=150, oti_record_steps=(5, 10, 25, 50, 100),
                     ovi_steps=300, ovi_record_steps=(10, 25, 50, 100, 200),
                     ovi_zero_shot=False, oti_batch_size=512, ovi_batch_size=100)
QUICK_EVAL = dict(num_query_templates=1, oti_steps=20, oti_record_steps=(5, 10), ovi_steps=10,
                  ovi_record_steps=(5,), ovi_zero_shot=False, oti_batch_size=256,
                  ovi_batch_size=100, max_test_images=200)


def run_variant(variant: str, train_set, test_set, work_dir: str, *, steps: int, seed: int,
                eval_settings: dict, retrain: bool = False, reeval: bool = False,
                progress: bool = True) -> dict[str, Any]:
    """Train (or load) one variant and evaluate it; cached in ``work_dir/<variant>``."""

    cfg = caltech_train_config(variant, steps, seed)
    d = os.path.join(work_dir, variant.replace("+", "_plus_"))
    ckpt = os.path.join(d, "model.safetensors")
    hist_path = os.path.join(d, "history.json")
    res_path = os.path.join(d, "results.json")
    have = False
    if os.path.isfile(ckpt) and os.path.isfile(hist_path) and not retrain:
        with open(hist_path) as f:
            hist = json.load(f)
        have = hist["config"] == jsonable(cfg.to_dict())
    if have:
        config, params, info = load_native(ckpt)
        clip = CLIP(config, params, info=info)
        print(f"[{variant}] loaded {ckpt}")
    else:
        print(f"[{variant}] training {VARIANT_DESCRIPTIONS[variant]} for {steps} steps ...")
        r = train(cfg, train_set, OBJECT_TRAIN_TEMPLATES, out_dir=d, progress=progress,
                  metadata={"command": "python -m crossgap_jax.train.experiment",
                            "data": f"{DATASET} CoOp train split"})
        clip = r.clip
        with open(hist_path) as f:
            hist = json.load(f)
        reeval = True
    if os.path.isfile(res_path) and not reeval:
        with open(res_path) as f:
            cached = json.load(f)
        if (cached.get("eval_settings") == jsonable(eval_settings)
                and cached.get("eval_version") == EVAL_VERSION):
            print(f"[{variant}] cached results {res_path}")
            cached["train_seconds"] = _train_seconds(hist)
            return cached
    t0 = time.time()
    res = evaluate_claims(clip, train_set, test_set, OBJECT_TRAIN_TEMPLATES,
                          OBJECT_HELDOUT_TEMPLATES, seed=seed, progress=progress,
                          **eval_settings)
    out = {"variant": variant, "description": VARIANT_DESCRIPTIONS[variant],
           "train_config": cfg.to_dict(), "train_seconds": _train_seconds(hist),
           "final_train": hist["history"][-1] if hist["history"] else {},
           "eval_seconds": time.time() - t0, "eval_settings": jsonable(eval_settings),
           "eval_version": EVAL_VERSION,
           "results": res}
    atomic_write_json(res_path, out, indent=1, sort_keys=False)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None,
                   help="data root with caltech101/ (default: $CROSSGAP_SHARED_DATA)")
    p.add_argument("--out", default="docs/experiments.md", help="markdown report path")
    p.add_argument("--work-dir", default=None,
                   help="models/results cache (default: <cache>/experiment_caltech101)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--reeval", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 20 training steps, short inversions, 200 test images")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    if a.data_root is None and not os.environ.get("CROSSGAP_SHARED_DATA"):
        p.error("give --data-root or set CROSSGAP_SHARED_DATA")
    steps = 20 if a.quick else a.steps
    work = a.work_dir or os.path.join(default_cache_dir(), "experiment_caltech101"
                                      + ("_quick" if a.quick else ""))
    size = 64
    train_set = coop_data(DATASET, a.data_root, "train", size, progress=not a.no_progress)
    test_set = coop_data(DATASET, a.data_root, "test", size, progress=not a.no_progress)
    ev = QUICK_EVAL if a.quick else EVAL_SETTINGS
    runs = {}
    for v in a.variants:
        runs[v] = run_variant(v, train_set, test_set, work, steps=steps, seed=a.seed,
                              eval_settings=ev, retrain=a.retrain, reeval=a.reeval,
                              progress=not a.no_progress)
    out_dir = os.path.dirname(os.path.abspath(a.out))
    ensure_dir(out_dir)
    stem = os.path.splitext(os.path.basename(a.out))[0]
    fig = plot_claims({v: runs[v]["results"] for v in runs},
                      os.path.join(out_dir, f"{stem}_caltech101.png"),
                      title="Caltech101 (CoOp test vs train), CLIPs trained here")
    atomic_write_json(os.path.join(out_dir, f"{stem}_caltech101.json"), runs, indent=1,
                      sort_keys=False)
    cmd = "python -m crossgap_jax.train.experiment " + " ".join(
        x for x in (sys.argv[1:] if argv is None else argv) if x != "--no-progress")
    data_desc = (f"Caltech101, CoOp split (`split_zhou_Caltech101.json`): train "
                 f"{len(train_set)} images (training + retrieval gallery), test "
                 f"{len(test_set)} images (queries, zero-shot); 100 classes; images resized "
                 f"(shorter side) and centre-cropped to {size} px, cached once as uint8.")
    write_report(runs, a.out, fig, command=cmd.strip(), data_desc=data_desc, quick=a.quick)
    print(f"wrote {a.out}, {fig}")
    return runs


if __name__ == "__main__":
    main()
