"""Contrastive training of small CLIPs (the controlled experiment's variants and the demo
model). This package only trains; measuring is the pipeline's
(:func:`crossgap_jax.pipeline.measure_claims`).

``python -m crossgap_jax.train.demo_caltech`` builds the shipped demo model (variant (a))
and the embedded demo data; ``python -m crossgap_jax.experiment`` trains the Caltech101
experiment's variants (a, b, c and b') and measures them.
"""

from crossgap_jax.train.configs import (
    VARIANT_DESCRIPTIONS,
    VARIANTS,
    AugmentConfig,
    TrainConfig,
)
from crossgap_jax.train.data import LabelledImages, caption_table, captions, digits_data
from crossgap_jax.train.losses import clip_loss, intra_image_loss
from crossgap_jax.train.trainer import TrainResult, init_params, loss_fn, make_optimizer, train

__all__ = [
    "VARIANTS", "VARIANT_DESCRIPTIONS", "AugmentConfig",
    "LabelledImages", "TrainConfig", "TrainResult", "caption_table", "captions", "clip_loss",
    "digits_data", "init_params", "intra_image_loss", "loss_fn", "make_optimizer",
    "train",
]
