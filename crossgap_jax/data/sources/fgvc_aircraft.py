"""Image source: FGVC-Aircraft: ``images_variant_<split>.txt`` + ``variants.txt`` (CoOp reads
these directly)."""

from __future__ import annotations

import logging
import os

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    looked_for,
    read_lines,
)
from crossgap_jax.data.types import ImageSplit

log = logging.getLogger(__name__)


FGVC_SUBDIRS = ("fgvc_aircraft", "fgvc-aircraft-2013b/data", "fgvc_aircraft/data",
                "fgvc-aircraft-2013b")
FGVC_LAYOUT = (
    "<root>/fgvc_aircraft/images/<id>.jpg\n"
    "<root>/fgvc_aircraft/variants.txt  (one class name per line, label = line index)\n"
    "<root>/fgvc_aircraft/images_variant_{train,val,test}.txt  ('<id> <variant name>' lines)"
)


def locate_fgvc(root: str) -> str | None:
    for d in candidate_dirs(root, FGVC_SUBDIRS):
        if os.path.isfile(os.path.join(d, "variants.txt")) and os.path.isdir(
            os.path.join(d, "images")
        ):
            return d
    return None


def load_fgvc_aircraft(root: str, split: str) -> ImageSplit:
    """FGVC-Aircraft (variant level, 100 classes) from the official txt files, as CoOp."""
    d = locate_fgvc(root)
    if d is None:
        searched = looked_for(root, FGVC_SUBDIRS, ["variants.txt", "images/"])
        raise layout_error("fgvc_aircraft", root, searched, FGVC_LAYOUT)
    classnames = read_lines(os.path.join(d, "variants.txt"))
    lab = {c: i for i, c in enumerate(classnames)}
    f = os.path.join(d, f"images_variant_{split}.txt")
    if not os.path.isfile(f):
        valid = sorted(
            n[len("images_variant_") : -4]
            for n in os.listdir(d)
            if n.startswith("images_variant_") and n.endswith(".txt")
        )
        raise bad_split("fgvc_aircraft", split, valid)
    items, labels = [], []
    for line in read_lines(f):
        imid, _, variant = line.partition(" ")
        if variant not in lab:
            raise ValueError(f"{f}: variant {variant!r} is not in variants.txt")
        items.append(f"{imid}.jpg")
        labels.append(lab[variant])
    img = os.path.join(d, "images")
    return ImageSplit(
        name="fgvc_aircraft", split=split, items=items,
        paths=[os.path.join(img, i) for i in items], labels=np.array(labels, np.int64),
        classnames=classnames, root=img,
    )
