"""Nearest-class-mean (NCM) accuracy: the zero-shot metric with class prototypes as the
classifier (prototypes from :func:`crossgap_jax.baselines.ncm.class_means`, mapped like the
queries).

Source: IsoCLIP (PAPER.md, "IsoCLIP, exactly"): each query gets the class of the prototype
with the highest cosine similarity; top-1 accuracy in percent. Ties are counted as errors
(pessimistic), as :func:`crossgap_jax.retrieval.zero_shot_accuracy` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax.retrieval.zeroshot import zero_shot_accuracy


def ncm_accuracy(features: Any, labels: Any, prototypes: Any, *, ks: Sequence[int] = (1, 5)
                 ) -> dict[str, float | int]:
    """Top-k NCM accuracy in percent.

    Args:
        features: ``(N, D)`` mapped query features.
        labels: ``(N,)`` integer classes in ``[0, C)``.
        prototypes: ``(C, D)`` mapped class means.
        ks: cut-offs (keys ``"top{k}"``).

    Returns:
        ``{"top1": ..., "top5": ..., "num_samples": N}``: :func:`zero_shot_accuracy` with the
        prototypes as the classifier (pessimistic ties).

    Raises:
        ValueError: shape mismatch, non-integer or out-of-range labels, zero-norm rows,
            empty input, a cut-off below 1.
    """
    y = np.asarray(labels)
    c = np.shape(prototypes)[0] if np.ndim(prototypes) == 2 else None
    if c is not None and y.size and (not np.issubdtype(y.dtype, np.integer)
                                     or y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must be integers in [0, {c})")
    return zero_shot_accuracy(features, prototypes, y, ks=ks)


__all__ = ["ncm_accuracy"]
