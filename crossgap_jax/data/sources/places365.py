"""Image source: Places365-Standard, as IsoCLIP reads it (its validation images, all vs all).

IsoCLIP (``simomagi/IsoCLIP``, ``src/datasets/places365.py`` and ``src/data_utils.py``'s
``RETRIEVAL_SPLTS``) retrieves within the 36,500 validation images (365 scenes x 100):
query split = gallery split = ``val``, relevant = same scene label, the query removed from
its own gallery. Its image list is the sorted listing of ``Places365_val_*.jpg`` in the flat
``val_large/`` folder, each label read from ``places365_val.txt`` (``"<file> <label>"``).

Two layouts are read:

* the official archives (IsoCLIP's, torchvision's): a flat ``val_large/`` or ``val_256/``
  folder beside ``places365_val.txt`` (or with it in ``filelist_places365-standard/``); the
  ``train`` split from ``places365_train_standard.txt`` (``"/a/airfield/00000001.jpg 0"``)
  and ``data_large/`` or ``data_256/``;
* the "easy format" (``places365_standard/{train,val}/<category>/*.jpg``): labels from
  ``categories_places365.txt`` when it is found (each folder matched to its category),
  else the sorted folder names.

Class names come from ``categories_places365.txt`` (``"/a/apartment_building/outdoor 8"``
-> ``"apartment building outdoor"``) when found; IsoCLIP itself never uses them.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    child_ci,
    layout_error,
    list_images,
    looked_for,
    read_lines,
)
from crossgap_jax.data.types import DataFileError, DatasetLayoutError, ImageSplit

log = logging.getLogger(__name__)

PLACES_SUBDIRS = ("Places365_val", "places365", "Places365", "places365_standard",
                  "places365/places365_standard")
PLACES_SPLITS = ("val", "train")
PLACES_VAL_SIZE = 36_500  # 365 scenes x 100 (IsoCLIP checks this count)
_FILELIST_DIRS = ("", "filelist_places365-standard", "filelist_places365_standard", "meta")
_IMAGE_DIRS = {"val": ("val_large", "val_256"), "train": ("data_large", "data_256")}
_LIST_FILES = {"val": "places365_val.txt", "train": "places365_train_standard.txt"}
PLACES_LAYOUT = (
    "official (IsoCLIP's):  <root>/Places365_val/val_large/Places365_val_00000001.jpg ...\n"
    "                       <root>/Places365_val/places365_val.txt ('<file> <label>' lines)\n"
    "  (val_256/ for the small images; the list files may sit in filelist_places365-standard/;\n"
    "   train: places365_train_standard.txt + data_large/ or data_256/)\n"
    "easy format:           <root>/places365_standard/{val,train}/<category>/<image>.jpg\n"
    "optional:              categories_places365.txt ('/a/airfield 0' lines; class names)"
)


_WARNED: set[tuple[str, ...]] = set()  # (image folder, split, what): warned in this process


def _warn_once(key: tuple[str, ...], msg: str, *args: object) -> None:
    """Log a layout warning once per image folder, split and kind in this process (one
    ``compare`` run loads the split several times)."""
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg, *args)


def _find_file(d: str, name: str) -> str | None:
    for sub in _FILELIST_DIRS:
        p = child_ci(d, f"{sub}/{name}" if sub else name)
        if p is not None and os.path.isfile(p):
            return p
    return None


def _image_dir(d: str, split: str) -> str | None:
    for name in _IMAGE_DIRS[split]:
        p = child_ci(d, name)
        if p is not None and os.path.isdir(p):
            return p
    return None


def _easy_dir(d: str, split: str) -> str | None:
    p = child_ci(d, split)
    if p is None or not os.path.isdir(p):
        return None
    with os.scandir(p) as it:
        return p if any(e.is_dir() for e in it) else None


def locate_places365(root: str) -> str | None:
    """The folder holding ``places365_val.txt`` with ``val_large/`` (or ``val_256/``), or the
    easy format's ``val/<category>/`` folders, under ``root``; else None."""
    for d in candidate_dirs(root, PLACES_SUBDIRS):
        if _find_file(d, _LIST_FILES["val"]) and _image_dir(d, "val"):
            return d
        if _easy_dir(d, "val") and (_find_file(d, "categories_places365.txt")
                                    or os.path.basename(d).lower() == "places365_standard"):
            return d
    return None


def _categories(d: str) -> list[str] | None:
    """The category paths of ``categories_places365.txt`` indexed by label, or None."""
    f = _find_file(d, "categories_places365.txt")
    if f is None:
        return None
    rows = [ln.rsplit(maxsplit=1) for ln in read_lines(f)]
    bad = [r for r in rows if len(r) != 2 or not r[1].isdigit()]
    if bad:
        raise DataFileError(f"{f}: expected '<category path> <label>' lines, got {bad[0]!r}")
    by_label = {int(r[1]): r[0] for r in rows}
    if sorted(by_label) != list(range(len(by_label))):
        raise DataFileError(f"{f}: labels must be 0..{len(by_label) - 1}, each once")
    return [by_label[i] for i in range(len(by_label))]


def _readable(category: str) -> str:
    """``"/a/apartment_building/outdoor"`` -> ``"apartment building outdoor"``."""
    parts = category.strip("/").split("/")
    if len(parts) > 1 and len(parts[0]) == 1:  # the leading initial folder
        parts = parts[1:]
    return " ".join(parts).replace("_", " ")


def _easy_key(category: str) -> str:
    """The easy format's folder name of a category path (``apartment_building-outdoor``)."""
    parts = category.strip("/").split("/")
    if len(parts) > 1 and len(parts[0]) == 1:
        parts = parts[1:]
    return "-".join(parts)


def _from_list(d: str, split: str, list_file: str, img_dir: str) -> tuple[list[str], list[int]]:
    labels: dict[str, int] = {}
    for n, line in enumerate(read_lines(list_file), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataFileError(f"{list_file}:{n}: expected '<file> <label>', got {line!r}")
        labels[parts[0].lstrip("/")] = int(parts[1])
    if split == "val":  # IsoCLIP: the sorted folder listing, each image with its label
        items = [f for f in list_images(img_dir)
                 if f.startswith("Places365_val_") and f.lower().endswith(".jpg")]
        unlabelled = [f for f in items if f not in labels]
        if unlabelled:
            raise DataFileError(
                f"{list_file}: {len(unlabelled)} images of {img_dir} have no label, e.g. "
                f"{unlabelled[:3]}; is the list file the one of this image folder?")
        missing = len(labels) - len(items)
        if missing > 0:
            _warn_once((img_dir, split, "missing"),
                       "places365: %d images listed in %s are not in %s (left out)",
                       missing, list_file, img_dir)
        if len(items) != PLACES_VAL_SIZE:
            _warn_once((img_dir, split, "size"),
                       "places365/val: %d images, IsoCLIP's protocol has %d",
                       len(items), PLACES_VAL_SIZE)
    else:
        items = list(labels)
    return items, [labels[i] for i in items]


def _from_easy(split_dir: str, categories: list[str] | None) -> tuple[list[str], list[int],
                                                                      list[str]]:
    folders = sorted(e for e in os.listdir(split_dir)
                     if os.path.isdir(os.path.join(split_dir, e)) and not e.startswith("."))
    if categories is None:
        keys = folders
    else:
        keys = [_easy_key(c) for c in categories]
        unknown = sorted(set(folders) - set(keys))
        if unknown:
            raise DataFileError(
                f"places365: folders {unknown[:3]} of {split_dir} match no category of "
                f"categories_places365.txt (expected names such as {keys[0]!r})")
    pos = {k: i for i, k in enumerate(keys)}
    items: list[str] = []
    labels: list[int] = []
    for f in folders:
        files = list_images(os.path.join(split_dir, f))
        items += [f"{f}/{x}" for x in files]
        labels += [pos[f]] * len(files)
    return items, labels, categories if categories is not None else keys


def load_places365(root: str, split: str = "val") -> ImageSplit:
    """Places365-Standard: ``val`` (36,500 images, IsoCLIP's query and gallery) or ``train``.

    Items are file names relative to the split's image folder (official layout) or
    ``<category>/<file>`` (easy format); ``labels`` the 0-based scene labels of the list
    file (official) or ``categories_places365.txt``; ``extra["categories"]`` the category
    paths when known.

    Raises:
        DatasetLayoutError: no Places365 layout under ``root``, or the split's folder or
            list file is missing.
        DataFileError: a malformed list / categories file, an image without a label.
        ValueError: an unknown split.
    """
    d = locate_places365(root)
    if d is None:
        marks = [f"{_LIST_FILES['val']} + val_large/", "val/<category>/"]
        raise layout_error("places365", root, looked_for(root, PLACES_SUBDIRS, marks),
                           PLACES_LAYOUT)
    if split not in PLACES_SPLITS:
        raise bad_split("places365", split, PLACES_SPLITS)
    categories = _categories(d)
    list_file, img_dir = _find_file(d, _LIST_FILES[split]), _image_dir(d, split)
    if list_file and img_dir:
        items, labels = _from_list(d, split, list_file, img_dir)
        names = categories
        n_classes = len(categories) if categories else (max(labels) + 1 if labels else 0)
        if labels and (min(labels) < 0 or max(labels) >= n_classes):
            raise DataFileError(f"{list_file}: labels must lie in 0..{n_classes - 1}")
        root_dir = img_dir
    elif (easy := _easy_dir(d, split)) is not None:
        items, labels, names = _from_easy(easy, categories)
        root_dir = easy
    else:
        want = (f"{_LIST_FILES[split]} with {' or '.join(_IMAGE_DIRS[split])}/, "
                f"or {split}/<category>/")
        raise DatasetLayoutError(f"places365: split {split!r} not found in {d}: expected "
                                 f"{want}\nExpected layout:\n{PLACES_LAYOUT}")
    if not items:
        raise DatasetLayoutError(f"places365: no images for split {split!r} in {root_dir}")
    classnames = [_readable(c) for c in names] if names else None
    return ImageSplit(
        name="places365", split=split, items=items,
        paths=[os.path.join(root_dir, i) for i in items],
        labels=np.array(labels, np.int64), classnames=classnames, root=root_dir,
        extra={"categories": categories} if categories else {},
    )
