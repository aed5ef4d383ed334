"""Training-view augmentation, PIL/NumPy only: random resized crop + horizontal flip.

The transform of Herzog & Wang's (and the ICLR24 GDA baseline's) support-set pre-extraction
(``few_shot_classification/scripts/preextract_img_features.py``: torchvision's
``RandomResizedCrop(224, scale=(0.5, 1), interpolation=BICUBIC)``, ``RandomHorizontalFlip(0.5)``,
``ToTensor``, ``Normalize`` with CLIP's mean/std). The crop box follows torchvision's
``RandomResizedCrop.get_params`` (ten tries of area fraction ``U(scale)`` and log-uniform
aspect ratio in ``ratio``, box size rounded, top-left uniform; else the centre crop clamped to
the ratio range), drawn from a NumPy generator instead of torch's, so it is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from crossgap_jax.data.decoding import to_rgb
from crossgap_jax.data.preprocess import OPENAI_MEAN, OPENAI_STD, pil_resample

#: Herzog & Wang's crop area range and torchvision's default aspect-ratio range.
HW_CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def crop_box(width: int, height: int, rng: np.random.Generator,
             scale: Sequence[float] = HW_CROP_SCALE, ratio: Sequence[float] = CROP_RATIO
             ) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random resized crop of a ``width x height`` image
    (torchvision's ``RandomResizedCrop.get_params``, see the module docstring)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augmented_view(image: Image.Image, rng: np.random.Generator, image_size: int = 224,
                   mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD, *,
                   interpolation: str = "bicubic", scale: Sequence[float] = HW_CROP_SCALE,
                   flip_p: float = 0.5, **_ignored: Any) -> np.ndarray:
    """One augmented view: random resized crop to ``image_size`` (``interpolation``), then a
    horizontal flip with probability ``flip_p``, scaled to [0, 1] and normalised.

    Args:
        image: a PIL image (made RGB as everywhere in the package).
        rng: the generator of this view (crop box first, then the flip draw).
        image_size, mean, std, interpolation: the model's preprocessing options (the other
            keys of :attr:`CLIP.preprocess_options` are ignored: the crop replaces the resize).

    Returns:
        ``(image_size, image_size, 3)`` float32, NHWC like the eval preprocessing.
    """
    image = to_rgb(image)
    top, left, h, w = crop_box(image.size[0], image.size[1], rng, scale)
    view = image.crop((left, top, left + w, top + h)).resize((image_size, image_size),
                                                            pil_resample(interpolation))
    if rng.uniform() < flip_p:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    x = np.asarray(view, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
