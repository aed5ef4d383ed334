"""Exact shortcuts for the inversion forward passes (CLIP family).

Two kinds of work in the model's encoders never influence an inversion's feature:

- **Prefix cache (OTI).** The template positions before the first placeholder (``SOT a
  photo of`` for ``"a photo of {}"``) are the same for every example and every step, and
  under the causal mask they never see the pseudo tokens. Their per-layer keys and values
  are computed once per call; each example's forward and backward pass runs only over the
  positions from the placeholder to EOT: 2 of the 6 truncated positions (of 77 in the full
  context) for the default template.
- **Pooled position only in the last block (OTI and OVI).** The feature is read at one
  position (EOT for text, the class token for images), so the last block needs the keys
  and values of every position but the query, attention output and MLP of that position
  only (for OVI's 50 tokens, ~7% of the forward and backward FLOPs).

Both are the same function as the model's encoder up to float rounding (the tests check
1e-5 against :mod:`crossgap_jax.models.clip`). This module re-states the CLIP towers over
their params pytree (pre-LN blocks, fused ``in_proj``, QuickGELU or exact GELU, LayerNorm
and softmax in float32, the compute dtype elsewhere) and is used for the ``"clip"`` family
only (:func:`supports`); other families run the model's own encoders.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from crossgap_jax.models.families import family_of

Params = Any
KV = tuple[tuple[jax.Array, jax.Array], ...]  # per layer: keys, values (P, heads, head_dim)


def supports(config: Any) -> bool:
    """True for the ``"clip"`` family, whose towers this module re-states."""
    return getattr(config, "family", "clip") == "clip" and bool(
        getattr(family_of(config), "CAUSAL_TEXT", False))


def _layer_norm(p: Params, x: jax.Array, eps: float, dtype: Any) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]
    return y.astype(dtype)


def _dense(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: Any) -> jax.Array:
    return x.astype(dtype) @ kernel.astype(dtype) + bias.astype(dtype)


def _act(x: jax.Array, quick: bool) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x) if quick else jax.nn.gelu(x, approximate=False)


def _block(p: Params, x: jax.Array, kv_prefix: tuple[jax.Array, jax.Array] | None, *,
           heads: int, eps: float, quick: bool, dtype: Any, causal: bool,
           only: int | None = None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One residual block over ``(S, w)`` positions that follow ``P`` cached ones.

    Args:
        kv_prefix: keys and values ``(P, heads, head_dim)`` of earlier positions, or None.
        causal: position ``i`` sees keys up to its own (text) or every key (image).
        only: compute the output of this one row of ``x`` only (keys and values of all).

    Returns:
        the block's output ``(S, w)`` (``(1, w)`` with ``only``) and the ``(k, v)`` of the
        ``S`` positions, ``(S, heads, head_dim)`` each.
    """
    s, w = x.shape
    hd = w // heads
    kernel, bias = p["attn"]["in_proj"]["kernel"], p["attn"]["in_proj"]["bias"]
    h = _layer_norm(p["ln_1"], x, eps, dtype)
    if only is None:
        q, k, v = jnp.split(_dense(h, kernel, bias, dtype), 3, axis=-1)
        rows, xq = jnp.arange(s), x
    else:
        q = _dense(h[only:only + 1], kernel[:, :w], bias[:w], dtype)
        k, v = jnp.split(_dense(h, kernel[:, w:], bias[w:], dtype), 2, axis=-1)
        rows, xq = jnp.array([only]), x[only:only + 1]
    q = q.reshape(-1, heads, hd) * (hd**-0.5)
    k, v = k.reshape(s, heads, hd), v.reshape(s, heads, hd)
    n_prev = 0
    k_all, v_all = k, v
    if kv_prefix is not None:
        n_prev = kv_prefix[0].shape[0]
        k_all = jnp.concatenate([kv_prefix[0].astype(k.dtype), k], axis=0)
        v_all = jnp.concatenate([kv_prefix[1].astype(v.dtype), v], axis=0)
    logits = jnp.einsum("qhd,khd->hqk", q, k_all).astype(jnp.float32)
    if causal:  # query at absolute position n_prev + r sees keys 0..n_prev + r
        mask = jnp.arange(n_prev + s)[None, :] <= (n_prev + rows)[:, None]
        logits = jnp.where(mask[None], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    attn = jnp.einsum("hqk,khd->qhd", weights, v_all).reshape(-1, w)
    out = p["attn"]["out_proj"]
    xq = xq + _dense(attn, out["kernel"], out["bias"], dtype)
    fc, proj = p["mlp"]["c_fc"], p["mlp"]["c_proj"]
    hid = _act(_dense(_layer_norm(p["ln_2"], xq, eps, dtype), fc["kernel"], fc["bias"], dtype),
               quick)
    return xq + _dense(hid, proj["kernel"], proj["bias"], dtype), (k, v)


def _blocks(tower: Params, layers: int) -> list[Params]:
    return [tower["transformer"][f"resblocks_{i}"] for i in range(layers)]


# ---------------------------------------------------------------------------------------
# Text (OTI)
# ---------------------------------------------------------------------------------------
def prefix_kv(params: Params, prefix_embeddings: jax.Array, *, config: Any,
              dtype: Any = jnp.float32) -> KV:
    """Per-layer keys and values of the shared template prefix.

    Args:
        params: CLIP params.
        prefix_embeddings: ``(P, text_width)`` token embeddings of positions ``0..P-1``.

    Returns:
        ``layers`` pairs ``(k, v)``, each ``(P, heads, head_dim)``.
    """
    x = (prefix_embeddings.astype(dtype)
         + params["positional_embedding"][: prefix_embeddings.shape[0]].astype(dtype))
    kv = []
    for p in _blocks(params, config.text.layers):
        x, (k, v) = _block(p, x, None, heads=config.text.heads, eps=config.layer_norm_eps,
                           quick=config.quick_gelu, dtype=dtype, causal=True)
        kv.append((k, v))
    return tuple(kv)


def suffix_features(params: Params, suffix_embeddings: jax.Array, kv: KV, *,
                    pool_index: int, config: Any, dtype: Any = jnp.float32) -> jax.Array:
    """Text feature of one sequence given the cached prefix.

    Args:
        params: CLIP params.
        suffix_embeddings: ``(S, text_width)`` token embeddings of positions ``P..P+S-1``.
        kv: :func:`prefix_kv` of positions ``0..P-1``.
        pool_index: the pooled (EOT) position relative to the suffix start (static).

    Returns:
        ``(embed_dim,)`` float32 feature (not normalised).
    """
    start = kv[0][0].shape[0]
    x = (suffix_embeddings.astype(dtype)
         + params["positional_embedding"][start:start + suffix_embeddings.shape[0]].astype(dtype))
    blocks = _blocks(params, config.text.layers)
    for i, (p, kv_l) in enumerate(zip(blocks, kv)):
        x, _ = _block(p, x, kv_l, heads=config.text.heads, eps=config.layer_norm_eps,
                      quick=config.quick_gelu, dtype=dtype, causal=True,
                      only=pool_index if i == len(blocks) - 1 else None)
    x = _layer_norm(params["ln_final"], x[0], config.layer_norm_eps, dtype)
    return (x @ params["text_projection"].astype(dtype)).astype(jnp.float32)


# ---------------------------------------------------------------------------------------
# Image (OVI)
# ---------------------------------------------------------------------------------------
def image_features(params: Params, tokens: jax.Array, *, config: Any,
                   dtype: Any = jnp.float32) -> jax.Array:
    """Image feature of one example's patch tokens, the last block at the class token only.

    Args:
        params: CLIP params.
        tokens: ``(num_patches, vision_width)`` patch tokens (the ``conv1`` output).

    Returns:
        ``(embed_dim,)`` float32 feature (not normalised).
    """
    vis, c = params["visual"], config.vision
    x = jnp.concatenate([vis["class_embedding"].astype(dtype)[None], tokens.astype(dtype)], 0)
    x = _layer_norm(vis["ln_pre"], x + vis["positional_embedding"].astype(dtype),
                    config.layer_norm_eps, dtype)
    blocks = _blocks(vis, c.layers)
    for i, p in enumerate(blocks):
        x, _ = _block(p, x, None, heads=c.heads, eps=config.layer_norm_eps,
                      quick=config.quick_gelu, dtype=dtype, causal=False,
                      only=0 if i == len(blocks) - 1 else None)
    x = _layer_norm(vis["ln_post"], x[0], config.layer_norm_eps, dtype)
    return (x @ vis["proj"].astype(dtype)).astype(jnp.float32)
