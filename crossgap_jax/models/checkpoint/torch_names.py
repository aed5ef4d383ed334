"""The renaming every converter does between a PyTorch state dict and a Flax params
pytree: tensor name <-> Flax path, Linear ``(out, in)`` <-> ``kernel (in, out)``, conv
``OIHW`` <-> ``HWIO``, LayerNorm ``weight`` <-> ``scale``, embedding ``weight`` <->
``embedding``, ``nn.MultiheadAttention``'s fused ``in_proj_{weight,bias}``, numbered layers
``blocks.3`` <-> ``blocks_3``, and the split of a fused q|k|v tensor.

A family's converter states its own names (which modules are LayerNorms, embeddings,
convolutions; which layer lists are numbered) and calls :func:`torch_path`,
:func:`rename` and :func:`to_state_dict`; the fit check is
:func:`crossgap_jax.models.checkpoint.fit.check_fit`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import flax.traverse_util as traverse_util
import numpy as np

Path = tuple[str, ...]
#: ``(Flax path, how)`` with ``how`` one of ``"none"``, ``"linear"`` (transpose),
#: ``"conv"`` (OIHW -> HWIO); None: not a tensor the family knows.
Mapped = tuple[Path, str] | None


def to_flax(value: Any, how: str) -> np.ndarray:
    """A checkpoint tensor as float32 in Flax's layout: ``"linear"`` transposed,
    ``"conv"`` OIHW -> HWIO, ``"none"`` as it is."""
    v = np.asarray(value, np.float32)
    if how == "linear":
        return v.T
    if how == "conv":
        return v.transpose(2, 3, 1, 0)
    return v


def join_indices(parts: list[str], stacks: Collection[str]) -> list[str]:
    """``["blocks", "3", "attn"]`` -> ``["blocks_3", "attn"]`` for each name in ``stacks``
    followed by a number (Flax names a list attribute's modules ``<name>_<i>``)."""
    out: list[str] = []
    i = 0
    while i < len(parts):
        if parts[i] in stacks and i + 1 < len(parts) and parts[i + 1].isdigit():
            out.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def torch_path(name: str, *, stacks: Collection[str], norms: Collection[str] = (),
               embeddings: Collection[str] = (), convs: Collection[str] = (),
               plain: Collection[str] = ()) -> Mapped:
    """The Flax path of a PyTorch tensor name under the usual rules.

    Args:
        name: the tensor's name (``visual.blocks.0.attn.qkv.weight``).
        stacks: numbered layer lists (``"blocks"``, ``"resblocks"``, ``"layers"``).
        norms: module names that are LayerNorms (``weight`` -> ``scale``).
        embeddings: module names that are ``nn.Embedding`` (``weight`` -> ``embedding``).
        convs: dotted module-path suffixes of patch convolutions (``"patch_embed.proj"``).
        plain: leaf names of bare parameters, kept as they are (``"cls_token"``).

    Returns:
        ``(path, how)`` (see :data:`Mapped`); None for a leaf it does not know.
    """
    *mod, leaf = join_indices(name.split("."), stacks)
    if leaf in plain:
        return (*mod, leaf), "none"
    if leaf == "in_proj_weight":
        return (*mod, "in_proj", "kernel"), "linear"
    if leaf == "in_proj_bias":
        return (*mod, "in_proj", "bias"), "none"
    if not mod or leaf not in ("weight", "bias"):
        return None
    if leaf == "bias":
        return (*mod, "bias"), "none"
    if mod[-1] in norms:
        return (*mod, "scale"), "none"
    if mod[-1] in embeddings:
        return (*mod, "embedding"), "none"
    if any(f".{'.'.join(mod)}".endswith(f".{c}") for c in convs):
        return (*mod, "kernel"), "conv"
    return (*mod, "kernel"), "linear"


def rename(sd: Mapping[str, Any], path_of: Callable[[str], Mapped],
           ignore: re.Pattern | None = None
           ) -> tuple[dict[Path, np.ndarray], dict[Path, str], list[str], list[str]]:
    """A state dict -> ``(flat {path: float32 array}, {path: tensor name}, unexpected
    names, ignored names)``, unchecked (the loader's fit check compares shapes).

    ``path_of``: a tensor name's :data:`Mapped`; ``ignore``: names to leave out (listed as
    ignored, not unexpected).
    """
    flat: dict[Path, np.ndarray] = {}
    names: dict[Path, str] = {}
    unexpected, ignored = [], []
    for name, value in sd.items():
        if ignore is not None and ignore.match(name):
            ignored.append(name)
            continue
        mapped = path_of(name)
        if mapped is None:
            unexpected.append(name)
            continue
        path, how = mapped
        flat[path], names[path] = to_flax(value, how), name
    return flat, names, unexpected, sorted(ignored)


def to_state_dict(params: Mapping[str, Any], stacks: Collection[str],
                  rename_leaf: Callable[[Path, np.ndarray], tuple[str, np.ndarray] | None]
                  = lambda path, v: None) -> dict[str, np.ndarray]:
    """The inverse of :func:`rename` over :func:`torch_path`'s rules (float32 NumPy, torch
    layouts): ``in_proj`` -> ``in_proj_{weight,bias}``, a 4-D ``kernel`` -> OIHW ``weight``,
    a 2-D one transposed, ``scale`` / ``embedding`` -> ``weight``, ``blocks_3`` ->
    ``blocks.3``. ``rename_leaf(path, value)`` may name a tensor itself (``(name, value)``)
    or return None for the rules."""
    pattern = re.compile(rf"^({'|'.join(map(re.escape, stacks)) or '(?!)'})_(\d+)$")
    out = {}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        v = np.asarray(value, np.float32)
        own = rename_leaf(path, v)
        if own is not None:
            out[own[0]] = own[1]
            continue
        *mod, leaf = path
        mod = [pattern.sub(r"\1.\2", m) for m in mod]
        if mod and mod[-1] == "in_proj":
            out[".".join(mod[:-1]) + (".in_proj_weight" if leaf == "kernel" else ".in_proj_bias")
                ] = v.T if leaf == "kernel" else v
        elif leaf == "kernel":
            out[".".join(mod) + ".weight"] = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T
        elif leaf in ("scale", "embedding"):
            out[".".join(mod) + ".weight"] = v
        else:
            out[".".join([*mod, leaf])] = v
    return out


def split_fused(a: Any, parts: int = 3) -> list[np.ndarray]:
    """A fused projection's rows (PyTorch ``(out, in)`` weight or ``(out,)`` bias) split
    into ``parts`` equal blocks along the output axis (q, k, v)."""
    return np.split(np.asarray(a), parts, axis=0)
