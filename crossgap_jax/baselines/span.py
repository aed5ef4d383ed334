"""Herzog & Wang's span projection: project features onto the main span of text features.

Herzog & Wang (CVPR 2026, ``cvpr26-suppl/span_projection.py``; facts in PAPER.md, "Herzog &
Wang, exactly")::

    T  = text features, (n, d)            the model's unnormalised encode_text outputs
    C  = cov(T)                           centred, divided by n - 1 (torch.cov's convention)
    U  = eigenvectors of the d // r largest eigenvalues of C, as rows, (d // r, d)
    x -> U^T U x                          no centring; consumers L2-normalise afterwards

``r`` is the reduce factor (theirs: 2). Only the subspace ``U^T U`` matters: the sign and order
of the eigenvectors do not change the features. Fitting runs in float64 NumPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Herzog & Wang's default reduce factor: keep ``d // 2`` directions.
DEFAULT_SPAN_REDUCE = 2


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def span_basis(text_features: Any, reduce: int = DEFAULT_SPAN_REDUCE) -> np.ndarray:
    """The span basis ``U``: eigenvectors of the text features' covariance, as rows.

    Args:
        text_features: ``(n, d)`` text embeddings (unnormalised ``encode_text`` outputs in
            Herzog & Wang's retrieval script), ``n >= 2``.
        reduce: keep ``d // reduce`` directions (the largest eigenvalues); ``>= 1``.

    Returns:
        ``(d // reduce, d)`` float64, orthonormal rows ordered by decreasing eigenvalue.

    Raises:
        ValueError: not a finite non-empty matrix, fewer than 2 rows, or ``reduce`` outside
            ``1 .. d``.
    """
    t = _matrix(text_features, "text_features")
    n, d = t.shape
    if n < 2:
        raise ValueError(f"the span needs at least 2 text features for a covariance, got {n}")
    integer = isinstance(reduce, (int, np.integer)) and not isinstance(reduce, bool)
    if not integer or not 1 <= reduce <= d:
        raise ValueError(f"span reduce factor must be an integer in 1..{d}, got {reduce!r}")
    cov = np.cov(t, rowvar=False, ddof=1)
    eigvals, eigvecs = np.linalg.eigh(cov)          # ascending eigenvalues
    keep = d // int(reduce)
    return np.ascontiguousarray(eigvecs[:, ::-1][:, :keep].T)


def span_project(x: Any, basis: Any) -> np.ndarray:
    """``U^T U x`` for each row ``x`` of ``x`` (no centring, no normalisation).

    Args:
        x: ``(N, d)`` features.
        basis: ``(k, d)`` rows from :func:`span_basis`.

    Returns:
        ``(N, d)`` float64 projected features.

    Raises:
        ValueError: shapes disagree or values are not finite.
    """
    a = _matrix(x, "features")
    u = _matrix(basis, "span basis")
    if a.shape[1] != u.shape[1]:
        raise ValueError(f"features have dimension {a.shape[1]} but the span basis "
                         f"{u.shape[1]}: fit the span with the same model")
    return (a @ u.T) @ u
