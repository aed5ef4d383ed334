"""Image source: iNaturalist 2021 (mini), as IsoCLIP reads it (``train_mini``, all vs all).

IsoCLIP (``simomagi/IsoCLIP``, ``src/datasets/inaturalist2021.py``, ``src/data_utils.py``'s
``RETRIEVAL_SPLTS``) retrieves within the 500,000 images of the ``train_mini`` split
(10,000 species x 50): query split = gallery split, relevant = same ``category_id``, the
query removed from its own gallery. Its image list is the ``images`` array of
``annotations/train_mini.json`` in file order; each image's path is ``<dataset folder>/
<file_name>`` (``file_name`` = ``train_mini/<category folder>/<uuid>.jpg`` in the official
file) and its label the ``category_id`` of its annotation. IsoCLIP names this split
``train``; here it is ``train_mini`` (``train`` is the official 2.7M-image split).

Layout: the folder holding ``train_mini.json`` (or ``annotations/train_mini.json``, IsoCLIP's
place) and the image folders the ``file_name`` entries point into. ``val.json`` /
``train.json`` give the ``val`` and ``train`` splits the same way. Class names are the
categories' ``name`` (scientific name), ``_`` -> space as in every class-name prompt here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    child_ci,
    layout_error,
    looked_for,
    read_json,
)
from crossgap_jax.data.types import DataFileError, DatasetLayoutError, ImageSplit

INAT_SUBDIRS = ("iNaturalist2021_train", "inaturalist2021", "iNaturalist2021", "inat2021",
                "inaturalist", "iNaturalist")
INAT_SPLITS = ("train_mini", "val", "train")
INAT_MINI_SIZE = 500_000  # 10,000 species x 50
_JSON_DIRS = ("annotations", "")
INAT_LAYOUT = (
    "<root>/iNaturalist2021_train/annotations/train_mini.json  (IsoCLIP's place; or\n"
    "                                                           <dataset folder>/train_mini.json)\n"
    "<root>/iNaturalist2021_train/train_mini/<category folder>/<uuid>.jpg\n"
    "  (JSON in the official COCO-style format: 'images' [{id, file_name}], 'annotations'\n"
    "   [{image_id, category_id}], 'categories' [{id, name}]; file_name relative to the\n"
    "   dataset folder; val.json / train.json for the val / train splits)"
)


def _json_file(d: str, split: str) -> str | None:
    for sub in _JSON_DIRS:
        p = child_ci(d, f"{sub}/{split}.json" if sub else f"{split}.json")
        if p is not None and os.path.isfile(p):
            return p
    return None


def locate_inaturalist(root: str) -> str | None:
    """The dataset folder (the one ``file_name`` entries are relative to) holding
    ``train_mini.json`` or ``val.json`` (directly or in ``annotations/``), or None."""
    for d in candidate_dirs(root, INAT_SUBDIRS):
        if any(_json_file(d, s) for s in INAT_SPLITS):
            return d
    return None


def _records(path: str, doc: Any, key: str, fields: tuple[str, ...]) -> list[dict]:
    recs = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(recs, list):
        raise DataFileError(f"{path}: no {key!r} list (expected the iNaturalist 2021 JSON: "
                            f"'images', 'annotations', 'categories')")
    for n, r in enumerate(recs):
        if not isinstance(r, dict) or any(f not in r for f in fields):
            raise DataFileError(f"{path}: {key}[{n}] lacks {', '.join(fields)}: {r!r:.80}")
    return recs


def load_inaturalist(root: str, split: str = "train_mini") -> ImageSplit:
    """iNaturalist 2021: ``train_mini`` (500,000 images, IsoCLIP's query and gallery),
    ``val`` or ``train``.

    Items are the JSON's ``file_name`` entries in file order, ``labels`` the position of each
    image's ``category_id`` among the sorted category ids (the id itself when the ids are
    ``0..C-1``, as in the official files; ``extra["category_ids"]`` holds them), class names
    the categories' ``name``.

    Raises:
        DatasetLayoutError: no annotation JSON under ``root``, or none for ``split``.
        DataFileError: a malformed JSON (a missing list or field, an image without an
            annotation, an annotation naming an unknown category).
        ValueError: an unknown split.
    """
    d = locate_inaturalist(root)
    if d is None:
        marks = [f"{s}/{sp}.json" if s else f"{sp}.json" for s in _JSON_DIRS
                 for sp in ("train_mini", "val")]
        raise layout_error("inaturalist2021", root, looked_for(root, INAT_SUBDIRS, marks),
                           INAT_LAYOUT)
    if split not in INAT_SPLITS:
        raise bad_split("inaturalist2021", split, INAT_SPLITS)
    path = _json_file(d, split)
    if path is None:
        raise DatasetLayoutError(f"inaturalist2021: no {split}.json in {d} or "
                                 f"{os.path.join(d, 'annotations')}\nExpected layout:\n"
                                 f"{INAT_LAYOUT}")
    doc = read_json(path)
    images = _records(path, doc, "images", ("id", "file_name"))
    anns = _records(path, doc, "annotations", ("image_id", "category_id"))
    cats = _records(path, doc, "categories", ("id",))
    nameless = [im["id"] for im in images
                if not isinstance(im["file_name"], str) or not im["file_name"]]
    if nameless:
        raise DataFileError(f"{path}: {len(nameless)} entries of 'images' have no file_name "
                            f"(null or empty), e.g. image id(s) {nameless[:3]}")
    seen: set = set()
    twice = [im["id"] for im in images if im["id"] in seen or seen.add(im["id"])]
    if twice:
        raise DataFileError(f"{path}: image ids listed more than once in 'images', e.g. "
                            f"{twice[:3]} (each image needs its own id)")
    category: dict = {}
    for a in anns:
        if category.setdefault(a["image_id"], a["category_id"]) != a["category_id"]:
            raise DataFileError(f"{path}: image id {a['image_id']!r} is annotated with two "
                                f"categories ({category[a['image_id']]!r}, "
                                f"{a['category_id']!r})")
    orphans = sorted(set(category) - seen, key=str)
    if orphans:
        raise DataFileError(f"{path}: {len(orphans)} annotations name image ids absent from "
                            f"'images', e.g. {orphans[:3]}")
    unlabelled = [im["file_name"] for im in images if im["id"] not in category]
    if unlabelled:
        raise DataFileError(f"{path}: {len(unlabelled)} images have no annotation, e.g. "
                            f"{unlabelled[:3]}")
    ids = sorted(c["id"] for c in cats)
    pos = {c: i for i, c in enumerate(ids)}
    unknown = sorted({category[im["id"]] for im in images} - set(pos))
    if unknown:
        raise DataFileError(f"{path}: annotations name category ids {unknown[:5]} absent "
                            f"from 'categories'")
    by_id = {c["id"]: str(c.get("name", c["id"])) for c in cats}
    items = [str(im["file_name"]) for im in images]
    if not items:
        raise DatasetLayoutError(f"inaturalist2021: {path} lists no images")
    return ImageSplit(
        name="inaturalist2021", split=split, items=items,
        paths=[os.path.join(d, i) for i in items],
        labels=np.array([pos[category[im["id"]]] for im in images], np.int64),
        classnames=[by_id[c].replace("_", " ") for c in ids], root=d,
        extra={"category_ids": ids, "image_ids": [im["id"] for im in images]},
    )
