"""What the loader and a family's hook module exchange: :class:`Request` (step 1's
resolved request), :class:`Read` (a reader's files), :class:`Converted` (a converter's
tensors), and :func:`warn_assumed`. The hook interface itself is documented in
:mod:`crossgap_jax.models.checkpoint.loader`; hook modules import this module, not the
loader (which imports them by their registry entry's module path).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from crossgap_jax.models.configs import CLIPConfig, get_config, list_architectures


@dataclasses.dataclass(frozen=True)
class Request:
    """What was asked for, resolved (step 1).

    Attributes:
        arch: the requested architecture, or None (taken from the checkpoint).
        source: path / hub id / pretrained tag, or None (the architecture's default).
        label: what was asked for, as ``info["source"]``.
    """

    arch: CLIPConfig | None
    source: str | None
    label: Any
    allow_pickle: bool = False
    cache_dir: str | None = None
    progress: bool = True
    quick_gelu: bool | None = None
    tokenizer: str | None = None


@dataclasses.dataclass
class Read:
    """What a family's reader produced, before it meets the requested architecture."""

    tensors: dict[str, np.ndarray]  # the file's tensors, by the file's own names
    fmt: str  # info["format"]
    paths: list[str]
    layout: str  # info["layout"]
    declared: CLIPConfig | None = None  # the architecture the files state
    declared_by: str | None = None  # which file (or "tensor shapes")
    arch: CLIPConfig | None = None  # replaces request.arch when set (CLIP "openai" tag)
    extra: dict = dataclasses.field(default_factory=dict)  # more info entries


@dataclasses.dataclass
class Converted:
    """A converter's output: Flax path -> array, the file's name of each, leftovers."""

    flat: dict[tuple[str, ...], np.ndarray]
    names: dict[tuple[str, ...], str] = dataclasses.field(default_factory=dict)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)  # e.g. {"ignored": [...]}


def field_diffs(a: Any, b: Any, fields: tuple[str, ...] = (),
                towers: Mapping[str, tuple[str, ...]] | None = None) -> list[str]:
    """``"field: a vs b"`` for each of ``fields`` that differs between configs ``a`` and
    ``b``, then ``"tower.field: a vs b"`` for each tower's (``{"vision": ("width", ...)}``);
    a field a config lacks counts as None. The lines of a hook's ``architecture_diff``."""
    diffs = [f"{f}: {getattr(a, f, None)} vs {getattr(b, f, None)}" for f in fields
             if getattr(a, f, None) != getattr(b, f, None)]
    for tower, names in (towers or {}).items():
        for f in names:
            x, y = getattr(getattr(a, tower), f, None), getattr(getattr(b, tower), f, None)
            if x != y:
                diffs.append(f"{tower}.{f}: {x} vs {y}")
    return diffs


def registered_like(same: Callable[[Any], bool], prefer: str | None = None) -> str | None:
    """The name of the first registered architecture ``c`` (``prefer`` first) with
    ``same(c)`` (a hook's ``match_registered``: same class, no architecture difference,
    any further field the family requires), or None."""
    for name in ([prefer] if prefer else []) + list_architectures():
        try:
            c = get_config(name)
        except KeyError:
            continue
        if same(c):
            return name
    return None


def warn_assumed(message: str) -> None:
    """A reader's assumption the user should see (e.g. an activation no file states)."""
    warnings.warn(message, stacklevel=4)
