"""CLIP image preprocessing for the model layer: a re-export of the data layer's code.

Decoding (:func:`load_image`, :func:`to_rgb`, :class:`ImageDecodeError`) lives in
:mod:`crossgap_jax.data.decoding`, resizing and normalisation (:func:`preprocess_image`,
...) in :mod:`crossgap_jax.data.preprocess`: the data layer's batch loader uses them and
the layering rule (data -> models -> ...) forbids data importing models. This module keeps
the historical import path working; the objects are the same.
"""

from crossgap_jax.data.decoding import (
    RESCALED_FROM,
    ImageDecodeError,
    _high_depth_to_8bit,
    is_high_bit_depth,
    load_image,
    to_rgb,
)
from crossgap_jax.data.preprocess import (
    OPENAI_MEAN,
    OPENAI_STD,
    RESAMPLE,
    _resample,
    center_crop,
    preprocess_image,
    preprocess_images,
    resize_shortest_side,
)

__all__ = [
    "OPENAI_MEAN", "OPENAI_STD", "RESAMPLE", "RESCALED_FROM", "ImageDecodeError",
    "_high_depth_to_8bit", "_resample", "center_crop", "is_high_bit_depth", "load_image",
    "preprocess_image", "preprocess_images", "resize_shortest_side", "to_rgb",
]
