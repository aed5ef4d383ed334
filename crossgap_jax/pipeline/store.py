"""On-disk artefacts of a run: feature caches keyed by what produced them, atomic writes.

A feature file is an ``.npz`` (``items``, ``features``) plus its metadata (model
fingerprint, dataset, split, preprocessing or text template, data fingerprint) stored inside
it as JSON, and the per-item data keys (``fingerprint_items``, ``fingerprints``:
:mod:`crossgap_jax.data.fingerprint`) of every item it covers, encoded or skipped.
Loading checks that metadata against what the caller expects: features computed with
another model (or other preprocessing) are refused, never silently reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.fileio import atomic_write_bytes, jsonable
from crossgap_jax.models import model_fingerprint as _model_fingerprint


class StaleArtifactError(ValueError):
    """A cached artefact was built with different settings than the ones asked for."""


@dataclasses.dataclass
class FeatureSet:
    """Features of the items of one split.

    Attributes:
        items: ``N`` item names, aligned with ``features``.
        features: ``(N, D)`` float32 (not normalised).
        meta: what produced them (model fingerprint, dataset, split, preprocessing, ...).
        skipped: items that could not be encoded (corrupt files), with reasons.
        rescaled: images deeper than 8 bits (16-bit / float greyscale) that were scaled to 8
            bits by their depth (the reference clamps them), with their original PIL mode.
        extra: further per-item arrays (an inversion's losses, pseudo tokens, snapshots).
        oriented: images whose EXIF orientation tag is not 1 (rotated or mirrored photos),
            with the tag; turned upright only under ``exif_transpose`` (see docs/fidelity.md).
        fingerprints: ``{item: data key}`` of every item covered (encoded and skipped; see
            :func:`crossgap_jax.data.fingerprint.split_fingerprint`): equal keys, same data.
    """

    items: list[str]
    features: np.ndarray
    meta: dict
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    rescaled: dict[str, str] = dataclasses.field(default_factory=dict)
    fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)
    oriented: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def align(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``items`` in that order -> ``(features (M, D), found mask (len(items),))``."""
        pos = {it: i for i, it in enumerate(self.items)}
        found = np.array([it in pos for it in items], bool)
        idx = np.array([pos[it] for it in items if it in pos], np.int64)
        return self.features[idx], found


def model_fingerprint(clip: Any) -> dict:
    """Identity of a CLIP bundle's weights and compute settings, by content: the keys of
    :func:`crossgap_jax.models.model_fingerprint` this cache has always stored
    (``architecture``, ``family``, ``params_sha256``, ``dtype``), so old entries stay valid.
    """
    fp = _model_fingerprint(clip)
    return {k: fp[k] for k in ("architecture", "family", "params_sha256", "dtype")}


def meta_key(meta: Mapping[str, Any]) -> str:
    """Short stable hash of a metadata dict (file names of cache entries)."""
    blob = json.dumps(meta, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_features(path: str, fs: FeatureSet) -> None:
    """Atomically write a :class:`FeatureSet` to ``path`` (``.npz``) with its
    ``fingerprints``; ``extra`` is not kept."""

    buf = io.BytesIO()
    more = {"fingerprint_items": np.asarray(list(fs.fingerprints), dtype=object).astype(str),
            "fingerprints": np.asarray(list(fs.fingerprints.values()),
                                       dtype=object).astype(str)}
    np.savez(buf, items=np.asarray(fs.items, dtype=object).astype(str),
             features=np.asarray(fs.features, np.float32),
             meta=np.asarray(json.dumps(fs.meta, sort_keys=True, default=str)),
             skipped=np.asarray(json.dumps(fs.skipped, sort_keys=True)),
             rescaled=np.asarray(json.dumps(fs.rescaled, sort_keys=True)),
             oriented=np.asarray(json.dumps(fs.oriented, sort_keys=True)), **more)
    atomic_write_bytes(path, buf.getvalue())


def load_features(path: str, expect: Mapping[str, Any] | None = None) -> FeatureSet:
    """Read a feature file; with ``expect``, every expected key must match its metadata.

    Raises:
        FileNotFoundError: no such file.
        StaleArtifactError: the metadata differs from ``expect`` (names the keys).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"feature file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        fs = FeatureSet(items=[str(x) for x in z["items"]], features=z["features"],
                        meta=json.loads(str(z["meta"])), skipped=json.loads(str(z["skipped"])),
                        rescaled=json.loads(str(z["rescaled"])) if "rescaled" in z else {},
                        oriented=json.loads(str(z["oriented"])) if "oriented" in z else {},
                        fingerprints=dict(zip(z["fingerprint_items"].tolist(),
                                              z["fingerprints"].tolist(), strict=True))
                        if "fingerprints" in z.files else {})
    if expect is not None:
        check_meta(fs.meta, expect, path)
    return fs


def check_meta(found: Mapping[str, Any], expect: Mapping[str, Any], where: str) -> None:
    """Raise :class:`StaleArtifactError` listing every key where ``found`` != ``expect``."""
    norm = jsonable
    diffs = [f"{k}: cached {norm(found.get(k))!r} vs requested {norm(v)!r}"
             for k, v in expect.items() if norm(found.get(k)) != norm(v)]
    if diffs:
        raise StaleArtifactError(
            f"{where} was built with different settings; refusing to reuse it:\n  "
            + "\n  ".join(diffs) + "\n(delete it or choose another output folder)")
