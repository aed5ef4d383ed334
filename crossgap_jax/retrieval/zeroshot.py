"""Zero-shot classification from features: classifier building and top-k accuracy.

The functions take features only (the encoders are wired elsewhere), so the paper's three
settings are the same call with different argument roles:

================================  ==========================  ==================================
setting                           ``features``                ``classifier`` built from
================================  ==========================  ==================================
standard (inter-modal)            image features              text features of the class prompts
OTI variant (intra-modal, text)   OTI features of the images  text features of the class prompts
OVI variant (intra-modal, image)  image features              OVI features of the class prompts
================================  ==========================  ==================================

Scores are cosine similarities (features and classifier rows are L2-normalised here). A sample
is correct at k when the 1-based rank of its true class is <= k; ties follow the package rule
(default pessimistic: classes with a score equal to the true class's rank before it).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from crossgap_jax.retrieval._common import (
    ArrayLike,
    check_chunk_size,
    check_ks,
    check_ties,
    features_numpy,
    is_jax_array,
)
from crossgap_jax.retrieval.normalize import l2_normalize


def build_classifier(class_embeddings: ArrayLike | Sequence[ArrayLike]) -> ArrayLike:
    """Zero-shot classifier weights from class-prompt embeddings.

    With several prompts (templates) per class the embeddings are L2-normalised, averaged over
    the prompts and renormalised (CLIP's prompt ensembling).

    Args:
        class_embeddings: (C, D) one embedding per class, (C, T, D) T prompts per class, or a
            sequence of C arrays of shape (T_c, D) or (D,) (a varying number of prompts).

    Returns:
        (C, D) float32 unit-norm rows; a JAX array for JAX input, NumPy otherwise.

    Raises:
        ValueError: wrong rank, empty input, zero or non-finite embeddings.
    """
    if is_jax_array(class_embeddings):
        e = class_embeddings.astype(jnp.float32)
        if e.ndim not in (2, 3) or e.size == 0:
            raise ValueError(f"class_embeddings must be (C, D) or (C, T, D), got {e.shape}")
        if not bool(jnp.isfinite(e).all()):
            raise ValueError("class_embeddings contain NaN or infinite values")
        e = l2_normalize(e, name="class_embeddings")
        if e.ndim == 3:
            e = l2_normalize(e.mean(axis=1), name="class_embeddings (prompt means)")
        return e
    if isinstance(class_embeddings, np.ndarray):
        if class_embeddings.ndim == 2:
            per_class = [row[None, :] for row in class_embeddings]
        elif class_embeddings.ndim == 3:
            per_class = list(class_embeddings)
        else:
            raise ValueError(
                f"class_embeddings must be (C, D) or (C, T, D), got {class_embeddings.shape}"
            )
    else:
        per_class = [np.asarray(c) for c in class_embeddings]
    if not per_class:
        raise ValueError("class_embeddings is empty")
    rows = []
    dim = None
    for c, emb in enumerate(per_class):
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None, :]
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"class {c}: expected (T, D) or (D,) embeddings, got {emb.shape}")
        if dim is None:
            dim = emb.shape[1]
        elif emb.shape[1] != dim:
            raise ValueError(f"class {c} has dim {emb.shape[1]}, class 0 has {dim}")
        if not np.isfinite(emb).all():
            raise ValueError(f"class {c}: embeddings contain NaN or infinite values")
        mean = l2_normalize(emb, name=f"class {c} embeddings").mean(axis=0)
        norm = np.linalg.norm(mean)
        if norm == 0:
            raise ValueError(f"class {c}: normalised prompt embeddings cancel out")
        rows.append(mean / norm)
    return np.stack(rows).astype(np.float32)


def class_ranks(
    features: ArrayLike,
    classifier: ArrayLike,
    labels: ArrayLike,
    *,
    ties: str = "pessimistic",
    chunk_size: int | None = None,
) -> np.ndarray:
    """1-based rank of each sample's true class among the C classes.

    Args:
        features: (N, D) sample features (L2-normalised here).
        classifier: (C, D) class weights, e.g. from :func:`build_classifier` (rows normalised
            here too).
        labels: (N,) integer true classes in [0, C).
        ties: ``"pessimistic"``: rank = 1 + #{other classes with score >= true score};
            ``"optimistic"``: rank = 1 + #{classes with score > true score}.
        chunk_size: samples per block (default 4096).

    Returns:
        (N,) int64 ranks in [1, C].
    """
    check_ties(ties)
    check_chunk_size(chunk_size)
    x = l2_normalize(features_numpy(features, "features"), "features")
    w = l2_normalize(features_numpy(classifier, "classifier"), "classifier")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"features have dim {x.shape[1]}, classifier {w.shape[1]}")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels has shape {y.shape}, expected ({x.shape[0]},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= w.shape[0]):
        raise ValueError(f"labels must lie in [0, {w.shape[0]}), got [{y.min()}, {y.max()}]")
    chunk = chunk_size or 4096
    ranks = np.empty(x.shape[0], np.int64)
    for s in range(0, x.shape[0], chunk):
        scores = x[s : s + chunk] @ w.T  # (B, C)
        idx = np.arange(scores.shape[0])
        true = scores[idx, y[s : s + chunk]][:, None]
        if ties == "pessimistic":
            ranks[s : s + chunk] = (scores >= true).sum(axis=1)  # the true class counts itself
        else:
            ranks[s : s + chunk] = (scores > true).sum(axis=1) + 1
    return ranks


def zero_shot_accuracy(
    features: ArrayLike,
    classifier: ArrayLike,
    labels: ArrayLike,
    *,
    ks: Sequence[int] = (1, 5),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
) -> dict[str, float | int]:
    """Top-k zero-shot accuracy in percent.

    Args:
        features: (N, D) query-side features: image features (standard), or OTI features of the
            images (intra-modal variant).
        classifier: (C, D) from :func:`build_classifier` over text features of the class
            prompts (standard, OTI variant) or over OVI features of the prompts (OVI variant).
        labels: (N,) integer classes.
        ks: cut-offs; keys ``"top{k}"``. A k above C counts every sample correct.
        ties: ``"pessimistic"`` (default) or ``"optimistic"``.
        chunk_size: samples per block.

    Returns:
        ``{"top1": ..., "top5": ..., "num_samples": N}``.
    """
    ks = check_ks(ks, "ks")
    ranks = class_ranks(features, classifier, labels, ties=ties, chunk_size=chunk_size)
    if ranks.size == 0:
        raise ValueError("no samples")
    out: dict[str, float | int] = {f"top{k}": float((ranks <= k).mean() * 100.0) for k in ks}
    out["num_samples"] = int(ranks.size)
    return out


def zero_shot_predict(
    features: ArrayLike, classifier: ArrayLike, k: int = 1
) -> np.ndarray:
    """Top-k predicted classes, best first (equal scores: lower class index first).

    Args:
        features: (N, D) features.
        classifier: (C, D) class weights.
        k: number of predictions per sample (at most C).

    Returns:
        (N, k) int64 class indices.
    """
    x = l2_normalize(features_numpy(features, "features"), "features")
    w = l2_normalize(features_numpy(classifier, "classifier"), "classifier")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"features have dim {x.shape[1]}, classifier {w.shape[1]}")
    if not 1 <= k <= w.shape[0]:
        raise ValueError(f"k must be in [1, {w.shape[0]}], got {k}")
    scores = x @ w.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int64)


__all__ = ["build_classifier", "class_ranks", "zero_shot_accuracy", "zero_shot_predict"]
