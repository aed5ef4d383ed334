"""L2 normalisation of feature vectors: the one strict version and the traceable one.

:func:`l2_normalize` is what retrieval, zero-shot, the gap statistics and PCA use: a
zero or non-finite vector is an error naming the input (a zero row has no direction, and
dividing would give NaN scores). :func:`l2_normalize_traceable` is torch's
``F.normalize(x, dim=-1)`` (norm clamped at 1e-12, zero rows stay zero), which IsoCLIP's
authors apply; it raises nothing, so it runs inside ``jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def l2_normalize(x: Any, name: str = "features", *, axis: int = -1) -> Any:
    """``x`` divided by its L2 norm along ``axis``.

    Args:
        x: an array of any shape; NumPy (or a list) in -> NumPy out (float dtypes kept,
            integers become float32), ``jax.Array`` in -> ``jax.Array`` out.
        name: what ``x`` is, for the error message.
        axis: the feature axis.

    Returns:
        An array of ``x``'s shape with unit-norm vectors along ``axis``.

    Raises:
        ValueError: a vector of zero or non-finite norm (the first few are named).
    """
    xp = jnp if isinstance(x, jax.Array) else np
    a = x if xp is jnp else np.asarray(x)
    if not xp.issubdtype(a.dtype, xp.floating):
        a = a.astype(xp.float32)
    norms = xp.linalg.norm(a, axis=axis, keepdims=True)
    bad = np.asarray((norms == 0) | ~xp.isfinite(norms))
    if bad.any():
        where = np.argwhere(np.squeeze(bad, axis=axis))[:5]
        at = (f"rows {where[:, 0].tolist()}" if where.shape[1] == 1
              else f"indices {[tuple(w) for w in where.tolist()]}")
        raise ValueError(f"{name} has zero or non-finite vectors (cannot L2-normalise), "
                         f"e.g. {at}")
    return a / norms


def l2_normalize_traceable(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along the last axis (torch's ``F.normalize``); jit-safe."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
