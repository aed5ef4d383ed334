"""Nearest-class-mean (NCM) classification, IsoCLIP's second task: class prototypes
(:func:`class_means`) and the accuracy of the nearest one (:func:`ncm_accuracy`).

Source: IsoCLIP (PAPER.md, "IsoCLIP, exactly"): the prototype of class ``c`` is the mean
pre-projection image feature of the training images of ``c``; prototypes are mapped like the
queries (IsoCLIP's image map, or the plain image head), and each query gets the class of the
prototype with the highest cosine similarity; top-1 accuracy in percent. Ties are counted as
errors (pessimistic), as :func:`crossgap_jax.retrieval.zero_shot_accuracy` does. Because the
maps are linear up to the final L2 normalisation, the mean is taken *before* the map (as
IsoCLIP does); for the plain head ``x @ P + b`` this equals the mean of the (unnormalised)
projected features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax.retrieval.zeroshot import zero_shot_accuracy


def class_means(features: Any, labels: Any, num_classes: int) -> np.ndarray:
    """``(C, d)`` mean feature of each class (float64 accumulation, float32 result).

    Args:
        features: ``(N, d)`` features (pre-projection for NCM).
        labels: ``(N,)`` integer classes in ``[0, num_classes)``.
        num_classes: ``C``.

    Raises:
        ValueError: shape mismatch, labels out of range, or a class without any sample
            (its prototype is undefined; the message lists the first few such classes).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, d) and labels (N,), got {x.shape} and "
                         f"{y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    counts = np.bincount(y, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"NCM needs at least one training sample per class; {empty.size} of "
                         f"{num_classes} classes have none (first: {empty[:5].tolist()})")
    sums = np.zeros((num_classes, x.shape[1]), np.float64)
    np.add.at(sums, y, x)
    return (sums / counts[:, None]).astype(np.float32)



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
