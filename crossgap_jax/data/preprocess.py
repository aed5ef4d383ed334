"""CLIP image preprocessing, NumPy/PIL only (no torch, no torchvision).

Same steps as OpenAI's ``clip.load(...)[1]`` transform: RGB
(:func:`~crossgap_jax.data.decoding.to_rgb`), resize the shortest side to the model
resolution with PIL bicubic, centre crop, scale to [0, 1], normalise with the CLIP
mean/std. Output layout is NHWC float32 (JAX convention).

The batch loader (:mod:`crossgap_jax.data.loader`) and the model bundle use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from crossgap_jax.data.decoding import to_rgb

# OpenAI CLIP preprocessing constants (also used by open_clip's OpenAI-compatible models).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def pil_resample(interpolation: str) -> int:
    """PIL's resampling filter for ``interpolation`` (a :data:`RESAMPLE` key); ValueError
    otherwise."""
    if interpolation not in RESAMPLE:
        raise ValueError(f"interpolation must be one of {sorted(RESAMPLE)}, got {interpolation!r}")
    return RESAMPLE[interpolation]


def resize_shortest_side(image: Image.Image, size: int,
                         interpolation: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is ``size``, keeping the aspect ratio.

    The long side is ``int(size * long / short)``, as torchvision's ``Resize(int)`` does.
    """
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return image.resize((new_w, new_h), pil_resample(interpolation))


CROP_OFFSETS = ("round", "floor")


def center_crop(image: Image.Image, size: int, offset: str = "round") -> Image.Image:
    """Centre crop to ``size x size``.

    ``offset``: ``"round"`` (torchvision's ``int(round((h - size) / 2))``, CLIP, SLIP) or
    ``"floor"`` (transformers' ``(h - size) // 2``, its image processors: DINOv2). They
    differ by one pixel when ``h - size`` is odd and ``round`` rounds the half up.

    Images smaller than ``size`` (only possible for odd inputs) are zero padded first.
    """
    if offset not in CROP_OFFSETS:
        raise ValueError(f"crop offset must be one of {CROP_OFFSETS}, got {offset!r}")
    w, h = image.size
    if w < size or h < size:
        canvas = Image.new(image.mode, (max(w, size), max(h, size)))
        canvas.paste(image, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        image, (w, h) = canvas, canvas.size
    if offset == "floor":
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def resize_float_image(x: np.ndarray, size_wh: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize a ``(H, W, C)`` float image to ``size_wh = (w, h)`` in float32, channel by channel
    (PIL ``"F"`` images: PIL's resampling filters with their antialiasing support when
    downscaling, no rounding to 8 bits). torch's ``interpolate(..., antialias=True)`` (and so
    torchvision's and transformers' torchvision-backend resize of a float tensor) ports the
    same algorithm: processors that rescale to [0, 1] *before* resizing (DINOv3's) are
    reproduced this way, not by a uint8 resize."""
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c], np.float32), mode="F")
                        .resize(size_wh, pil_resample(interpolation)), np.float32)
             for c in range(x.shape[-1])]
    return np.stack(chans, axis=-1)


def preprocess_image(
    image: Image.Image,
    image_size: int = 224,
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
    *,
    resize: str = "shortest",
    interpolation: str = "bicubic",
    resize_size: int | None = None,
    crop_offset: str = "round",
    resize_float: bool = False,
) -> np.ndarray:
    """One PIL image -> normalised ``(image_size, image_size, 3)`` float32 array.

    The image is made RGB by :func:`to_rgb` (16-bit and float greyscale scaled by depth).

    Args:
        resize: ``"shortest"`` (CLIP, SLIP: shorter side to ``image_size``, centre crop)
            or ``"squash"`` (SigLIP: resize to ``image_size x image_size``, no crop).
        interpolation: ``"bicubic"`` (CLIP, SigLIP) or ``"bilinear"`` (SLIP).
        resize_size: with ``"shortest"``, the shorter side's size before the centre crop
            (DINOv2: 256 then crop 224); None: ``image_size`` (CLIP, SLIP).
        crop_offset: ``"round"`` (torchvision) or ``"floor"`` (transformers), see
            :func:`center_crop`.
        resize_float: with ``"squash"``, scale to [0, 1] first and resize the float image
            (:func:`resize_float_image`; transformers' ``DINOv3ViTImageProcessor`` order);
            False: resize the 8-bit image (PIL, as torchvision on PIL images).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    image = to_rgb(image)
    if resize == "shortest":
        image = center_crop(resize_shortest_side(image, resize_size or image_size,
                                                 interpolation), image_size, crop_offset)
    elif resize == "squash" and resize_float:
        x = np.asarray(image, dtype=np.float32) / 255.0
        if image.size != (image_size, image_size):
            x = resize_float_image(x, (image_size, image_size), interpolation)
        return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    elif resize == "squash":
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), pil_resample(interpolation))
    else:
        raise ValueError(f"resize must be 'shortest' or 'squash', got {resize!r}")
    x = np.asarray(image, dtype=np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess_images(
    images: Sequence[Image.Image],
    image_size: int = 224,
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
    *,
    resize: str = "shortest",
    interpolation: str = "bicubic",
    resize_size: int | None = None,
    crop_offset: str = "round",
    resize_float: bool = False,
) -> np.ndarray:
    """A list of PIL images -> ``(N, image_size, image_size, 3)`` float32 array."""
    if len(images) == 0:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    return np.stack([preprocess_image(im, image_size, mean, std, resize=resize,
                                      interpolation=interpolation, resize_size=resize_size,
                                      crop_offset=crop_offset, resize_float=resize_float)
                     for im in images])
