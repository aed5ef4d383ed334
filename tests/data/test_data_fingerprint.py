"""Issue 22 item 1: cached results follow the data, not the item names.

The data fingerprint (``crossgap_jax.data.fingerprint``) against an oracle written here from
``os.stat`` / ``hashlib``; the feature cache re-encodes exactly the items whose data
changed (counted encoder calls) and reuses the other rows bit for bit; a repaired corrupt
image is retried; two folders with the same relative names evaluated into one run folder
give the numbers of a fresh run folder each, and the record names each root and
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from crossgap_jax.cli import main
from crossgap_jax.data import ImageSplit, TextSplit, get_dataset, split_fingerprint
from crossgap_jax.data.fingerprint import file_records
from crossgap_jax.models import load_clip
from crossgap_jax.pipeline import features
from crossgap_jax.pipeline.features import cached_split_features, encode_split
from crossgap_jax.pipeline.store import load_features

NAMES = [f"c{c}/{i}.bmp" for c in range(2) for i in range(3)]


def _write(path, seed: int, size: int = 24) -> None:
    """An uncompressed BMP: its byte size depends only on ``size`` (not on the pixels)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _folder(root, seed: int) -> str:
    for k, name in enumerate(NAMES):
        _write(os.path.join(root, name), seed * 100 + k)
    return str(root)


def _split(root: str, names=NAMES) -> ImageSplit:
    return ImageSplit("folder", "all", list(names),
                      paths=[os.path.join(root, n) for n in names], root=root)


@pytest.fixture(scope="module")
def clip(tiny_ckpt):
    return load_clip(tiny_ckpt)


@pytest.fixture
def encoded(monkeypatch):
    """The items of every encode_split call the cache makes."""
    calls = []
    real = features.encode_split

    def encode(clip, split, **kw):
        calls.append(list(split.items))
        return real(clip, split, **kw)

    monkeypatch.setattr(features, "encode_split", encode)
    return calls


def _cached(clip, split, cache, **kw):
    return cached_split_features(clip, split, str(cache), batch_size=4, progress=False, **kw)


# ---------------------------------------------------------------------------------------
# the fingerprint itself
# ---------------------------------------------------------------------------------------
def test_file_records_are_relpath_size_mtime(tmp_path):
    root = _folder(tmp_path / "a", 0)
    paths = [os.path.join(root, n) for n in NAMES] + [os.path.join(root, "gone.bmp")]
    expect = [(n, os.stat(os.path.join(root, n)).st_size,
               os.stat(os.path.join(root, n)).st_mtime_ns) for n in NAMES]
    assert file_records(paths, root) == expect + [("gone.bmp", -1, -1)]


def test_stat_and_content_keys_follow_the_files(tmp_path):
    root = _folder(tmp_path / "a", 0)
    split = _split(root)
    stat0, sha0 = split_fingerprint(split), split_fingerprint(split, verify=True)
    assert (stat0.root, stat0.mode, sha0.mode) == (root, "stat", "sha256")
    assert split_fingerprint(split) == stat0                  # deterministic
    target = os.path.join(root, NAMES[4])
    st = os.stat(target)
    # same size, same mtime, other pixels: stat cannot see it, the content hash does
    _write(target, 999)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(target).st_size == st.st_size
    assert split_fingerprint(split) == stat0
    sha1 = split_fingerprint(split, verify=True)
    assert [a != b for a, b in zip(sha0.item_keys, sha1.item_keys)] == [k == 4 for k in range(6)]
    assert sha1.digest != sha0.digest
    # a new mtime: the stat key of that item (only) changes
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    stat1 = split_fingerprint(split)
    assert [a != b for a, b in zip(stat0.item_keys, stat1.item_keys)] == [k == 4 for k in range(6)]
    # the same relative names under another root: every stat key differs, and so does the
    # digest; copied bytes have the same content keys (only the digest names the root)
    other = _folder(tmp_path / "b", 0)
    _write(os.path.join(other, NAMES[4]), 999)
    stat_b = split_fingerprint(_split(other))
    assert not set(stat_b.item_keys) & set(stat1.item_keys)
    sha_b = split_fingerprint(_split(other), verify=True)
    assert sha_b.item_keys == sha1.item_keys and sha_b.digest != sha1.digest


def test_content_keys_are_the_file_sha256(tmp_path):
    """With verify, equal keys <=> equal sha256 of the bytes (oracle: hashlib here)."""
    root = _folder(tmp_path / "a", 0)
    _write(os.path.join(root, NAMES[5]), 0)  # same pixels as NAMES[0]: same bytes
    fp = split_fingerprint(_split(root), verify=True)
    sha = [hashlib.sha256(open(os.path.join(root, n), "rb").read()).hexdigest() for n in NAMES]
    for i in range(6):
        for j in range(6):
            assert (fp.item_keys[i] == fp.item_keys[j]) == (sha[i] == sha[j])
    assert fp.item_keys[0] == fp.item_keys[5]


def test_boxes_and_texts(tmp_path):
    root = _folder(tmp_path / "a", 0)
    split = _split(root)
    boxed = ImageSplit("folder", "all", list(NAMES), paths=split.paths, root=root,
                       boxes=np.array([[0, 0, 10, 10]] + [[np.nan] * 4] * 5, np.float32))
    a, b = split_fingerprint(split), split_fingerprint(boxed)
    assert [x != y for x, y in zip(a.item_keys, b.item_keys)] == [True] + [False] * 5
    t1 = TextSplit("t", "all", ["a", "b"], ["one", "two"], root=str(tmp_path / "x.jsonl"))
    t2 = TextSplit("t", "all", ["a", "b"], ["one", "TWO"], root=str(tmp_path / "y.jsonl"))
    f1, f2 = split_fingerprint(t1), split_fingerprint(t2)
    assert f1.mode == "texts" and f1.item_keys[0] == f2.item_keys[0]
    assert f1.item_keys[1] != f2.item_keys[1]
    # the texts are the data: the same texts read from another file have the same digest
    t3 = TextSplit("t", "all", ["a", "b"], ["one", "two"], root=str(tmp_path / "z.jsonl"))
    assert split_fingerprint(t3).digest == f1.digest


# ---------------------------------------------------------------------------------------
# the feature cache
# ---------------------------------------------------------------------------------------
def test_changed_files_are_reencoded_alone(clip, tmp_path, encoded, caplog):
    root = _folder(tmp_path / "a", 0)
    cache = tmp_path / "cache"
    first = _cached(clip, _split(root), cache)
    assert encoded == [NAMES]
    assert _cached(clip, _split(root), cache).features.tobytes() == first.features.tobytes()
    assert len(encoded) == 1                                   # unchanged: a cache hit
    _write(os.path.join(root, NAMES[1]), 7, size=30)          # another size
    _write(os.path.join(root, NAMES[3]), 8)                    # same size, new mtime
    st = os.stat(os.path.join(root, NAMES[3]))
    os.utime(os.path.join(root, NAMES[3]), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with caplog.at_level(logging.WARNING, logger="crossgap_jax.pipeline.features"):
        again = _cached(clip, _split(root), cache)
    assert encoded[1] == [NAMES[1], NAMES[3]]                  # exactly the changed ones
    assert "folder/all: 2 of 6 items changed" in caplog.text
    assert "encoding 2, reusing 4" in caplog.text
    fresh = encode_split(clip, _split(root), batch_size=4, progress=False)
    assert again.items == NAMES
    keep = [0, 2, 4, 5]
    assert again.features[keep].tobytes() == first.features[keep].tobytes()  # bitwise
    np.testing.assert_allclose(again.features, fresh.features, rtol=1e-5, atol=1e-6)
    assert not np.allclose(again.features[1], first.features[1], atol=1e-3)
    # the merged entry is stored: the next run encodes nothing
    assert _cached(clip, _split(root), cache).features.tobytes() == again.features.tobytes()
    assert len(encoded) == 2


def test_verify_data_sees_a_same_size_same_mtime_change(clip, tmp_path, encoded, caplog):
    root = _folder(tmp_path / "a", 0)
    cache = tmp_path / "cache"
    stat_run = _cached(clip, _split(root), cache)
    verified = _cached(clip, _split(root), cache, verify_data=True)
    assert encoded == [NAMES, NAMES]        # another fingerprint mode: its own entry
    assert verified.meta["data"]["mode"] == "sha256"
    assert verified.features.tobytes() == stat_run.features.tobytes()
    target = os.path.join(root, NAMES[2])
    st = os.stat(target)
    _write(target, 4242)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(target).st_size == st.st_size
    # the stat fingerprint cannot see it (documented); the content hash does
    assert _cached(clip, _split(root), cache).features.tobytes() == stat_run.features.tobytes()
    assert len(encoded) == 2
    with caplog.at_level(logging.WARNING, logger="crossgap_jax.pipeline.features"):
        got = _cached(clip, _split(root), cache, verify_data=True)
    assert encoded[2] == [NAMES[2]]
    assert "1 of 6 items changed" in caplog.text and "sha256" in caplog.text
    fresh = encode_split(clip, _split(root), batch_size=4, progress=False)
    np.testing.assert_allclose(got.features[2], fresh.features[2], rtol=1e-5, atol=1e-6)
    keep = [0, 1, 3, 4, 5]
    assert got.features[keep].tobytes() == stat_run.features[keep].tobytes()


def test_repaired_corrupt_image_is_retried(clip, tmp_path, encoded):
    root = _folder(tmp_path / "a", 0)
    bad = os.path.join(root, NAMES[2])
    with open(bad, "wb") as f:
        f.write(b"BM not an image at all")
    cache = tmp_path / "cache"
    first = _cached(clip, _split(root), cache)
    assert list(first.skipped) == [NAMES[2]] and NAMES[2] not in first.items
    assert _cached(clip, _split(root), cache).skipped == first.skipped   # still corrupt
    assert len(encoded) == 1
    _write(bad, 12)                                            # repaired in place
    again = _cached(clip, _split(root), cache)
    assert encoded[1] == [NAMES[2]]
    assert again.skipped == {} and again.items == NAMES
    fresh = encode_split(clip, _split(root), batch_size=4, progress=False)
    np.testing.assert_allclose(again.features, fresh.features, rtol=1e-5, atol=1e-6)


def test_on_error_raise_refuses_images_a_cached_skip_run_left_out(clip, tmp_path, encoded):
    """A cache entry written under ``--on-error skip`` lacks its corrupt images; reused under
    ``raise`` (exact entry, or a subset taken from it) it is refused, naming the file."""
    from crossgap_jax.data import ImageDecodeError

    root = _folder(tmp_path / "a", 0)
    with open(os.path.join(root, NAMES[2]), "wb") as f:
        f.write(b"BM not an image at all")
    cache = tmp_path / "cache"
    assert list(_cached(clip, _split(root), cache, on_error="skip").skipped) == [NAMES[2]]
    for split in (_split(root), _split(root).subset([1, 2])):
        with pytest.raises(ImageDecodeError, match=rf"1 image\(s\) of the cached features "
                           rf"were skipped .*first: {NAMES[2]}: .*--on-error skip"):
            _cached(clip, split, cache, on_error="raise")
    assert len(encoded) == 1  # refused from the cache, nothing re-encoded
    clean = _cached(clip, _split(root).subset([0, 1]), cache, on_error="raise")
    assert clean.items == [NAMES[0], NAMES[1]] and clean.skipped == {}


def test_subset_of_a_changed_split(clip, tmp_path, encoded):
    """A --max-queries subset reuses the unchanged rows of the full entry and encodes the
    changed ones only."""
    root = _folder(tmp_path / "a", 0)
    cache = tmp_path / "cache"
    full = _cached(clip, _split(root), cache)
    sub = _split(root).subset([5, 0, 3])
    part = _cached(clip, sub, cache)
    assert len(encoded) == 1 and part.items == [NAMES[5], NAMES[0], NAMES[3]]
    assert part.features.tobytes() == full.features[[5, 0, 3]].tobytes()
    _write(os.path.join(root, NAMES[0]), 77, size=28)
    part = _cached(clip, _split(root).subset([5, 0, 3]), cache)
    assert encoded[1] == [NAMES[0]]
    assert part.features[[0, 2]].tobytes() == full.features[[5, 3]].tobytes()


# ---------------------------------------------------------------------------------------
# the case, end to end
# ---------------------------------------------------------------------------------------
def _retrieve(tiny_ckpt, folder, run_dir, *extra):
    argv = ["--quiet", "retrieve", "--dataset", "imagefolder", "--data-root", str(folder),
            "--model", "tiny", "--checkpoint", tiny_ckpt, "--run-dir", str(run_dir),
            "--batch-size", "4", "--oti-steps", "2", "--query-type", "oti",
            "--gallery-type", "image", *extra]
    assert main(argv) == 0
    records = sorted((run_dir / "records").glob("retrieve-*.json"), key=os.path.getmtime)
    return json.loads(records[-1].read_text())


@pytest.mark.slow
def test_two_folders_with_the_same_names_in_one_run_dir(tiny_ckpt, tmp_path):
    a = _folder(tmp_path / "a", 0)
    b = _folder(tmp_path / "b", 1)
    shared = tmp_path / "run"
    rec_a = _retrieve(tiny_ckpt, a, shared)
    rec_b = _retrieve(tiny_ckpt, b, shared)
    fresh_b = _retrieve(tiny_ckpt, b, tmp_path / "fresh")
    keys = ("mAP", "R@1", "num_evaluated")
    assert {k: rec_b["results"][k] for k in keys} == {k: fresh_b["results"][k] for k in keys}
    assert rec_a["results"]["mAP"] != rec_b["results"]["mAP"]
    # the record names each split's root and fingerprint (oracle: the split read here)
    expect = split_fingerprint(get_dataset("imagefolder", b, "all"))
    (entry,) = rec_b["provenance"]["data"].values()
    assert entry == {"root": b, "mode": "stat", "digest": expect.digest, "num_items": 6,
                     "exif_oriented": 0}
    assert rec_b["provenance"]["settings"]["verify_data"] is False
    assert f"root `{b}`, fingerprint `stat:{expect.digest[:16]}`" in rec_b["table"]
    # the second folder's inversions are their own (another folder key)
    inv = sorted(p.name for p in (shared / "inversions" / "oti" / "imagefolder").iterdir())
    assert len(inv) == 2


def test_verify_data_option_reaches_the_cache_and_the_record(tiny_ckpt, tmp_path):
    a = _folder(tmp_path / "a", 0)
    run_dir = tmp_path / "run"
    assert main(["--quiet", "encode", "--dataset", "imagefolder", "--data-root", a,
                 "--model", "tiny", "--checkpoint", tiny_ckpt, "--run-dir", str(run_dir),
                 "--batch-size", "4", "--verify-data"]) == 0
    (record,) = (run_dir / "records").glob("encode-*.json")
    prov = json.loads(record.read_text())["provenance"]
    expect = split_fingerprint(get_dataset("imagefolder", a, "all"), verify=True)
    assert prov["data"] == {"imagefolder/all": {"root": a, "mode": "sha256",
                                                "digest": expect.digest, "num_items": 6,
                                                "exif_oriented": 0}}
    assert prov["settings"]["verify_data"] is True
    (feats,) = (run_dir / "features" / "imagefolder").glob("*.npz")
    fs = load_features(str(feats))
    assert fs.meta["data"] == expect.as_meta()
    assert fs.fingerprints == expect.keys(NAMES)
