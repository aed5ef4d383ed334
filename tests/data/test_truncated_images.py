"""Truncated JPEGs are decoded as the paper authors' code decodes them (PIL's
``LOAD_TRUNCATED_IMAGES``), not skipped; genuinely undecodable files are still skipped and
counted (or raised with ``on_error="raise"``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from crossgap_jax.data import ImageBatchLoader, ImageDecodeError, ImageSplit, open_image


def _jpeg_bytes(seed: int = 0, size=(48, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _pil_truncated_reference(data: bytes) -> np.ndarray:
    """What the authors' code gets: PIL with the global flag set."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def test_truncated_jpeg_decoded_like_pil_load_truncated(tmp_path):
    full = _jpeg_bytes()
    cut = full[: len(full) // 2]
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut)
    # PIL itself refuses it by default: the test really has a truncated file.
    with pytest.raises(OSError, match="truncated"), Image.open(path) as im:
        im.load()
    want = _pil_truncated_reference(cut)
    np.testing.assert_array_equal(np.asarray(open_image(str(path))), want)
    np.testing.assert_array_equal(np.asarray(open_image(cut)), want)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the global flag is restored
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        open_image(str(path), truncated="error")


def test_loader_decodes_truncated_and_counts_undecodable(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(_jpeg_bytes(i))
        paths.append(str(p))
    data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data[: len(data) // 2])  # truncated: decoded
    open(paths[3], "wb").write(b"not an image")  # undecodable: skipped and counted
    split = ImageSplit("toy", "test", items=[f"img{i}" for i in range(4)], paths=paths)
    loader = ImageBatchLoader(split, 4, image_size=8, num_threads=1, fast_decode=False)
    (batch,) = list(loader)
    assert batch.mask.tolist() == [True, True, True, False]
    rep = loader.report()
    assert rep["skipped"] == 1 and rep["skipped_names"] == ["img3"]
    with pytest.raises(ImageDecodeError, match="img3.jpg"):
        split.open_image(3)


def test_bad_truncated_option():
    with pytest.raises(ValueError, match="truncated must be"):
        open_image(_jpeg_bytes(), truncated="skip")
