"""Analytic FLOP counts of one OTI / OVI optimisation step (multiply-add = 2 FLOPs).

Used for the FLOP floor of the paper's jobs (``bench``) and the achieved rate of
``benchmarks/bench_inversion.py``. Counts are per example and step: forward plus the
gradient with respect to the inputs only (the weights are frozen, no dW).
"""

from __future__ import annotations

from typing import Any

# "a photo of {}" with one pseudo token: SOT a photo of £ EOT (what oti() runs by default).
TEMPLATE_POSITIONS = 6
PLACEHOLDER_INDEX = 4


def transformer_step_flops(width: int, layers: int, queries: int, keys: int,
                           last_pooled_only: bool = False, mlp_ratio: float = 4.0) -> float:
    """Forward + backward w.r.t. the inputs of ``layers`` pre-LN transformer blocks.

    Per layer and query position: q/k/v, output and the two MLP matmuls are
    ``2 w^2 (2 kv + q + q + 2 mlp_ratio q)`` FLOPs forward, the same again backward
    (dX = dY W^T). Attention: QK^T and PV are ``4 q keys w`` forward, twice that backward.
    With ``last_pooled_only`` the last block computes keys and values of all positions
    but the query, output projection and MLP of one.
    """
    def layer(q_rows: int, kv_rows: int) -> float:
        matmul = 2 * width**2 * (2 * kv_rows + 2 * q_rows + 2 * mlp_ratio * q_rows)
        attn = 4 * q_rows * keys * width
        return 2 * matmul + 3 * attn

    if not last_pooled_only:
        return float(layers * layer(queries, queries))
    return float((layers - 1) * layer(queries, queries) + layer(1, queries))


def oti_step_flops(config: Any, variant: str = "prefix cache") -> float:
    """One OTI step of one example: ``"full"`` (77 positions), ``"truncation"`` (up to EOT),
    ``"prefix cache"`` (positions after the placeholder only, last block at EOT: the
    default of :func:`~crossgap_jax.inversion.oti`)."""
    t = config.text
    proj = 4 * t.width * config.embed_dim
    if variant == "prefix cache":
        return transformer_step_flops(t.width, t.layers, TEMPLATE_POSITIONS - PLACEHOLDER_INDEX,
                                      TEMPLATE_POSITIONS, True, t.mlp_ratio) + proj
    q = TEMPLATE_POSITIONS if variant == "truncation" else t.context_length
    return transformer_step_flops(t.width, t.layers, q, q, False, t.mlp_ratio) + proj


def ovi_step_flops(config: Any, pooled_only: bool = True) -> float:
    """One OVI step of one example (all patches + class token; last block at CLS only
    with ``pooled_only``, the default of :func:`~crossgap_jax.inversion.ovi`)."""
    v = config.vision
    n = v.num_patches + 1
    return (transformer_step_flops(v.width, v.layers, n, n, pooled_only, v.mlp_ratio)
            + 4 * v.width * config.embed_dim)
