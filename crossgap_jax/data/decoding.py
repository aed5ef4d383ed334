"""Image decoding: files or encoded bytes -> RGB PIL images, with errors that name the image.

One deliberate difference from PIL's ``convert("RGB")`` (:func:`to_rgb`): greyscale images of
more than 8 bits (PIL modes ``I;16*``, ``I``: 16-bit PNG / TIFF) and float images (``F``) are
scaled to 8 bits by their bit depth before the RGB conversion. PIL alone (which the reference
uses) clamps their values to [0, 255] instead (a 16-bit photo becomes almost all white, a
[0, 1] float image almost black). The input pipeline counts such images (``rescaled`` in its
report).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "EXIF_ORIENTATION",
    "RESCALED_FROM",
    "ImageDecodeError",
    "is_high_bit_depth",
    "load_image",
    "open_image",
    "to_rgb",
]


class ImageDecodeError(ValueError):
    """An image file is missing, corrupt or truncated; the message names the file."""


# ``Image.info`` key set on images that :func:`to_rgb` rescaled: the original PIL mode.
RESCALED_FROM = "crossgap_jax.rescaled_from_mode"
# ``Image.info`` key set on decoded images whose EXIF orientation tag is not 1 (identity):
# the tag's value (2-8), whether or not it was applied (``exif_transpose``).
EXIF_ORIENTATION = "crossgap_jax.exif_orientation"
_ORIENTATION_TAG = 0x0112
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                  Image.DecompressionBombError)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of ``image`` (1 when absent or unreadable)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a malformed EXIF block: PIL's own exif_transpose would fail too
        return 1


def _decode(im: Image.Image, exif_transpose: bool) -> Image.Image:
    """Full decode of an opened image -> RGB (see :func:`to_rgb`), the EXIF orientation
    recorded in ``info[EXIF_ORIENTATION]`` (if not 1) and applied when ``exif_transpose``."""
    im.load()  # full decode here so that truncation is caught here
    orientation = _orientation(im)
    if exif_transpose and orientation != 1:
        im = ImageOps.exif_transpose(im)
    out = to_rgb(im)
    if orientation != 1:
        out.info[EXIF_ORIENTATION] = orientation
    return out


def _error_text(err: Exception) -> str:
    if isinstance(err, Image.DecompressionBombError):
        return (f"{err} (PIL's decompression-bomb limit: 2 x Image.MAX_IMAGE_PIXELS = "
                f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; raise PIL.Image.MAX_IMAGE_PIXELS "
                f"if the image is trusted)")
    return str(err)


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


def load_image(path: str | os.PathLike, exif_transpose: bool = False) -> Image.Image:
    """Open and fully decode an image file as RGB.

    ``exif_transpose``: turn the image as its EXIF orientation tag says
    (``PIL.ImageOps.exif_transpose``); the reference ignores the tag (default). Either
    way a tag other than 1 is recorded in ``info[EXIF_ORIENTATION]``.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded (corrupt or truncated).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return _decode(im, exif_transpose)
    except _DECODE_ERRORS as e:
        raise decode_error(path, e) from e


def decode_error(name: str, err: Exception) -> ImageDecodeError:
    """The one-line :class:`ImageDecodeError` for image ``name`` that PIL failed on."""
    return ImageDecodeError(f"cannot decode image {name}: {_error_text(err)}")


def _target_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """Shortest side -> ``size``, long side ``int(size * long / short)`` (the preprocess rule)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


log = logging.getLogger(__name__)
_TRUNCATED_LOCK = threading.Lock()


@contextlib.contextmanager
def _load_truncated_images():
    """PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` set for the duration (a module flag: one
    thread at a time; threads decoding meanwhile may also tolerate truncation, which is the
    default behaviour anyway)."""
    with _TRUNCATED_LOCK:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def open_image(
    source: str | os.PathLike | bytes,
    *,
    draft_size: int | None = None,
    draft_margin: float = 2.0,
    name: str | None = None,
    truncated: str = "decode",
    exif_transpose: bool = False,
) -> Image.Image:
    """Open and fully decode an image (file path or encoded bytes) as RGB.

    ``truncated``: what to do with a file PIL refuses as truncated or broken. ``"decode"``
    (default, what the paper authors' code does: PIL's ``LOAD_TRUNCATED_IMAGES``, the
    missing part left grey; logged as a warning) or ``"error"`` (raise
    :class:`ImageDecodeError`, which the batch loader skips and counts with
    ``on_error="skip"``). A file that cannot be decoded even so is an
    :class:`ImageDecodeError` either way. An image over PIL's decompression-bomb limit
    (``2 * Image.MAX_IMAGE_PIXELS``) is an :class:`ImageDecodeError` naming the file and
    the limit. Other arguments: see :func:`_open_image`.
    """
    if truncated not in ("decode", "error"):
        raise ValueError(f"truncated must be 'decode' or 'error', got {truncated!r}")
    kw = dict(draft_size=draft_size, draft_margin=draft_margin, name=name,
              exif_transpose=exif_transpose)
    try:
        return _open_image(source, **kw)
    except ImageDecodeError as e:
        if truncated == "error":
            raise
        first = e
    with _load_truncated_images():
        try:
            img = _open_image(source, **kw)
        except ImageDecodeError:
            raise first from None
    log.warning("%s; decoded anyway, as PIL's LOAD_TRUNCATED_IMAGES does", first)
    return img


def _open_image(
    source: str | os.PathLike | bytes,
    *,
    draft_size: int | None = None,
    draft_margin: float = 2.0,
    name: str | None = None,
    exif_transpose: bool = False,
) -> Image.Image:
    """Open and fully decode an image (file path or encoded bytes) as RGB.

    Args:
        source: a file path, or the encoded bytes of an image.
        draft_size: fast mode for large JPEGs. If the image is a JPEG whose shorter side is
            at least ``2 * draft_margin * draft_size``, libjpeg decodes it at 1/2, 1/4 or
            1/8 scale (via ``PIL.Image.draft``; the shorter side stays
            ``>= draft_margin * draft_size``) and the result is resized (bicubic) so that
            its shorter side is ``draft_size``, the long side computed from the *original*
            size exactly as :func:`~crossgap_jax.data.preprocess.resize_shortest_side`
            does: the geometry matches the full decode, only the filtering differs
            slightly. Other images are returned at full size. ``None``: full decode.
        draft_margin: how much larger than ``draft_size`` the reduced decode must stay
            (2: mean abs difference ~0.01 in normalised units, about 0.7 grey levels,
            on upscaled Caltech101 photos; 1: ~0.03, faster).
        name: name used in error messages (defaults to the path).
        exif_transpose: see :func:`load_image`.

    Returns:
        The decoded RGB image.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the data cannot be decoded (corrupt or truncated).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        fileobj: Any = io.BytesIO(source)
    else:
        path = os.fspath(source)
        label = name or path
        if draft_size is None:
            return load_image(path, exif_transpose)  # the reference full decode
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file not found: {path}")
        fileobj = path
    try:
        with Image.open(fileobj) as im:
            original = im.size
            if draft_size is not None and im.format == "JPEG":
                req = int(np.ceil(draft_size * max(1.0, draft_margin)))
                im.draft("RGB", (req, req))
            out = _decode(im, exif_transpose)  # 16-bit / float greyscale scaled by depth
    except _DECODE_ERRORS as e:
        raise decode_error(label, e) from e
    if exif_transpose and out.info.get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
        original = original[::-1]  # turned by a quarter: the long side changed axis
    if draft_size is not None and out.size != original:
        info = out.info
        out = out.resize(_target_dims(*original, draft_size), Image.BICUBIC)
        out.info = info
    return out
