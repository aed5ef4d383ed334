"""Input checks and small helpers shared by the retrieval modules."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

#: Anything the public functions accept as an array.
ArrayLike = np.ndarray | jax.Array

#: Tie rules understood by the ranking kernels (see docs/retrieval.md).
TIE_RULES = ("pessimistic", "optimistic")

#: Metric conventions (see docs/fidelity.md). ``"standard"``: the definitions of
#: :mod:`crossgap_jax.retrieval.metrics`; queries without a relevant item are left out of the
#: means. ``"authors"``: the Cross-the-Gap authors' code: on all-vs-all splits the R of mAP@R
#: is counted before the query itself is removed (R + 1 ranks summed, divided by R), and
#: queries without a relevant item count as 0 in every mean.
METRIC_VARIANTS = ("standard", "authors")

#: Backends understood by the chunked evaluators.
BACKENDS = ("auto", "numpy", "jax")


def is_jax_array(x: Any) -> bool:
    """True for a ``jax.Array`` (device array), False for NumPy and everything else."""
    return isinstance(x, jax.Array)


def resolve_backend(backend: str) -> str:
    """``"auto"`` -> ``"jax"`` on GPU/TPU, ``"numpy"`` on CPU (XLA's CPU sort is slow)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "numpy" if jax.default_backend() == "cpu" else "jax"
    return backend


def check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")


def check_metric_variant(metric_variant: str) -> None:
    if metric_variant not in METRIC_VARIANTS:
        raise ValueError(f"metric_variant must be one of {METRIC_VARIANTS}, got {metric_variant!r}")


def check_ks(ks: Sequence[int], name: str = "recall_ks") -> tuple[int, ...]:
    """Validate a sequence of positive cut-offs and return it as a tuple of ints."""
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must hold positive integers, got {k!r}")
        out.append(int(k))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicates: {tuple(out)}")
    return tuple(out)


def check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def auto_chunk_size(num_queries: int, num_gallery: int, target_elements: int) -> int:
    """Rows per chunk so that one (rows, G) score block holds about ``target_elements``."""
    rows = max(1, target_elements // max(num_gallery, 1))
    return int(max(1, min(num_queries, rows)))


def default_num_threads() -> int:
    """Worker threads for the NumPy backend: the usable cores, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def features_numpy(x: ArrayLike, name: str, dtype: Any = np.float32) -> np.ndarray:
    """``x`` as a finite ``dtype`` (float32 unless given) (N, D) NumPy matrix; a ValueError
    naming ``name`` when it is not 2-D, empty, not numeric or not finite."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a float array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=dtype)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def features_jax(x: ArrayLike, name: str) -> jax.Array:
    """``x`` as a finite float32 (N, D) device array; clear ValueError otherwise."""
    shape = tuple(np.shape(x))
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {shape}")
    dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"{name} must be a float array, got dtype {dtype}")
    a = jnp.asarray(x, dtype=jnp.float32)
    if not bool(jnp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def progress_iter(iterable, total: int, enabled: bool, desc: str):
    """Wrap ``iterable`` in a tqdm bar when ``enabled``."""
    if not enabled:
        return iterable

    return tqdm(iterable, total=total, desc=desc)


def want_progress(progress: bool | None, num_queries: int, num_gallery: int) -> bool:
    """``None`` means automatic: a bar once the score matrix passes 2**30 entries."""
    if progress is None:
        return num_queries * num_gallery >= 2**30
    return bool(progress)
