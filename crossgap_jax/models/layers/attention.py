"""The one multi-head attention of every model family (CLIP, open_clip, SLIP, SigLIP).

Each family projects queries, keys and values with its own parameter names (CLIP's fused
``in_proj``, timm's ``qkv``, SigLIP's ``q_proj``/``k_proj``/``v_proj``) and calls
:func:`attention`; :func:`self_attention` adds the two exact shortcuts the inverters use:

- **cached prefix** (causal towers): keys and values of earlier positions computed once
  (``prefix``), the queries of the new positions attending over prefix + own keys;
- **pooled row only**: the query of one row per example (the pooled position), so the last
  block computes the attention output and MLP of that row only.

Softmax runs in float32, everything else in the compute dtype (as OpenAI's fp16 CLIP).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from crossgap_jax.models.layers._module_fns import pool_rows


class KV(NamedTuple):
    """Keys and values of one block over ``P`` positions, ``(B, P, width)`` each."""

    k: jax.Array
    v: jax.Array


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, heads: int, dtype: Any,
              mask: jax.Array | None = None) -> jax.Array:
    """Scaled dot-product attention: ``(B, Q, w), (B, K, w), (B, K, w) -> (B, Q, w)``.

    ``softmax(q k^T / sqrt(w / heads)) v`` per head (Vaswani et al. 2017), heads split along
    the last axis. ``mask``: bool broadcastable to ``(B, heads, Q, K)``, True where a query
    may attend to a key (masked logits get float32's minimum).
    """
    b, nq, w = q.shape
    nk = k.shape[1]
    hd = w // heads
    q = q.reshape(b, nq, heads, hd) * (hd**-0.5)
    k = k.reshape(b, nk, heads, hd)
    v = v.reshape(b, nk, heads, hd)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, nq, w)


def select_rows(x: jax.Array, pool_index: jax.Array | int | None) -> jax.Array:
    """``(B, S, w)`` -> ``(B, 1, w)``, row ``pool_index[b]`` of each example (``None``: ``x``).

    A Python int selects the same row of every example with a static slice (no gather: the
    SPMD partitioner keeps a batch-sharded slice local, not a batched gather).
    """
    if pool_index is None:
        return x
    if isinstance(pool_index, int):
        return x[:, pool_index:pool_index + 1]
    return pool_rows(x, pool_index)[:, None]


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, heads: int, dtype: Any,
                   causal: bool = False, prefix: KV | None = None,
                   pool_index: jax.Array | int | None = None) -> tuple[jax.Array, KV]:
    """Self-attention of ``S`` positions that follow ``P`` cached ones.

    Args:
        q, k, v: ``(B, S, w)`` projections of positions ``P..P+S-1``.
        causal: position ``i`` attends to keys ``0..i`` only (else to every key).
        prefix: :class:`KV` of positions ``0..P-1`` (``None``: ``P = 0``).
        pool_index: ``(B,)`` rows (relative to ``S``) whose output is computed, or one
            static row (int) for every example; ``None``: every row.

    Returns:
        the attention output ``(B, S, w)`` (``(B, 1, w)`` with ``pool_index``) and the
        :class:`KV` of the ``S`` positions (to cache them as a prefix).
    """
    s = q.shape[1]
    own = KV(k, v)
    p = 0
    if prefix is not None:
        p = prefix.k.shape[1]
        shape = (k.shape[0], p, k.shape[2])  # a prefix of batch 1 is shared by every example
        k = jnp.concatenate([jnp.broadcast_to(prefix.k.astype(k.dtype), shape), k], axis=1)
        v = jnp.concatenate([jnp.broadcast_to(prefix.v.astype(v.dtype), shape), v], axis=1)
    q = select_rows(q, pool_index)
    mask = None
    if causal:  # query at absolute position p + r sees keys 0..p + r
        rows = (jnp.arange(s)[None] if pool_index is None
                else jnp.asarray(pool_index).reshape(-1, 1))  # (B or 1, Q)
        mask = (jnp.arange(p + s)[None, None] <= (p + rows)[..., None])[:, None]
    return attention(q, k, v, heads=heads, dtype=dtype, mask=mask), own
