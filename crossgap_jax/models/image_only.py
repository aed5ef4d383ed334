"""The text-side entry points of an image-only family (DINOv2, DINOv3): each refuses.

An image-only model module sets ``HAS_TEXT_TOWER = False`` and binds these functions to the
family interface names (``embed_tokens = image_only.embed_tokens``, ...), so every
text-side call names the backbone and the fix instead of failing deep inside a graph.
``projection_matrices`` is the identity image head and an empty text head (nearest class
mean on the pre-projection features equals it on the embedding).
"""

from __future__ import annotations

from typing import Any, NoReturn

import jax
import jax.numpy as jnp

from crossgap_jax.models.families import TEXT_BACKBONES, NoTextTowerError


def _refuse(what: str, config: Any) -> NoReturn:
    raise NoTextTowerError(
        f"{what}: {config.name} ({config.family}) is an image-only backbone with no text "
        f"tower; use a model with a text tower ({TEXT_BACKBONES}) for text features, OTI/OVI and "
        f"zero-shot classification")


def embed_tokens(params: Any, ids: jax.Array, *, config: Any, dtype: Any = jnp.float32) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no text tower."""
    _refuse("token embeddings", config)


def encode_text_embeddings(params: Any, embeddings: jax.Array, eot_index: jax.Array, *,
                           config: Any, dtype: Any = jnp.float32) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no text tower."""
    _refuse("text encoding", config)


def encode_text(params: Any, ids: jax.Array, eot_index: jax.Array, *, config: Any,
                dtype: Any = jnp.float32) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no text tower."""
    _refuse("text encoding", config)


def get_tokenizer(config: Any, path: str | None = None) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no tokenizer."""
    _refuse("tokenizer", config)


def projection_matrices(params: Any, config: Any) -> tuple[jax.Array, jax.Array]:
    """``(I (D, D), (0, D) empty)``: no image projection (identity head) and no text tower.
    Features that need a real cross-modal head (IsoCLIP) are refused by the pipeline
    (:func:`~crossgap_jax.models.families.require_text_tower`)."""
    del params
    d = config.embed_dim
    return jnp.eye(d, dtype=jnp.float32), jnp.zeros((0, d), jnp.float32)
