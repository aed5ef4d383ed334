"""PE's 2D rotary position embedding (RoPE) of the image tower's self-attention.

Source: facebookresearch/perception_models ``core/vision_encoder/rope.py`` (``Rope2D``,
``RotaryEmbedding``, ``apply_rotary_emb``), as timm's ``vit_pe_core_*`` reproduces it
(``rope_grid_offset=1``, ``rope_grid_indexing='xy'``, interleaved pairs). The facts:

- per head of ``hd`` dimensions, each grid axis gets ``hd / 2`` of them: ``hd / 4``
  frequencies ``f_j = theta ** (-2 j / (hd / 2))``, ``j = 0 .. hd / 4 - 1`` (``theta``
  10,000), each repeated twice (``f0 f0 f1 f1 ...``);
- the angle vector of the patch at grid row ``r``, column ``c`` is
  ``[c' f0, c' f0, c' f1, ... | r' f0, r' f0, ...]`` (the column's half first), with
  ``c' = c + 1``, ``r' = r + 1`` when the tower has a class token (its position is
  ``(0, 0)``: angle 0, no rotation) and ``c' = c``, ``r' = r`` without one;
- queries and keys (after the head split, before the scaling) become
  ``x cos(a) + rot(x) sin(a)`` with ``rot`` mapping each pair ``(x_{2i}, x_{2i+1})`` to
  ``(-x_{2i+1}, x_{2i})``. Values are not rotated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_2d_angles(grid_h: int, grid_w: int, head_dim: int, *, theta: float = 10000.0,
                   class_token: bool = True) -> np.ndarray:
    """Rotation angles ``(S, head_dim)`` float32 of the tokens of a ``grid_h x grid_w``
    patch grid (row-major), with a leading all-zero row for the class token when
    ``class_token`` (``S = 1 + grid_h * grid_w``, else ``grid_h * grid_w``).

    Raises:
        ValueError: ``head_dim`` is not a multiple of 4 (two axes of rotated pairs).
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
    axis_dim = head_dim // 2
    freqs = 1.0 / (theta ** (np.arange(0, axis_dim, 2, dtype=np.float32) / axis_dim))
    offset = 1 if class_token else 0
    rows = np.arange(grid_h, dtype=np.float32) + offset
    cols = np.arange(grid_w, dtype=np.float32) + offset
    a_col = np.repeat(cols[:, None] * freqs, 2, axis=-1)  # (W, hd / 2)
    a_row = np.repeat(rows[:, None] * freqs, 2, axis=-1)  # (H, hd / 2)
    grid = np.concatenate([np.broadcast_to(a_col[None], (grid_h, grid_w, axis_dim)),
                           np.broadcast_to(a_row[:, None], (grid_h, grid_w, axis_dim))],
                          axis=-1).reshape(grid_h * grid_w, head_dim)
    if class_token:
        grid = np.concatenate([np.zeros((1, head_dim), np.float32), grid], axis=0)
    return grid.astype(np.float32)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
    """``x`` ``(B, S, heads, hd)`` rotated by ``angles`` ``(S, hd)`` (computed in float32,
    returned in ``x``'s dtype)."""
    dtype = x.dtype
    x = x.astype(jnp.float32)
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rot = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    a = jnp.asarray(angles, jnp.float32)[None, :, None, :]
    return (x * jnp.cos(a) + rot * jnp.sin(a)).astype(dtype)
