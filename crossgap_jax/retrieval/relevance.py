"""Which gallery items are relevant to each query: the package's one representation.

A :class:`Relevance` holds, for Q queries against G gallery items, the relevant gallery
items of each query (as label codes, CSR lists or a dense mask), whether each query is left
out of its own gallery (``exclude_self``: queries and gallery are the same items, same
order), and how many relevant items of each query lie outside the gallery
(``unretrievable``: judged documents missing from the corpus that count in R).

A retrieval task builds it (:meth:`crossgap_jax.data.RetrievalTask.relevant`); the retrieval
metrics consume it (:func:`crossgap_jax.retrieval.evaluate` reads one ``(B, G)`` block of rows
at a time, so the ``(Q, G)`` matrix is never held); :func:`as_relevance` builds it from the raw
inputs ``retrieval.evaluate`` also accepts (a mask, a label pair or qrels).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["LabelRelevance", "MaskRelevance", "Relevance", "SparseRelevance", "as_relevance",
           "qrels_relevance", "qrels_to_csr"]


class Relevance:
    """Relevance of (query, gallery item) pairs, materialised one block of queries at a time.

    Attributes:
        num_queries: Q.
        num_gallery: G.
        exclude_self: query i is gallery item i (Q == G): neither relevant to nor ranked for
            itself.
        unretrievable: ``(Q,)`` int64 relevant items of each query outside the gallery (they
            count in R and are never retrieved); zeros when there are none.
    """

    num_queries: int
    num_gallery: int
    exclude_self: bool
    unretrievable: np.ndarray

    def _finish(self, exclude_self: bool, unretrievable: Any) -> None:
        """Validate and set the fields every kind shares (called by the constructors)."""
        q, g = self.num_queries, self.num_gallery
        if exclude_self and q != g:
            raise ValueError(f"exclude_self needs queries and gallery to be the same items "
                             f"(Q == G), got Q={q}, G={g}")
        self.exclude_self = bool(exclude_self)
        if unretrievable is None:
            self.unretrievable = np.zeros(q, np.int64)
            return
        u = np.asarray(unretrievable)
        if u.shape != (q,) or not np.issubdtype(u.dtype, np.integer) or (u < 0).any():
            raise ValueError(f"unretrievable must be ({q},) non-negative integers, got "
                             f"shape {u.shape} dtype {u.dtype}")
        self.unretrievable = u.astype(np.int64)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Fresh, writable ``(stop - start, G)`` bool block (query i's own item not removed:
        the consumer masks the diagonal when :attr:`exclude_self`)."""
        raise NotImplementedError

    def counts(self) -> np.ndarray:
        """``(Q,)`` int64 relevant gallery items per query (self not excluded)."""
        raise NotImplementedError

    def self_relevant(self) -> np.ndarray:
        """``(Q,)`` bool: query i is relevant to gallery item i (all False unless Q <= G)."""
        raise NotImplementedError

    def gallery_counts(self) -> np.ndarray:
        """``(Q,)`` int64 relevant gallery items per query, self excluded under
        :attr:`exclude_self`."""
        c = self.counts()
        return c - self.self_relevant() if self.exclude_self else c

    def num_relevant(self) -> np.ndarray:
        """``(Q,)`` int64 R of each query: :meth:`gallery_counts` + :attr:`unretrievable`."""
        return self.gallery_counts() + self.unretrievable

    def positives(self, i: int) -> np.ndarray:
        """Sorted int64 gallery indices relevant to query ``i`` (self excluded)."""
        pos = np.flatnonzero(self.block(i, i + 1)[0]).astype(np.int64)
        return pos[pos != i] if self.exclude_self else pos

    def positives_each(self) -> list[np.ndarray]:
        """:meth:`positives` of every query."""
        return [self.positives(i) for i in range(self.num_queries)]


class MaskRelevance(Relevance):
    """A dense ``(Q, G)`` boolean matrix."""

    def __init__(self, mask: np.ndarray, *, exclude_self: bool = False,
                 unretrievable: Any = None):
        self.mask = np.asarray(mask, bool)
        self.num_queries, self.num_gallery = self.mask.shape
        self._finish(exclude_self, unretrievable)

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.mask[start:stop].copy()

    def counts(self) -> np.ndarray:
        return self.mask.sum(axis=1, dtype=np.int64)

    def self_relevant(self) -> np.ndarray:
        n = min(self.num_queries, self.num_gallery)
        out = np.zeros(self.num_queries, bool)
        out[:n] = self.mask[np.arange(n), np.arange(n)]
        return out


class LabelRelevance(Relevance):
    """Same label = relevant (class labels, caption group ids); labels are mapped to integer
    codes once, so no ``(Q, G)`` matrix is built on the host."""

    def __init__(self, query_labels: Any, gallery_labels: Any, *, exclude_self: bool = False,
                 unretrievable: Any = None):
        ql, gl = np.asarray(query_labels), np.asarray(gallery_labels)
        if ql.ndim != 1 or gl.ndim != 1:
            raise ValueError(
                f"label vectors must be 1-D, got query {ql.shape} and gallery {gl.shape}")
        try:
            _, codes = np.unique(np.concatenate([ql, gl]), return_inverse=True)
        except TypeError as e:  # unorderable mixture of label types
            raise ValueError(f"labels cannot be compared: {e}") from e
        codes = codes.reshape(-1).astype(np.int32)
        self.num_queries, self.num_gallery = len(ql), len(gl)
        self.query_codes = codes[: self.num_queries]
        self.gallery_codes = codes[self.num_queries:]
        self._finish(exclude_self, unretrievable)

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.query_codes[start:stop, None] == self.gallery_codes[None, :]

    def counts(self) -> np.ndarray:
        if not self.num_queries:
            return np.zeros(0, np.int64)
        per_code = np.bincount(self.gallery_codes, minlength=int(self.query_codes.max()) + 1)
        return per_code[self.query_codes].astype(np.int64)

    def self_relevant(self) -> np.ndarray:
        n = min(self.num_queries, self.num_gallery)
        out = np.zeros(self.num_queries, bool)
        out[:n] = self.query_codes[:n] == self.gallery_codes[:n]
        return out

    def positives_each(self) -> list[np.ndarray]:
        order = np.argsort(self.gallery_codes, kind="stable")
        values, starts = np.unique(self.gallery_codes[order], return_index=True)
        groups = dict(zip(values.tolist(), np.split(order.astype(np.int64), starts[1:])))
        empty = np.zeros(0, np.int64)
        out = [np.sort(groups.get(c, empty)) for c in self.query_codes.tolist()]
        if self.exclude_self:
            out = [p[p != i] for i, p in enumerate(out)]
        return out


class SparseRelevance(Relevance):
    """CSR lists of relevant gallery indices per query (qrels, revisitop ground truth)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, num_gallery: int, *,
                 exclude_self: bool = False, unretrievable: Any = None):
        self.indptr, self.indices = np.asarray(indptr, np.int64), np.asarray(indices, np.int64)
        self.num_queries, self.num_gallery = self.indptr.shape[0] - 1, int(num_gallery)
        self._finish(exclude_self, unretrievable)

    @classmethod
    def from_lists(cls, lists: Sequence[Iterable[int]], num_gallery: int,
                   **kwargs: Any) -> SparseRelevance:
        """From per-query gallery indices (any order, repeats allowed)."""
        rows = [np.unique(np.asarray(list(x), np.int64)) for x in lists]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return cls(indptr, indices, num_gallery, **kwargs)

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

    def positives(self, i: int) -> np.ndarray:
        pos = self.indices[self.indptr[i] : self.indptr[i + 1]]
        return pos[pos != i] if self.exclude_self else pos.copy()


def _csr(qrels: Mapping, query_ids: Sequence[Hashable], gallery_ids: Sequence[Hashable]
         ) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`qrels_to_csr` plus the number of judged relevant ids given for the queries."""
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
    indptr = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=indptr[1:])
    indices = np.fromiter((j for x in lists for j in x), dtype=np.int64, count=nnz)
    return indptr, indices, total_given


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
    indptr, indices, total_given = _csr(qrels, query_ids, gallery_ids)
    if not indices.size and (total_given > 0 or len(qrels) > 0):
        raise ValueError(
            "qrels match no (query id, gallery id) pair: check that the ids have the same type "
            "and spelling as query_ids / gallery_ids"
        )
    return indptr, indices


def qrels_relevance(qrels: Mapping, query_ids: Sequence[Hashable],
                    gallery_ids: Sequence[Hashable], **kwargs: Any) -> SparseRelevance:
    """A :class:`SparseRelevance` of qrels (grade > 0 and in the gallery is relevant); unlike
    :func:`qrels_to_csr`, qrels that match nothing give empty lists (a task reports them)."""
    indptr, indices, _ = _csr(qrels, query_ids, gallery_ids)
    return SparseRelevance(indptr, indices, len(gallery_ids), **kwargs)


def as_relevance(
    relevant: Any,
    num_queries: int,
    num_gallery: int,
    *,
    query_ids: Sequence[Hashable] | None = None,
    gallery_ids: Sequence[Hashable] | None = None,
    exclude_self: bool = False,
    unretrievable: Any = None,
) -> Relevance:
    """The :class:`Relevance` of ``relevant`` for Q queries and G gallery items.

    Args:
        relevant: a :class:`Relevance` (taken as is: its ``exclude_self`` and
            ``unretrievable`` hold); a ``(Q, G)`` bool or 0/1 integer matrix; a
            ``(query_labels (Q,), gallery_labels (G,))`` pair (same label = relevant); or
            qrels (a mapping query id -> relevant doc ids or -> ``{doc id: grade}``).
        num_queries, num_gallery: Q and G (the feature rows).
        query_ids, gallery_ids: name the rows of qrels (default: the row indices).
        exclude_self, unretrievable: see :class:`Relevance` (raw inputs only).

    Raises:
        ValueError: a shape that is not ``(Q, G)``, ids or labels of the wrong length,
            ids for a non-qrels input, qrels matching nothing, ``exclude_self`` with
            Q != G, bad ``unretrievable``, or options given twice (with a :class:`Relevance`).
    """
    if relevant is None:
        raise ValueError("relevant is required: a (Q, G) bool matrix, a label pair or qrels")
    if isinstance(relevant, Relevance):
        if exclude_self or unretrievable is not None or query_ids is not None \
                or gallery_ids is not None:
            raise ValueError("a Relevance carries its own exclude_self / unretrievable / ids: "
                             "do not pass them again")
        if (relevant.num_queries, relevant.num_gallery) != (num_queries, num_gallery):
            raise ValueError(f"relevance is {relevant.num_queries}x{relevant.num_gallery}, "
                             f"the features {num_queries}x{num_gallery}")
        return relevant
    opts = {"exclude_self": exclude_self, "unretrievable": unretrievable}
    if isinstance(relevant, Mapping):
        qids = list(range(num_queries)) if query_ids is None else list(query_ids)
        gids = list(range(num_gallery)) if gallery_ids is None else list(gallery_ids)
        if len(qids) != num_queries:
            raise ValueError(f"{len(qids)} query_ids for {num_queries} query features")
        if len(gids) != num_gallery:
            raise ValueError(f"{len(gids)} gallery_ids for {num_gallery} gallery features")
        indptr, indices = qrels_to_csr(relevant, qids, gids)
        return SparseRelevance(indptr, indices, num_gallery, **opts)
    if query_ids is not None or gallery_ids is not None:
        raise ValueError("query_ids / gallery_ids are only used with qrels (a mapping)")
    if isinstance(relevant, (tuple, list)):
        if len(relevant) != 2:
            raise ValueError(
                "relevant as a tuple/list must be (query_labels, gallery_labels); pass a "
                "boolean matrix as an array"
            )
        ql, gl = np.asarray(relevant[0]), np.asarray(relevant[1])
        if ql.ndim == 1 and ql.shape[0] != num_queries:
            raise ValueError(f"{ql.shape[0]} query labels for {num_queries} query features")
        if gl.ndim == 1 and gl.shape[0] != num_gallery:
            raise ValueError(f"{gl.shape[0]} gallery labels for {num_gallery} gallery features")
        return LabelRelevance(ql, gl, **opts)
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
    return MaskRelevance(mask, **opts)
