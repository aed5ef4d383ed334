"""Build the demo's shipped assets: the model and the embedded Caltech101 subset.

    python -m crossgap_jax.train.demo_caltech --data-root ../shared/data

1. **Model**: the controlled experiment's variant (a) ``clip`` (CLIP's symmetric InfoNCE,
   learned temperature; :func:`crossgap_jax.train.configs.caltech_train_config`: 600
   steps, batch 128, seed 0) trained on the CoOp *train* split of Caltech101 at 64 px. The
   run is resumable and cached in ``--work-dir``; a finished run there is reused. The
   result is written with :func:`~crossgap_jax.models.checkpoint.native.save_native` as
   ``crossgap_jax/assets/demo_caltech101.safetensors`` (float16 storage: the float32 file
   would be 32 MB, most of it the 49,408-token embedding; the model computes in float32)
   with a JSON card beside it (command, seed, steps, data, config, sha256).
2. **Data**: ``crossgap_jax/assets/demo_caltech101.npz`` (see
   :mod:`crossgap_jax.data.sources.embedded`): ``--train-per-class`` images of each class from the
   CoOp *train* split (the retrieval gallery) and ``--test-per-class`` from the *test* split
   (queries; the model never saw them), chosen by a seeded permutation per class, at 64 px
   (the training cache's resize + centre crop), JPEG ``--quality``; captions of every class
   from the held-out templates. A licence / attribution file goes beside it.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import time

import jax
import numpy as np
from PIL import Image

from crossgap_jax.data import ASSET_DIR, CARD_NAME, DEMO_DATA, DEMO_DATA_LICENSE
from crossgap_jax.fileio import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    jsonable,
    sha256_file,
)
from crossgap_jax.models import default_cache_dir, load_native, params_fingerprint, save_native
from crossgap_jax.train.configs import caltech_train_config
from crossgap_jax.train.data import (
    OBJECT_HELDOUT_TEMPLATES,
    OBJECT_TRAIN_TEMPLATES,
    LabelledImages,
    captions,
    coop_data,
)
from crossgap_jax.train.trainer import train

CHECKPOINT_NAME = "demo_caltech101.safetensors"
COMMAND = "python -m crossgap_jax.train.demo_caltech"
DATASET = "caltech101"
IMAGE_SIZE = 64

LICENSE_TEXT = """\
crossgap_jax/assets/demo_caltech101.npz contains a small subset of Caltech 101, resized
and centre-cropped to 64x64 pixels and re-encoded as JPEG, with captions generated from
the class names.

Dataset: Caltech 101
Authors: Fei-Fei Li, Marco Andreetto, Marc'Aurelio Ranzato, Pietro Perona
Citation: Li, F.-F., Andreetto, M., Ranzato, M. A., & Perona, P. (2022). Caltech 101
          (Version 1.0) [Data set]. CaltechDATA. https://doi.org/10.22002/D1.20086
Original paper: L. Fei-Fei, R. Fergus and P. Perona. Learning generative visual models
          from few training examples: an incremental Bayesian approach tested on 101 object
          categories. CVPR 2004, Workshop on Generative-Model Based Vision.
Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
          https://creativecommons.org/licenses/by/4.0/
Changes made: images selected (see demo_caltech101.json: per-class counts and seed),
          resized (shorter side to 64 px, bicubic) and centre-cropped to 64x64, re-encoded
          as JPEG; class names and the train/test assignment follow the CoOp split file
          split_zhou_Caltech101.json (Zhou et al., CoOp).
"""


def caltech_demo_train_config(steps: int = 600, seed: int = 0):
    """Variant (a) of the controlled experiment, unchanged (see ``caltech_train_config``)."""

    return caltech_train_config("clip", steps, seed)


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of up to ``per_class`` items of every class, chosen by a seeded
    permutation per class (``default_rng([seed, class])``); classes with fewer items keep
    all of them."""
    labels = np.asarray(labels)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out.append(np.random.default_rng([seed, int(c)]).permutation(idx)[:per_class])
    return np.sort(np.concatenate(out))


def _jpegs(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    blobs = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=quality, subsampling=0)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.concatenate(blobs), offsets


def build_demo_data(train: LabelledImages, test: LabelledImages, path: str, *,
                    train_per_class: int = 10, test_per_class: int = 4, quality: int = 90,
                    seed: int = 0) -> dict:
    """Write the embedded subset (format: :mod:`crossgap_jax.data.sources.embedded`); return its
    description for the card."""
    if tuple(train.classnames) != tuple(test.classnames):
        raise ValueError("train and test splits have different class names")
    arrays: dict[str, np.ndarray] = {"classnames": np.asarray(train.classnames, dtype=str)}
    counts = {}
    for name, data, k in (("train", train, train_per_class), ("test", test, test_per_class)):
        idx = per_class_subset(data.labels, k, seed)
        blob, offsets = _jpegs(data.images[idx], quality)
        arrays[f"{name}_jpeg"] = blob
        arrays[f"{name}_offsets"] = offsets
        arrays[f"{name}_labels"] = data.labels[idx].astype(np.int64)
        arrays[f"{name}_items"] = np.asarray([data.items[i] for i in idx], dtype=str)
        counts[name] = len(idx)
    caps = captions(train.classnames, OBJECT_HELDOUT_TEMPLATES)  # [class][template]
    ncls = len(train.classnames)
    arrays["text_queries"] = np.asarray([caps[c][0] for c in range(ncls)], dtype=str)
    arrays["text_queries_labels"] = np.arange(ncls, dtype=np.int64)
    arrays["text_gallery"] = np.asarray([caps[c][t] for t in range(1, len(OBJECT_HELDOUT_TEMPLATES))
                                         for c in range(ncls)], dtype=str)
    arrays["text_gallery_labels"] = np.tile(np.arange(ncls, dtype=np.int64),
                                            len(OBJECT_HELDOUT_TEMPLATES) - 1)
    arrays["query_templates"] = np.asarray(OBJECT_HELDOUT_TEMPLATES[:1], dtype=str)
    arrays["gallery_templates"] = np.asarray(OBJECT_HELDOUT_TEMPLATES[1:], dtype=str)
    atomic_write_with(path, lambda f: np.savez_compressed(f, **arrays))
    atomic_write_text(os.path.join(os.path.dirname(path), os.path.basename(DEMO_DATA_LICENSE)),
                      LICENSE_TEXT)

    return {"file": os.path.basename(path), "size_bytes": os.path.getsize(path),
            "sha256": sha256_file(path),
            "source": "Caltech101, CoOp split (split_zhou_Caltech101.json); CC BY 4.0, see "
                      + os.path.basename(DEMO_DATA_LICENSE),
            "images": f"resized (shorter side) and centre-cropped to {IMAGE_SIZE} px, JPEG "
                      f"quality {quality}, 4:4:4",
            "gallery": f"CoOp train split, up to {train_per_class} per class: {counts['train']}",
            "queries": f"CoOp test split (never seen in training), up to {test_per_class} per "
                       f"class: {counts['test']}",
            "selection_seed": seed, "num_train": counts["train"], "num_test": counts["test"],
            "text_query_templates": list(OBJECT_HELDOUT_TEMPLATES[:1]),
            "text_gallery_templates": list(OBJECT_HELDOUT_TEMPLATES[1:]),
            "train_templates": list(OBJECT_TRAIN_TEMPLATES)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None,
                   help="data root with caltech101/ (default: $CROSSGAP_SHARED_DATA)")
    p.add_argument("--out", default=ASSET_DIR, help="output folder (default: the package's "
                   "assets folder)")
    p.add_argument("--work-dir", default=None,
                   help="training run folder (resumable; default <cache>/demo_caltech101)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--train-per-class", type=int, default=10)
    p.add_argument("--test-per-class", type=int, default=4)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.data_root is None and not os.environ.get("CROSSGAP_SHARED_DATA"):
        p.error("give --data-root or set CROSSGAP_SHARED_DATA")

    t0 = time.time()
    train_set = coop_data(DATASET, a.data_root, "train", IMAGE_SIZE, progress=not a.no_progress)
    test_set = coop_data(DATASET, a.data_root, "test", IMAGE_SIZE, progress=not a.no_progress)
    os.makedirs(a.out, exist_ok=True)
    data_card = build_demo_data(train_set, test_set, os.path.join(a.out, os.path.basename(
        DEMO_DATA)), train_per_class=a.train_per_class, test_per_class=a.test_per_class,
        quality=a.quality, seed=a.seed)

    cfg = caltech_demo_train_config(a.steps, a.seed)
    work = a.work_dir or os.path.join(default_cache_dir(), "demo_caltech101")
    ckpt = os.path.join(work, "model.safetensors")
    hist_path = os.path.join(work, "history.json")
    hist = None
    if os.path.isfile(ckpt) and os.path.isfile(hist_path):
        with open(hist_path) as f:
            hist = json.load(f)
        if hist["config"] != jsonable(cfg.to_dict()):
            hist = None
    if hist is None:
        train(cfg, train_set, OBJECT_TRAIN_TEMPLATES, out_dir=work, progress=not a.no_progress,
              metadata={"command": COMMAND, "data": f"{DATASET} CoOp train split"})
        with open(hist_path) as f:
            hist = json.load(f)
    else:
        print(f"reusing the finished training run in {work}")
    config, params, _ = load_native(ckpt)
    out = os.path.join(a.out, CHECKPOINT_NAME)
    save_native(out, config, params, {
        "command": COMMAND, "data": f"{DATASET} CoOp train split ({len(train_set)} images)",
        "train_config": cfg.to_dict(), "templates": list(OBJECT_TRAIN_TEMPLATES),
        "final": {k: v for k, v in hist["history"][-1].items() if k != "seconds"},
        "storage": "float16 (trained in float32)"}, dtype="float16")
    _, stored, _ = load_native(out)
    card = {
        "name": "crossgap-caltech demo model: variant (a) of the controlled experiment",
        "checkpoint": CHECKPOINT_NAME,
        "format": "crossgap_jax native (safetensors), float16 storage; computes in float32",
        "command": COMMAND + (f" --seed {a.seed}" if a.seed else "")
        + (f" --steps {a.steps}" if a.steps != 600 else ""),
        "seed": a.seed,
        "variant": "clip: symmetric InfoNCE, learned temperature (init 0.07, capped at 0.01)",
        "architecture": config.to_dict(),
        "train_config": cfg.to_dict(),
        "training_data": {"source": "Caltech101, CoOp train split (split_zhou_Caltech101.json)",
                          "num_images": len(train_set), "image_size": IMAGE_SIZE,
                          "templates": list(OBJECT_TRAIN_TEMPLATES)},
        "training": {"seconds": round(float(hist["seconds"]), 1),
                     "final": hist["history"][-1],
                     "platform": platform.platform(), "python": sys.version.split()[0],
                     "date": datetime.date.today().isoformat()},
        "demo_data": data_card,
        "num_params": int(sum(np.size(x) for x in _leaves(stored))),
        "sha256": sha256_file(out),
        # Hash of the float32 values as loaded (the file hash can change with the
        # safetensors metadata order; this cannot).
        "params_sha256": params_fingerprint(stored),
        "size_bytes": os.path.getsize(out),
        "wall_seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(os.path.join(a.out, CARD_NAME), card, indent=1, sort_keys=False)
    print(f"wrote {out} ({card['size_bytes'] / 1e6:.1f} MB), "
          f"{data_card['file']} ({data_card['size_bytes'] / 1e6:.1f} MB) and "
          f"{os.path.join(a.out, CARD_NAME)}")
    return card


def _leaves(tree) -> list:
    return jax.tree_util.tree_leaves(tree)


if __name__ == "__main__":
    main()
