"""The paper's comparisons on arrays, pure: baseline vs inverted retrieval of the same
queries, and two zero-shot classifications of the same images, each with the paired
bootstrap interval of the difference.

Every comparison the package reports is computed here, by
:func:`crossgap_jax.pipeline.measure.measure` on a run's features (``reproduce``,
``classify``, and through :func:`crossgap_jax.pipeline.measure_claims` the demo and the
controlled experiment).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from crossgap_jax import retrieval


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap interval over the queries (retrieval) or images (zero-shot)
    (:func:`crossgap_jax.retrieval.paired_bootstrap_ci`).

    Attributes:
        samples: resamples (>= 1).
        seed: NumPy ``default_rng`` seed.
        level: coverage in (0, 1).
    """

    samples: int = 2000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) \
                or self.samples < 1:
            raise ValueError(f"Bootstrap.samples must be an int >= 1, got {self.samples!r}")
        if not 0 < float(self.level) < 1:
            raise ValueError(f"Bootstrap.level must be in (0, 1), got {self.level!r}")


DEFAULT_BOOTSTRAP = Bootstrap()
COMPARISONS = ("retrieval", "zero_shot")


def _interval(base: np.ndarray, inverted: np.ndarray, bootstrap: Bootstrap | None
              ) -> list[float] | None:
    if bootstrap is None:
        return None
    ci = retrieval.paired_bootstrap_ci(base, inverted, samples=bootstrap.samples,
                                       seed=bootstrap.seed, level=bootstrap.level)
    return [float(c) for c in ci]


def compare_retrieval(query_base: np.ndarray, query_inverted: np.ndarray, gallery: np.ndarray,
                      relevance: Any, *, gallery_inverted: np.ndarray | None = None,
                      bootstrap: Bootstrap | None = None, metric: str = "mAP",
                      **evaluate_kwargs: Any) -> dict:
    """Baseline vs inverted retrieval of the same queries: the computation of every
    retrieval comparison (:func:`measure`, the controlled experiment).

    Args:
        query_base, query_inverted: ``(Q, D)`` features of the same queries, in the same
            order (e.g. images and their OTI features).
        gallery: ``(G, D)`` gallery features; ``gallery_inverted``: the inverted queries'
            gallery when it differs (default: ``gallery``).
        relevance: as :func:`crossgap_jax.retrieval.evaluate` (a task's
            :class:`~crossgap_jax.retrieval.Relevance`, ``(query labels, gallery labels)`` or
            qrels); ``evaluate_kwargs``: its other options (``exclude_self``,
            ``query_ids``/``gallery_ids``, ``metric_variant``, ``backend``, ``progress``).
        bootstrap: paired bootstrap over the queries' average precision; None: no interval.
        metric: the key of the headline number (``difference``).

    Returns:
        ``{"baseline": metrics, "inverted": metrics, "difference": inverted - baseline of
        ``metric`` (points), "ci95": [low, high] or None}`` (metrics in percent, as
        :func:`crossgap_jax.retrieval.evaluate`).
    """
    g_inv = gallery if gallery_inverted is None else gallery_inverted
    base = retrieval.evaluate(query_base, gallery, relevance, **evaluate_kwargs)
    inv = retrieval.evaluate(query_inverted, g_inv, relevance, **evaluate_kwargs)
    ci = None
    if bootstrap is not None:
        per_q = {k: v for k, v in evaluate_kwargs.items() if k != "metric_variant"}
        ap_b = retrieval.evaluate_per_query(query_base, gallery, relevance, **per_q)["AP"]
        ap_i = retrieval.evaluate_per_query(query_inverted, g_inv, relevance, **per_q)["AP"]
        ci = _interval(ap_b, ap_i, bootstrap)
    return {"baseline": base, "inverted": inv,
            "difference": float(inv[metric]) - float(base[metric]), "ci95": ci}


def compare_zero_shot(features_base: np.ndarray, classifier_base: np.ndarray,
                      features_inverted: np.ndarray, classifier_inverted: np.ndarray,
                      labels: np.ndarray, *, bootstrap: Bootstrap | None = None) -> dict:
    """Two zero-shot classifications of the same images (e.g. image features vs the text
    classifier, and their OTI features vs it): the computation of every zero-shot
    comparison (:func:`measure`, the controlled experiment).

    Args:
        features_base, features_inverted: ``(N, D)`` features of the same images.
        classifier_base, classifier_inverted: ``(C, D)`` class rows
            (:func:`crossgap_jax.retrieval.build_classifier`).
        labels: ``(N,)`` int classes.
        bootstrap: paired bootstrap over the images' top-1 correctness; None: no interval.

    Returns:
        ``{"baseline": accuracy dict, "inverted": accuracy dict, "difference": top-1
        points, "ci95": [low, high] or None, "top1_correct": {"baseline": (N,) bool,
        "inverted": (N,) bool}}`` (accuracies in percent,
        :func:`crossgap_jax.retrieval.zero_shot_accuracy`).
    """
    base = retrieval.zero_shot_accuracy(features_base, classifier_base, labels)
    inv = retrieval.zero_shot_accuracy(features_inverted, classifier_inverted, labels)
    ok_b = retrieval.class_ranks(features_base, classifier_base, labels) == 1
    ok_i = retrieval.class_ranks(features_inverted, classifier_inverted, labels) == 1
    return {"baseline": base, "inverted": inv,
            "difference": float(inv["top1"]) - float(base["top1"]),
            "ci95": _interval(ok_b, ok_i, bootstrap),
            "top1_correct": {"baseline": ok_b, "inverted": ok_i}}
