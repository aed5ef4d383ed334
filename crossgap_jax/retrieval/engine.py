"""Chunked retrieval evaluation from features: ``evaluate`` and ``evaluate_per_query``.

The (Q, G) score matrix is never materialised: queries are processed in chunks of rows, each
chunk computes its (B, G) cosine-similarity block, its (B, G) relevance block (from a
:class:`~crossgap_jax.retrieval.relevance.Relevance`, which a task builds or
:func:`~crossgap_jax.retrieval.relevance.as_relevance` makes of a boolean matrix, label
vectors or qrels) and the per-query metrics of
:mod:`crossgap_jax.retrieval.metrics`, then the block is dropped.

Backends: ``"numpy"`` (CPU: BLAS matmul plus NumPy's SIMD value sort, chunks spread over a small
thread pool since both release the GIL) and ``"jax"`` (one ``jit``-compiled function per chunk
shape; the last chunk is padded so the shape stays static). ``"auto"`` picks ``"jax"`` on
GPU/TPU and ``"numpy"`` on CPU, where XLA's sort is an order of magnitude slower than NumPy's.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from crossgap_jax.retrieval._common import (
    ArrayLike,
    auto_chunk_size,
    check_chunk_size,
    check_ks,
    check_metric_variant,
    check_ties,
    default_num_threads,
    features_jax,
    features_numpy,
    is_jax_array,
    progress_iter,
    resolve_backend,
    want_progress,
)
from crossgap_jax.retrieval.metrics import (
    _NUMPY_BLOCK_ELEMENTS,
    JAX_BLOCK_ELEMENTS,
    block_metrics_jax,
    block_metrics_numpy,
    summarize,
)
from crossgap_jax.retrieval.normalize import l2_normalize
from crossgap_jax.retrieval.relevance import LabelRelevance, Relevance, as_relevance


def _run_numpy(
    qn: np.ndarray,
    gn: np.ndarray,
    rel: Relevance,
    exclude_self: bool,
    recall_ks: tuple[int, ...],
    ties: str,
    chunk: int,
    num_threads: int,
    progress: bool,
    r_extra: np.ndarray,
    r_absent: np.ndarray,
) -> dict[str, np.ndarray]:
    num_q = qn.shape[0]
    keys = ["AP", "AP@R", "P@R", *(f"R@{k}" for k in recall_ks)]
    out = {k: np.zeros(num_q, np.float64) for k in keys}
    out["num_relevant"] = np.zeros(num_q, np.int64)
    gt = gn.T

    def task(start: int) -> int:
        stop = min(num_q, start + chunk)
        scores = np.matmul(qn[start:stop], gt)  # (B, G) float32, fresh: sorted in place below
        relevant = rel.block(start, stop)
        if exclude_self:
            idx = np.arange(stop - start)
            scores[idx, start + idx] = -np.inf
            relevant[idx, start + idx] = False
        res = block_metrics_numpy(scores, relevant, recall_ks, ties, r_extra[start:stop],
                                  r_absent[start:stop])
        for k, v in res.items():
            out[k][start:stop] = v
        return stop - start

    starts = list(range(0, num_q, chunk))
    if num_threads <= 1 or len(starts) == 1:
        for start in progress_iter(starts, len(starts), progress, "retrieval metrics"):
            task(start)
    else:
        with ThreadPoolExecutor(max_workers=min(num_threads, len(starts))) as pool:
            futures = [pool.submit(task, s) for s in starts]
            for fut in progress_iter(
                as_completed(futures), len(futures), progress, "retrieval metrics"
            ):
                fut.result()  # re-raise worker errors
    return out


def _jax_chunk_scores(qpad, gn, start, block, exclude_self):
    q = lax.dynamic_slice_in_dim(qpad, start, block, axis=0)
    scores = jnp.matmul(q, gn.T, precision=lax.Precision.HIGHEST)
    self_mask = None
    if exclude_self:
        rows = start + jnp.arange(block)
        self_mask = jnp.arange(gn.shape[0])[None, :] == rows[:, None]
        scores = jnp.where(self_mask, -jnp.inf, scores)
    return scores, self_mask


@functools.partial(
    jax.jit, static_argnames=("block", "exclude_self", "recall_ks", "pessimistic")
)
def _jax_block_labels(qpad, gn, start, qlab_pad, glab, extra_pad, absent_pad, *, block,
                      exclude_self, recall_ks, pessimistic):
    scores, self_mask = _jax_chunk_scores(qpad, gn, start, block, exclude_self)
    ql = lax.dynamic_slice_in_dim(qlab_pad, start, block)
    relevant = ql[:, None] == glab[None, :]
    if exclude_self:
        relevant = relevant & ~self_mask
    extra = lax.dynamic_slice_in_dim(extra_pad, start, block)
    absent = lax.dynamic_slice_in_dim(absent_pad, start, block)
    return block_metrics_jax(scores, relevant, recall_ks, pessimistic, extra, absent)


@functools.partial(
    jax.jit, static_argnames=("block", "exclude_self", "recall_ks", "pessimistic")
)
def _jax_block_mask(qpad, gn, start, relevant, extra_pad, absent_pad, *, block, exclude_self,
                    recall_ks, pessimistic):
    scores, self_mask = _jax_chunk_scores(qpad, gn, start, block, exclude_self)
    if exclude_self:
        relevant = relevant & ~self_mask
    extra = lax.dynamic_slice_in_dim(extra_pad, start, block)
    absent = lax.dynamic_slice_in_dim(absent_pad, start, block)
    return block_metrics_jax(scores, relevant, recall_ks, pessimistic, extra, absent)


def _run_jax(
    qn: jax.Array,
    gn: jax.Array,
    rel: Relevance,
    exclude_self: bool,
    recall_ks: tuple[int, ...],
    ties: str,
    chunk: int,
    progress: bool,
    r_extra: np.ndarray,
    r_absent: np.ndarray,
) -> dict[str, np.ndarray]:
    num_q = qn.shape[0]
    num_chunks = -(-num_q // chunk)
    qpad = jnp.pad(qn, ((0, num_chunks * chunk - num_q), (0, 0)))
    extra_pad = np.zeros(num_chunks * chunk, np.int32)  # traced: no recompile per variant
    extra_pad[:num_q] = r_extra
    extra_pad = jnp.asarray(extra_pad)
    absent_pad = np.zeros(num_chunks * chunk, np.int32)
    absent_pad[:num_q] = r_absent
    absent_pad = jnp.asarray(absent_pad)
    static = dict(block=chunk, exclude_self=exclude_self, recall_ks=recall_ks,
                  pessimistic=ties == "pessimistic")
    if isinstance(rel, LabelRelevance):
        qlab = np.full(num_chunks * chunk, -1, np.int32)  # -1 never equals a gallery code
        qlab[:num_q] = rel.query_codes
        qlab, glab = jnp.asarray(qlab), jnp.asarray(rel.gallery_codes)
    out: dict[str, list[np.ndarray]] = {}
    pending: list[tuple[int, dict]] = []

    def fetch(n: int, res: dict) -> None:
        for k, v in jax.device_get(res).items():
            out.setdefault(k, []).append(np.asarray(v)[:n])

    for c in progress_iter(range(num_chunks), num_chunks, progress, "retrieval metrics"):
        start = c * chunk
        stop = min(num_q, start + chunk)
        if isinstance(rel, LabelRelevance):
            res = _jax_block_labels(qpad, gn, start, qlab, glab, extra_pad, absent_pad,
                                    **static)
        else:
            blk = np.zeros((chunk, rel.num_gallery), bool)
            blk[: stop - start] = rel.block(start, stop)
            res = _jax_block_mask(qpad, gn, start, blk, extra_pad, absent_pad, **static)
        pending.append((stop - start, res))  # dispatched asynchronously
        if len(pending) > 2:  # keep at most two chunks in flight (bounded memory)
            fetch(*pending.pop(0))
    for n, res in pending:
        fetch(n, res)
    return {
        k: np.concatenate(v).astype(np.int64 if k == "num_relevant" else np.float64)
        for k, v in out.items()
    }


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> ArrayLike:
    """Cosine similarities of L2-normalised rows.

    Args:
        a: (N, D) features.
        b: (M, D) features.

    Returns:
        (N, M) float32 similarities; a JAX array if ``a`` or ``b`` is one, NumPy otherwise.
        Materialises the whole matrix: use :func:`evaluate` for large galleries.
    """
    if is_jax_array(a) or is_jax_array(b):
        an = l2_normalize(features_jax(a, "a"), "a")
        bn = l2_normalize(features_jax(b, "b"), "b")
        if an.shape[1] != bn.shape[1]:
            raise ValueError(f"feature dims differ: {an.shape[1]} vs {bn.shape[1]}")
        return jnp.matmul(an, bn.T, precision=lax.Precision.HIGHEST)
    an = l2_normalize(features_numpy(a, "a"), "a")
    bn = l2_normalize(features_numpy(b, "b"), "b")
    if an.shape[1] != bn.shape[1]:
        raise ValueError(f"feature dims differ: {an.shape[1]} vs {bn.shape[1]}")
    return an @ bn.T


def evaluate_per_query(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    relevant: Any,
    exclude_self: bool = False,
    *,
    query_ids: Sequence[Hashable] | None = None,
    gallery_ids: Sequence[Hashable] | None = None,
    recall_ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
    backend: str = "auto",
    num_threads: int | None = None,
    progress: bool | None = None,
    metric_variant: str = "standard",
    unretrievable: ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """Per-query retrieval metrics; see :func:`evaluate` for the arguments.

    Returns:
        dict of (Q,) NumPy arrays: ``"AP"``, ``"AP@R"``, ``"P@R"``, ``"R@{k}"`` (float64 in
        [0, 1]) and ``"num_relevant"`` (int64, after ``exclude_self``). Queries without a
        relevant item have 0 in every metric and ``num_relevant == 0``. With
        ``metric_variant="authors"`` and ``exclude_self``, ``"AP@R"`` is the authors' variant
        (cut-off R + 1 for a query that is relevant to itself, divisor R).
    """
    check_ties(ties)
    check_metric_variant(metric_variant)
    check_chunk_size(chunk_size)
    recall_ks = check_ks(recall_ks)
    backend = resolve_backend(backend)
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")

    if backend == "jax":
        qf = features_jax(query_features, "query_features")
        gf = features_jax(gallery_features, "gallery_features")
    else:
        qf = features_numpy(query_features, "query_features")
        gf = features_numpy(gallery_features, "gallery_features")
    num_q, num_g = qf.shape[0], gf.shape[0]
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"query features have dim {qf.shape[1]}, gallery features {gf.shape[1]}"
        )
    rel = as_relevance(relevant, num_q, num_g, query_ids=query_ids, gallery_ids=gallery_ids,
                       exclude_self=exclude_self, unretrievable=unretrievable)
    exclude_self = rel.exclude_self
    num_relevant = rel.num_relevant()
    r_absent = rel.unretrievable
    if not (num_relevant > 0).any():
        raise ValueError("no query has a relevant item in the gallery: the metrics are undefined")
    # The authors count R before removing the query itself: one more rank in the AP@R cut-off.
    r_extra = np.zeros(num_q, np.int64)
    if exclude_self and metric_variant == "authors":
        r_extra = rel.self_relevant().astype(np.int64)

    show = want_progress(progress, num_q, num_g)
    if backend == "jax":
        qn = l2_normalize(qf, "query_features")
        gn = l2_normalize(gf, "gallery_features")
        chunk = chunk_size or auto_chunk_size(num_q, num_g, JAX_BLOCK_ELEMENTS)
        out = _run_jax(qn, gn, rel, exclude_self, recall_ks, ties, min(chunk, num_q), show,
                       r_extra, r_absent)
    else:
        qn = l2_normalize(qf, "query_features")
        gn = l2_normalize(gf, "gallery_features")
        chunk = chunk_size or auto_chunk_size(num_q, num_g, _NUMPY_BLOCK_ELEMENTS)
        threads = num_threads or default_num_threads()
        out = _run_numpy(qn, gn, rel, exclude_self, recall_ks, ties, chunk, threads, show,
                         r_extra, r_absent)
    if not np.array_equal(out["num_relevant"], num_relevant):  # internal consistency check
        raise AssertionError("relevance counts disagree between the blocks and the source")
    return out


def evaluate(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    relevant: Any,
    exclude_self: bool = False,
    *,
    query_ids: Sequence[Hashable] | None = None,
    gallery_ids: Sequence[Hashable] | None = None,
    recall_ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
    backend: str = "auto",
    num_threads: int | None = None,
    progress: bool | None = None,
    metric_variant: str = "standard",
    unretrievable: ArrayLike | None = None,
) -> dict[str, float | int]:
    """Retrieval metrics of queries against a gallery, in percent.

    Both feature sets are L2-normalised here (so raw encoder outputs are fine) and scored by
    cosine similarity. Per query, AP is computed over the whole gallery ranking (torchmetrics
    ``retrieval_average_precision`` semantics), AP@R over the top R (R = number of relevant
    items), R-precision, and Recall@k (a relevant item in the top k); see
    :mod:`crossgap_jax.retrieval.metrics` for the exact definitions and the tie rule.

    Args:
        query_features: (Q, D) NumPy or JAX array.
        gallery_features: (G, D) NumPy or JAX array.
        relevant: one of

            * a :class:`crossgap_jax.retrieval.Relevance` (what ``RetrievalTask.relevant`` builds;
              it carries ``exclude_self`` and ``unretrievable``: leave those arguments out);
            * a (Q, G) bool (or 0/1 integer) matrix;
            * a ``(query_labels (Q,), gallery_labels (G,))`` tuple: same label = relevant
              (labels may be ints or strings; no Q x G matrix is built on the host);
            * qrels, a mapping query id -> relevant doc ids (an iterable, or a mapping
              doc id -> grade with grade > 0 relevant), with ``query_ids`` / ``gallery_ids``
              naming the rows (default: the row indices).
        exclude_self: queries and gallery are the same items (Q == G, same order): remove
            query i from its own gallery (CUB all/all, SOP test/test).
        query_ids: (Q,) ids of the query rows, for qrels only.
        gallery_ids: (G,) ids of the gallery rows, for qrels only.
        recall_ks: cut-offs k of the ``"R@k"`` entries.
        ties: ``"pessimistic"`` (default: among equal scores relevant items rank last) or
            ``"optimistic"``.
        chunk_size: query rows per block (default: about 16M scores per block on CPU, 32M on
            the JAX backend).
        backend: ``"auto"`` (JAX on GPU/TPU, NumPy on CPU), ``"numpy"`` or ``"jax"``.
        num_threads: worker threads of the NumPy backend (default: usable cores, at most 8).
        progress: tqdm bar over chunks; ``None`` shows one when Q * G >= 2**30.
        metric_variant: ``"standard"`` (default, the definitions above) or ``"authors"``
            (the Cross-the-Gap code: on ``exclude_self`` splits mAP@R counts R before the
            query is removed, i.e. sums R + 1 ranks and divides by R; queries without a
            relevant item count as 0 in every mean). See docs/fidelity.md.
        unretrievable: optional (Q,) non-negative ints: relevant items of each query that
            are not in the gallery (qrels pointing outside the corpus). They count in R
            (BEIR / pytrec_eval) and are never retrieved; ``None``: R counts only gallery
            items (the authors' tensor ground truth).

    Returns:
        ``{"mAP", "mAP@R", "P@R", "R@1", "R@5", "R@10", "num_queries", "num_evaluated",
        "num_skipped_no_relevant"}``: metrics are means in percent over the queries that have
        at least one relevant item; queries without one are left out and counted in
        ``num_skipped_no_relevant`` (never NaN).

    Raises:
        ValueError: bad shapes, NaN/inf or all-zero feature rows, label/id length mismatch,
            ``exclude_self`` with Q != G, or no query with a relevant item.
    """
    per_query = evaluate_per_query(
        query_features, gallery_features, relevant, exclude_self,
        query_ids=query_ids, gallery_ids=gallery_ids, recall_ks=recall_ks, ties=ties,
        chunk_size=chunk_size, backend=backend, num_threads=num_threads, progress=progress,
        metric_variant=metric_variant, unretrievable=unretrievable,
    )
    return summarize(per_query, metric_variant)
