"""Text source: 20 Newsgroups ("bydate" folders), in scikit-learn's order."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    looked_for,
)
from crossgap_jax.data.types import TextSplit

log = logging.getLogger(__name__)


NEWSGROUP_DESCRIPTIONS: dict[str, str] = {
    "alt.atheism": "a post about atheism.",
    "comp.graphics": "a post about computer graphics.",
    "comp.os.ms-windows.misc": "a post about the Microsoft Windows operating system.",
    "comp.sys.ibm.pc.hardware": "a post about IBM PC hardware.",
    "comp.sys.mac.hardware": "a post about Apple Macintosh hardware.",
    "comp.windows.x": "a post about the X Window System.",
    "misc.forsale": "a post about items for sale.",
    "rec.autos": "a post about cars.",
    "rec.motorcycles": "a post about motorcycles.",
    "rec.sport.baseball": "a post about baseball.",
    "rec.sport.hockey": "a post about hockey.",
    "sci.crypt": "a post about cryptography.",
    "sci.electronics": "a post about electronics.",
    "sci.med": "a post about medicine.",
    "sci.space": "a post about space.",
    "soc.religion.christian": "a post about Christianity.",
    "talk.politics.guns": "a post about guns and gun politics.",
    "talk.politics.mideast": "a post about politics in the Middle East.",
    "talk.politics.misc": "a post about politics.",
    "talk.religion.misc": "a post about religion.",
}
NEWSGROUP_SUBDIRS = ("20newsgroups", "20news-bydate", "20news_home", "20newsgroups/20news-bydate",
                     "20newsgroups/20news_home")
NEWSGROUP_LAYOUT = (
    "<root>/20newsgroups/20news-bydate-{train,test}/<newsgroup>/<message number>\n"
    "  (the '20news-bydate' download, 20 class folders per split)"
)


def locate_newsgroups(root: str, split: str = "test") -> str | None:
    for d in candidate_dirs(root, NEWSGROUP_SUBDIRS):
        p = os.path.join(d, f"20news-bydate-{split}")
        if os.path.isdir(p):
            return p
    return None


def _sklearn_load_files_order(folder: str) -> tuple[list[str], list[int], list[str]]:
    """Files and labels in the order of sklearn's ``load_files(..., random_state=0)``.

    sklearn lists class folders sorted, files sorted within each, then permutes the whole
    list with ``np.random.RandomState(0).shuffle(np.arange(n))``.
    """
    classes = sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e)))
    files: list[str] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        names = sorted(os.listdir(os.path.join(folder, c)))
        files += [f"{c}/{n}" for n in names]
        labels += [k] * len(names)
    perm = np.arange(len(files))
    np.random.RandomState(0).shuffle(perm)
    return [files[i] for i in perm], [labels[i] for i in perm], classes


def load_newsgroups(
    root: str,
    split: str = "test",
    descriptions: Mapping[str, str] | None = None,
) -> TextSplit:
    """20 Newsgroups in exactly ``sklearn.datasets.fetch_20newsgroups(subset=split)``'s order.

    sklearn caches ``load_files(<split folder>, encoding="latin1")`` (folders and files
    sorted, shuffled with ``RandomState(0)``) and then, with the default ``shuffle=True,
    random_state=42``, permutes again with ``RandomState(42)``; ``subset="all"``
    concatenates the (already RandomState(0)-shuffled) train and test lists before the
    second shuffle. Texts are decoded as latin-1, nothing is stripped (``remove=()``).

    Args:
        root: data root (or the folder holding ``20news-bydate-<split>``).
        split: ``"test"`` (7,532 posts, the paper's gallery), ``"train"``, ``"all"`` or
            ``"queries"`` (one description per newsgroup, label = its index).
        descriptions: ``{newsgroup: query text}`` replacing :data:`NEWSGROUP_DESCRIPTIONS`.

    Items are ``"<split>/<newsgroup>/<message number>"``.
    """
    if split == "queries":
        desc = dict(NEWSGROUP_DESCRIPTIONS, **(descriptions or {}))
        names = sorted(NEWSGROUP_DESCRIPTIONS)
        return TextSplit(
            name="newsgroup_text", split="queries", items=[f"query/{n}" for n in names],
            texts=[desc[n] for n in names], labels=np.arange(len(names)), classnames=names,
        )
    if split not in ("test", "train", "all"):
        raise bad_split("newsgroup_text", split, ["test", "train", "all", "queries"])
    parts = ("train", "test") if split == "all" else (split,)
    items: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    classnames: list[str] | None = None
    folders: list[str] = []
    for part in parts:
        folder = locate_newsgroups(root, part)
        if folder is None:
            searched = looked_for(root, NEWSGROUP_SUBDIRS, [f"20news-bydate-{part}/"])
            raise layout_error("newsgroup_text", root, searched, NEWSGROUP_LAYOUT)
        folders.append(folder)
        files, labs, classes = _sklearn_load_files_order(folder)
        if classnames is not None and classes != classnames:
            raise ValueError("20news-bydate-train and -test have different newsgroups")
        classnames = classes
        items += [f"{part}/{f}" for f in files]
        paths += [os.path.join(folder, f) for f in files]
        labels += labs
    perm = np.arange(len(items))
    np.random.RandomState(42).shuffle(perm)
    texts = []
    for i in perm:
        with open(paths[i], "rb") as f:
            texts.append(f.read().decode("latin-1"))
    return TextSplit(
        name="newsgroup_text", split=split, items=[items[i] for i in perm], texts=texts,
        labels=np.array([labels[i] for i in perm], np.int64), classnames=classnames,
        root=folders[0] if len(folders) == 1 else os.path.dirname(folders[0]),
    )
