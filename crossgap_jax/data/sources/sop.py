"""Image source: Stanford Online Products."""

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


SOP_SUBDIRS = ("Stanford_Online_Products", "sop", "stanford_online_products")
SOP_LAYOUT = (
    "<root>/Stanford_Online_Products/Ebay_{train,test}.txt\n"
    "  (header 'image_id class_id super_class_id path', then one line per image)\n"
    "<root>/Stanford_Online_Products/<super class>_final/<image>.JPG"
)


def locate_sop(root: str) -> str | None:
    for d in candidate_dirs(root, SOP_SUBDIRS):
        if os.path.isfile(os.path.join(d, "Ebay_test.txt")) or os.path.isfile(
            os.path.join(d, "Ebay_train.txt")
        ):
            return d
    return None


def load_sop(root: str, split: str = "test") -> ImageSplit:
    """Stanford Online Products: ``test`` (60,502 images, 11,316 products) or ``train``.

    ``labels`` are the product (class) ids as in the file, ``groups`` the 0-based super
    class ids; ``classnames`` is None (products have no names), the super class names are
    in ``extra["superclass_names"]``.
    """
    d = locate_sop(root)
    if d is None:
        searched = looked_for(root, SOP_SUBDIRS, ["Ebay_test.txt", "Ebay_train.txt"])
        raise layout_error("sop", root, searched, SOP_LAYOUT)
    f = os.path.join(d, f"Ebay_{split}.txt")
    if split not in ("train", "test") or not os.path.isfile(f):
        raise bad_split("sop", split, ["train", "test"])
    lines = read_lines(f)
    if lines and not lines[0].split()[0].isdigit():
        lines = lines[1:]  # header
    rows = [ln.split() for ln in lines]
    items = [r[3] for r in rows]
    supers: dict[int, str] = {}
    for r in rows:
        supers.setdefault(int(r[2]) - 1, r[3].split("/")[0].removesuffix("_final"))
    return ImageSplit(
        name="sop", split=split, items=items, paths=[os.path.join(d, i) for i in items],
        labels=np.array([int(r[1]) for r in rows], np.int64),
        groups=np.array([int(r[2]) - 1 for r in rows], np.int64), root=d,
        extra={"superclass_names": [supers[k] for k in sorted(supers)]},
    )
