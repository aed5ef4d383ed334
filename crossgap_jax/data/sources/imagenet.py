"""Image source: ImageNet: CoOp's ``images/{train,val}/<wnid>/`` + ``classnames.txt``, or the
ILSVRC folders."""

from __future__ import annotations

import csv
import logging
import os
import re

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    list_images,
    looked_for,
    open_text,
    read_lines,
)
from crossgap_jax.data.types import DatasetLayoutError, ImageSplit

log = logging.getLogger(__name__)


IMAGENET_SUBDIRS = ("imagenet", "ilsvrc2012", "imagenet2012")
IMAGENET_LAYOUT = (
    "CoOp:  <root>/imagenet/images/{train,val}/<wnid>/*.JPEG + <root>/imagenet/classnames.txt\n"
    "       (classnames.txt lines: '<wnid> <class name>')\n"
    "ILSVRC: <root>/imagenet/ILSVRC/Data/CLS-LOC/{train/<wnid>/, val/} and, for a flat val/,\n"
    "       <root>/imagenet/LOC_val_solution.csv; class names from classnames.txt if present"
)
_IMAGENET_SPLIT_DIRS = ("images", "ILSVRC/Data/CLS-LOC", "Data/CLS-LOC", "")


_WNID = re.compile(r"^n\d{8}$")


def _is_imagenet_split(base: str) -> bool:
    """Whether ``base`` holds an ImageNet ``val/`` or ``train/`` by its defining files:
    WordNet-id class folders (``n01440764``...), or a flat ``val/`` with
    ``LOC_val_solution.csv`` at or above ``base`` (not just any folder of folders)."""
    for split in ("val", "train"):
        d = os.path.join(base, split)
        if not os.path.isdir(d):
            continue
        with os.scandir(d) as it:
            subs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        if subs and all(_WNID.match(s) for s in subs[:20]):
            return True
        if split == "val" and not subs and _find_upwards(base, "LOC_val_solution.csv"):
            return True
    return False


def locate_imagenet(root: str) -> str | None:
    """The folder holding ImageNet's ``train/`` and/or ``val/`` (recognised by its WordNet-id
    class folders or ``LOC_val_solution.csv``), or None."""
    for d in candidate_dirs(root, IMAGENET_SUBDIRS):
        for sub in _IMAGENET_SPLIT_DIRS:
            base = os.path.join(d, sub) if sub else d
            if _is_imagenet_split(base):
                return base
    return None


def _find_upwards(start: str, name: str, levels: int = 4) -> str | None:
    d = start
    for _ in range(levels + 1):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
        d = os.path.dirname(d)
    return None


def load_imagenet(root: str, split: str) -> ImageSplit:
    """ImageNet-1k: ``train`` (1,281,167) or ``test`` (= the 50,000 ``val`` images, as CoOp).

    Labels follow the sorted WordNet ids; class names come from CoOp's ``classnames.txt``
    when it is found (next to the images or up to four folders above), else the wnids.
    """
    base = locate_imagenet(root)
    if base is None:
        searched = looked_for(
            root, IMAGENET_SUBDIRS, [f"{s}/{{train,val}}/" if s else "{train,val}/"
                                     for s in _IMAGENET_SPLIT_DIRS]
        )
        raise layout_error("imagenet", root, searched, IMAGENET_LAYOUT)
    folder = {"train": "train", "test": "val", "val": "val"}.get(split)
    if folder is None:
        raise bad_split("imagenet", split, ["train", "test"])
    split_dir = os.path.join(base, folder)
    if not os.path.isdir(split_dir):
        raise DatasetLayoutError(f"imagenet: no {split_dir}\nExpected layout:\n{IMAGENET_LAYOUT}")
    cn_file = _find_upwards(base, "classnames.txt")
    names: dict[str, str] = {}
    if cn_file is not None:
        for line in read_lines(cn_file):
            wnid, _, cname = line.partition(" ")
            names[wnid] = cname.strip()
    subdirs = sorted(e for e in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, e)))
    wnids = sorted(names) if names else subdirs
    if not wnids:
        train_dir = os.path.join(base, "train")
        wnids = sorted(os.listdir(train_dir)) if os.path.isdir(train_dir) else []
    lab = {w: i for i, w in enumerate(wnids)}
    items: list[str] = []
    labels: list[int] = []
    if subdirs:
        for w in subdirs:
            if w not in lab:
                raise ValueError(f"imagenet: folder {w!r} of {split_dir} is not a known wnid")
            files = list_images(os.path.join(split_dir, w))
            items += [f"{w}/{f}" for f in files]
            labels += [lab[w]] * len(files)
    else:  # the flat ILSVRC val folder: labels from LOC_val_solution.csv
        sol = _find_upwards(base, "LOC_val_solution.csv")
        if sol is None:
            raise DatasetLayoutError(
                f"imagenet: {split_dir} is flat and no LOC_val_solution.csv was found at or "
                f"above {base}\nExpected layout:\n{IMAGENET_LAYOUT}"
            )
        with open_text(sol, newline="") as f:
            gt = {row[0]: row[1].split()[0] for row in csv.reader(f) if row and row[0] != "ImageId"}
        for fname in list_images(split_dir):
            stem = os.path.splitext(fname)[0]
            if stem in gt:
                items.append(fname)
                labels.append(lab[gt[stem]])
    classnames = [names.get(w, w) for w in wnids]
    return ImageSplit(
        name="imagenet", split="test" if split == "val" else split, items=items,
        paths=[os.path.join(split_dir, i) for i in items], labels=np.array(labels, np.int64),
        classnames=classnames, root=split_dir, extra={"wnids": wnids},
    )
