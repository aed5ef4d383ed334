"""Image source: Revisited Oxford / Paris (revisitop)."""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    looked_for,
)
from crossgap_jax.data.types import ImageSplit

log = logging.getLogger(__name__)


def revisitop_subdirs(name: str) -> tuple[str, ...]:
    return (name, f"datasets/{name}", f"revisitop/data/datasets/{name}",
            f"data/datasets/{name}")


def revisitop_layout(name: str) -> str:
    return (
        f"<root>/{name}/jpg/<image>.jpg\n"
        f"<root>/{name}/gnd_{name}.pkl  (revisitop: imlist, qimlist, gnd[easy/hard/junk/bbx])"
    )


def locate_revisitop(name: str, root: str) -> str | None:
    for d in candidate_dirs(root, revisitop_subdirs(name)):
        if os.path.isfile(os.path.join(d, f"gnd_{name}.pkl")) and os.path.isdir(
            os.path.join(d, "jpg")
        ):
            return d
    return None


def load_revisitop(name: str, root: str, split: str, crop_queries: bool = False) -> ImageSplit:
    """ROxford5k / RParis6k: the 70 ``query`` images or the ``gallery`` (4,993 / 6,322).

    Args:
        name: ``"roxford5k"`` or ``"rparis6k"``.
        root: data root or dataset folder.
        split: ``"query"`` or ``"gallery"``.
        crop_queries: crop each query to its bounding box (the revisitop protocol allows
            it; the paper's authors did not crop, hence the default).

    The query split carries the ground truth in ``extra["gnd"]``: per query a dict of
    ``easy``, ``hard``, ``junk`` int arrays of gallery indices (and ``bbx``). The ``.pkl``
    file is unpickled: only read files you trust.
    """
    d = locate_revisitop(name, root)
    if d is None:
        searched = looked_for(root, revisitop_subdirs(name), [f"gnd_{name}.pkl", "jpg/"])
        raise layout_error(name, root, searched, revisitop_layout(name))
    with open(os.path.join(d, f"gnd_{name}.pkl"), "rb") as f:
        cfg = pickle.load(f)
    jpg = os.path.join(d, "jpg")
    if split in ("gallery", "database", "db"):
        items = list(cfg["imlist"])
        return ImageSplit(
            name=name, split="gallery", items=items,
            paths=[os.path.join(jpg, f"{i}.jpg") for i in items], root=jpg,
        )
    if split not in ("query", "queries"):
        raise bad_split(name, split, ["query", "gallery"])
    items = list(cfg["qimlist"])
    gnd = [
        {k: np.asarray(g.get(k, []), np.int64).reshape(-1) for k in ("easy", "hard", "junk")}
        | {"bbx": np.asarray(g.get("bbx", [np.nan] * 4), np.float32)}
        for g in cfg["gnd"]
    ]
    boxes = np.stack([g["bbx"] for g in gnd]) if crop_queries else None
    return ImageSplit(
        name=name, split="query", items=items,
        paths=[os.path.join(jpg, f"{i}.jpg") for i in items], boxes=boxes, root=jpg,
        extra={"gnd": gnd, "cropped": crop_queries},
    )
