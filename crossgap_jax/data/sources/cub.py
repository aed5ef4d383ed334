"""Image source: CUB-200-2011."""

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
from crossgap_jax.data.types import DatasetLayoutError, ImageSplit

log = logging.getLogger(__name__)


CUB_SUBDIRS = ("CUB_200_2011", "cub2011", "CUB-200-2011", "cub2011/CUB_200_2011",
               "CUB_200_2011/CUB_200_2011")
CUB_FILES = ("images.txt", "image_class_labels.txt", "classes.txt")
CUB_LAYOUT = (
    "<root>/CUB_200_2011/images/<class folder>/<image>.jpg\n"
    "<root>/CUB_200_2011/images.txt             ('<image id> <relative path>')\n"
    "<root>/CUB_200_2011/image_class_labels.txt ('<image id> <class id>')\n"
    "<root>/CUB_200_2011/classes.txt            ('<class id> 001.Black_footed_Albatross')\n"
    "<root>/CUB_200_2011/train_test_split.txt   (optional, '<image id> <1 train / 0 test>')"
)


def locate_cub(root: str) -> str | None:
    for d in candidate_dirs(root, CUB_SUBDIRS):
        if all(os.path.isfile(os.path.join(d, f)) for f in CUB_FILES):
            return d
    return None


def _id_map(path: str) -> dict[str, str]:
    out = {}
    for line in read_lines(path):
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    return out


def load_cub(root: str, split: str = "all") -> ImageSplit:
    """CUB-200-2011: ``all`` (11,788 images, the paper's query and gallery), ``train``, ``test``.

    Class names drop the numeric prefix and underscores (``"Black footed Albatross"``).
    """
    d = locate_cub(root)
    if d is None:
        raise layout_error("cub2011", root, looked_for(root, CUB_SUBDIRS, CUB_FILES), CUB_LAYOUT)
    if split not in ("all", "train", "test"):
        raise bad_split("cub2011", split, ["all", "train", "test"])
    images = [ln.split(" ", 1) for ln in read_lines(os.path.join(d, "images.txt"))]
    labels = _id_map(os.path.join(d, "image_class_labels.txt"))
    classes = [ln.split(" ", 1) for ln in read_lines(os.path.join(d, "classes.txt"))]
    classes.sort(key=lambda c: int(c[0]))
    classnames = [c[1].split(".", 1)[-1].replace("_", " ") for c in classes]
    if split != "all":
        tts = os.path.join(d, "train_test_split.txt")
        if not os.path.isfile(tts):
            raise DatasetLayoutError(f"cub2011: split {split!r} needs {tts}")
        is_train = _id_map(tts)
        want = "1" if split == "train" else "0"
        images = [im for im in images if is_train[im[0]] == want]
    items = [im[1] for im in images]
    img = os.path.join(d, "images")
    return ImageSplit(
        name="cub2011", split=split, items=items, paths=[os.path.join(img, i) for i in items],
        labels=np.array([int(labels[im[0]]) - 1 for im in images], np.int64),
        classnames=classnames, root=img,
    )
