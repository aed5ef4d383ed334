"""Text source: IMDB."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    looked_for,
    open_text,
)
from crossgap_jax.data.types import DatasetLayoutError, TextSplit

log = logging.getLogger(__name__)


IMDB_SUBDIRS = ("aclImdb", "imdb", "imdb/aclImdb")
IMDB_CSV_NAMES = ("IMDB Dataset.csv", "IMDB_Dataset.csv", "imdb.csv", "imdb_dataset.csv")
IMDB_LAYOUT = (
    "<root>/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt  (the Stanford download), or\n"
    "<root>/imdb/IMDB Dataset.csv  (the 50k CSV: columns review, sentiment)"
)
IMDB_QUERIES = ("a positive review of a movie.", "a negative review of a movie.")
IMDB_CLASSNAMES = ["negative", "positive"]  # label 0 / 1, as tfds imdb_reviews


def locate_imdb(root: str) -> str | None:
    for d in candidate_dirs(root, IMDB_SUBDIRS):
        if os.path.isdir(os.path.join(d, "test", "pos")) or os.path.isdir(
            os.path.join(d, "train", "pos")
        ):
            return d
        for n in IMDB_CSV_NAMES:
            if os.path.isfile(os.path.join(d, n)):
                return os.path.join(d, n)
    return None


def load_imdb(root: str, split: str = "all", queries: Sequence[str] = IMDB_QUERIES) -> TextSplit:
    """IMDB reviews: ``all`` (50,000, the paper's gallery), ``train``, ``test`` or ``queries``.

    Labels: 0 negative, 1 positive. The ``queries`` split holds the two class
    descriptions (positive first, as in the paper). The text is the raw review (HTML
    ``<br />`` tags included).
    """
    if split == "queries":
        return TextSplit(
            name="imdb_text", split="queries", items=["query/positive", "query/negative"],
            texts=list(queries), labels=np.array([1, 0]), classnames=list(IMDB_CLASSNAMES),
        )
    if split not in ("all", "train", "test"):
        raise bad_split("imdb_text", split, ["all", "train", "test", "queries"])
    src = locate_imdb(root)
    if src is None:
        searched = looked_for(root, IMDB_SUBDIRS, ["train/pos/", "test/pos/", *IMDB_CSV_NAMES])
        raise layout_error("imdb_text", root, searched, IMDB_LAYOUT)
    items: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    if os.path.isfile(src):  # the 50k CSV (no train/test split inside)
        if split != "all":
            raise ValueError(f"imdb_text: the CSV {src} has only the split 'all'")
        with open_text(src, newline="") as f:
            reader = csv.DictReader(f)
            for i, row in enumerate(reader):
                items.append(f"row{i:05d}")
                texts.append(row["review"])
                labels.append(1 if row["sentiment"].strip().lower().startswith("pos") else 0)
    else:
        for part in ("train", "test") if split == "all" else (split,):
            for lab, pol in ((0, "neg"), (1, "pos")):
                folder = os.path.join(src, part, pol)
                if not os.path.isdir(folder):
                    raise DatasetLayoutError(f"imdb_text: missing {folder}\n{IMDB_LAYOUT}")
                for fn in sorted(os.listdir(folder), key=_imdb_sort_key):
                    if not fn.endswith(".txt"):
                        continue
                    with open_text(os.path.join(folder, fn)) as f:
                        texts.append(f.read())
                    items.append(f"{part}/{pol}/{fn}")
                    labels.append(lab)
    return TextSplit(name="imdb_text", split=split, items=items, texts=texts,
                     labels=np.array(labels, np.int64), classnames=list(IMDB_CLASSNAMES),
                     root=src)


def _imdb_sort_key(fn: str) -> tuple[int, str]:
    head = fn.split("_", 1)[0]
    return (int(head) if head.isdigit() else -1, fn)
