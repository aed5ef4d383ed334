"""Building a run's tasks: smoke-run subsets, the revisitop +1M distractors, class-name
splits, label lookups and the default classify split."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence

import numpy as np

from crossgap_jax.data import (
    PREFIX,
    TFDS_DEFAULTS,
    ImageSplit,
    RetrievalTask,
    TextSplit,
    dataset_info,
    imagefolder_splits,
)
from crossgap_jax.pipeline.prompts import clean_classname


def _gallery_with_positives(pos_each: list[np.ndarray], size: int, budget: int,
                            rng: np.random.Generator) -> np.ndarray:
    """Sorted gallery indices, at most ``budget``: first one positive of each query (queries
    in random order; a query whose positive is already in keeps its place free), then the
    other positives, then random non-positives."""
    chosen: list[int] = []
    taken = np.zeros(size, bool)
    for qi in rng.permutation(len(pos_each)):
        p = pos_each[qi]
        if len(chosen) >= budget or not p.size or taken[p].any():
            continue
        j = int(p[rng.integers(p.size)])
        taken[j] = True
        chosen.append(j)
    pos = np.zeros(size, bool)
    for p in pos_each:
        pos[p] = True
    more = rng.permutation(np.flatnonzero(pos & ~taken))[: max(0, budget - len(chosen))]
    fill = rng.permutation(np.flatnonzero(~pos))[: max(0, budget - len(chosen) - len(more))]
    return np.sort(np.concatenate([np.asarray(chosen, np.int64), more, fill]))


def limit_task(task: RetrievalTask, max_queries: int | None, max_gallery: int | None,
               seed: int = 0) -> RetrievalTask:
    """A smaller task for smoke runs: a seeded random subset of the queries, and a gallery
    that keeps one positive of every chosen query first (as far as ``max_gallery`` allows),
    then their other positives, then random other items.

    Metrics on a limited task are not comparable with the paper's; every record and table
    states the limits. On all-vs-all tasks (``exclude_self``: the queries are the gallery)
    both limits cap that one set: ``min(max_queries, max_gallery)`` items.
    """
    if task.relevance == "revisitop":
        raise ValueError("revisitop tasks cannot be subset (the ground truth indexes the "
                         "full gallery)")
    rng = np.random.default_rng(seed)
    q = task.query
    if task.exclude_self and (max_queries or max_gallery):
        max_queries = min(x for x in (max_queries, max_gallery) if x)
    if max_queries and max_queries < len(q):
        q = q.subset(np.sort(rng.choice(len(q), max_queries, replace=False)))
    g = task.gallery
    if task.exclude_self:
        g = q
    elif max_gallery and max_gallery < len(g):
        g = g.subset(_gallery_with_positives(task.relevant(q, g).positives_each(), len(g),
                                             max_gallery, rng))
    qrels = task.qrels
    if qrels is not None:
        keep_q = set(q.items)
        qrels = {k: v for k, v in qrels.items() if k in keep_q}
    return dataclasses.replace(task, query=q, gallery=g, qrels=qrels)


def with_revisitop1m(task: RetrievalTask, distractor_dir: str | None) -> RetrievalTask:
    """``task`` with every ``<distractor_dir>/*/*.jpg`` appended to its gallery (ROxford5k /
    RParis6k +1M, as the authors' loader does when ``revisitop1m/jpg`` exists).

    The distractors come after the ``imlist`` images, so the ground-truth indices stay valid;
    they are never positive. Item names are ``revisitop1m/<sub>/<file>``; the gallery split is
    named ``gallery+1m`` and records ``extra["num_distractors"]``.

    Raises:
        FileNotFoundError: ``distractor_dir`` holds no ``*/*.jpg``.
    """
    if distractor_dir is None:
        return task

    paths = sorted(glob.glob(os.path.join(distractor_dir, "*", "*.jpg")))
    if not paths:
        raise FileNotFoundError(f"revisitop1m distractors: no {distractor_dir}/*/*.jpg images")
    g = task.gallery
    if g.paths is None:
        raise ValueError(f"{task.name}: distractors need a file-based gallery")
    items = [f"revisitop1m/{os.path.relpath(p, distractor_dir)}" for p in paths]
    gallery = ImageSplit(name=g.name, split=f"{g.split}+1m", items=g.items + items,
                         paths=list(g.paths) + paths, root=g.root,
                         extra=dict(g.extra, num_distractors=len(paths),
                                    num_base=len(g.items), distractor_dir=distractor_dir))
    return dataclasses.replace(task, gallery=gallery)


def classnames_split(dataset: str, classnames: Sequence[str]):
    """The class names as a text split, ``_`` replaced by a space (as in every prompt)."""

    return TextSplit(name=f"{dataset}-classnames", split="classes",
                     items=[f"class{i:05d}" for i in range(len(classnames))],
                     texts=[clean_classname(c) for c in classnames],
                     labels=np.arange(len(classnames)))


def per_class_sample(split, per_class: int, seed: int = 0):
    """At most ``per_class`` seeded random items of each class (smoke runs)."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(split.labels == c))[:per_class]
            for c in np.unique(split.labels)]
    return split.subset(np.sort(np.concatenate(keep)))


def labels_for(split, items: Sequence[str]) -> np.ndarray:
    """``(len(items),)`` labels of ``items`` (ids of ``split``) in the order given."""
    pos = {it: i for i, it in enumerate(split.items)}
    return np.asarray([split.labels[pos[it]] for it in items])


def default_classify_split(dataset: str, root: str | None) -> str:
    """``test`` when the dataset has it, else its query split (image folders: their
    ``test`` sub-folder, else ``all``)."""

    if dataset.startswith(PREFIX):
        d = TFDS_DEFAULTS.get(dataset[len(PREFIX):])
        return d.query_split if d else "test"
    info = dataset_info(dataset)
    if info.name == "imagefolder" and root is not None:
        splits = imagefolder_splits(os.fspath(root))
        return "test" if "test" in splits else splits[0]
    return "test" if "test" in info.splits else info.query_split


def canonical_name(dataset: str) -> str:
    return dataset if dataset.startswith("tfds:") else dataset_info(dataset).name
