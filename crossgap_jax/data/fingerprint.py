"""Data fingerprints: what identifies the data behind a split, so that caches follow the data,
not the item names.

Two image folders with the same relative file names are different data; a file repaired or
replaced in place is different data. :func:`split_fingerprint` gives each item of a split a
short *item key* that changes when its data changes, and the split a *digest* over its data
root, the fingerprint mode and the item keys. Caches key their entries by the digest and
compare item keys to reuse the rows of unchanged items (``pipeline/features.py``).

What identifies an item, by kind of split:

- **image files** (``ImageSplit.paths``): mode ``"stat"`` (default, cheap): the file's
  absolute path (data root + relative path), size and ``mtime_ns``; mode ``"sha256"``
  (``verify=True``, CLI ``--verify-data``): the sha256 of its bytes (wherever it lives: a
  copy of a file elsewhere has the same key). A missing file has the key of a missing file.
  A crop box (CUB, SOP...) is part of the key: the same file with another box is another
  input.
- **reader splits with files on disk** (tfds: ``extra["source_dir"]``, the prepared
  dataset's version folder): every file under that folder, by ``stat`` (or ``sha256``); all
  items share that one key (any change re-encodes the split: records of array-record files
  cannot be told apart by file).
- **other reader splits** (the embedded demo data, a reader built in code): the sha256 of
  the bytes (or array) the reader returns for each item, in both modes (the embedded data is
  a few MB in memory).
- **text splits**: the text of each item (mode ``"texts"``): features are a function of the
  texts (and the template), which are re-read from the files on every run, so the texts are
  the data; the root is recorded but is no part of the digest (the same texts from another
  copy are the same data).

Pure functions of the file system; nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from crossgap_jax.data.types import ImageSplit, TextSplit
from crossgap_jax.fileio import sha256_file

__all__ = ["SplitFingerprint", "file_records", "split_fingerprint", "text_keys"]

#: Item key of a file that is not there (the loader reports missing files).
MISSING = "missing"


@dataclasses.dataclass(frozen=True)
class SplitFingerprint:
    """The data identity of one split.

    Attributes:
        root: absolute data root the split was read from (folder or file), or None.
        mode: ``"stat"`` (path, size, mtime), ``"sha256"`` (file contents), ``"content"``
            (bytes returned by a reader) or ``"texts"``.
        item_keys: one short key per item, aligned with ``split.items`` (equal keys: same
            data).
        digest: hex sha256 over ``root`` (files: modes ``stat`` / ``sha256``), ``mode``
            and the item names and keys.
    """

    root: str | None
    mode: str
    item_keys: tuple[str, ...]
    digest: str

    def as_meta(self) -> dict:
        """``{"root", "mode", "digest"}``: what a cache key or a record stores."""
        return {"root": self.root, "mode": self.mode, "digest": self.digest}

    def keys(self, items: Sequence[str]) -> dict[str, str]:
        """``{item: key}`` for ``items`` (the split's item names, same order)."""
        return dict(zip(items, self.item_keys, strict=True))


def _short(*parts: object) -> str:
    blob = json.dumps(parts, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _sha256_file(path: str) -> str | None:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def file_records(paths: Sequence[str], root: str | None = None
                 ) -> list[tuple[str, int, int]]:
    """``(relative path, size in bytes, mtime in ns)`` of each file; ``(path, -1, -1)`` for a
    missing one. Paths are made relative to ``root`` when it is a folder that holds them."""
    out = []
    for p in paths:
        rel = os.path.relpath(p, root) if root and os.path.isdir(root) else p
        try:
            st = os.stat(p)
            out.append((rel, int(st.st_size), int(st.st_mtime_ns)))
        except FileNotFoundError:
            out.append((rel, -1, -1))
    return out


def _contents(paths: Sequence[str]) -> list[str | None]:
    """sha256 of each file (None: missing), a few files at a time (hashlib releases the GIL)."""
    if len(paths) < 8:
        return [_sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        return list(pool.map(_sha256_file, paths, chunksize=16))


def _box(split: ImageSplit, i: int) -> list[float] | None:
    if split.boxes is None or np.isnan(split.boxes[i]).any():
        return None
    return [float(v) for v in split.boxes[i]]


def text_keys(texts: Sequence[str]) -> list[str]:
    """A short content key per text (equal keys: equal texts)."""
    return [hashlib.blake2b(t.encode(), digest_size=8).hexdigest() for t in texts]


def _files_under(folder: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out += [os.path.join(dirpath, f) for f in sorted(filenames)]
    return out


def _digest(root: str | None, mode: str, items: Sequence[str], keys: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps([root, mode]).encode())
    for it, k in zip(items, keys, strict=True):
        h.update(f"\n{it}\t{k}".encode())
    return h.hexdigest()


def split_fingerprint(split: ImageSplit | TextSplit, *, verify: bool = False
                      ) -> SplitFingerprint:
    """The data identity of ``split`` (see the module docstring for what is read).

    Args:
        split: an image or text split.
        verify: hash file contents (sha256) instead of taking path, size and mtime (reads
            every file once; for image files and tfds source folders).

    Returns:
        A :class:`SplitFingerprint`; ``item_keys[i]`` belongs to ``split.items[i]``.
    """
    root = os.path.abspath(os.fspath(split.root)) if split.root else None
    if isinstance(split, TextSplit):
        keys = text_keys(split.texts)
        return SplitFingerprint(root, "texts", tuple(keys),
                                _digest(None, "texts", split.items, keys))
    mode = "sha256" if verify else "stat"
    if split.paths is not None:
        if verify:
            keys = [MISSING if h is None else _short(h, _box(split, i))
                    for i, h in enumerate(_contents(split.paths))]
        else:
            keys = [MISSING if size < 0 else
                    _short(os.path.abspath(p), size, mtime, _box(split, i))
                    for i, (p, (_, size, mtime)) in enumerate(
                        zip(split.paths, file_records(split.paths), strict=True))]
        return SplitFingerprint(root, mode, tuple(keys), _digest(root, mode, split.items, keys))
    source = split.extra.get("source_dir")
    if source and os.path.isdir(source):
        files = _files_under(source)
        recs = (_contents(files) if verify else
                [r[1:] for r in file_records(files)])
        key = _short(os.path.abspath(source), [os.path.relpath(f, source) for f in files], recs)
        keys = [_short(key, _box(split, i)) for i in range(len(split))]
        root = os.path.abspath(source)
        return SplitFingerprint(root, mode, tuple(keys), _digest(root, mode, split.items, keys))
    assert split.reader is not None
    keys = []
    for i in range(len(split)):
        data = split.reader.read(i)
        if isinstance(data, np.ndarray):
            blob = np.ascontiguousarray(data)
            data = json.dumps([str(blob.dtype), list(blob.shape)]).encode() + blob.tobytes()
        keys.append(_short(hashlib.sha256(data).hexdigest(), _box(split, i)))
    return SplitFingerprint(root, "content", tuple(keys),
                            _digest(None, "content", split.items, keys))
