"""Helpers of the resumable-inversion tests (claims, Ctrl-C, kill and resume): random
target features, the items written to a folder's shards, and bit-for-bit equality of two
:func:`~crossgap_jax.inversion.load_inverted` results."""

from __future__ import annotations

import os

import numpy as np


def random_targets(clip, n: int, seed: int, fmt: str) -> tuple[list[str], np.ndarray]:
    """``n`` item names ``fmt.format(i)`` and ``(n, embed_dim)`` float32 N(0, 1) features."""
    f = np.random.default_rng(seed).normal(size=(n, clip.config.embed_dim)).astype(np.float32)
    return [fmt.format(i) for i in range(n)], f


def shard_names(out_dir: str) -> list[str]:
    """The sorted names of every item in the ``shard-*.npz`` files of ``out_dir``."""
    names: list[str] = []
    for f in sorted(os.listdir(out_dir)):
        if f.startswith("shard-"):
            with np.load(os.path.join(out_dir, f)) as z:
                names += z["names"].tolist()
    return sorted(names)


def assert_identical(a, b) -> None:
    """Two ``(names, arrays)`` of ``load_inverted``: same names, every array bit-identical."""
    assert a[0] == b[0]
    for k in b[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
