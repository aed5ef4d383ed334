"""Image preprocessing vs transformers' PIL ``CLIPImageProcessor`` on real Caltech101 images.

transformers 5 offers ``CLIPImageProcessorPil`` (PIL/NumPy; the default
``CLIPImageProcessor`` needs torchvision, absent here). Its steps equal ours (PIL bicubic
resize of the short side to 224, long side ``int(224 * long / short)``, [0, 1] scaling,
OpenAI mean/std) except the centre-crop offset: transformers floors ``(size - 224) / 2``,
torchvision (OpenAI's and open_clip's pipelines, which we follow) rounds it. So:

- with the crop offset taken the torchvision way on transformers' resized output, the
  two agree to float32 rounding (max abs diff <= 1e-5 in normalised units);
- end to end, images whose resized long side is odd differ by a one-pixel crop shift;
  the mean abs difference is printed and bounded loosely.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from PIL import Image

from crossgap_jax.data.decoding import ImageDecodeError, load_image
from crossgap_jax.data.preprocess import (
    OPENAI_MEAN,
    OPENAI_STD,
    center_crop,
    preprocess_image,
    preprocess_images,
    resize_shortest_side,
)

SIZE = 224


@pytest.fixture(scope="module")
def caltech_images(shared_data):
    root = shared_data / "caltech101" / "101_ObjectCategories"
    files = sorted(glob.glob(str(root / "*" / "*.jpg")))
    if not files:
        pytest.skip(f"no Caltech101 images under {root}")
    chosen = files[::150]
    greys, sizes = [], {}
    for f in files[::5]:
        with Image.open(f) as im:
            sizes[f] = im.size
            if im.mode == "L" and len(greys) < 4:
                greys.append(f)
    extremes = [min(sizes, key=lambda f: min(sizes[f])), max(sizes, key=lambda f: max(sizes[f])),
                max(sizes, key=lambda f: sizes[f][0] / sizes[f][1]),
                min(sizes, key=lambda f: sizes[f][0] / sizes[f][1])]
    out = list(dict.fromkeys(chosen + greys + extremes))
    assert greys, "expected greyscale images in Caltech101"
    return out


@pytest.fixture(scope="module")
def hf_processor():
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "CLIPImageProcessorPil", None)
    if cls is None:
        pytest.skip("this transformers has no PIL-backend CLIPImageProcessor")
    return cls()


def _torchvision_offset(n: int) -> int:
    return int(round((n - SIZE) / 2.0))


def test_matches_hf_processor_up_to_crop_convention(caltech_images, hf_processor):
    strict_max, e2e = 0.0, []
    for f in caltech_images:
        ours = preprocess_image(load_image(f))
        assert ours.shape == (SIZE, SIZE, 3) and ours.dtype == np.float32
        with Image.open(f) as im:
            full = hf_processor(images=im, do_center_crop=False,
                                return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
            theirs = hf_processor(images=im, return_tensors="np")["pixel_values"][0]
        h, w = full.shape[:2]
        assert min(h, w) == SIZE
        top, left = _torchvision_offset(h), _torchvision_offset(w)
        same_crop = full[top:top + SIZE, left:left + SIZE]
        strict_max = max(strict_max, float(np.abs(ours - same_crop).max()))
        e2e.append(float(np.abs(ours - theirs.transpose(1, 2, 0)).mean()))
    e2e = np.asarray(e2e)
    print(f"\n[preprocess] {len(caltech_images)} Caltech101 images vs CLIPImageProcessorPil: "
          f"same crop max abs diff {strict_max:.2e}; end to end mean abs diff "
          f"{e2e.mean():.4f} (max per image {e2e.max():.4f}, exact on "
          f"{int((e2e < 1e-5).sum())} images; the rest differ by transformers' floor crop)")
    assert strict_max <= 1e-5
    assert e2e.mean() < 0.05 and (e2e < 1e-5).mean() > 0.5


def test_greyscale_becomes_three_equal_channels(caltech_images):
    greys = [f for f in caltech_images if Image.open(f).mode == "L"]
    x = preprocess_image(load_image(greys[0]))
    raw = x * np.asarray(OPENAI_STD, np.float32) + np.asarray(OPENAI_MEAN, np.float32)
    np.testing.assert_allclose(raw[..., 0], raw[..., 1], atol=1e-6)
    np.testing.assert_allclose(raw[..., 1], raw[..., 2], atol=1e-6)


def test_resize_and_crop_geometry():
    im = Image.new("RGB", (300, 191))
    r = resize_shortest_side(im, SIZE)
    assert r.size == (351, SIZE)  # int(224 * 300 / 191) = 351
    # torchvision's rounding (banker's): (351 - 224) / 2 = 63.5 -> 64
    row = (np.arange(351) % 256).astype(np.uint8)
    grad = Image.fromarray(np.tile(row[None, :, None], (SIZE, 1, 3)))
    assert np.asarray(center_crop(grad, SIZE))[0, 0, 0] == 64
    tall = resize_shortest_side(Image.new("RGB", (100, 400)), SIZE)
    assert tall.size == (SIZE, 896)
    tiny = center_crop(Image.new("RGB", (10, 300), (255, 255, 255)), SIZE)  # padded
    assert tiny.size == (SIZE, SIZE)


def test_batch_and_errors(tmp_path, caltech_images):
    ims = [load_image(f) for f in caltech_images[:3]]
    batch = preprocess_images(ims)
    assert batch.shape == (3, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batch[1], preprocess_image(ims[1]))
    assert preprocess_images([]).shape == (0, SIZE, SIZE, 3)
    assert preprocess_images(ims[:1], image_size=64).shape == (1, 64, 64, 3)
    with pytest.raises(TypeError):
        preprocess_image(np.zeros((4, 4, 3)))


def test_corrupt_and_truncated_files_name_the_file(tmp_path, caltech_images):
    data = open(caltech_images[0], "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 definitely not a jpeg" + os.urandom(64))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(ImageDecodeError, match=str(path).replace(".", r"\.")):
            load_image(path)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
