"""Uncertainty of a difference between two methods on the same items, and the verdict it
supports.

:func:`paired_bootstrap_ci` resamples the evaluation items (queries, test images) with
replacement and gives the percentile interval of the mean paired difference (Efron &
Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13). :func:`verdict` turns that
interval into the one vocabulary the project reports claims with:

* ``"holds"``: the interval excludes 0 on the side the paper predicts;
* ``"does not hold"``: the interval excludes 0 on the other side;
* ``"inconclusive"``: the interval contains 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

VERDICTS = ("holds", "does not hold", "inconclusive")
Verdict = Literal["holds", "does not hold", "inconclusive"]


def paired_bootstrap_ci(base: Sequence[float] | np.ndarray, new: Sequence[float] | np.ndarray,
                        *, samples: int = 2000, seed: int = 0,
                        level: float = 0.95) -> list[float]:
    """Bootstrap interval of ``100 * mean(new - base)`` over paired items.

    Args:
        base, new: ``(N,)`` per-item values of the two methods on the same items (e.g. the
            average precision of each query in [0, 1], or 0/1 correctness of each image).
        samples: bootstrap resamples.
        seed: NumPy ``default_rng`` seed.
        level: coverage (0.95: the 2.5th and 97.5th percentiles).

    Returns:
        ``[low, high]`` in the units of ``100 * value`` (points of mAP / accuracy).

    Raises:
        ValueError: different lengths, no items, or ``level`` outside (0, 1).
    """
    b = np.asarray(base, np.float64).reshape(-1)
    n = np.asarray(new, np.float64).reshape(-1)
    if b.shape != n.shape:
        raise ValueError(f"paired_bootstrap_ci: base has {b.size} items, new has {n.size}; "
                         "they must be the same items")
    if b.size == 0:
        raise ValueError("paired_bootstrap_ci: no items")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = (n - b) * 100.0
    rng = np.random.default_rng(seed)
    # Why paired: both methods are scored on the same items, so resampling the per-item
    # differences (not each method apart) keeps the item difficulty they share out of the
    # interval; a fixed seed makes a record's interval reproducible.
    idx = rng.integers(0, len(d), size=(samples, len(d)))
    means = d[idx].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))]


def verdict(ci: Sequence[float], paper_direction: int) -> Verdict:
    """The verdict an interval of a difference supports.

    Args:
        ci: ``[low, high]`` interval of the difference ``inverted - baseline``.
        paper_direction: ``+1`` when the paper reports an increase (OTI/OVI retrieval),
            ``-1`` when it reports a decrease (intra-modal zero-shot).

    Returns:
        ``"holds"`` if the interval excludes 0 on the paper's side, ``"does not hold"`` if it
        excludes 0 on the other side, else ``"inconclusive"`` (an interval touching 0
        counts as containing it).

    Raises:
        ValueError: ``paper_direction`` not +1/-1, or ``low > high``, or a NaN bound.
    """
    if paper_direction not in (1, -1):
        raise ValueError(f"paper_direction must be +1 or -1, got {paper_direction!r}")
    lo, hi = float(ci[0]), float(ci[1])
    if np.isnan(lo) or np.isnan(hi) or lo > hi:
        raise ValueError(f"not an interval: [{lo}, {hi}]")
    if lo > 0:
        return "holds" if paper_direction == 1 else "does not hold"
    if hi < 0:
        return "holds" if paper_direction == -1 else "does not hold"
    return "inconclusive"
