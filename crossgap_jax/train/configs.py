"""Small CLIP architectures trained in this project, and the training hyper-parameters.

The architectures are ordinary :class:`~crossgap_jax.models.configs.CLIPConfig` records
(a ViT image tower, a causal text transformer with the real 49,408-token OpenAI BPE
vocabulary and 77-token context), declared by the CLIP family
(:data:`crossgap_jax.models.clip.model.SMALL_ARCHITECTURES`, part of its ``ARCHITECTURES``)
so that ``get_config("crossgap-digits")`` and checkpoint loading work like for any other
CLIP, without importing this package. They are small enough to train on a CPU in minutes.

Size note: at small width the token embedding dominates (49,408 x width). The shipped
demo model (``crossgap-caltech``, text width 128) has 6.3M of its 8M parameters in the
token embedding; it ships as a float16 native checkpoint of 16 MB with the whole
vocabulary (``python -m crossgap_jax.train.demo_caltech``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from crossgap_jax.models import CLIPConfig, get_config

VARIANTS = ("clip", "clip+slip", "clip-t1", "clip+intra")
VARIANT_DESCRIPTIONS = {
    "clip": "(a) CLIP loss, learned temperature",
    "clip+slip": "(b) CLIP loss + SLIP's intra-modal image-image term (SimCLR on an MLP head "
                 "over the image trunk)",
    "clip-t1": "(c) CLIP loss, temperature fixed to 1",
    "clip+intra": "(b') CLIP loss + the intra-modal image-image term on the joint embedding "
                  "itself (no head)",
}
# SLIP's projection head (variant b), scaled down from SLIP's 4096 hidden / 256 output.
HEAD_HIDDEN = 512
HEAD_DIM = 128


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation applied on the fly (inside the jitted step).

    Attributes:
        crop_scale: ``(min, max)`` area fraction of the random resized crop.
        crop_ratio: ``(min, max)`` aspect ratio of the crop.
        flip: random horizontal flip (off for digits: a mirrored digit is another glyph).
        brightness, contrast: maximum relative jitter (0 disables).
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (with the data and the seed).

    Attributes:
        arch: architecture name (see :data:`crossgap_jax.models.SMALL_ARCHITECTURES`) or a
            CLIPConfig.
        variant: ``"clip"`` (a), ``"clip+slip"`` (b, SLIP-style head), ``"clip-t1"`` (c),
            or ``"clip+intra"`` (b', the image-image term on the joint embedding).
        steps: optimiser steps.
        batch_size: global batch (split over devices).
        learning_rate, warmup_steps, weight_decay, b1, b2, grad_clip: AdamW with linear
            warm-up then cosine decay to 0; decay on matrices only (not on biases, norms,
            embeddings' scalars like logit_scale).
        init_temperature: initial temperature of the learned-temperature variants
            (CLIP: 0.07). Variant (c) uses 1 throughout.
        max_logit_scale: clip the learned logit scale at this value (CLIP: 100).
        intra_weight: weight of the image-image term in variants (b)/(b') (SLIP: 1).
        intra_temperature: temperature of that term (SLIP/SimCLR: 0.1).
        text_length: token positions fed to the text encoder during training (the encoder
            is causal and pools at EOT, so any length > the longest caption is exact).
        augment: :class:`AugmentConfig`.
        seed: one seed for init, data order and augmentation.
        log_every, checkpoint_every: in steps (0 disables periodic checkpoints).
    """

    arch: Any = "crossgap-caltech"
    variant: str = "clip"
    steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.98
    grad_clip: float = 1.0
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    intra_weight: float = 1.0
    intra_temperature: float = 0.1
    text_length: int = 32
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; use one of {VARIANTS}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")

    @property
    def clip_config(self) -> CLIPConfig:
        return get_config(self.arch)

    @property
    def learn_temperature(self) -> bool:
        return self.variant != "clip-t1"

    @property
    def use_intra(self) -> bool:
        """An image-image term is added (variants b and b')."""
        return self.variant in ("clip+intra", "clip+slip")

    @property
    def intra_head(self) -> bool:
        """The image-image term acts on an MLP head over the image trunk (SLIP, variant b)
        rather than on the joint embedding (variant b')."""
        return self.variant == "clip+slip"

    def replace(self, **kw: Any) -> TrainConfig:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(self.arch, CLIPConfig):
            d["arch"] = self.arch.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        aug = d.get("augment")
        if isinstance(aug, dict):
            aug = {k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()}
            d["augment"] = AugmentConfig(**aug)
        return cls(**d)


def caltech_train_config(variant: str, steps: int = 600, seed: int = 0,
                         batch_size: int = 128) -> TrainConfig:
    """The controlled experiment's shared recipe on Caltech101 at 64 px
    (``crossgap-caltech``); ``variant`` is the only factor that changes. Variant ``"clip"``
    is the shipped demo model's recipe."""
    return TrainConfig(
        arch="crossgap-caltech", variant=variant, steps=steps, batch_size=batch_size,
        learning_rate=1e-3, warmup_steps=min(100, steps // 10), weight_decay=0.1,
        text_length=24,
        augment=AugmentConfig(crop_scale=(0.5, 1.0), flip=True, brightness=0.3,
                              contrast=0.3),
        seed=seed, log_every=25, checkpoint_every=100,
    )
