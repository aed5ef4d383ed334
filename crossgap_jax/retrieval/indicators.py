"""Misalignment indicators: does a backbone's similarity separate same-class pairs?

The indicators Herzog & Wang (CVPR 2026; PAPER.md, "Related work") compare between CLIP-like
and image-only backbones, computed here for any features (pure NumPy, float64):

* **Same- vs different-class similarity distributions** of cosine similarities, for three
  pair types: image-image (distinct images ``i != j``, each unordered pair once),
  text-image (class prompt ``c`` vs image ``j``; same class iff ``c == y_j``) and
  inverted-image (e.g. the OTI feature of image ``i`` vs image ``j``, ``i != j``; same
  class iff ``y_i == y_j``).
* **Overlap coefficient** of two such distributions (:func:`overlap_coefficient`): the
  histogram intersection ``sum_b min(p_b, q_b)`` of the two normalised histograms
  (fractions) on fixed bins (default 200 equal bins over ``[-1, 1]``, values clipped into
  the range). 1 = indistinguishable, 0 = disjoint (at this bin width).
* **AUROC** (:func:`auroc`) of the similarity as a same-class detector:
  ``P(s_same > s_diff) + 0.5 P(s_same = s_diff)`` (the Mann-Whitney statistic; equals
  ``sklearn.metrics.roc_auc_score`` with same-class pairs as positives).
* **Modality gap**: :func:`crossgap_jax.retrieval.gap.modality_gap` (Liang et al. 2022).
* **Closer-to-another-class fraction** (:func:`closer_to_other_class_fraction`): the
  fraction of images ``i`` whose most similar *other* image of a different class is
  strictly more similar than their most similar other image of their own class (ties:
  not closer). Images that are alone in their class have no same-class neighbour; they are
  left out and counted.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from crossgap_jax.fileio import atomic_write_bytes
from crossgap_jax.retrieval._common import features_numpy
from crossgap_jax.retrieval.gap import modality_gap
from crossgap_jax.retrieval.normalize import l2_normalize

DEFAULT_BINS = 200
DEFAULT_RANGE = (-1.0, 1.0)

#: What each field of :func:`misalignment_indicators` means, in one line (tables print it).
INDICATOR_FIELDS: dict[str, str] = {
    "overlap": "histogram intersection of the same- and different-class cosine similarity "
               "distributions (equal bins over [-1, 1]): 1 = indistinguishable, 0 = disjoint",
    "auroc": "similarity as a same-class detector: P(s_same > s_diff) + 0.5 P(s_same = "
             "s_diff); 0.5 = chance, 1 = every same-class pair scores higher",
    "same": "number of same-class pairs, and the mean +- std of their cosine similarity",
    "different": "number of different-class pairs, and the mean +- std of their cosine "
                 "similarity",
    "modality_gap": "distance between the means of the two sides' L2-normalised features "
                    "(Liang et al. 2022; 0 = no gap, at most 2)",
    "closer_to_other_class": "fraction of images whose most similar image of another class "
                             "is strictly more similar than their most similar other image of "
                             "their own class (images alone in their class left out)",
}


def _norm(x: Any, name: str) -> np.ndarray:
    return l2_normalize(features_numpy(x, name), name).astype(np.float64)


def _labels(labels: Any, n: int, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {y.dtype}")
    return y


def overlap_coefficient(a: Any, b: Any, *, bins: int = DEFAULT_BINS,
                        value_range: tuple[float, float] = DEFAULT_RANGE) -> float:
    """Histogram intersection of two samples: ``sum_b min(p_b, q_b)`` with ``p``, ``q`` the
    fractions of ``a`` and ``b`` in each of ``bins`` equal bins over ``value_range`` (values
    outside are clipped into the end bins; the last bin is closed).

    Args:
        a, b: 1-D samples (e.g. same-class and different-class similarities).
        bins: number of bins (>= 1).
        value_range: ``(lo, hi)``, ``hi > lo``.

    Returns:
        A float in ``[0, 1]``.

    Raises:
        ValueError: an empty sample, non-finite values, ``bins < 1`` or a bad range.
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    if bins < 1 or not hi > lo:
        raise ValueError(f"need bins >= 1 and an increasing value_range, got {bins}, "
                         f"{value_range}")
    hists = []
    for name, x in (("a", a), ("b", b)):
        v = np.asarray(x, np.float64).ravel()
        if v.size == 0 or not np.all(np.isfinite(v)):
            raise ValueError(f"overlap_coefficient: sample {name} is empty or not finite")
        h, _ = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
        hists.append(h / v.size)
    return float(np.minimum(*hists).sum())


def auroc(positives: Any, negatives: Any) -> float:
    """``P(p > n) + 0.5 P(p = n)`` over all (positive, negative) pairs (Mann-Whitney U /
    (|P| |N|)), via average ranks; ``O((P + N) log(P + N))``.

    Raises:
        ValueError: an empty or non-finite sample.
    """
    p = np.asarray(positives, np.float64).ravel()
    n = np.asarray(negatives, np.float64).ravel()
    if p.size == 0 or n.size == 0:
        raise ValueError("auroc needs at least one positive and one negative")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(n))):
        raise ValueError("auroc: scores must be finite")
    allv = np.concatenate([p, n])
    order = np.argsort(allv, kind="mergesort")
    sorted_v = allv[order]
    # average 1-based ranks of tied groups
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], sorted_v.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(allv.size, np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[: p.size].sum() - p.size * (p.size + 1) / 2.0
    return float(u / (p.size * n.size))


def split_pairs(sim: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(same-class values, different-class values)`` of a similarity array and a boolean
    same-class mask of the same shape."""
    return sim[same], sim[~same]


def image_image_pairs(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of all unordered pairs of distinct images ``i < j``, split into
    same-class and different-class. Memory ``O(N^2)``."""
    x = _norm(image, "image")
    y = _labels(labels, len(x), "labels")
    iu = np.triu_indices(len(x), k=1)
    sim = (x @ x.T)[iu]
    return split_pairs(sim, y[iu[0]] == y[iu[1]])


def cross_pairs(side: Any, side_labels: Any, image: Any, labels: Any, *,
                exclude_diagonal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of every (side row, image) pair, split into same-class and
    different-class; ``exclude_diagonal`` drops ``(i, i)`` (side row ``i`` derived from
    image ``i``, e.g. its OTI feature)."""
    s = _norm(side, "side features")
    x = _norm(image, "image")
    ys = _labels(side_labels, len(s), "side labels")
    y = _labels(labels, len(x), "labels")
    if s.shape[1] != x.shape[1]:
        raise ValueError(f"feature dims differ: {s.shape[1]} vs {x.shape[1]}")
    sim = s @ x.T
    same = ys[:, None] == y[None, :]
    if exclude_diagonal:
        if len(s) != len(x):
            raise ValueError("exclude_diagonal needs one side row per image")
        keep = ~np.eye(len(x), dtype=bool)
        return sim[keep & same], sim[keep & ~same]
    return split_pairs(sim, same)


def closer_to_other_class_fraction(image: Any, labels: Any) -> dict[str, float | int]:
    """Fraction of images whose nearest different-class image is strictly more
    cosine-similar than their nearest same-class image (itself excluded).

    Returns:
        ``{"fraction": f, "num_counted": n, "num_singletons": s}`` (``s`` images alone in
        their class are left out; ``fraction`` is NaN when nothing is counted).

    Raises:
        ValueError: bad shapes, or no class with two images and no second class.
    """
    x = _norm(image, "image")
    y = _labels(labels, len(x), "labels")
    if len(np.unique(y)) < 2:
        raise ValueError("closer_to_other_class_fraction needs at least two classes")
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    same = y[:, None] == y[None, :]
    best_same = np.where(same, sim, -np.inf).max(axis=1)
    best_diff = np.where(~same, sim, -np.inf).max(axis=1)
    counted = np.isfinite(best_same)
    n = int(counted.sum())
    frac = float((best_diff[counted] > best_same[counted]).mean()) if n else float("nan")
    return {"fraction": frac, "num_counted": n, "num_singletons": int(len(x) - n)}


def distribution_summary(same: np.ndarray, diff: np.ndarray, *, bins: int = DEFAULT_BINS,
                         value_range: tuple[float, float] = DEFAULT_RANGE) -> dict[str, Any]:
    """Overlap, AUROC, counts, means and standard deviations of a same/different split, and
    both histograms (counts on the same bins) for plotting."""
    lo, hi = value_range
    edges = np.linspace(lo, hi, bins + 1)
    hist = {name: np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))[0].tolist()
            for name, v in (("same", same), ("different", diff))}
    return {
        "overlap": overlap_coefficient(same, diff, bins=bins, value_range=value_range),
        "auroc": auroc(same, diff),
        "same": {"count": int(same.size), "mean": float(same.mean()), "std": float(same.std())},
        "different": {"count": int(diff.size), "mean": float(diff.mean()),
                      "std": float(diff.std())},
        "histogram": {"bin_edges": edges.tolist(), **hist},
    }


def misalignment_indicators(image: Any, labels: Any, *, text: Any | None = None,
                            text_labels: Any | None = None, inverted: Any | None = None,
                            bins: int = DEFAULT_BINS,
                            value_range: tuple[float, float] = DEFAULT_RANGE) -> dict[str, Any]:
    """All indicators for one dataset and backbone.

    Args:
        image: ``(N, D)`` image features; ``labels`` ``(N,)`` their classes.
        text: ``(C', D)`` text features (e.g. one class prompt per class) with
            ``text_labels`` ``(C',)``; None for an image-only backbone.
        inverted: ``(N, D)`` features derived from image ``i`` (OTI), row ``i`` for image
            ``i``; None when not computed.
        bins, value_range: histogram bins of the overlap coefficient and the figure.

    Returns:
        ``{"image-image": summary, "text-image": summary, "inverted-image": summary,
        "modality_gap": {"text-image": g, "inverted-image": g}, "closer_to_other_class":
        {...}, "num_images": N}`` (entries for absent inputs left out); each summary is
        :func:`distribution_summary`.
    """
    kw = {"bins": bins, "value_range": value_range}
    out: dict[str, Any] = {"num_images": int(np.shape(image)[0]), "bins": bins,
                           "value_range": list(value_range)}
    out["image-image"] = distribution_summary(*image_image_pairs(image, labels), **kw)
    gaps: dict[str, float] = {}
    if text is not None:
        if text_labels is None:
            raise ValueError("text features need text_labels (the class of each text row)")
        out["text-image"] = distribution_summary(*cross_pairs(text, text_labels, image,
                                                              labels), **kw)
        gaps["text-image"] = modality_gap(text, image)
    if inverted is not None:
        out["inverted-image"] = distribution_summary(
            *cross_pairs(inverted, labels, image, labels, exclude_diagonal=True), **kw)
        gaps["inverted-image"] = modality_gap(inverted, image)
    if gaps:
        out["modality_gap"] = gaps
    out["closer_to_other_class"] = closer_to_other_class_fraction(image, labels)
    return out


def plot_indicators(result: dict[str, Any], path: str, title: str = "") -> str:
    """One figure: a panel per pair type (``image-image``, ``text-image``,
    ``inverted-image`` or ``oti-image``, those present) with the same- and different-class
    histograms (densities), overlap and AUROC in each panel title. Writes ``path`` (PNG) atomically
    and returns it. Uses the Agg backend (headless safe)."""

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    kinds = [k for k in ("image-image", "text-image", "inverted-image", "oti-image")
             if result.get(k)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        r = result[kind]
        edges = np.asarray(r["histogram"]["bin_edges"])
        width = edges[1] - edges[0]
        for name, color in (("same", "tab:green"), ("different", "tab:red")):
            h = np.asarray(r["histogram"][name], np.float64)
            ax.stairs(h / max(h.sum(), 1) / width, edges, fill=True, alpha=0.45, color=color,
                      label=f"{name} class")
        ax.set_title(f"{kind}\noverlap {r['overlap']:.3f}, AUROC {r['auroc']:.3f}",
                     fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    frac = result.get("closer_to_other_class", {}).get("fraction")
    if title or frac is not None:
        fig.suptitle(f"{title}  closer-to-other-class: {frac:.3f}" if frac is not None
                     else title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


__all__ = ["INDICATOR_FIELDS", "auroc", "closer_to_other_class_fraction", "cross_pairs",
           "distribution_summary",
           "image_image_pairs", "misalignment_indicators", "overlap_coefficient",
           "plot_indicators", "split_pairs"]
