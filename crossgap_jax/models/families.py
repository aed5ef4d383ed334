"""Model families: each exposes the same pure entry points over a params pytree.

A family is a module (or object) with ``embed_tokens``, ``encode_text_embeddings``,
``encode_text``, ``embed_image_patches``, ``encode_image_tokens``, ``encode_image``,
``init_params``, ``param_shapes``, ``get_tokenizer(config)`` and the flag
``CAUSAL_TEXT`` (True when positions after the pooled one never influence the text
feature, which makes OTI's context truncation exact). The config's ``family`` attribute
selects it (``"clip"`` by default), so the bundle and the inverters never hard-code one
architecture.
"""

from __future__ import annotations

import importlib
from typing import Any

_FAMILIES: dict[str, str] = {"clip": "crossgap_jax.models.clip"}


def register_family(name: str, module_path: str) -> None:
    """Register a family by the import path of its module."""
    _FAMILIES[name] = module_path


def family_of(config: Any) -> Any:
    """The family module of ``config`` (``config.family``, default ``"clip"``)."""
    name = getattr(config, "family", "clip")
    if name not in _FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}")
    return importlib.import_module(_FAMILIES[name])
