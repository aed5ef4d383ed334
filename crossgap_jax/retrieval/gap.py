"""Modality-gap statistics: the arrays behind the paper's similarity-distribution figures.

All functions L2-normalise their inputs and return NumPy arrays / dicts (no plotting here).

* :func:`modality_gap`: ``|| mean(norm(a)) - mean(norm(b)) ||_2``, the distance between the
  centroids of two normalised feature sets (Liang et al. 2022's "modality gap").
* :func:`similarity_statistics`: cosine similarities of *paired* items ``(a_i, b_i)`` and of
  *unpaired* items ``(a_i, b_j)``, ``i != j`` when the sets are paired (all pairs otherwise):
  mean, standard deviation, percentiles and a histogram, computed in query chunks so the
  N x M matrix never exists. Unpaired mean/std are exact (float64 sums); unpaired percentiles
  are read from a fine histogram (``percentile_bins`` bins over ``value_range``: off by less
  than one bin width, 1e-4 by default); paired percentiles are exact (``np.percentile``).
* :func:`similarity_distributions`: the paper's three distributions at once: image-image
  (distinct images), text-image (caption/prompt vs image) and inverted-image (e.g. OTI feature
  of image i vs the images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossgap_jax.retrieval._common import (
    ArrayLike,
    check_chunk_size,
    features_numpy,
)
from crossgap_jax.retrieval.normalize import l2_normalize


def _normalised(x: ArrayLike, name: str) -> np.ndarray:
    return l2_normalize(features_numpy(x, name), name)


def modality_gap(a: ArrayLike, b: ArrayLike) -> float:
    """Distance between the means of the L2-normalised rows of ``a`` and ``b``.

    Args:
        a: (N, D) features of one modality.
        b: (M, D) features of the other.

    Returns:
        ``||mean_i a_i/|a_i| - mean_j b_j/|b_j|||_2`` (float, in [0, 2]).
    """
    an, bn = _normalised(a, "a"), _normalised(b, "b")
    if an.shape[1] != bn.shape[1]:
        raise ValueError(f"feature dims differ: {an.shape[1]} vs {bn.shape[1]}")
    diff = an.mean(axis=0, dtype=np.float64) - bn.mean(axis=0, dtype=np.float64)
    return float(np.linalg.norm(diff))


def paired_similarities(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """(N,) cosine similarity of each pair ``(a_i, b_i)``."""
    an, bn = _normalised(a, "a"), _normalised(b, "b")
    if an.shape != bn.shape:
        raise ValueError(f"paired sets need equal shapes, got {an.shape} and {bn.shape}")
    return np.einsum("nd,nd->n", an, bn, dtype=np.float64)


def _percentiles_from_hist(
    counts: np.ndarray, edges: np.ndarray, percentiles: Sequence[float]
) -> dict[float, float]:
    """NumPy's ``method="linear"`` percentiles, with each order statistic located in its bin.

    The k-th smallest value is placed inside its bin as if the bin's items were spread
    uniformly, so every order statistic is off by less than one bin width, and so is the
    linear interpolation between two of them.
    """
    total = int(counts.sum())
    cum = np.cumsum(counts)

    def order_statistic(i: int) -> float:
        b = min(int(np.searchsorted(cum, i + 1)), len(counts) - 1)
        before = int(cum[b - 1]) if b > 0 else 0
        frac = (i - before + 0.5) / max(int(counts[b]), 1)
        return float(edges[b] + min(max(frac, 0.0), 1.0) * (edges[b + 1] - edges[b]))

    out = {}
    for p in percentiles:
        if not 0 <= p <= 100:
            raise ValueError(f"percentiles must lie in [0, 100], got {p}")
        pos = p / 100.0 * (total - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, total - 1)
        v_lo, v_hi = order_statistic(lo), order_statistic(hi)
        out[float(p)] = v_lo + (pos - lo) * (v_hi - v_lo)
    return out


def similarity_statistics(
    a: ArrayLike,
    b: ArrayLike | None = None,
    *,
    paired: bool | None = None,
    percentiles: Sequence[float] = (5, 25, 50, 75, 95),
    bins: int = 100,
    value_range: tuple[float, float] = (-1.0, 1.0),
    percentile_bins: int = 20000,
    chunk_size: int | None = None,
) -> dict:
    """Cosine-similarity distribution of paired and unpaired items.

    Args:
        a: (N, D) features.
        b: (M, D) features; ``None`` compares ``a`` with itself (self-pairs ``i == i`` left
            out: the intra-modal distribution).
        paired: whether ``a_i`` and ``b_i`` belong together (default: True when N == M and
            ``b`` is given). Unpaired statistics then leave out ``i == j``.
        percentiles: percentiles (0-100) to report.
        bins: bins of the returned histograms over ``value_range``.
        value_range: histogram range; similarities are clipped into it.
        percentile_bins: bins of the internal histogram used for unpaired percentiles.
        chunk_size: rows of ``a`` per block (default: about 16M similarities per block).

    Returns:
        ``{"bin_edges": (bins + 1,), "unpaired": {...}, "paired": {...} or None, "gap": float
        or None}`` where each part is ``{"count", "mean", "std", "percentiles": {p: value},
        "histogram": (bins,) int64 counts}`` and ``"gap"`` is :func:`modality_gap` (None when
        ``b`` is None).
    """
    check_chunk_size(chunk_size)
    if bins < 1 or percentile_bins < 1:
        raise ValueError("bins and percentile_bins must be positive")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    an = _normalised(a, "a")
    self_compare = b is None
    bn = an if self_compare else _normalised(b, "b")
    if an.shape[1] != bn.shape[1]:
        raise ValueError(f"feature dims differ: {an.shape[1]} vs {bn.shape[1]}")
    n, m = an.shape[0], bn.shape[0]
    if paired is None:
        paired = (not self_compare) and n == m
    if paired and n != m:
        raise ValueError(f"paired statistics need N == M, got {n} and {m}")
    skip_diagonal = self_compare or paired
    if skip_diagonal and n * m - n == 0:
        raise ValueError("need at least two items for unpaired similarities")

    edges = np.linspace(lo, hi, bins + 1)
    fine_edges = np.linspace(lo, hi, percentile_bins + 1)
    hist = np.zeros(bins, np.int64)
    fine = np.zeros(percentile_bins, np.int64)
    total = total_sq = 0.0
    count = 0

    def add(values: np.ndarray, sign: int) -> None:
        nonlocal total, total_sq, count
        v = np.clip(values.astype(np.float64, copy=False), lo, hi)
        hist[:] += sign * np.histogram(v, bins=bins, range=(lo, hi))[0]
        fine[:] += sign * np.histogram(v, bins=percentile_bins, range=(lo, hi))[0]
        total += sign * float(v.sum())
        total_sq += sign * float(np.square(v).sum())
        count += sign * v.size

    chunk = chunk_size or max(1, (1 << 24) // max(m, 1))
    for s in range(0, n, chunk):
        block = an[s : s + chunk] @ bn.T
        add(block.ravel(), +1)
        if skip_diagonal:
            idx = np.arange(block.shape[0])
            add(block[idx, s + idx], -1)  # same values, same bins: exact removal
    mean = total / count
    unpaired = {
        "count": int(count),
        "mean": float(mean),
        "std": float(np.sqrt(max(total_sq / count - mean * mean, 0.0))),
        "percentiles": _percentiles_from_hist(fine, fine_edges, percentiles),
        "histogram": hist.copy(),
    }
    paired_part = None
    if paired:
        vals = np.einsum("nd,nd->n", an, bn, dtype=np.float64)
        clipped = np.clip(vals, lo, hi)
        paired_part = {
            "count": int(n),
            "mean": float(vals.mean()),
            "std": float(vals.std()),
            "percentiles": {
                float(p): float(v)
                for p, v in zip(percentiles, np.percentile(vals, list(percentiles)))
            },
            "histogram": np.histogram(clipped, bins=bins, range=(lo, hi))[0].astype(np.int64),
        }
    gap = None if self_compare else modality_gap(an, bn)
    return {"bin_edges": edges, "unpaired": unpaired, "paired": paired_part, "gap": gap}


def similarity_distributions(
    image: ArrayLike,
    text: ArrayLike | None = None,
    inverted: ArrayLike | None = None,
    **kwargs,
) -> dict[str, dict]:
    """The paper's similarity distributions, keyed by pair type.

    Args:
        image: (N, D) image features.
        text: (N, D) text features paired with the images (row i describes image i), or None.
        inverted: (N, D) inverted features paired with the images (e.g. the OTI feature of
            image i), or None.
        **kwargs: passed to :func:`similarity_statistics` (bins, value_range, percentiles...).

    Returns:
        ``{"image-image": ..., "text-image": ..., "inverted-image": ...}`` (the last two only
        when given), each a :func:`similarity_statistics` result. For image-image the
        "unpaired" part holds all pairs of distinct images.
    """
    out = {"image-image": similarity_statistics(image, None, **kwargs)}
    if text is not None:
        out["text-image"] = similarity_statistics(text, image, **kwargs)
    if inverted is not None:
        out["inverted-image"] = similarity_statistics(inverted, image, **kwargs)
    return out
