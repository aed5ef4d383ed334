"""Herzog & Wang's few-shot classifiers: class prototypes and the ICLR24 linear discriminant
(GDA), optionally blended with the zero-shot text classifier.

Source: ``cvpr26-suppl/few_shot_classification/main_few_shots.py`` of
Vision-Kek/Is-CLIP-Really-Misaligned (``prototype_classify``, ``lda_iclr24_classify``,
``calc_acc_from_sims``; ``utils.py``: ``cls_acc``). ``x``: L2-normalised image features
(their pre-extraction), optionally span-projected (then *not* re-normalised); ``C`` classes
``0 .. C-1``, each with at least one support feature.

- prototype: ``p_c = normalise(mean of class c's support)``; score ``x . p_c``.
- gda: ``mu_c`` class means; ``Z`` = support minus its class mean; ``S = cov(Z)`` (centred,
  ``N - 1``, as ``torch.cov``); ``A = D * pinv((N - 1) S + tr(S) I)`` (``D`` the feature
  dimension, ``N`` the support size); uniform priors; ``W = mu A`` (``(C, D)``), ``b_c = log(1/C)
  - mu_c A mu_c^T / 2``; score ``x W^T + b`` (their ``einsum('nd,dc->cn')`` then ``x @ W``;
  ``A`` is symmetric, so the two read the same).
- with text (``--use-text``): ``0.5 * x . t_c + 0.5 * few-shot score``, ``t`` the ``(C, D)``
  zero-shot classifier rows. Their gda path multiplies by ``t`` untransposed (a shape error
  whenever ``C != D``); the transpose, as in their prototype path, is computed here.
- accuracy: top-1 of the scores (their ``/ 0.01`` does not change the order), equal scores
  resolved to the lowest class index (``torch.topk`` as their runs show: 1-shot gda is the
  share of class 0), in percent as their float32 ``cls_acc``.

1-shot gda (every class a single support image, or ``k`` copies of it): ``Z = 0``, so
``A = 0`` and every class gets the same score ``log(1/C)``; without text the prediction is
class 0 for every image. :func:`hw_scores` reports it (``degenerate``), it does not patch it.

The maths runs in float64 NumPy (theirs: float32 torch on the GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossgap_jax.retrieval._common import features_numpy

#: ``prototype`` and ``gda`` (their ``--classifier`` choices).
HW_CLASSIFIERS = ("prototype", "gda")
#: Their blend weight of the text classifier (no validation search).
HW_TEXT_WEIGHT = 0.5

DEGENERATE_GDA = ("gda: no within-class spread in the support (one distinct image per "
                  "class), so the shared covariance is 0, its pseudo-inverse is 0 and every "
                  "class gets the same score log(1/C); the lowest class index wins (as in "
                  "Herzog & Wang's runs: chance accuracy). Not patched.")


def _support(support: Any, labels: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x = features_numpy(support, "support features", np.float64)
    y = np.asarray(labels)
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"support labels must be ({x.shape[0]},) integers, got {y.shape} "
                         f"{y.dtype}")
    missing = sorted(set(range(num_classes)) - set(y.tolist()))
    if missing or (y.size and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"the support must hold every class 0..{num_classes - 1} and no "
                         f"other; missing {missing[:5]}")
    return x, y


def class_prototypes(support: Any, labels: Any, num_classes: int) -> np.ndarray:
    """``(C, D)`` L2-normalised class means of ``support`` (``(N, D)``, labels ``(N,)``).

    Raises:
        ValueError: a class without support, bad shapes, or a zero class mean.
    """
    x, y = _support(support, labels, num_classes)
    means = np.stack([x[y == c].mean(0) for c in range(num_classes)])
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a class mean of the support is the zero vector")
    return means / norms


def gda_fit(support: Any, labels: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Their ICLR24 linear discriminant: ``(W (C, D), b (C,), degenerate)``.

    ``degenerate``: the class-centred support is all zeros (see the module docstring).

    Raises:
        ValueError: a class without support, bad shapes, or fewer than 2 support features.
    """
    x, y = _support(support, labels, num_classes)
    n, d = x.shape
    if n < 2:
        raise ValueError("gda needs at least 2 support features for a covariance")
    mu = np.stack([x[y == c].mean(0) for c in range(num_classes)])
    z = np.concatenate([x[y == c] - mu[c] for c in range(num_classes)])
    cov = np.cov(z, rowvar=False, ddof=1)
    a = d * np.linalg.pinv((n - 1) * cov + np.trace(cov) * np.eye(d))
    w = mu @ a
    b = np.log(np.full(num_classes, 1.0 / num_classes)) - 0.5 * np.einsum(
        "cd,de,ce->c", mu, a, mu)
    return w, b, bool(not np.any(z))


def hw_scores(classifier: str, support: Any, labels: Any, test: Any, num_classes: int,
              text: Any | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores ``(N, C)`` of ``test`` (``(N, D)``) under Herzog & Wang's ``classifier``.

    Args:
        classifier: ``"prototype"`` or ``"gda"``.
        support, labels: ``(S, D)`` support features, ``(S,)`` classes in ``0..C-1``.
        test: ``(N, D)`` features to classify.
        num_classes: ``C``.
        text: ``(C, D)`` zero-shot classifier rows to blend with weight
            :data:`HW_TEXT_WEIGHT` (their ``--use_text``), or None.

    Returns:
        ``(scores, info)``; ``info["degenerate"]``: None or why the scores tie (1-shot gda
        without text).

    Raises:
        ValueError: unknown classifier, bad shapes, a class without support.
    """
    if classifier not in HW_CLASSIFIERS:
        raise ValueError(f"classifier must be one of {HW_CLASSIFIERS}, got {classifier!r}")
    x = features_numpy(test, "test features", np.float64)
    info: dict[str, Any] = {"degenerate": None}
    if classifier == "prototype":
        p = class_prototypes(support, labels, num_classes)
        _same_dim(x, p, "support")
        few = x @ p.T
    else:
        w, b, degenerate = gda_fit(support, labels, num_classes)
        _same_dim(x, w, "support")
        few = x @ w.T + b
        if degenerate and text is None:
            info["degenerate"] = DEGENERATE_GDA
    if text is None:
        return few, info
    t = features_numpy(text, "text classifier", np.float64)
    if t.shape[0] != num_classes:
        raise ValueError(f"the text classifier has {t.shape[0]} rows for {num_classes} "
                         "classes")
    _same_dim(x, t, "text classifier")
    return (1 - HW_TEXT_WEIGHT) * few + HW_TEXT_WEIGHT * (x @ t.T), info


def _same_dim(x: np.ndarray, w: np.ndarray, what: str) -> None:
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"test features have dimension {x.shape[1]}, the {what} "
                         f"{w.shape[1]}")


def top1_accuracy(scores: Any, labels: Any) -> float:
    """Top-1 accuracy in percent as their ``cls_acc``: the first maximal class per row (the
    lowest index on ties), ``100 * correct / N`` in float32.

    Raises:
        ValueError: shapes disagree or labels are not integers.
    """
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 2 or y.shape != (s.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"scores (N, C) and integer labels (N,) expected, got {s.shape}, "
                         f"{y.shape} {y.dtype}")
    correct = np.float32(np.sum(np.argmax(s, axis=1) == y))
    return float(np.float32(100) * correct / np.float32(s.shape[0]))


__all__ = ["DEGENERATE_GDA", "HW_CLASSIFIERS", "HW_TEXT_WEIGHT", "class_prototypes", "gda_fit",
           "hw_scores", "top1_accuracy"]
