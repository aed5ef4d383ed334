"""Revisited Oxford / Paris (ROxford5k, RParis6k) evaluation: the revisitop protocol.

Ground truth comes as the standard ``gnd_<dataset>.pkl`` dict::

    {"imlist": [G names], "qimlist": [Q names],
     "gnd": [Q dicts {"easy": idx, "hard": idx, "junk": idx, "bbx": box}]}

with 0-based indices into ``imlist``. Three protocols, each with positives and junk:

==========  =============  ===============
protocol    positives      junk (ignored)
==========  =============  ===============
Easy        easy           junk + hard
Medium      easy + hard    junk
Hard        hard           junk + easy
==========  =============  ===============

Junk images are removed from a query's ranking (they neither help nor hurt). Per query, with
the positives at 0-based positions ``r_0 < r_1 < ...`` of the junk-free ranking and ``n`` the
number of positives, the revisitop AP is the trapezoidal (interpolated) area under the
precision-recall curve::

    AP = sum_j (p0_j + p1_j) / (2 n),
    p0_j = 1 if r_j == 0 else j / r_j,   p1_j = (j + 1) / (r_j + 1)

and the precision at k uses ``k' = min(k, 1-based position of the last positive)``:
``mP@k = #{positives in the top k'} / k'`` (so a query whose positives all lie above k is not
penalised for having fewer than k of them). Queries without positives under a protocol are
left out of that protocol's mean and counted. Gallery columns past ``len(imlist)`` (e.g. the
R1M distractors) are non-relevant items.

Ties between scores follow the package-wide rule (default pessimistic: positives after
equal-scored non-positives); the reference code orders ties by ``np.argsort``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crossgap_jax.retrieval._common import (
    ArrayLike,
    auto_chunk_size,
    check_chunk_size,
    check_ks,
    check_ties,
    features_numpy,
)
from crossgap_jax.retrieval.metrics import _NUMPY_BLOCK_ELEMENTS, relevant_ranks_numpy
from crossgap_jax.retrieval.normalize import l2_normalize

#: protocol -> (keys whose union are the positives, keys whose union is junk)
REVISITOP_PROTOCOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def _index_array(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x if x is not None else [], dtype=np.int64).reshape(-1)
    if (a < 0).any():
        raise ValueError(f"{what} has negative indices")
    return a


def load_revisitop_gnd(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a revisitop ``gnd_<dataset>.pkl`` (e.g. ``gnd_roxford5k.pkl``).

    Only load files you trust: this unpickles.

    Args:
        path: the pickle file.

    Returns:
        ``{"imlist": list[str], "qimlist": list[str], "gnd": list of Q dicts}`` where each gnd
        entry has int64 index arrays ``"easy"``, ``"hard"``, ``"junk"`` (and ``"bbx"`` when the
        file has it). Other keys of the file are kept unchanged.

    Raises:
        ValueError: the file does not have the revisitop structure.
    """
    with open(path, "rb") as f:
        cfg = pickle.load(f)  # noqa: S301 - the revisitop ground truth is a pickle
    if not isinstance(cfg, Mapping) or not {"imlist", "qimlist", "gnd"} <= set(cfg):
        raise ValueError(
            f"{os.fspath(path)}: expected a dict with 'imlist', 'qimlist' and 'gnd', got "
            f"{type(cfg).__name__} with keys {sorted(cfg) if isinstance(cfg, Mapping) else '-'}"
        )
    out = dict(cfg)
    out["imlist"] = list(cfg["imlist"])
    out["qimlist"] = list(cfg["qimlist"])
    out["gnd"] = revisitop_gnd_list(cfg)
    if len(out["gnd"]) != len(out["qimlist"]):
        raise ValueError(
            f"{os.fspath(path)}: {len(out['gnd'])} gnd entries for {len(out['qimlist'])} queries"
        )
    n = len(out["imlist"])
    for i, g in enumerate(out["gnd"]):
        for key in ("easy", "hard", "junk"):
            if g[key].size and g[key].max() >= n:
                raise ValueError(f"gnd[{i}]['{key}'] indexes past imlist ({n} images)")
    return out


def revisitop_gnd_list(gnd: Any) -> list[dict[str, np.ndarray]]:
    """The per-query ground-truth list, from the whole pickle dict or from its ``gnd`` list.

    The original Cross-the-Gap code indexes the loaded pickle dict itself as if it were the
    list (``gnd[i]['easy']`` on ``{'imlist', 'qimlist', 'gnd'}``); here the dict is unwrapped.
    """
    if isinstance(gnd, Mapping):
        if "gnd" not in gnd:
            raise ValueError("gnd dict has no 'gnd' key (expected the revisitop pickle structure)")
        gnd = gnd["gnd"]
    if isinstance(gnd, (str, bytes)) or not isinstance(gnd, Sequence):
        raise ValueError(f"gnd must be the revisitop dict or its list, got {type(gnd).__name__}")
    out = []
    for i, g in enumerate(gnd):
        if not isinstance(g, Mapping) or not {"easy", "hard", "junk"} <= set(g):
            raise ValueError(f"gnd[{i}] must be a dict with 'easy', 'hard' and 'junk' index lists")
        entry = {k: _index_array(g[k], f"gnd[{i}]['{k}']") for k in ("easy", "hard", "junk")}
        if "bbx" in g:
            entry["bbx"] = np.asarray(g["bbx"])
        out.append(entry)
    return out


def _protocol_masks(
    gnd: list[dict[str, np.ndarray]], start: int, stop: int, num_gallery: int, protocol: str
) -> tuple[np.ndarray, np.ndarray]:
    """(B, G) positive mask and junk mask (positives win over junk) for queries start:stop."""
    pos_keys, junk_keys = REVISITOP_PROTOCOLS[protocol]
    positive = np.zeros((stop - start, num_gallery), bool)
    junk = np.zeros((stop - start, num_gallery), bool)
    for b, g in enumerate(gnd[start:stop]):
        for k in pos_keys:
            positive[b, g[k]] = True
        for k in junk_keys:
            junk[b, g[k]] = True
    junk &= ~positive
    return positive, junk


def _revisitop_block(
    scores: np.ndarray, positive: np.ndarray, junk: np.ndarray, ks: tuple[int, ...], ties: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query revisitop AP (B,), precision at ks (B, len(ks)) and #positives (B,)."""
    scores = np.where(junk, -np.inf, scores).astype(np.float32)  # junk leaves the ranking
    rows, m, rank, num_pos = relevant_ranks_numpy(scores, positive, ties)
    num_rows = num_pos.shape[0]
    j = (m - 1).astype(np.float64)  # 0-based index among positives
    r = (rank - 1).astype(np.float64)  # 0-based position in the junk-free ranking
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1.0))
    p1 = (j + 1.0) / (r + 1.0)
    denom = np.maximum(num_pos, 1).astype(np.float64)
    ap = np.bincount(rows, weights=(p0 + p1) / 2.0, minlength=num_rows) / denom
    last = np.zeros(num_rows, np.int64)  # 1-based position of the last positive
    np.maximum.at(last, rows, rank)
    prec = np.zeros((num_rows, len(ks)))
    for t, k in enumerate(ks):
        kq = np.minimum(last, k)
        hits = np.bincount(rows, weights=(rank <= kq[rows]).astype(np.float64),
                           minlength=num_rows)
        prec[:, t] = hits / np.maximum(kq, 1)
    return ap, prec, num_pos


def _revisitop_from_blocks(blocks, gnd, num_queries, num_gallery, ks, ties, return_per_query):
    per_query = {p: {"AP": np.zeros(num_queries), "P": np.zeros((num_queries, len(ks))),
                     "num_positives": np.zeros(num_queries, np.int64)}
                 for p in REVISITOP_PROTOCOLS}
    for start, stop, scores in blocks:
        for protocol in REVISITOP_PROTOCOLS:
            positive, junk = _protocol_masks(gnd, start, stop, num_gallery, protocol)
            ap, prec, npos = _revisitop_block(scores, positive, junk, ks, ties)
            per_query[protocol]["AP"][start:stop] = ap
            per_query[protocol]["P"][start:stop] = prec
            per_query[protocol]["num_positives"][start:stop] = npos
    out: dict[str, float | int] = {}
    for protocol, res in per_query.items():
        valid = res["num_positives"] > 0
        n = int(valid.sum())
        out[f"mAP_{protocol}"] = float(res["AP"][valid].mean() * 100) if n else float("nan")
        for t, k in enumerate(ks):
            out[f"mP@{k}_{protocol}"] = float(res["P"][valid, t].mean() * 100) if n else float(
                "nan")
        out[f"num_skipped_{protocol}"] = num_queries - n
    out["num_queries"] = num_queries
    if return_per_query:
        return out, per_query
    return out


def _check_gnd_against(gnd_list, num_queries, num_gallery, gnd):
    if len(gnd_list) != num_queries:
        raise ValueError(f"{len(gnd_list)} gnd entries for {num_queries} queries")
    if isinstance(gnd, Mapping) and "imlist" in gnd and num_gallery < len(gnd["imlist"]):
        raise ValueError(
            f"gallery has {num_gallery} items but imlist lists {len(gnd['imlist'])} images"
        )
    for i, g in enumerate(gnd_list):
        for key in ("easy", "hard", "junk"):
            if g[key].size and g[key].max() >= num_gallery:
                raise ValueError(f"gnd[{i}]['{key}'] indexes past the gallery ({num_gallery})")
    if all(g["easy"].size + g["hard"].size == 0 for g in gnd_list):
        raise ValueError("no query has a positive (easy or hard) image: metrics undefined")


def revisitop_metrics(
    scores: ArrayLike,
    gnd: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    return_per_query: bool = False,
):
    """Revisitop mAP and mP@k (Easy / Medium / Hard) from a precomputed (Q, G) score matrix.

    Args:
        scores: (Q, G) similarities of the Q queries to the gallery; columns ``0..len(imlist)``
            are the ``imlist`` images, extra columns (distractors) are never positive.
        gnd: the revisitop dict (``load_revisitop_gnd``) or its ``"gnd"`` list.
        ks: precision cut-offs.
        ties: ``"pessimistic"`` (default) or ``"optimistic"``.
        return_per_query: also return ``{protocol: {"AP": (Q,), "P": (Q, len(ks)),
            "num_positives": (Q,)}}``.

    Returns:
        ``{"mAP_easy", "mAP_medium", "mAP_hard", "mP@{k}_{protocol}"..., "num_skipped_{protocol}",
        "num_queries"}`` with metrics in percent (the means over queries with positives).
    """
    check_ties(ties)
    ks = check_ks(ks, "ks")
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"scores must be (Q, G), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    gnd_list = revisitop_gnd_list(gnd)
    _check_gnd_against(gnd_list, s.shape[0], s.shape[1], gnd)
    blocks = [(0, s.shape[0], s)]
    return _revisitop_from_blocks(blocks, gnd_list, s.shape[0], s.shape[1], ks, ties,
                                  return_per_query)


def revisitop_evaluate(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    gnd: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
    return_per_query: bool = False,
):
    """Revisitop evaluation from features (L2-normalised here, cosine similarity).

    Args:
        query_features: (Q, D) features of the ``qimlist`` queries (cropped per ``bbx`` or
            not: that is decided where the features are computed).
        gallery_features: (G, D) features of ``imlist`` (plus optional distractors after it).
        gnd: the revisitop dict (``load_revisitop_gnd``) or its ``"gnd"`` list.
        ks: precision cut-offs.
        ties: ``"pessimistic"`` (default) or ``"optimistic"``.
        chunk_size: queries per score block (default: about 16M scores per block).
        return_per_query: also return the per-query arrays (see :func:`revisitop_metrics`).

    Returns:
        As :func:`revisitop_metrics`.
    """
    check_ties(ties)
    check_chunk_size(chunk_size)
    ks = check_ks(ks, "ks")
    qn = l2_normalize(features_numpy(query_features, "query_features"), "query_features")
    gn = l2_normalize(
        features_numpy(gallery_features, "gallery_features"), "gallery_features"
    )
    if qn.shape[1] != gn.shape[1]:
        raise ValueError(f"query features have dim {qn.shape[1]}, gallery {gn.shape[1]}")
    num_q, num_g = qn.shape[0], gn.shape[0]
    gnd_list = revisitop_gnd_list(gnd)
    _check_gnd_against(gnd_list, num_q, num_g, gnd)
    chunk = chunk_size or auto_chunk_size(num_q, num_g, _NUMPY_BLOCK_ELEMENTS)
    blocks = ((s, min(num_q, s + chunk), qn[s : s + chunk] @ gn.T) for s in range(0, num_q, chunk))
    return _revisitop_from_blocks(blocks, gnd_list, num_q, num_g, ks, ties, return_per_query)
