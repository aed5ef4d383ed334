"""The native format: flattened Flax params + the architecture config in one safetensors file.

Written by :func:`save_native` for any model family, read by :func:`load_native` without
torch; the config (and so the family) travels in the file's metadata, so a native file
loads with no architecture name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import flax.traverse_util as traverse_util
import numpy as np
from safetensors.numpy import save_file

from crossgap_jax.fileio import atomic_path
from crossgap_jax.models.checkpoint.errors import CheckpointError
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.checkpoint.formats import (
    NATIVE_FORMAT,
    read_safetensors,
    safetensors_metadata,
    sniff_format,
)
from crossgap_jax.models.configs import CLIPConfig
from crossgap_jax.models.families import family_module

NATIVE_VERSION = "1"
Params = Any


def save_native(path: str, config: CLIPConfig, params: Params,
                metadata: Mapping[str, Any] | None = None, *, dtype: str = "float32") -> str:
    """Write params + config (any model family) as one safetensors file readable without torch.

    Tensors are the flattened Flax params with ``"/"``-joined paths
    (``visual/conv1/kernel``), stored as ``dtype`` (``"float32"``, or ``"float16"`` to halve
    the file: values are rounded to float16; :func:`load_native` returns float32 either
    way). The safetensors metadata holds ``format``
    (``"crossgap_jax.clip"``), ``format_version``, ``config`` (JSON of
    :meth:`CLIPConfig.to_dict`) and ``metadata`` (JSON of ``metadata``, e.g. provenance).
    The write is atomic (temporary file, then rename).

    Returns:
        ``path``.
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    # np.array(..., order="C"), not np.ascontiguousarray: the latter turns 0-d into (1,).
    if dtype not in ("float32", "float16"):
        raise ValueError(f"save_native: dtype must be 'float32' or 'float16', got {dtype!r}")
    tensors = {k: np.array(v, dtype=np.dtype(dtype), order="C") for k, v in flat.items()}
    meta = {"format": NATIVE_FORMAT, "format_version": NATIVE_VERSION,
            "config": json.dumps(config.to_dict()),
            "metadata": json.dumps(dict(metadata or {}), default=str)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return path


def is_native(path: str) -> bool:
    """Whether ``path`` is a file written by :func:`save_native`."""
    if not os.path.isfile(path):
        return False
    try:
        return (sniff_format(path) == "safetensors"
                and safetensors_metadata(path).get("format") == NATIVE_FORMAT)
    except (OSError, ValueError):
        return False


def native_file(path: str) -> str | None:
    """``path`` when it is a native file; the one native ``.safetensors`` inside a
    directory holding exactly one; else None."""
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors")
                       and is_native(os.path.join(path, f)))
        return os.path.join(path, found[0]) if len(found) == 1 else None
    return path if is_native(path) else None


def native_config(path: str) -> CLIPConfig | None:
    """The architecture config stored in a :func:`save_native` file (header only, no
    weights read), or None when ``path`` is not a native file.

    Raises:
        CheckpointError: a native file whose config cannot be parsed.
    """
    if not is_native(path):
        return None
    try:
        cfg = json.loads(safetensors_metadata(path)["config"])
        return family_module(cfg.get("family", "clip")).CONFIG_CLASS.from_dict(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable architecture config in the native file "
                              f"header ({e})") from e


def load_native(path: str) -> tuple[CLIPConfig, Params, dict[str, Any]]:
    """Read a :func:`save_native` file: ``(config, params (NumPy float32), info)``.

    ``info["metadata"]`` is the ``metadata`` given to :func:`save_native`. Torch-free.
    """
    if sniff_format(path) != "safetensors":
        raise CheckpointError(f"{path} is not a safetensors file")
    flat, meta = read_safetensors(path)
    if meta.get("format") != NATIVE_FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not in the native format "
                              f"(metadata format={meta.get('format')!r}); load it with "
                              "crossgap_jax.models.load")
    if meta.get("format_version") != NATIVE_VERSION:
        raise CheckpointError(f"{path}: native format version {meta.get('format_version')!r} "
                              f"is not supported (this version reads {NATIVE_VERSION!r})")
    cfg = json.loads(meta["config"])
    config = family_module(cfg.get("family", "clip")).CONFIG_CLASS.from_dict(cfg)
    params = check_fit({tuple(k.split("/")): v for k, v in flat.items()}, config, source=path,
                       layout="native")
    info = {"source": path, "path": path, "format": "native", "layout": "native",
            "sha256": None, "metadata": json.loads(meta.get("metadata", "{}"))}
    return config, params, info
