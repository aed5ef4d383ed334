"""A retrieval task: a query split, a gallery split and what "relevant" means."""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np

from crossgap_jax.data.types import DegenerateTaskError, Split
from crossgap_jax.retrieval import LabelRelevance, Relevance, SparseRelevance, qrels_relevance

__all__ = ["QRELS_MISSING", "Difficulty", "QrelsAudit", "RelevanceKind", "RetrievalTask",
           "audit_qrels"]

RelevanceKind = Literal["label", "group", "qrels", "revisitop"]
Difficulty = Literal["easy", "medium", "hard"]
#: What judged documents absent from the corpus do: ``"drop"`` (the authors' tensor ground
#: truth: left out of R) or ``"count"`` (BEIR / pytrec_eval: counted in R, never retrieved).
QRELS_MISSING = ("drop", "count")


@dataclasses.dataclass(frozen=True)
class QrelsAudit:
    """What a task's qrels hold beyond plain relevant pairs (reported on every run).

    Convention (BEIR / pytrec_eval): a judgement with score <= 0 is "judged not relevant"
    and never counts in R; a (query, document) pair listed twice keeps its last score.

    Attributes:
        judged_pairs: (query, document) pairs of the task's queries (after de-duplication).
        relevant_pairs: of those, score > 0.
        zero_score_pairs: of those, score <= 0 (not relevant).
        duplicate_pairs: lines that repeated an earlier (query, document) pair (reader count).
        outside_pairs: judged pairs whose document is not in the corpus.
        outside_relevant_pairs: of those, score > 0 (what ``qrels_missing="count"`` adds to R).
        outside_examples: up to 5 ``"query -> document"`` of the outside pairs.
        queries_all_outside: queries with relevant judgements, none of them in the corpus
            (no relevant gallery item: left out under "drop", AP 0 under "count").
        outside_per_query: ``{query: relevant documents outside the corpus}`` (non-zero only).
    """

    judged_pairs: int
    relevant_pairs: int
    zero_score_pairs: int
    duplicate_pairs: int
    outside_pairs: int
    outside_relevant_pairs: int
    outside_examples: tuple[str, ...]
    queries_all_outside: int
    outside_per_query: dict[str, int]

    def as_record(self) -> dict:
        """The counts and examples as plain JSON (without the per-query map)."""
        out = dataclasses.asdict(self)
        out.pop("outside_per_query")
        out["outside_examples"] = list(self.outside_examples)
        return out

    def summary(self) -> str:
        """One line for logs and tables."""
        ex = f" (e.g. {', '.join(self.outside_examples[:3])})" if self.outside_examples else ""
        return (f"{self.outside_pairs} of {self.judged_pairs} judged pairs point outside the "
                f"corpus{ex}; {self.zero_score_pairs} score-0 judgements (not relevant); "
                f"{self.duplicate_pairs} duplicate lines (last score kept)")


def audit_qrels(qrels: dict[str, dict[str, int]], query_items: list[str],
                corpus_items: list[str], duplicate_pairs: int = 0,
                max_examples: int = 5) -> QrelsAudit:
    """The :class:`QrelsAudit` of ``qrels`` for these queries against this corpus."""
    corpus = set(corpus_items)
    judged = relevant = zero = outside = outside_rel = all_out = 0
    examples: list[str] = []
    per_query: dict[str, int] = {}
    for q in query_items:
        docs = qrels.get(q, {})
        judged += len(docs)
        n_rel = n_rel_out = 0
        for d, v in docs.items():
            rel = v > 0
            relevant += rel
            zero += not rel
            if d not in corpus:
                outside += 1
                n_rel_out += rel
                if len(examples) < max_examples:
                    examples.append(f"{q} -> {d}")
            n_rel += rel
        outside_rel += n_rel_out
        if n_rel_out:
            per_query[q] = n_rel_out
        all_out += bool(n_rel) and n_rel_out == n_rel
    return QrelsAudit(judged, relevant, zero, duplicate_pairs, outside, outside_rel,
                      tuple(examples), all_out, per_query)


@dataclasses.dataclass(frozen=True, eq=False)
class RetrievalTask:
    """A query split, a gallery split and the relevance between them.

    :meth:`relevant` builds the :class:`~crossgap_jax.retrieval.Relevance` the metrics consume
    (the one place that turns a relevance kind into relevant gallery items); ``relevance``
    says how positives are found:

    * ``"label"``: gallery items with the query's class label;
    * ``"group"``: gallery items with the query's group id (captions of the same image);
    * ``"qrels"``: ``qrels[query item][gallery item] > 0``;
    * ``"revisitop"``: the easy/hard/junk lists of ``gnd`` (ROxford5k / RParis6k), read
      with a difficulty (Easy / Medium / Hard protocol).

    When ``exclude_self`` is set (query split == gallery split), each query's own gallery
    entry is neither a positive nor ranked: it is in :meth:`ignored`. The query split is
    then the gallery split (same items, same order).

    Attributes:
        name: dataset name.
        query: the query split.
        gallery: the gallery split.
        relevance: one of ``"label"``, ``"group"``, ``"qrels"``, ``"revisitop"``.
        exclude_self: remove each query from its own gallery.
        qrels: ``{query item: {gallery item: grade}}`` for ``"qrels"``.
        gnd: per query ``{"easy", "hard", "junk": int arrays of gallery indices}`` for
            ``"revisitop"``.
        qrels_missing: ``"drop"`` (default, the authors') or ``"count"``: whether relevant
            judged documents absent from the corpus count in R (see :data:`QRELS_MISSING`).
        qrels_audit: the :class:`QrelsAudit` of ``qrels`` against the corpus as loaded.
    """

    name: str
    query: Split
    gallery: Split
    relevance: RelevanceKind
    exclude_self: bool = False
    qrels: dict[str, dict[str, int]] | None = None
    gnd: list[dict[str, np.ndarray]] | None = None
    qrels_missing: str = "drop"
    qrels_audit: QrelsAudit | None = None

    def __post_init__(self) -> None:
        if self.qrels_missing not in QRELS_MISSING:
            raise ValueError(f"qrels_missing must be one of {QRELS_MISSING}, got "
                             f"{self.qrels_missing!r}")
        if self.relevance in ("label", "group"):
            attr = "labels" if self.relevance == "label" else "groups"
            for side in (self.query, self.gallery):
                if getattr(side, attr) is None:
                    raise ValueError(
                        f"{self.name}: the {side.split!r} split read from {side.root} has no "
                        f"{attr}, and relevance={self.relevance!r} needs them"
                        + (" (give every JSONL record a 'label' field)"
                           if str(side.root).endswith(".jsonl") else ""))
        elif self.relevance == "qrels":
            if self.qrels is None:
                raise ValueError("relevance='qrels' needs qrels")
            if self.qrels_audit is None:
                object.__setattr__(self, "qrels_audit", audit_qrels(
                    self.qrels, list(self.query.items), list(self.gallery.items),
                    int(self.query.extra.get("qrels_duplicate_pairs", 0))))
        elif self.relevance == "revisitop":
            if self.gnd is None or len(self.gnd) != len(self.query):
                raise ValueError("relevance='revisitop' needs one gnd entry per query")
        else:
            raise ValueError(f"unknown relevance {self.relevance!r}")

    def __repr__(self) -> str:
        return (
            f"RetrievalTask({self.name!r}, query={self.query!r}, gallery={self.gallery!r}, "
            f"relevance={self.relevance!r}, exclude_self={self.exclude_self})"
        )

    @property
    def num_queries(self) -> int:
        return len(self.query)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery)

    @functools.cached_property
    def _relevant_full(self) -> dict[str, Relevance]:
        return {}

    def relevant(self, query: Split | None = None, gallery: Split | None = None,
                 difficulty: Difficulty = "medium") -> Relevance:
        """The :class:`~crossgap_jax.retrieval.Relevance` of ``query`` against ``gallery``.

        Args:
            query: a subset of the task's query split (items skipped, a smoke-run sample);
                default: the whole split.
            gallery: likewise for the gallery split.
            difficulty: revisitop only: ``"easy"`` (easy positives), ``"medium"`` (easy +
                hard) or ``"hard"`` (hard); the rest of the protocol (junk, the other
                positives left unranked) is :meth:`ignored`.

        Returns:
            label / group: same label (group id) = relevant; qrels: ``qrels[q][d] > 0`` for
            ``d`` in the gallery, with the relevant judged documents outside the corpus as
            ``unretrievable`` under ``qrels_missing="count"``; revisitop: the ``gnd`` lists.
            ``exclude_self`` is the task's.

        Raises:
            ValueError: ``exclude_self`` with query and gallery items that differ (after
                skips), or a revisitop task given subsets (its ground truth indexes the full
                gallery).
        """
        whole = query is None and gallery is None
        if whole and difficulty in self._relevant_full:
            return self._relevant_full[difficulty]
        q = self.query if query is None else query
        g = self.gallery if gallery is None else gallery
        if self.exclude_self and q is not g and list(q.items) != list(g.items):
            raise ValueError(f"{self.name}: exclude_self needs the same query and gallery items "
                             f"(in the same order), got {len(q)} queries and {len(g)} gallery "
                             "items after skips")
        opts = {"exclude_self": self.exclude_self}
        rel: Relevance
        if self.relevance in ("label", "group"):
            attr = "labels" if self.relevance == "label" else "groups"
            rel = LabelRelevance(getattr(q, attr), getattr(g, attr), **opts)
        elif self.relevance == "qrels":
            assert self.qrels is not None and self.qrels_audit is not None
            if self.qrels_missing == "count":
                per = self.qrels_audit.outside_per_query
                opts["unretrievable"] = np.array([per.get(it, 0) for it in q.items], np.int64)
            rel = qrels_relevance(self.qrels, list(q.items), list(g.items), **opts)
        else:
            if not whole:
                raise ValueError(f"{self.name}: revisitop relevance indexes the full query and "
                                 "gallery splits; it cannot be built for subsets")
            assert self.gnd is not None
            parts = {"easy": ["easy"], "medium": ["easy", "hard"], "hard": ["hard"]}[difficulty]
            rel = SparseRelevance.from_lists(
                [np.concatenate([np.asarray(gi[k], np.int64) for k in parts]) for gi in self.gnd],
                len(g), **opts)
        if whole:
            self._relevant_full[difficulty] = rel
        return rel

    def positives(self, i: int, difficulty: Difficulty = "medium") -> np.ndarray:
        """Sorted gallery indices relevant to query ``i`` (of :meth:`relevant`)."""
        return self.relevant(difficulty=difficulty).positives(i)

    def positive_counts(self) -> np.ndarray:
        """``(Q,)`` int64: how many gallery items are relevant to each query (self excluded;
        revisitop: easy + hard): :meth:`relevant`'s ``gallery_counts()``."""
        return self.relevant().gallery_counts()

    def check_informative(self, max_without_positive: float = 0.5) -> None:
        """Refuse a task whose scores would mean nothing.

        Raises:
            DegenerateTaskError: the gallery has a single class (label relevance: every
                item is relevant to every query, mAP is 100 whatever the model), or more
                than ``max_without_positive`` of the queries have no relevant gallery item
                (their ids or labels do not match the gallery's). The message gives the
                numbers, examples and the usual fix.
        """
        if self.relevance == "label":
            assert self.gallery.labels is not None
            classes = np.unique(self.gallery.labels)
            if len(classes) <= 1 and self.num_gallery > 1:
                raise DegenerateTaskError(
                    f"{self.name}: all {self.num_gallery:,} gallery items have the same label "
                    f"(one class) - every item is relevant to every query and mAP would be "
                    f"100 whatever the model. Images that sit in a single sub-folder carry no "
                    f"labels: give the labels in an annotation file (imagefolder?labels=FILE, "
                    f"lines '<path> <label>' or a CSV path,label) or one sub-folder per class.")
        if not self.num_queries:
            return
        counts = self.positive_counts()
        none = np.flatnonzero(counts == 0)
        if len(none) > max_without_positive * self.num_queries:
            ex = [self.query.items[i] for i in none[:3]]
            hint = ""
            if self.relevance == "qrels" and self.qrels is not None:
                docs = [d for i in none[:20] for d in self.qrels.get(self.query.items[i], {})]
                hint = (f" Their judged ids (e.g. {docs[:3]}) are not gallery ids (e.g. "
                        f"{self.gallery.items[:3]}): do the qrels belong to this corpus?")
            elif self.relevance == "label":
                same = self.query is self.gallery or (
                    self.query.split == self.gallery.split and self.exclude_self)
                hint = (" Their class has no other item in the split (each label occurs "
                        "once?)" if same else " Their labels do not occur in the gallery: do "
                        "the splits share classes?")
                sides = (self.query,) if same else (self.query, self.gallery)
                for side in sides:  # an annotation file: its rule (once per file)
                    if "label_rule" in side.extra:
                        hint += (f" The {side.split!r} labels come from "
                                 f"{side.extra['labels_file']}, label = {side.extra['label_rule']}:"
                                 f" {side.extra['distinct_labels']:,} distinct labels for "
                                 f"{len(side):,} images; choose the label column with "
                                 f"imagefolder?labels=FILE&label_column=K.")
            raise DegenerateTaskError(
                f"{self.name}: {len(none):,} of {self.num_queries:,} queries have no relevant "
                f"gallery item (e.g. {ex}); their scores would be 0 by construction.{hint}")

    def ignored(self, i: int, difficulty: Difficulty = "medium") -> np.ndarray:
        """Sorted gallery indices to drop from query ``i``'s ranking before scoring.

        The query itself when ``exclude_self``; for revisitop the junk images plus, for
        the easy protocol the hard positives, for the hard protocol the easy ones.
        """
        out: list[np.ndarray] = [np.zeros(0, np.int64)]
        if self.exclude_self:
            out.append(np.array([i], np.int64))
        if self.relevance == "revisitop":
            assert self.gnd is not None
            g = self.gnd[i]
            parts = {"easy": ["junk", "hard"], "medium": ["junk"], "hard": ["junk", "easy"]}
            out += [np.asarray(g[k], np.int64) for k in parts[difficulty]]
        return np.unique(np.concatenate(out))

    def relevance_matrix(
        self, difficulty: Difficulty = "medium", max_elements: int = 2**31
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``(Q, G)`` boolean ``(relevant, ignored)`` matrices.

        Args:
            difficulty: revisitop protocol (see :meth:`positives`).
            max_elements: refuse to build matrices larger than this (SOP's 60k x 60k
                would be 3.6 GB); iterate over :meth:`positives` instead.
        """
        q, g = self.num_queries, self.num_gallery
        if q * g > max_elements:
            raise MemoryError(f"relevance matrix {q}x{g} exceeds max_elements={max_elements}")
        rel = self.relevant(difficulty=difficulty).block(0, q)
        ign = np.zeros((q, g), bool)
        if self.exclude_self:
            rel[np.arange(q), np.arange(q)] = False
        if self.exclude_self or self.relevance == "revisitop":
            for i in range(q):
                ign[i, self.ignored(i, difficulty)] = True
        return rel, ign
