"""Image source: Generic: one sub-folder per class."""

from __future__ import annotations

import csv
import logging
import os

import numpy as np

from crossgap_jax.data._fs import (
    IMAGE_EXTENSIONS,
    bad_split,
    list_images,
    open_text,
)
from crossgap_jax.data.types import DataFileError, DatasetLayoutError, ImageSplit, MissingFilesError

log = logging.getLogger(__name__)


IMAGEFOLDER_LAYOUT = (
    "<folder>/<class name>/<image>  (split 'all'), or\n"
    "<folder>/<split>/<class name>/<image>  (e.g. train/ and test/), or\n"
    "images anywhere under <folder> (or <folder>/<split>/) with labels=FILE, an annotation\n"
    "file: lines '<path> <label>' (whitespace-separated), or a CSV with a header naming a\n"
    "path column (path, filename, file, image) and a label column (label, class);\n"
    "paths are relative to the split folder (or bare file names). In a dataset name:\n"
    "imagefolder?labels=FILE"
)
_PATH_COLUMNS = ("path", "filename", "file", "image", "image_path", "img", "imageid")
_LABEL_COLUMNS = ("label", "class", "class_id", "classname", "category", "target")


def read_annotations(path: str) -> list[tuple[str, str]]:
    """``(image path, label)`` pairs of an annotation file, in file order.

    Forms: a CSV whose header names a path column (``path``, ``filename``, ``file``,
    ``image``...) and a label column (``label``, ``class``...); else whitespace-separated
    lines ``<path> <label>`` (the label is the rest of the line, so class names may
    contain spaces).

    Raises:
        FileNotFoundError: no such file.
        DataFileError: an empty file, a CSV without the needed columns, a line without a
            label, or a path listed twice (names ``path:line``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"imagefolder: annotation file not found: {path}")
    with open_text(path, newline="") as f:
        lines = f.read().splitlines()
    body = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
    if not body:
        raise DataFileError(f"{path}: the annotation file is empty (expected lines "
                            f"'<path> <label>' or a CSV path,label)")
    out: list[tuple[str, str]] = []
    first = body[0][1]
    if "," in first and "\t" not in first:
        header = [h.strip().lower() for h in next(csv.reader([first]))]
        pcol = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
        lcol = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
        if pcol is None or lcol is None:
            raise DataFileError(
                f"{path}:1: a CSV annotation file needs a header with a path column "
                f"({', '.join(_PATH_COLUMNS)}) and a label column "
                f"({', '.join(_LABEL_COLUMNS)}); found {header}")
        for n, ln in body[1:]:
            row = next(csv.reader([ln]))
            if len(row) <= max(pcol, lcol) or not row[pcol].strip() or not row[lcol].strip():
                raise DataFileError(f"{path}:{n}: expected {len(header)} CSV fields with a "
                                    f"path and a label: {ln[:80]!r}")
            out.append((row[pcol].strip(), row[lcol].strip()))
    else:
        for n, ln in body:
            parts = ln.strip().split(None, 1)
            if len(parts) != 2:
                raise DataFileError(f"{path}:{n}: expected '<path> <label>': {ln[:80]!r}")
            out.append((parts[0], parts[1].strip()))
    seen: dict[str, int] = {}
    for n, (p, _) in enumerate(out):
        if p in seen:
            raise DataFileError(f"{path}: image {p!r} is listed twice")
        seen[p] = n
    if not out:
        raise DataFileError(f"{path}: no annotations after the header")
    return out


def _all_images(base: str) -> list[str]:
    """Every image under ``base`` (recursive), as sorted ``/``-joined relative paths."""
    out = []
    for dp, dns, fns in os.walk(base):
        dns[:] = sorted(d for d in dns if not d.startswith("."))
        rel = os.path.relpath(dp, base)
        out += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                for f in fns if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(out)


def _annotated_split(base: str, split: str, labels_file: str) -> ImageSplit:
    """The images of ``base`` listed in ``labels_file`` with their labels."""
    ann = read_annotations(labels_file)
    on_disk = _all_images(base)
    rel = set(on_disk)
    by_name: dict[str, list[str]] = {}
    for r in on_disk:
        by_name.setdefault(r.rsplit("/", 1)[-1], []).append(r)
    items, raw, missing = [], [], []
    for p, lab in ann:
        key = p.replace("\\", "/")
        key = key[2:] if key.startswith("./") else key
        if key not in rel:  # a bare file name (with or without its extension)
            cands = by_name.get(key, []) or [
                c for ext in IMAGE_EXTENSIONS + (".JPEG", ".JPG", ".PNG")
                for c in by_name.get(key + ext, [])]
            if len(cands) != 1:
                missing.append(p)
                continue
            key = cands[0]
        items.append(key)
        raw.append(lab)
    if missing:
        raise MissingFilesError(
            f"imagefolder: {len(missing)} of {len(ann)} images listed in {labels_file} are not "
            f"under {base} (e.g. {missing[:3]}); paths must be relative to {base} or bare "
            f"file names")
    unlisted = len(on_disk) - len(set(items))
    if unlisted:
        logging.getLogger(__name__).warning(
            "imagefolder: %d images under %s are not in %s and are left out", unlisted, base,
            labels_file)
    if all(x.lstrip("-").isdigit() for x in raw):
        ints = [int(x) for x in raw]
        classnames = [str(i) for i in range(max(ints) + 1)]
    else:
        classnames = sorted(set(raw))
        pos = {c: i for i, c in enumerate(classnames)}
        ints = [pos[x] for x in raw]
    order = np.argsort(np.array(items, dtype=object), kind="stable")
    items = [items[i] for i in order]
    labels = np.array(ints, np.int64)[order]
    return ImageSplit(
        name="imagefolder", split=split, items=items, paths=[os.path.join(base, i) for i in items],
        labels=labels, classnames=classnames, root=base,
        extra={"labels_file": os.path.abspath(labels_file)},
    )


def _class_dirs(folder: str) -> list[str]:
    return sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e))
                  and not e.startswith("."))


def imagefolder_splits(folder: str) -> list[str]:
    """The splits of a generic image folder: its split sub-folders, else ``["all"]``."""
    subs = _class_dirs(folder)
    splits = [s for s in subs if s in ("train", "val", "test", "query", "gallery")]
    return splits if splits else ["all"]


def load_imagefolder(root: str, split: str = "all", labels: str | None = None) -> ImageSplit:
    """A folder with one sub-folder per class (labels in sorted folder order), or images
    with their labels in an annotation file.

    Args:
        root: the folder itself (not a data root).
        split: ``"all"`` for ``<root>/<class>/``, or the name of a split sub-folder
            ``<root>/<split>/<class>/``.
        labels: an annotation file (see :func:`read_annotations`) giving each image's
            label; then the folder structure carries no labels (e.g. a validation split
            whose images sit in one folder). Relative paths are resolved against the split
            folder, else matched by file name.

    Raises:
        DatasetLayoutError: no such folder, or no images.
        DataFileError: a malformed annotation file.
        MissingFilesError: annotated images that are not on disk.
    """
    if not os.path.isdir(root):
        raise DatasetLayoutError(f"imagefolder: {root} is not a folder\n{IMAGEFOLDER_LAYOUT}")
    splits = imagefolder_splits(root)
    if split not in splits:
        raise bad_split("imagefolder", split, splits)
    base = root if split == "all" else os.path.join(root, split)
    if labels is not None:
        return _annotated_split(base, split, os.path.expanduser(os.fspath(labels)))
    classes = _class_dirs(base)
    items: list[str] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        files = list_images(os.path.join(base, c))
        items += [f"{c}/{f}" for f in files]
        labels += [k] * len(files)
    if not items:
        raise DatasetLayoutError(f"imagefolder: no images under {base}\n{IMAGEFOLDER_LAYOUT}")
    return ImageSplit(
        name="imagefolder", split=split, items=items, paths=[os.path.join(base, i) for i in items],
        labels=np.array(labels, np.int64), classnames=classes, root=base,
    )


def find_imagefolder(root: str) -> str | None:
    """``root`` if it looks like an image folder (class sub-folders with images)."""
    if not os.path.isdir(root):
        return None
    for c in _class_dirs(root)[:3]:
        sub = os.path.join(root, c)
        if list_images(sub) or any(list_images(os.path.join(sub, x)) for x in _class_dirs(sub)):
            return root
    return None
