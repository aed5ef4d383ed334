"""What the loader and a family's hook module exchange: :class:`Request` (step 1's
resolved request), :class:`Read` (a reader's files), :class:`Converted` (a converter's
tensors), and :func:`warn_assumed`. The hook interface itself is documented in
:mod:`crossgap_jax.models.checkpoint.loader`; hook modules import this module, not the
loader (which imports them by their registry entry's module path).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from crossgap_jax.models.configs import CLIPConfig


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


def warn_assumed(message: str) -> None:
    """A reader's assumption the user should see (e.g. an activation no file states)."""
    warnings.warn(message, stacklevel=4)
