"""Relevance sources of the chunked retrieval engine: each yields ``(B, G)`` boolean blocks.

The engine (:mod:`crossgap_jax.retrieval.engine`) never holds the ``(Q, G)`` relevance
matrix: it asks one of these for the block of the rows it scores. Relevance comes from a
dense boolean matrix, from label vectors (``query_label == gallery_label``), or from qrels
(a sparse ``{query_id: {doc_id: grade}}`` mapping, stored as CSR by :func:`qrels_to_csr`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Relevance sources: each yields (B, G) boolean blocks on demand
# --------------------------------------------------------------------------------------------


class _Relevance:
    """Relevance of (query, gallery item) pairs, materialised one block of queries at a time."""

    num_queries: int
    num_gallery: int

    def block(self, start: int, stop: int) -> np.ndarray:
        """Fresh, writable (stop - start, G) bool block."""
        raise NotImplementedError

    def counts(self) -> np.ndarray:
        """(Q,) number of relevant gallery items per query (self not excluded)."""
        raise NotImplementedError

    def self_relevant(self) -> np.ndarray:
        """(Q,) whether query i is relevant to gallery item i (needs Q <= G)."""
        raise NotImplementedError


class _MaskRelevance(_Relevance):
    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.num_queries, self.num_gallery = mask.shape

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.mask[start:stop].copy()

    def counts(self) -> np.ndarray:
        return self.mask.sum(axis=1, dtype=np.int64)

    def self_relevant(self) -> np.ndarray:
        idx = np.arange(self.num_queries)
        return self.mask[idx, idx]


class _LabelRelevance(_Relevance):
    """Same label = relevant; labels are mapped to integer codes once."""

    def __init__(self, query_labels: Any, gallery_labels: Any, num_queries: int, num_gallery: int):
        ql = np.asarray(query_labels)
        gl = np.asarray(gallery_labels)
        if ql.ndim != 1 or gl.ndim != 1:
            raise ValueError(
                f"label vectors must be 1-D, got query {ql.shape} and gallery {gl.shape}"
            )
        if ql.shape[0] != num_queries:
            raise ValueError(f"{ql.shape[0]} query labels for {num_queries} query features")
        if gl.shape[0] != num_gallery:
            raise ValueError(f"{gl.shape[0]} gallery labels for {num_gallery} gallery features")
        try:
            _, codes = np.unique(np.concatenate([ql, gl]), return_inverse=True)
        except TypeError as e:  # unorderable mixture of label types
            raise ValueError(f"labels cannot be compared: {e}") from e
        codes = codes.reshape(-1).astype(np.int32)
        self.query_codes = codes[:num_queries]
        self.gallery_codes = codes[num_queries:]
        self.num_queries, self.num_gallery = num_queries, num_gallery

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.query_codes[start:stop, None] == self.gallery_codes[None, :]

    def counts(self) -> np.ndarray:
        per_code = np.bincount(self.gallery_codes, minlength=int(self.query_codes.max()) + 1)
        return per_code[self.query_codes].astype(np.int64)

    def self_relevant(self) -> np.ndarray:
        return self.query_codes == self.gallery_codes[: self.num_queries]


class _SparseRelevance(_Relevance):
    """CSR lists of relevant gallery indices per query (built from qrels)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, num_gallery: int):
        self.indptr, self.indices = indptr, indices
        self.num_queries, self.num_gallery = indptr.shape[0] - 1, num_gallery

    def block(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, self.num_gallery), bool)
        lo, hi = self.indptr[start], self.indptr[stop]
        rows = np.repeat(np.arange(stop - start), np.diff(self.indptr[start : stop + 1]))
        out[rows, self.indices[lo:hi]] = True
        return out

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr).astype(np.int64)

    def self_relevant(self) -> np.ndarray:
        rows = np.repeat(np.arange(self.num_queries), np.diff(self.indptr))
        out = np.zeros(self.num_queries, bool)
        out[rows[self.indices == rows]] = True
        return out


def qrels_to_csr(
    qrels: Mapping[Hashable, Iterable[Hashable] | Mapping[Hashable, float]],
    query_ids: Sequence[Hashable],
    gallery_ids: Sequence[Hashable],
) -> tuple[np.ndarray, np.ndarray]:
    """Turn BEIR-style qrels into CSR relevance lists.

    Args:
        qrels: query id -> relevant doc ids, either an iterable of ids or a mapping
            doc id -> grade (grade > 0 is relevant, as in BEIR).
        query_ids: (Q,) id of each query row.
        gallery_ids: (G,) id of each gallery row.

    Returns:
        ``(indptr (Q + 1,), indices (nnz,))``: relevant gallery indices of query i are
        ``indices[indptr[i]:indptr[i + 1]]`` (sorted, unique). Doc ids absent from the gallery
        and queries absent from ``query_ids`` are ignored.

    Raises:
        ValueError: duplicate ids, or qrels that match no (query, gallery) pair at all (a sign
            of mismatched id types, e.g. int vs str).
    """
    gallery_index = {gid: j for j, gid in enumerate(gallery_ids)}
    if len(gallery_index) != len(gallery_ids):
        raise ValueError("gallery_ids has duplicates")
    if len(set(query_ids)) != len(query_ids):
        raise ValueError("query_ids has duplicates")
    lists = []
    total_given = 0
    for qid in query_ids:
        docs = qrels.get(qid, ())
        if isinstance(docs, Mapping):
            docs = [d for d, grade in docs.items() if grade > 0]
        elif isinstance(docs, (str, bytes)):
            docs = [docs]
        docs = list(docs)
        total_given += len(docs)
        lists.append(sorted({gallery_index[d] for d in docs if d in gallery_index}))
    nnz = sum(len(x) for x in lists)
    if nnz == 0 and (total_given > 0 or len(qrels) > 0):
        raise ValueError(
            "qrels match no (query id, gallery id) pair: check that the ids have the same type "
            "and spelling as query_ids / gallery_ids"
        )
    indptr = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=indptr[1:])
    indices = np.fromiter((j for x in lists for j in x), dtype=np.int64, count=nnz)
    return indptr, indices


def _make_relevance(
    relevant: Any,
    num_queries: int,
    num_gallery: int,
    query_ids: Sequence[Hashable] | None,
    gallery_ids: Sequence[Hashable] | None,
) -> _Relevance:
    if relevant is None:
        raise ValueError("relevant is required: a (Q, G) bool matrix, a label pair or qrels")
    if isinstance(relevant, Mapping):
        qids = list(range(num_queries)) if query_ids is None else list(query_ids)
        gids = list(range(num_gallery)) if gallery_ids is None else list(gallery_ids)
        if len(qids) != num_queries:
            raise ValueError(f"{len(qids)} query_ids for {num_queries} query features")
        if len(gids) != num_gallery:
            raise ValueError(f"{len(gids)} gallery_ids for {num_gallery} gallery features")
        indptr, indices = qrels_to_csr(relevant, qids, gids)
        return _SparseRelevance(indptr, indices, num_gallery)
    if query_ids is not None or gallery_ids is not None:
        raise ValueError("query_ids / gallery_ids are only used with qrels (a mapping)")
    if isinstance(relevant, (tuple, list)):
        if len(relevant) != 2:
            raise ValueError(
                "relevant as a tuple/list must be (query_labels, gallery_labels); pass a "
                "boolean matrix as an array"
            )
        return _LabelRelevance(relevant[0], relevant[1], num_queries, num_gallery)
    mask = np.asarray(relevant)
    if mask.shape != (num_queries, num_gallery):
        raise ValueError(
            f"relevant matrix has shape {mask.shape}, expected (Q, G) = "
            f"({num_queries}, {num_gallery})"
        )
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(f"relevant matrix must be bool or 0/1 integers, got {mask.dtype}")
        mask = mask > 0
    return _MaskRelevance(mask)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
