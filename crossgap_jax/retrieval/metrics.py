"""Rank-based retrieval metrics on score matrices: the fused per-row kernels.

Everything here works on a block of score rows ``scores (B, G)`` and a boolean relevance block
``relevant (B, G)``. Each row is sorted once and every metric (AP, AP@R, R-precision, Recall@k)
is read off the 1-based ranks of the relevant items, so the metrics share one sort.

Definitions, for one query with ``R`` relevant items whose ranks are ``r_1 < ... < r_R``:

* ``AP = (1/R) * sum_m m / r_m`` (torchmetrics ``retrieval_average_precision``: the mean over
  relevant items of the precision at their rank, over the whole gallery);
* ``AP@R = (1/R) * sum_{m: r_m <= R} m / r_m`` (MAP@R of Musgrave et al. 2020);
* ``P@R = #{m: r_m <= R} / R`` (R-precision, torchmetrics ``retrieval_r_precision``);
* ``R@k = 1 if r_1 <= k else 0`` (metric-learning Recall@k: a relevant item in the top k).

The authors' variant of AP@R (``r_cutoff``, see :data:`~crossgap_jax.retrieval._common.
METRIC_VARIANTS`): on all-vs-all splits the Cross-the-Gap code counts R before removing the
query itself, so it sums the precision of the relevant items in the top ``R + 1`` ranks of the
self-free ranking and still divides by R: ``AP@R' = (1/R) * sum_{m: r_m <= R + 1} m / r_m``.

Ties (equal scores) are ranked by a documented rule, not by whatever order a sort returns:

* ``"pessimistic"`` (default): among items with equal scores the non-relevant ones come first,
  so each relevant item gets the worst rank its score allows. This is a lower bound of the
  metric over all tie orders and does not depend on the gallery order.
* ``"optimistic"``: the relevant items come first (the upper bound).

Without ties both rules give the exact ranking, equal to torchmetrics and scikit-learn.

NumPy kernel (CPU): sort each row's scores once (a plain value sort, no key-value/argsort), sort
the (few) relevant scores of each row, then place every relevant item by binary search in the
sorted row: ``rank_m = m + #{non-relevant items with score >= s_m}`` (pessimistic) or ``> s_m``
(optimistic). JAX kernel (GPU/TPU): one two-key ``lax.sort`` of ``(-score, tie key)`` per row,
then cumulative sums, all static shapes under ``jit``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from crossgap_jax.retrieval._common import (
    ArrayLike,
    auto_chunk_size,
    check_ks,
    check_metric_variant,
    check_ties,
    resolve_backend,
)

# Score blocks of about this many entries (float32: 64 MiB) per chunk on the NumPy path.
_NUMPY_BLOCK_ELEMENTS = 1 << 24
# And on the JAX path (device memory is larger; the sort needs a few copies).
JAX_BLOCK_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------------
# NumPy kernel
# --------------------------------------------------------------------------------------------


def _ordered_uint32(v: np.ndarray) -> np.ndarray:
    """Map finite float32 values to uint32 keys with the same order (``-0.0`` must be gone)."""
    u = v.view(np.uint32)
    flip = np.where(u >> np.uint32(31), np.uint32(0xFFFFFFFF), np.uint32(0x80000000))
    return u ^ flip


def _from_ordered_uint32(k: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_ordered_uint32`."""
    k = k.astype(np.uint32)
    flip = np.where(k >> np.uint32(31), np.uint32(0x80000000), np.uint32(0xFFFFFFFF))
    return (k ^ flip).view(np.float32)


def relevant_ranks_numpy(
    scores: np.ndarray, relevant: np.ndarray, ties: str = "pessimistic"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1-based ranks of the relevant items of each row, from one value sort per row.

    Args:
        scores: (B, G) float32 scores, finite or ``-inf`` (an excluded item). **Sorted in place.**
        relevant: (B, G) bool relevance; excluded items must be False.
        ties: ``"pessimistic"`` or ``"optimistic"`` (see the module docstring).

    Returns:
        ``(rows, m, rank, num_relevant)``: for every relevant item (NR in total, grouped by row)
        its row (NR,), its 1-based index ``m`` among the row's relevant items in ranked order
        (NR,), its 1-based rank in the row (NR,), and the relevant count per row (B,).
    """
    num_rows, num_items = scores.shape
    rows, cols = np.nonzero(relevant)
    num_relevant = np.bincount(rows, minlength=num_rows).astype(np.int64)
    if rows.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, num_relevant
    # + 0.0 turns -0.0 into +0.0 so that the uint32 keys treat them as one value.
    values = scores[rows, cols] + np.float32(0.0)
    # Sort the relevant scores of all rows at once: key = row in the high 32 bits, score below.
    keys = (rows.astype(np.uint64) << np.uint64(32)) | _ordered_uint32(values).astype(np.uint64)
    keys.sort()
    rows = (keys >> np.uint64(32)).astype(np.int64)
    values = _from_ordered_uint32(keys & np.uint64(0xFFFFFFFF))  # ascending within each row
    starts = np.zeros(num_rows + 1, np.int64)
    np.cumsum(num_relevant, out=starts[1:])
    n_row = num_relevant[rows]
    index = np.arange(rows.size, dtype=np.int64)
    # m: 1-based position among the row's relevant items in descending score order.
    m = n_row - (index - starts[rows])
    # Tie blocks among the relevant scores (same row and same value).
    new_block = np.empty(rows.size, bool)
    new_block[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new_block[1:])

    scores.sort(axis=1)  # ascending; one value sort per row, shared by all metrics
    side = "left" if ties == "pessimistic" else "right"
    below = np.empty(rows.size, np.int64)  # items with score < v (left) or <= v (right)
    for b in np.flatnonzero(num_relevant):
        lo, hi = starts[b], starts[b + 1]
        below[lo:hi] = np.searchsorted(scores[b], values[lo:hi], side=side)
    if ties == "pessimistic":
        # relevant items with score >= v: those from the first of v's tie block to the row end
        first = np.maximum.accumulate(np.where(new_block, index, 0))
        relevant_at_or_above = n_row - (first - starts[rows])
        nonrelevant_above = (num_items - below) - relevant_at_or_above
    else:
        # relevant items with score > v: those after the last of v's tie block
        end_block = np.empty(rows.size, bool)
        end_block[-1] = True
        end_block[:-1] = new_block[1:]
        last = np.minimum.accumulate(np.where(end_block, index, rows.size)[::-1])[::-1]
        relevant_strictly_above = starts[rows + 1] - 1 - last
        nonrelevant_above = (num_items - below) - relevant_strictly_above
    rank = m + nonrelevant_above
    return rows, m, rank, num_relevant


def metrics_from_ranks(
    rows: np.ndarray,
    m: np.ndarray,
    rank: np.ndarray,
    num_relevant: np.ndarray,
    recall_ks: Sequence[int] = (1, 5, 10),
    r_extra: np.ndarray | None = None,
    r_absent: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-row metrics from the output of :func:`relevant_ranks_numpy`.

    Args:
        r_extra: optional (B,) non-negative ints added to R for the AP@R cut-off only (the
            divisor stays R): 1 for an all-vs-all query under the authors' metric variant
            (R counted before the query itself was removed), else 0. ``None``: all 0.
        r_absent: optional (B,) non-negative ints: relevant items that are not in the
            gallery (qrels pointing outside the corpus, BEIR / pytrec_eval style). They
            count in R (divisor and cut-offs) and are never retrieved. ``None``: all 0.

    Returns:
        dict of (B,) arrays: ``"AP"``, ``"AP@R"``, ``"P@R"`` (float64 in [0, 1]), ``"R@k"`` for
        each k (float64, 0 or 1) and ``"num_relevant"`` (int64). Rows without a relevant item
        get 0 for every metric (``num_relevant`` tells them apart).
    """
    num_rows = num_relevant.shape[0]
    if r_absent is not None:
        num_relevant = num_relevant + np.asarray(r_absent, np.int64)
    denom = np.maximum(num_relevant, 1).astype(np.float64)
    precision = m / rank.astype(np.float64)
    within_r = rank <= num_relevant[rows]
    cutoff = num_relevant if r_extra is None else num_relevant + np.asarray(r_extra, np.int64)
    within_cut = rank <= cutoff[rows]
    out = {
        "AP": np.bincount(rows, weights=precision, minlength=num_rows) / denom,
        "AP@R": np.bincount(rows, weights=precision * within_cut, minlength=num_rows) / denom,
        "P@R": np.bincount(rows, weights=within_r.astype(np.float64), minlength=num_rows) / denom,
    }
    best = np.full(num_rows, np.iinfo(np.int64).max, np.int64)
    top = m == 1
    best[rows[top]] = rank[top]
    for k in recall_ks:
        out[f"R@{k}"] = (best <= k).astype(np.float64)
    out["num_relevant"] = num_relevant.astype(np.int64)
    return out


def block_metrics_numpy(
    scores: np.ndarray,
    relevant: np.ndarray,
    recall_ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    r_extra: np.ndarray | None = None,
    r_absent: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """All per-row metrics of one (B, G) block (``scores`` is sorted in place); ``r_extra``
    and ``r_absent`` as in :func:`metrics_from_ranks`."""
    rows, m, rank, num_relevant = relevant_ranks_numpy(scores, relevant, ties)
    return metrics_from_ranks(rows, m, rank, num_relevant, recall_ks, r_extra, r_absent)


# --------------------------------------------------------------------------------------------
# JAX kernel
# --------------------------------------------------------------------------------------------


def block_metrics_jax(
    scores: jax.Array, relevant: jax.Array, recall_ks: tuple[int, ...], pessimistic: bool,
    r_extra: jax.Array | None = None,
    r_absent: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Traceable per-row metrics of one (B, G) block; call under ``jit``.

    Args:
        scores: (B, G) float32; excluded items are ``-inf`` with ``relevant`` False.
        relevant: (B, G) bool.
        recall_ks: static cut-offs.
        pessimistic: static tie rule (True: relevant items last among equal scores).
        r_extra: optional traced (B,) ints added to R for the AP@R cut-off only (see
            :func:`metrics_from_ranks`); ``None``: 0.
        r_absent: optional traced (B,) ints: relevant items not in the gallery, counted in
            R (see :func:`metrics_from_ranks`); ``None``: 0.

    Returns:
        dict of (B,) arrays as :func:`metrics_from_ranks` (float32 metrics, int32 counts).
    """
    num_items = scores.shape[1]
    # Secondary key: pessimistic puts relevant (1) after non-relevant (0); optimistic reverses.
    tie_key = relevant.astype(jnp.int8) if pessimistic else (~relevant).astype(jnp.int8)
    # lax.sort compares -0.0 and +0.0 as equal, as the NumPy kernel does (tested).
    _, tie_sorted = lax.sort((-scores, tie_key), dimension=1, num_keys=2)
    rel_sorted = tie_sorted == (1 if pessimistic else 0)
    cum = jnp.cumsum(rel_sorted, axis=1, dtype=jnp.int32)
    num_relevant = cum[:, -1]
    if r_absent is not None:
        num_relevant = num_relevant + r_absent.astype(jnp.int32)
    pos = jnp.arange(1, num_items + 1, dtype=jnp.int32)[None, :]
    precision = jnp.where(rel_sorted, cum.astype(jnp.float32) / pos.astype(jnp.float32), 0.0)
    denom = jnp.maximum(num_relevant, 1).astype(jnp.float32)
    cutoff = num_relevant if r_extra is None else num_relevant + r_extra.astype(jnp.int32)
    within_r = pos <= cutoff[:, None]
    last = jnp.clip(num_relevant - 1, 0, num_items - 1)
    hits_at_r = jnp.take_along_axis(cum, last[:, None], axis=1)[:, 0]
    out = {
        "AP": precision.sum(axis=1) / denom,
        "AP@R": jnp.where(within_r, precision, 0.0).sum(axis=1) / denom,
        "P@R": hits_at_r.astype(jnp.float32) / denom,
    }
    for k in recall_ks:
        out[f"R@{k}"] = (cum[:, min(k, num_items) - 1] > 0).astype(jnp.float32)
    out["num_relevant"] = num_relevant
    return out


@functools.partial(jax.jit, static_argnames=("recall_ks", "pessimistic"))
def _jax_scores_block(scores, relevant, recall_ks, pessimistic):
    return block_metrics_jax(scores, relevant, recall_ks, pessimistic)


# --------------------------------------------------------------------------------------------
# Public functions on score matrices
# --------------------------------------------------------------------------------------------


def _check_scores(scores: ArrayLike, relevant: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    r = np.asarray(relevant)
    if s.ndim == 1:
        s = s[None, :]
        if r.ndim == 1:
            r = r[None, :]
    if s.ndim != 2:
        raise ValueError(f"scores must be (G,) or (Q, G), got shape {np.shape(scores)}")
    if r.shape != s.shape:
        raise ValueError(f"relevant has shape {r.shape}, scores {s.shape}: they must match")
    if s.shape[1] == 0:
        raise ValueError("scores has an empty gallery axis")
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    if r.dtype != bool:
        if not np.issubdtype(r.dtype, np.integer):
            raise ValueError(f"relevant must be bool or integer (0/1), got dtype {r.dtype}")
        r = r > 0
    s = np.asarray(s, dtype=np.float32)
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ValueError("scores contain NaN or +inf")
    return s, r


def per_query_metrics(
    scores: ArrayLike,
    relevant: ArrayLike,
    *,
    recall_ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    backend: str = "numpy",
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """AP, AP@R, R-precision and Recall@k of every query from a precomputed score matrix.

    Args:
        scores: (Q, G) (or (G,)) similarity scores, higher is better; finite, or ``-inf`` for
            an item to leave out of a query's ranking (it must then be non-relevant). Compared
            as float32.
        relevant: bool (or 0/1 integer) array of the shape of ``scores``.
        recall_ks: cut-offs for ``"R@k"``.
        ties: tie rule, ``"pessimistic"`` (default) or ``"optimistic"``.
        backend: ``"numpy"`` (default), ``"jax"`` or ``"auto"``.
        chunk_size: rows per block (default: about 16M scores per block).

    Returns:
        dict of (Q,) NumPy arrays: ``"AP"``, ``"AP@R"``, ``"P@R"``, ``"R@{k}"`` in [0, 1] and
        ``"num_relevant"``. Queries without a relevant item get 0 everywhere.
    """
    check_ties(ties)
    recall_ks = check_ks(recall_ks)
    s, r = _check_scores(scores, relevant)
    if (r & np.isneginf(s)).any():
        raise ValueError("an item with score -inf (excluded) is marked relevant")
    backend = resolve_backend(backend)
    q, g = s.shape
    target = JAX_BLOCK_ELEMENTS if backend == "jax" else _NUMPY_BLOCK_ELEMENTS
    rows = chunk_size or auto_chunk_size(q, g, target)
    parts = []
    for start in range(0, q, rows):
        stop = min(q, start + rows)
        if backend == "numpy":
            parts.append(block_metrics_numpy(s[start:stop].copy(), r[start:stop], recall_ks, ties))
        else:
            sb = np.full((rows, g), -np.inf, np.float32)  # static block shape: pad the last
            rb = np.zeros((rows, g), bool)
            sb[: stop - start], rb[: stop - start] = s[start:stop], r[start:stop]
            res = _jax_scores_block(sb, rb, recall_ks, ties == "pessimistic")
            parts.append({k: np.asarray(v)[: stop - start] for k, v in res.items()})
    return _concat_parts(parts)


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {}
    for key in parts[0]:
        arr = np.concatenate([p[key] for p in parts])
        out[key] = arr.astype(np.int64) if key == "num_relevant" else arr.astype(np.float64)
    return out


def average_precision(
    scores: ArrayLike, relevant: ArrayLike, *, ties: str = "pessimistic"
) -> np.ndarray:
    """Per-query average precision over the whole gallery.

    Equal to torchmetrics' ``retrieval_average_precision`` applied to each row (and to
    scikit-learn's ``average_precision_score``) when a row has no tied scores; with ties the
    documented ``ties`` rule decides (default: relevant items ranked after equal-scored
    non-relevant ones).

    Args:
        scores: (Q, G) or (G,) scores, higher is better.
        relevant: bool (or 0/1) array of the same shape.
        ties: ``"pessimistic"`` (default) or ``"optimistic"``.

    Returns:
        (Q,) float64 AP in [0, 1] ((1,) for 1-D input). A query with no relevant item gets 0
        (the torchmetrics convention); :func:`evaluate` instead leaves such queries out of the
        mean and counts them.
    """
    return per_query_metrics(scores, relevant, recall_ks=(1,), ties=ties)["AP"]


def summarize(
    per_query: dict[str, np.ndarray], metric_variant: str = "standard"
) -> dict[str, float | int]:
    """Mean of per-query metrics, in percent.

    Args:
        per_query: output of :func:`per_query_metrics` or ``evaluate_per_query``.
        metric_variant: ``"standard"`` (default): the mean over the queries that have a
            relevant item (the others are counted in ``num_skipped_no_relevant``).
            ``"authors"``: the mean over all queries, those without a relevant item counting
            as 0 (the Cross-the-Gap code; ``num_skipped_no_relevant`` is then 0 and
            ``num_no_relevant`` says how many zeros went in).

    Returns:
        ``{"mAP", "mAP@R", "P@R", "R@k"..., "num_queries", "num_evaluated",
        "num_skipped_no_relevant", "num_no_relevant"}``; metric values are percentages.

    Raises:
        ValueError: no query has a relevant item (the mean is undefined), or an unknown
            ``metric_variant``.
    """
    check_metric_variant(metric_variant)
    num_relevant = per_query["num_relevant"]
    has_relevant = num_relevant > 0
    if not has_relevant.any():
        raise ValueError("no query has a relevant item in the gallery: the metrics are undefined")
    valid = has_relevant if metric_variant == "standard" else np.ones_like(has_relevant)
    n_valid = int(valid.sum())
    names = {"AP": "mAP", "AP@R": "mAP@R"}
    out: dict[str, float | int] = {}
    for key, arr in per_query.items():
        if key == "num_relevant":
            continue
        out[names.get(key, key)] = float(np.mean(arr[valid], dtype=np.float64) * 100.0)
    out["num_queries"] = int(num_relevant.shape[0])
    out["num_evaluated"] = n_valid
    out["num_skipped_no_relevant"] = int(num_relevant.shape[0] - n_valid)
    out["num_no_relevant"] = int((~has_relevant).sum())
    return out
