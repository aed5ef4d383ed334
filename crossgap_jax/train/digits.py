"""Train the shipped demo model: a small CLIP on scikit-learn's bundled digits.

    python -m crossgap_jax.train.digits            # writes crossgap_jax/assets/demo_digits.*

Data: the 1,797 8x8 digits of ``sklearn.datasets.load_digits`` upscaled to 32 px (grey,
replicated to RGB), a stratified 70/30 train/test split fixed by ``split_seed`` 0; the model
sees only the training part. Captions: :data:`~crossgap_jax.train.data.DIGIT_TRAIN_TEMPLATES`
with the class names ``"zero"`` .. ``"nine"``; the held-out templates are for evaluation.

The checkpoint is the native safetensors format (float32, about 15 MB: the 49,408 x 64
token embedding is 3.2M of the 3.7M parameters); the JSON card beside it records the
command, seed, data, config, training time, metrics on the held-out test split and the
file's sha256.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import jax

from crossgap_jax.fileio import atomic_write_json
from crossgap_jax.models.bundle import params_sha256
from crossgap_jax.models.checkpoints import sha256_file
from crossgap_jax.train.configs import AugmentConfig, TrainConfig
from crossgap_jax.train.data import DIGIT_HELDOUT_TEMPLATES, DIGIT_TRAIN_TEMPLATES, digits_data
from crossgap_jax.train.trainer import train

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
CHECKPOINT_NAME = "demo_digits.safetensors"
CARD_NAME = "demo_digits.json"
COMMAND = "python -m crossgap_jax.train.digits"


def digits_train_config(seed: int = 0, steps: int = 800) -> TrainConfig:
    """The demo model's training recipe (variant (a): CLIP loss, learned temperature)."""
    return TrainConfig(
        arch="crossgap-digits", variant="clip", steps=steps, batch_size=128,
        learning_rate=1e-3, warmup_steps=100, weight_decay=0.1, text_length=16,
        augment=AugmentConfig(crop_scale=(0.7, 1.0), crop_ratio=(0.85, 1.15), flip=False,
                              brightness=0.2, contrast=0.2),
        seed=seed, log_every=50,
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=ASSET_DIR, help="output folder (default: the package's "
                   "assets folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    cfg = digits_train_config(a.seed, a.steps)
    train_set, test_set = digits_data(cfg.clip_config.vision.image_size, test_fraction=0.3,
                                      split_seed=0)
    t0 = time.time()
    result = train(cfg, train_set, DIGIT_TRAIN_TEMPLATES, out_dir=a.out,
                   checkpoint_name=CHECKPOINT_NAME, resume=False, progress=not a.no_progress,
                   metadata={"command": COMMAND + (f" --seed {a.seed}" if a.seed else "")
                             + (f" --steps {a.steps}" if a.steps != 800 else ""),
                             "split": "sklearn digits, stratified 70/30, split_seed 0"})
    # The resumable state and history live beside the checkpoint only while training.
    hist = os.path.join(a.out, "history.json")
    if os.path.isfile(hist):
        os.remove(hist)
    card = {
        "name": "crossgap-digits demo model",
        "checkpoint": CHECKPOINT_NAME,
        "format": "crossgap_jax native (safetensors, float32)",
        "command": COMMAND + (f" --seed {a.seed}" if a.seed else "")
        + (f" --steps {a.steps}" if a.steps != 800 else ""),
        "seed": a.seed,
        "architecture": cfg.clip_config.to_dict(),
        "train_config": cfg.to_dict(),
        "data": {
            "source": "sklearn.datasets.load_digits (bundled with scikit-learn)",
            "images": "8x8 grey digits, 0..16 scaled to 0..255, bilinear upscale to 32 px, "
                      "replicated to RGB",
            "split": "stratified 70/30 train/test, numpy default_rng(0) per class",
            "num_train": len(train_set), "num_test": len(test_set),
            "classnames": list(train_set.classnames),
            "train_templates": list(DIGIT_TRAIN_TEMPLATES),
            "heldout_templates": list(DIGIT_HELDOUT_TEMPLATES),
        },
        "training": {"seconds": round(result.seconds, 1), "final": result.history[-1],
                     "devices": [str(d) for d in jax.devices()],
                     "platform": platform.platform(), "python": sys.version.split()[0],
                     "jax": jax.__version__,
                     "date": datetime.date.today().isoformat()},
        "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(result.clip.params))),
    }
    if not a.no_eval:
        from crossgap_jax.demo import demo_metrics
        card["metrics_heldout"] = demo_metrics(result.clip, train_set, test_set,
                                               progress=not a.no_progress)
    card["sha256"] = sha256_file(result.checkpoint)
    # The file hash can change between identical runs (safetensors' metadata order); the
    # parameter hash cannot.
    card["params_sha256"] = params_sha256(result.clip.params)
    card["size_bytes"] = os.path.getsize(result.checkpoint)
    card["wall_seconds"] = round(time.time() - t0, 1)
    atomic_write_json(os.path.join(a.out, CARD_NAME), card, indent=1, sort_keys=False)
    print(f"wrote {result.checkpoint} ({card['size_bytes'] / 1e6:.1f} MB) and "
          f"{os.path.join(a.out, CARD_NAME)}")
    return card


if __name__ == "__main__":
    main()
