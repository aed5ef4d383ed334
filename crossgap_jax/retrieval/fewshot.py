"""Few-shot nearest-class-mean (NCM) classification: k-shot prototypes, several seeds.

Protocol (IsoCLIP's and Herzog & Wang's second task, PAPER.md; sampling as CoOp's few-shot
splits: ``k`` training images per class):

- **Sampling.** For each seed, ``rng = numpy.random.default_rng(seed)``; for each class
  ``c = 0 .. C-1`` in order, ``rng.permutation`` of the indices (ascending) of the class's
  training images; the ``k``-shot support of ``c`` is the first ``k`` of that permutation.
  So, for one seed, the supports of the different ``k`` are nested, and a given
  ``(labels, seed)`` always gives the same supports (:func:`k_shot_indices`).
- **Prototypes.** The mean of the support's features of each class, un-normalised features
  (for the linear maps, e.g. the image head, this is the map of the mean pre-projection
  feature, the convention of :mod:`crossgap_jax.retrieval.ncm`).
- **Decision.** Cosine similarity of each query to each prototype; the most similar class
  wins; ties are counted as errors (pessimistic, as :func:`ncm_accuracy`).
- **Report.** Top-1 accuracy in percent per seed, their mean and standard deviation
  (``ddof=0``) per ``k``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from crossgap_jax.retrieval.ncm import class_means, ncm_accuracy

DEFAULT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_SEEDS = (0, 1, 2)


class FewShotSkip(ValueError):
    """A (feature type, k) combination that cannot be computed on this data (e.g. a class
    with fewer than k training images, or a PCA with more directions than the support
    determines); reported as skipped, with this message, instead of a number."""


def _labels(labels: Any, num_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {y.shape}, dtype "
                         f"{y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return y


def class_permutations(labels: Any, num_classes: int, seed: int) -> list[np.ndarray]:
    """Per class, the seeded permutation of its training indices (see the module docstring).

    Returns:
        ``C`` int64 arrays (a class without images gives an empty array).
    """
    y = _labels(labels, num_classes)
    rng = np.random.default_rng(int(seed))
    return [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]


def k_shot_indices(labels: Any, num_classes: int, k: int, seed: int) -> np.ndarray:
    """Indices of the ``k``-shot support: ``k`` per class, class-major, deterministic in
    ``(labels, num_classes, k, seed)``.

    Args:
        labels: ``(N,)`` integer classes of the training split.
        num_classes: ``C``.
        k: shots per class (>= 1).
        seed: NumPy ``default_rng`` seed.

    Returns:
        ``(C * k,)`` int64 indices into ``labels``.

    Raises:
        FewShotSkip: a class has fewer than ``k`` training images (the message names how
            many classes and the first few).
        ValueError: bad labels or ``k < 1``.
    """
    if int(k) < 1:
        raise ValueError(f"shots per class must be >= 1, got {k}")
    perms = class_permutations(labels, num_classes, seed)
    short = [c for c, p in enumerate(perms) if len(p) < k]
    if short:
        raise FewShotSkip(f"{len(short)} of {num_classes} classes have fewer than {k} "
                          f"training images (first: {short[:5]}); {k}-shot is not possible")
    return np.concatenate([p[:k] for p in perms]).astype(np.int64)


def few_shot_ncm_accuracy(support: Any, support_labels: Any, queries: Any, query_labels: Any,
                          num_classes: int) -> float:
    """Top-1 NCM accuracy in percent: prototypes = class means of ``support`` (``(S, D)``),
    queries ``(N, D)`` assigned to the most cosine-similar prototype (ties: wrong).

    Raises:
        ValueError: shape mismatch, labels out of range, or a class without support.
    """
    protos = class_means(support, support_labels, num_classes)
    return float(ncm_accuracy(queries, query_labels, protos, ks=(1,))["top1"])


FeatureFn = Callable[[np.ndarray], tuple[Any, Any]]


def few_shot_sweep(features_for: FeatureFn, train_labels: Any, query_labels: Any,
                   num_classes: int, shots: Sequence[int] = DEFAULT_SHOTS,
                   seeds: Sequence[int] = DEFAULT_SEEDS) -> dict[str, Any]:
    """Few-shot NCM accuracy for every ``k`` in ``shots`` and seed in ``seeds``.

    Args:
        features_for: ``support indices (S,) -> (support features (S, D), query features
            (N, D))`` (a function so that maps fitted on the support, e.g. PCA, are refitted
            per support). It may raise :class:`FewShotSkip`.
        train_labels: ``(M,)`` classes of the training split (what the indices index).
        query_labels: ``(N,)`` classes of the queries.
        num_classes: ``C``.
        shots, seeds: the grid.

    Returns:
        ``{"shots": {"<k>": {"per_seed": {"<seed>": acc}, "mean": .., "std": ..}},
        "skipped": {"<k>": reason}}`` (a ``k`` is skipped as a whole when any seed is).
    """
    ytr = _labels(train_labels, num_classes)
    yq = _labels(query_labels, num_classes)
    out: dict[str, Any] = {"shots": {}, "skipped": {}}
    for k in shots:
        per_seed: dict[str, float] = {}
        try:
            for seed in seeds:
                idx = k_shot_indices(ytr, num_classes, k, seed)
                sup, qry = features_for(idx)
                per_seed[str(seed)] = few_shot_ncm_accuracy(sup, ytr[idx], qry, yq,
                                                            num_classes)
        except FewShotSkip as e:
            out["skipped"][str(k)] = str(e)
            continue
        accs = np.array(list(per_seed.values()), np.float64)
        out["shots"][str(k)] = {"per_seed": per_seed, "mean": float(accs.mean()),
                                "std": float(accs.std())}
    return out


__all__ = ["DEFAULT_SEEDS", "DEFAULT_SHOTS", "FewShotSkip", "class_permutations",
           "few_shot_ncm_accuracy", "few_shot_sweep", "k_shot_indices"]
