"""CLIP image preprocessing, NumPy/PIL only (no torch, no torchvision).

Same steps as OpenAI's ``clip.load(...)[1]`` transform: RGB, resize the shortest side to
the model resolution with PIL bicubic, centre crop, scale to [0, 1], normalise with the
CLIP mean/std. Output layout is NHWC float32 (JAX convention).

One deliberate difference (:func:`to_rgb`): greyscale images of more than 8 bits (PIL
modes ``I;16*``, ``I``: 16-bit PNG / TIFF) and float images (``F``) are scaled to 8 bits
by their bit depth before the RGB conversion. PIL's ``convert("RGB")``, which the
reference uses, clamps their values to [0, 255] instead (a 16-bit photo becomes almost all
white, a [0, 1] float image almost black). The input pipeline counts such images
(``rescaled`` in its report).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossgap_jax.models.configs import OPENAI_MEAN, OPENAI_STD


class ImageDecodeError(ValueError):
    """An image file is missing, corrupt or truncated; the message names the file."""


# ``Image.info`` key set on images that :func:`to_rgb` rescaled: the original PIL mode.
RESCALED_FROM = "crossgap_jax.rescaled_from_mode"


def _high_depth_to_8bit(image: Image.Image) -> np.ndarray:
    """``(H, W)`` uint8 of a 16-bit / 32-bit-int / float greyscale image, scaled by its depth.

    ``I;16*`` and ``I``: ``round(v * 255 / 65535)`` (``I`` holds the 16-bit decode of PNG
    and TIFF); ``F``: ``round(v * 255)`` (the [0, 1] convention of float images).

    Raises:
        ValueError: ``I`` values outside [0, 65535] or ``F`` values outside [0, 1] / not
            finite (no bit depth to scale by).
    """
    mode = image.mode
    v = np.asarray(image).astype(np.float64)
    if mode == "F":
        if v.size and not (np.isfinite(v).all() and v.min() >= 0.0 and v.max() <= 1.0):
            raise ValueError(f"float image (mode F) with values in [{np.nanmin(v):g}, "
                             f"{np.nanmax(v):g}] (or not finite): expected [0, 1]")
        return np.rint(v * 255.0).astype(np.uint8)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise ValueError(f"integer image (mode {mode}) with values in [{v.min():g}, "
                         f"{v.max():g}]: expected the 16-bit range [0, 65535]")
    return np.rint(v * (255.0 / 65535.0)).astype(np.uint8)


def is_high_bit_depth(image: Image.Image) -> bool:
    """Whether :func:`to_rgb` rescales ``image`` (modes ``I;16*``, ``I``, ``F``)."""
    return image.mode in ("I", "F") or image.mode.startswith("I;16")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")``, except for greyscale images deeper than 8 bits.

    ``I;16``/``I;16B``/``I;16L``/``I`` (16-bit) and ``F`` (float, [0, 1]) images are first
    scaled to 8 bits by their depth (see :func:`_high_depth_to_8bit`); PIL alone would clamp
    them to [0, 255]. The result then carries ``info[RESCALED_FROM] = <original mode>`` so
    that the caller can count it.

    Raises:
        ValueError: a 32-bit integer or float image whose values fit no bit depth.
    """
    if not is_high_bit_depth(image):
        return image.convert("RGB")
    rgb = Image.fromarray(_high_depth_to_8bit(image), "L").convert("RGB")
    rgb.info = {**image.info, RESCALED_FROM: image.mode}
    return rgb


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file as RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded (corrupt or truncated).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()  # force the full decode so truncation is caught here
            return to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"cannot decode image {path}: {e}") from e


RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def _resample(interpolation: str) -> int:
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
    return image.resize((new_w, new_h), _resample(interpolation))


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
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    image = to_rgb(image)
    if resize == "shortest":
        image = center_crop(resize_shortest_side(image, resize_size or image_size,
                                                 interpolation), image_size, crop_offset)
    elif resize == "squash":
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), _resample(interpolation))
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
) -> np.ndarray:
    """A list of PIL images -> ``(N, image_size, image_size, 3)`` float32 array."""
    if len(images) == 0:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    return np.stack([preprocess_image(im, image_size, mean, std, resize=resize,
                                      interpolation=interpolation, resize_size=resize_size,
                                      crop_offset=crop_offset)
                     for im in images])
