"""The offline demo: the paper's three measurements on a CLIP trained here on real data.

``run_demo`` needs nothing beyond the package and its pip dependencies: the model is the
small CLIP shipped in ``crossgap_jax/assets/demo_digits.safetensors`` (trained by
``python -m crossgap_jax.train.digits``, see the JSON card beside it) and the data are
scikit-learn's bundled handwritten digits, split exactly as in training (the model never saw
the test part). It prints image->image vs OTI->image retrieval, text->text vs OVI->text
retrieval on captions written with templates never used in training, zero-shot
classification inter- vs intra-modal, the modality gap, and writes a PNG plot.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from crossgap_jax.fileio import atomic_write_json, ensure_dir

ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
DEMO_CHECKPOINT = os.path.join(ASSET_DIR, "demo_digits.safetensors")
DEMO_CARD = os.path.join(ASSET_DIR, "demo_digits.json")

# Full demo settings (the paper's step counts); quick mode trims them for tests.
FULL = dict(oti_steps=150, oti_record_steps=(5, 10, 25, 50, 100), ovi_steps=1000,
            ovi_record_steps=(10, 50, 100, 250, 500), num_query_templates=2,
            max_test_images=None)
QUICK = dict(oti_steps=40, oti_record_steps=(10, 20), ovi_steps=60, ovi_record_steps=(20,),
             num_query_templates=2, max_test_images=100)


def load_demo_clip(path: str = DEMO_CHECKPOINT):
    """The shipped demo model as a :class:`~crossgap_jax.models.bundle.CLIP` bundle."""
    from crossgap_jax.models.bundle import CLIP
    from crossgap_jax.models.checkpoints import load_native
    from crossgap_jax.train import configs as _  # noqa: F401  (registers the small archs)

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"demo checkpoint not found: {path}\n"
            "It ships with the package; rebuild it with: python -m crossgap_jax.train.digits")
    config, params, info = load_native(path)
    return CLIP(config, params, info=info)


def demo_metrics(clip: Any, train: Any, test: Any, *, quick: bool = False,
                 progress: bool = True, log: Any = None) -> dict:
    """The demo's measurements of ``clip`` on the digits split (see :mod:`evaluate`)."""
    from crossgap_jax.train.data import DIGIT_HELDOUT_TEMPLATES, DIGIT_TRAIN_TEMPLATES
    from crossgap_jax.train.evaluate import evaluate_claims

    settings = QUICK if quick else FULL
    return evaluate_claims(clip, train, test, DIGIT_TRAIN_TEMPLATES, DIGIT_HELDOUT_TEMPLATES,
                           progress=progress, log=log, **settings)


def run_demo(out_dir: str = "crossgap_demo", quick: bool = False, *,
             checkpoint: str = DEMO_CHECKPOINT, progress: bool = True,
             verbose: bool = True) -> dict:
    """Run the demo end to end.

    Args:
        out_dir: folder for ``demo_results.json`` and ``demo_plot.png`` (created).
        quick: fewer inversion steps and 100 test images (a smoke test, seconds).
        checkpoint: the model (default: the shipped one).
        progress: tqdm bars.
        verbose: print the table.

    Returns:
        ``{"results": <evaluate_claims dict>, "table": str, "plot": path, "json": path,
        "seconds": float, "model": {...card summary}}``.
    """
    t0 = time.perf_counter()
    say = print if verbose else None
    from crossgap_jax.train.data import digits_data
    from crossgap_jax.train.report import plot_claims, text_table

    clip = load_demo_clip(checkpoint)
    card = {}
    if os.path.isfile(DEMO_CARD) and os.path.abspath(checkpoint) == DEMO_CHECKPOINT:
        with open(DEMO_CARD) as f:
            card = json.load(f)
    if say:
        say(f"model: {clip.config.name} trained here on sklearn digits "
            f"({card.get('command', 'see the checkpoint metadata')}, seed "
            f"{card.get('seed', '?')}); data: sklearn digits, held-out test split"
            + (" [quick mode: fewer steps, 100 test images]" if quick else ""))
    train, test = digits_data(clip.config.vision.image_size, test_fraction=0.3, split_seed=0)
    res = demo_metrics(clip, train, test, quick=quick, progress=progress, log=say)
    table = text_table(res)
    ensure_dir(out_dir)
    plot = plot_claims({"demo model": res}, os.path.join(out_dir, "demo_plot.png"),
                       title="crossgap-digits (trained here on sklearn digits): "
                             "intra-modal vs modality-inverted")
    js = os.path.join(out_dir, "demo_results.json")
    seconds = time.perf_counter() - t0
    atomic_write_json(js, {"results": res, "quick": quick, "seconds": seconds,
                           "checkpoint": os.path.abspath(checkpoint)}, indent=1, sort_keys=False)
    if say:
        say("")
        say(table)
        say("")
        say(f"wrote {plot} and {js} ({seconds:.0f} s)")
    return {"results": res, "table": table, "plot": plot, "json": js, "seconds": seconds,
            "model": {k: card.get(k) for k in ("command", "seed", "sha256")}}
