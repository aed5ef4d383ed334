"""Nearest-class-mean (NCM) classification, IsoCLIP's second task.

Source: IsoCLIP (PAPER.md, "IsoCLIP, exactly"): the prototype of class ``c`` is the mean
pre-projection image feature of the training images of ``c``; prototypes are mapped like the
queries (IsoCLIP's image map, or the plain image head), and each query is assigned the class
of the prototype with the highest cosine similarity. Top-1 accuracy in percent.

Because the maps are linear up to the final L2 normalisation, the mean is taken *before*
the map (as IsoCLIP does); for the plain head ``x @ P + b`` this equals the mean of the
(unnormalised) projected features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
    """Top-k NCM accuracy in percent: cosine of each (mapped) query to each (mapped)
    prototype; the rank of the true class decides (ties pessimistic, as zero-shot).

    Args:
        features: ``(N, D)`` mapped query features.
        labels: ``(N,)`` integer classes.
        prototypes: ``(C, D)`` mapped class means (:func:`class_means`, then the same map).
        ks: cut-offs (keys ``"top{k}"``).

    Returns:
        ``{"top1": ..., "top5": ..., "num_samples": N}`` (the numbers of
        :func:`crossgap_jax.retrieval.zero_shot_accuracy` with the prototypes as classifier;
        computed here so that this layer does not import the retrieval layer).

    Raises:
        ValueError: shape mismatch, non-integer or out-of-range labels, zero-norm rows,
            empty input, a cut-off below 1.
    """
    x = np.asarray(features, np.float64)
    w = np.asarray(prototypes, np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"features must be (N, D) and prototypes (C, D), got {x.shape} and "
                         f"{w.shape}")
    if y.shape != (x.shape[0],) or not x.shape[0]:
        raise ValueError(f"labels must be (N,) with N >= 1, got {y.shape} for {x.shape[0]} "
                         "samples")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= w.shape[0]:
        raise ValueError(f"labels must be integers in [0, {w.shape[0]})")
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be >= 1, got {ks}")
    nx = np.linalg.norm(x, axis=1, keepdims=True)
    nw = np.linalg.norm(w, axis=1, keepdims=True)
    if (nx == 0).any() or (nw == 0).any():
        raise ValueError("features and prototypes must have non-zero rows")
    x = (x / nx).astype(np.float32)  # float32 scores, as the zero-shot metric
    w = (w / nw).astype(np.float32)
    ranks = np.empty(x.shape[0], np.int64)
    for s in range(0, x.shape[0], 4096):
        scores = x[s:s + 4096] @ w.T
        true = scores[np.arange(scores.shape[0]), y[s:s + 4096]][:, None]
        ranks[s:s + 4096] = (scores >= true).sum(axis=1)  # pessimistic: ties rank before
    out: dict[str, float | int] = {f"top{k}": float((ranks <= k).mean() * 100.0) for k in ks}
    out["num_samples"] = int(ranks.size)
    return out


__all__ = ["class_means", "ncm_accuracy"]
