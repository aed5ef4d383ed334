"""Input pipeline: fixed shapes, masks, order, sharding, bad inputs, reduced-size decode."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

import crossgap_jax.data as cgd
from crossgap_jax.data import ImageBatchLoader, ImageDecodeError, ImageSplit, MissingFilesError
from crossgap_jax.data.decoding import load_image
from crossgap_jax.data.preprocess import preprocess_image


def _make_images(folder, n, size=(40, 28)):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        arr = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
        p = os.path.join(folder, f"img_{i:03d}.jpg")
        Image.fromarray(arr).save(p, "JPEG")
        paths.append(p)
    return paths


def _split(tmp_path, n=11, size=(40, 28)):
    paths = _make_images(str(tmp_path / "imgs"), n, size)
    return ImageSplit("toy", "test", items=[os.path.basename(p) for p in paths], paths=paths,
                      labels=np.arange(n) % 3, root=str(tmp_path))


def _truncate(path, keep=0.4):
    """Damage beyond repair (truncated JPEGs are decoded, as the authors' code does: see
    tests/data/test_truncated_images.py): the header is cut, nothing can be decoded."""
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:12])


def test_batches_fixed_shape_mask_and_values(tmp_path):
    split = _split(tmp_path, n=11)
    loader = ImageBatchLoader(split, 4, image_size=16, num_threads=2, fast_decode=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    for b in batches:
        assert b.images.shape == (4, 16, 16, 3) and b.images.dtype == np.float32
        assert b.mask.shape == (4,) and b.indices.shape == (4,) and len(b.names) == 4
    last = batches[-1]
    assert last.mask.tolist() == [True, True, True, False]
    assert last.names[3] == "" and last.indices[3] == -1 and not last.images[3].any()
    names = [n for b in batches for n, m in zip(b.names, b.mask) if m]
    assert names == split.items
    # Exact mode is the reference preprocessing bit for bit.
    ref = preprocess_image(load_image(split.paths[5]), 16)
    np.testing.assert_array_equal(batches[1].images[1], ref)
    rep = loader.report()
    assert rep["decoded"] == 11 and rep["skipped"] == 0 and rep["images_per_s"] > 0


def test_order_deterministic_across_threads(tmp_path):
    split = _split(tmp_path, n=13)
    outs = []
    for threads, prefetch in ((1, 0), (4, 3), (3, 1)):
        bs = list(ImageBatchLoader(split, 5, image_size=8, num_threads=threads,
                                   prefetch_batches=prefetch))
        outs.append((np.concatenate([b.images for b in bs]), [n for b in bs for n in b.names]))
    for imgs, names in outs[1:]:
        np.testing.assert_array_equal(imgs, outs[0][0])
        assert names == outs[0][1]


@pytest.mark.parametrize("n,count,bs", [(11, 3, 2), (7, 4, 3), (2, 4, 1), (100, 8, 5), (0, 2, 4)])
def test_sharding_covers_everything_once(n, count, bs):
    seen = []
    nb = cgd.num_batches_per_process(n, bs, count)
    for p in range(count):
        idx = cgd.shard_indices(n, p, count)
        assert np.all(np.diff(idx) == 1) or len(idx) <= 1  # contiguous blocks
        seen += idx.tolist()
        assert nb * bs >= len(idx)
    assert sorted(seen) == list(range(n))


def test_multihost_loaders(tmp_path):
    split = _split(tmp_path, n=10)
    per_host = [list(ImageBatchLoader(split, 2, image_size=8, process_index=p, process_count=3))
                for p in range(3)]
    assert len({len(b) for b in per_host}) == 1  # every host runs the same number of steps
    names = [n for host in per_host for b in host for n, m in zip(b.names, b.mask) if m]
    assert sorted(names) == sorted(split.items) and len(names) == len(set(names))
    with pytest.raises(ValueError):
        ImageBatchLoader(split, 2, process_index=3, process_count=3)


def test_text_batches():
    t = cgd.TextSplit("t", "s", items=list("abcde"), texts=list("ABCDE"))
    hosts = [list(cgd.iterate_text_batches(t, 2, process_index=p, process_count=2))
             for p in range(2)]
    assert [len(h) for h in hosts] == [2, 2]
    assert hosts[0][0].texts == ["A", "B"] and hosts[1][1].texts == ["E", ""]
    assert hosts[1][1].mask.tolist() == [True, False]
    got = [x for h in hosts for b in h for x, m in zip(b.names, b.mask) if m]
    assert got == list("abcde")


def test_corrupt_image_skipped_and_logged(tmp_path, caplog):
    split = _split(tmp_path, n=6)
    _truncate(split.paths[2])
    with open(split.paths[4], "wb") as f:
        f.write(b"not an image at all")
    log = tmp_path / "logs" / "bad.txt"
    loader = ImageBatchLoader(split, 4, image_size=8, error_log=log)
    with caplog.at_level(logging.WARNING, logger="crossgap_jax.data.loader"):
        batches = list(loader)
    assert batches[0].mask.tolist() == [True, True, False, True]
    assert batches[1].mask.tolist() == [False, True, False, False]
    assert batches[0].names[2] == "" and batches[0].indices[2] == -1
    rep = loader.report()
    assert rep["skipped"] == 2 and rep["decoded"] == 4
    assert rep["skipped_names"] == ["img_002.jpg", "img_004.jpg"]
    lines = log.read_text().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["img_002.jpg", "img_004.jpg"]
    assert "img_002.jpg" in lines[0].split("\t")[1]  # the reason names the file
    assert "2 of 6 images" in caplog.text and str(log) in caplog.text


def test_corrupt_image_raises(tmp_path):
    split = _split(tmp_path, n=5)
    _truncate(split.paths[3])
    loader = ImageBatchLoader(split, 2, image_size=8, on_error="raise")
    with pytest.raises(ImageDecodeError, match="img_003.jpg"):
        list(loader)
    with pytest.raises(ImageDecodeError, match="img_003.jpg"):
        split.open_image(3)


def test_missing_files_error_up_front(tmp_path):
    split = _split(tmp_path, n=15)
    for i in (1, 2, 5):
        os.remove(split.paths[i])
    with pytest.raises(MissingFilesError) as e:
        ImageBatchLoader(split, 4)
    msg = str(e.value)
    assert msg.startswith("3 of 15 image files of toy/test are missing")
    assert split.paths[5] in msg
    # Only this host's share is checked (host 0: items 0-6, host 1: items 7-14).
    ImageBatchLoader(split, 4, process_index=1, process_count=2)
    with pytest.raises(MissingFilesError, match="3 of 7"):
        ImageBatchLoader(split, 4, process_index=0, process_count=2)


def test_draft_decode_close_to_exact(tmp_path):
    """Reduced-size JPEG decode of a large photo stays close to the full decode."""
    yy, xx = np.mgrid[0:900, 0:1200]
    arr = np.stack([(xx / 5) % 255, (yy / 4) % 255, ((xx + yy) / 9) % 255], -1)
    p = str(tmp_path / "big.jpg")
    Image.fromarray(arr.astype(np.uint8)).save(p, "JPEG", quality=92)
    with Image.open(p) as im:
        im.draft("RGB", (448, 448))
        assert im.size == (600, 450)  # what libjpeg decodes with the default margin 2
    fast = cgd.open_image(p, draft_size=224)
    assert fast.size == (298, 224)  # geometry of the full-size resize (int(224 * 4 / 3))
    exact = preprocess_image(load_image(p), 224)
    approx = preprocess_image(fast, 224)
    # normalised units: 0.0146 is one grey level of 255 (std ~0.27)
    assert np.abs(exact - approx).mean() < 0.02
    approx1 = preprocess_image(cgd.open_image(p, draft_size=224, draft_margin=1), 224)
    assert np.abs(exact - approx1).mean() < 0.05
    split = ImageSplit("big", "s", items=["big"], paths=[p])
    b_fast = next(iter(ImageBatchLoader(split, 1)))
    b_exact = next(iter(ImageBatchLoader(split, 1, fast_decode=False)))
    np.testing.assert_array_equal(b_exact.images[0], exact)
    np.testing.assert_array_equal(b_fast.images[0], approx)
    # Small images are never reduced: fast == exact.
    small = _split(tmp_path / "small", n=1, size=(300, 200))
    np.testing.assert_array_equal(
        next(iter(ImageBatchLoader(small, 1))).images,
        next(iter(ImageBatchLoader(small, 1, fast_decode=False))).images,
    )


def test_open_image_bytes_and_modes(tmp_path):
    p = str(tmp_path / "g.png")
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(p)
    assert cgd.open_image(p).mode == "RGB"
    data = open(p, "rb").read()
    im = cgd.open_image(data, draft_size=4)
    assert im.size == (6, 5) and im.getpixel((0, 0)) == (77, 77, 77)
    with pytest.raises(ImageDecodeError, match="my-item"):
        cgd.open_image(b"\x89PNG garbage", name="my-item")
    with pytest.raises(FileNotFoundError):
        cgd.open_image(str(tmp_path / "none.jpg"), draft_size=10)


def test_progress_bar_and_early_stop(tmp_path, capsys):
    split = _split(tmp_path, n=9)
    loader = ImageBatchLoader(split, 2, image_size=8, progress=True, desc="toy-bar")
    it = iter(loader)
    next(it)
    it.close()  # stopping early shuts the pool down cleanly
    assert "toy-bar" in capsys.readouterr().err
