"""Few-shot support sets (Dassl's sampler, as Herzog & Wang draw them) and k-shot
nearest-class-mean (NCM) classification over several seeds.

Sampling (Dassl's ``DatasetBase.generate_fewshot_dataset`` with ``repeat=True``, the copy in
Herzog & Wang's ``cvpr26-suppl/few_shot_classification/datasets/utils.py``, driven by their
``main_few_shots.py``; facts in docs/baselines.md):

- For each seed, one Python ``random.Random(seed)`` (their ``random.seed(seed)``), then the
  shot counts in the order given, each drawing a fresh support from the *training split only*
  (their logs print one "Creating a k-shot dataset" per shot: the val split is not drawn).
  Nothing else consumes that generator between the draws. The support of a ``k`` therefore
  depends on the shots drawn before it in the same seed (supports are not nested).
- One draw: the classes in the order of their first appearance in the training split (a
  ``defaultdict`` filled in split order), each class's images in split order; per class
  ``rng.sample(items, k)`` when it has at least ``k`` images, else ``rng.choices(items,
  k=k)`` (with replacement). The chosen images are listed class by class, each class's in
  the order the generator returned them (:func:`draw_support`, :func:`support_sets`).

NCM (``classify --variants fewshot``): prototypes = class means of the support's features
(un-normalised, the convention of :mod:`crossgap_jax.retrieval.ncm`); cosine; the most similar
class wins; ties are counted as errors (:func:`ncm_accuracy`); top-1 in percent per seed, the
mean and standard deviation (``ddof=0``) per ``k``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from crossgap_jax.retrieval.ncm import class_means, ncm_accuracy

DEFAULT_SHOTS = (1, 2, 4, 8, 16)
#: Herzog & Wang's (and the ICLR24 GDA baseline's) seeds.
DEFAULT_SEEDS = (1, 2, 3)


class FewShotSkip(ValueError):
    """A (feature type, k) combination that cannot be computed on this data (e.g. a class
    without training images, or a PCA with more directions than the support determines);
    reported as skipped, with this message, instead of a number."""


def _labels(labels: Any, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {y.shape}, dtype "
                         f"{y.dtype}")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return y


def draw_support(labels: Any, k: int, rng: random.Random, repeat: bool = True) -> np.ndarray:
    """One Dassl few-shot draw of ``k`` images per class (see the module docstring).

    Args:
        labels: ``(N,)`` integer classes of the training split, in split-file order.
        k: shots per class (>= 1).
        rng: the seeded Python generator; advanced by the draw.
        repeat: a class with fewer than ``k`` images: ``rng.choices`` (Herzog & Wang's and
            Dassl's default ``True``), else all its images once.

    Returns:
        int64 indices into ``labels``, class by class (classes in order of first appearance).

    Raises:
        ValueError: bad labels or ``k < 1``.
    """
    if int(k) < 1:
        raise ValueError(f"shots per class must be >= 1, got {k}")
    y = _labels(labels)
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(y.tolist()):
        by_class.setdefault(c, []).append(i)
    out: list[int] = []
    for items in by_class.values():
        if len(items) >= k:
            out += rng.sample(items, int(k))
        elif repeat:
            out += rng.choices(items, k=int(k))
        else:
            out += items
    return np.asarray(out, np.int64)


def support_sets(labels: Any, shots: Sequence[int], seed: int, repeat: bool = True
                 ) -> dict[int, np.ndarray]:
    """The supports of one seed: ``random.Random(seed)``, then :func:`draw_support` for each
    ``k`` of ``shots`` in turn (Herzog & Wang's loop).

    Returns:
        ``{k: (S_k,) int64 indices}`` in the order of ``shots`` (a repeated ``k`` keeps its
        last draw).
    """
    rng = random.Random(int(seed))
    return {int(k): draw_support(labels, k, rng, repeat) for k in shots}


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
    """Few-shot NCM accuracy for every ``k`` in ``shots`` and seed in ``seeds``, the
    supports drawn by :func:`support_sets` (per seed, the shots in the order given).

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
    empty = sorted(set(range(num_classes)) - set(ytr.tolist()))
    draws = {s: support_sets(ytr, shots, s) for s in seeds}
    for k in shots:
        per_seed: dict[str, float] = {}
        try:
            if empty:
                raise FewShotSkip(f"{len(empty)} of {num_classes} classes have no training "
                                  f"images (first: {empty[:5]})")
            for seed in seeds:
                idx = draws[seed][int(k)]
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


__all__ = ["DEFAULT_SEEDS", "DEFAULT_SHOTS", "FewShotSkip", "draw_support",
           "few_shot_ncm_accuracy", "few_shot_sweep", "support_sets"]
