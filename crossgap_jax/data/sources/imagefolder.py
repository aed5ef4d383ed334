"""Image source: Generic: one sub-folder per class."""

from __future__ import annotations

import csv
import logging
import os
import re

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
    "imagefolder?labels=FILE. Class folders are walked recursively. Options (joined by &):\n"
    "label_column=K (the label is field K of each annotation line, 1 = the path),\n"
    "classnames=FILE (lines '<folder id> <name>', e.g. Tiny-ImageNet's words.txt),\n"
    "empty_classes=error|skip (a class folder without images: refuse, or leave it out)"
)
_WNID = re.compile(r"n\d{8}")
EMPTY_CLASSES = ("error", "skip")
_PATH_COLUMNS = ("path", "filename", "file", "image", "image_path", "img", "imageid")
_LABEL_COLUMNS = ("label", "class", "class_id", "classname", "category", "target")


def read_annotations(path: str, label_column: int | None = None
                     ) -> tuple[list[tuple[str, str]], str]:
    """``(image path, label)`` pairs of an annotation file, in file order, and the rule
    that took the label (in words, for reports).

    Forms: a CSV whose header names a path column (``path``, ``filename``, ``file``,
    ``image``...) and a label column (``label``, ``class``...); else whitespace-separated
    lines ``<path> <label>``. Without ``label_column`` the label is the rest of the line
    (class names may contain spaces), except in a tab-separated file whose every line has
    three or more fields (Tiny-ImageNet's ``val_annotations.txt``: ``file label x y w h``):
    there it is the second field. ``label_column=K`` takes field K (1 = the path; CSV:
    column K) of every line.

    Raises:
        FileNotFoundError: no such file.
        DataFileError: an empty file, a CSV without the needed columns, a line without a
            label (or without field ``label_column``), or a path listed twice (names
            ``path:line``).
    """
    if label_column is not None and label_column < 2:
        raise ValueError(f"imagefolder: label_column must be 2 or more (1 is the image "
                         f"path), got {label_column}")
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
        if label_column is not None:
            lcol = label_column - 1
            rule = f"CSV column {label_column} ({header[lcol] if lcol < len(header) else '?'})"
        else:
            rule = f"CSV column {header[lcol] if lcol is not None else '?'!r}"
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
        tsv = all(len(ln.strip().split("\t")) >= 3 for _, ln in body)
        col = label_column or (2 if tsv else None)
        rule = ("the rest of each line after the path" if col is None else
                f"field {col} of each {'tab' if tsv else 'whitespace'}-separated line")
        for n, ln in body:
            if col is None:
                parts = ln.strip().split(None, 1)
            else:
                fields = [f.strip() for f in (ln.strip().split("\t") if tsv else ln.split())]
                parts = [fields[0], fields[col - 1]] if len(fields) >= col else []
            if len(parts) != 2 or not parts[1].strip():
                want = "'<path> <label>'" if col is None else f"at least {col} fields"
                raise DataFileError(f"{path}:{n}: expected {want}: {ln[:80]!r}")
            out.append((parts[0], parts[1].strip()))
    seen: dict[str, int] = {}
    for n, (p, _) in enumerate(out):
        if p in seen:
            raise DataFileError(f"{path}: image {p!r} is listed twice")
        seen[p] = n
    if not out:
        raise DataFileError(f"{path}: no annotations after the header")
    return out, rule


def read_classnames(path: str) -> dict[str, str]:
    """``{folder id: readable name}`` of a class-name file.

    Lines ``<id> <name...>`` (whitespace after the id; Tiny-ImageNet's ``words.txt`` and
    ImageNet's ``LOC_synset_mapping.txt``). The name is the first comma-separated synonym
    of the rest of the line (``"dog, domestic dog, Canis familiaris"`` -> ``"dog"``).

    Raises:
        FileNotFoundError: no such file.
        DataFileError: a line without a name, or an id listed twice with other names.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"imagefolder: class-name file not found: {path}")
    out: dict[str, str] = {}
    with open_text(path) as f:
        for n, ln in enumerate(f, 1):
            if not ln.strip():
                continue
            parts = ln.strip().split(None, 1)
            name = parts[1].split(",")[0].strip() if len(parts) == 2 else ""
            if not name:
                raise DataFileError(f"{path}:{n}: expected '<id> <name>': {ln.strip()[:80]!r}")
            if out.setdefault(parts[0], name) != name:
                raise DataFileError(f"{path}:{n}: id {parts[0]!r} listed twice with other "
                                    f"names ({out[parts[0]]!r}, {name!r})")
    return out


def readable_classnames(ids: list[str], classnames_file: str | None) -> list[str]:
    """The class names of the folder / label ids ``ids``: from ``classnames_file`` when
    given (names shared by two ids get the id appended: ``"crane (n02012849)"``), else the
    ids themselves, with a warning when they look like WordNet ids (``n03444034``: zero-shot
    prompts would read "a photo of a n03444034.").

    Raises:
        DataFileError: ids without a name in the file.
    """
    if classnames_file is None:
        if ids and all(_WNID.fullmatch(c) for c in ids):
            log.warning("imagefolder: the %d class names look like WordNet ids (e.g. %s): "
                        "zero-shot prompts would read 'a photo of a %s.'; give readable names "
                        "with imagefolder?classnames=FILE (lines '<id> <name>', e.g. "
                        "Tiny-ImageNet's words.txt)", len(ids), ids[0], ids[0])
        return list(ids)
    names = read_classnames(os.path.expanduser(classnames_file))
    lost = [c for c in ids if c not in names]
    if lost:
        raise DataFileError(f"{classnames_file}: no name for {len(lost)} of {len(ids)} classes "
                            f"(e.g. {lost[:3]}); lines must be '<id> <name>' with the class "
                            f"folder (or label) as id")
    out = [names[c] for c in ids]
    dup = {n for n in out if out.count(n) > 1}
    return [f"{n} ({c})" if n in dup else n for c, n in zip(ids, out)]


def _all_images(base: str) -> list[str]:
    """Every image under ``base`` (recursive), as sorted ``/``-joined relative paths."""
    out = []
    for dp, dns, fns in os.walk(base):
        dns[:] = sorted(d for d in dns if not d.startswith("."))
        rel = os.path.relpath(dp, base)
        out += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                for f in fns if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(out)


def _annotated_split(base: str, split: str, labels_file: str, label_column: int | None,
                     classnames_file: str | None) -> ImageSplit:
    """The images of ``base`` listed in ``labels_file`` with their labels."""
    ann, rule = read_annotations(labels_file, label_column)
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
        ids = [str(i) for i in range(max(ints) + 1)]
    else:
        ids = sorted(set(raw))
        pos = {c: i for i, c in enumerate(ids)}
        ints = [pos[x] for x in raw]
    classnames = readable_classnames(ids, classnames_file)
    distinct = len(set(raw))
    log.info("imagefolder: %s: label = %s: %d distinct labels for %d images", labels_file,
             rule, distinct, len(raw))
    if len(raw) >= 4 and distinct > len(raw) / 2:
        log.warning("imagefolder: %s: label = %s gives %d distinct labels for %d images "
                    "(%.2f per image): is the label another column? choose it with "
                    "imagefolder?labels=FILE&label_column=K", labels_file, rule, distinct,
                    len(raw), distinct / len(raw))
    order = np.argsort(np.array(items, dtype=object), kind="stable")
    items = [items[i] for i in order]
    labels = np.array(ints, np.int64)[order]
    return ImageSplit(
        name="imagefolder", split=split, items=items, paths=[os.path.join(base, i) for i in items],
        labels=labels, classnames=classnames, root=base,
        extra={"labels_file": os.path.abspath(labels_file), "label_rule": rule,
               "distinct_labels": distinct},
    )


def _class_dirs(folder: str) -> list[str]:
    return sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e))
                  and not e.startswith("."))


def imagefolder_splits(folder: str) -> list[str]:
    """The splits of a generic image folder: its split sub-folders, else ``["all"]``."""
    subs = _class_dirs(folder)
    splits = [s for s in subs if s in ("train", "val", "test", "query", "gallery")]
    return splits if splits else ["all"]


def labels_owner(root: str, labels: str | os.PathLike | None) -> str | None:
    """The split whose folder holds the annotation file ``labels`` (Tiny-ImageNet's
    ``val/val_annotations.txt`` -> ``"val"``), or None (no file, or one outside every split
    folder: it then labels every split)."""
    if labels is None or not os.path.isdir(root):
        return None
    path = os.path.abspath(os.path.expanduser(os.fspath(labels)))
    for s in imagefolder_splits(root):
        folder = os.path.abspath(os.path.join(root, s))
        if s != "all" and os.path.commonpath([path, folder]) == folder:
            return s
    return None


def default_task_splits(splits: list[str], query: str | None = None,
                        gallery: str | None = None, labelled: str | None = None
                        ) -> tuple[str, str]:
    """The query and gallery splits of a retrieval task on an image folder with split
    sub-folders ``splits``: ``query``/``gallery``, else ``test`` or ``val`` against ``train``
    (CoOp's and ImageNet's convention: the labelled held-out split queries the training
    images), else the one split against itself. ``labelled``: the split an annotation file
    labels (:func:`labels_owner`) is the default query split. A query split given alone is
    searched against ``train`` when there is one (and it is not ``train``), else against
    itself."""
    if query is None and labelled is not None:
        query = labelled
    if query is None:
        if "query" in splits and "gallery" in splits:
            query, default = "query", "gallery"
        elif "train" in splits and ("test" in splits or "val" in splits):
            query, default = ("test" if "test" in splits else "val"), "train"
        else:
            query = default = splits[0] if len(splits) == 1 else "all"
    else:
        default = "train" if "train" in splits and query != "train" else query
    return query, gallery or default


def load_imagefolder(root: str, split: str = "all", labels: str | None = None, *,
                     label_column: int | str | None = None, classnames: str | None = None,
                     empty_classes: str = "error") -> ImageSplit:
    """A folder with one sub-folder per class (labels in sorted folder order), or images
    with their labels in an annotation file.

    Args:
        root: the folder itself (not a data root).
        split: ``"all"`` for ``<root>/<class>/``, or the name of a split sub-folder
            ``<root>/<split>/<class>/``.
        labels: an annotation file (see :func:`read_annotations`) giving each image's
            label; then the folder structure carries no labels (e.g. a validation split
            whose images sit in one folder). A file inside a split folder labels that
            split only (Tiny-ImageNet: ``val/val_annotations.txt`` labels ``val``, while
            ``train`` keeps its class folders); elsewhere it labels every split.
            Relative paths are resolved against the split folder, else matched by file
            name.
        label_column: with ``labels``: the field (1 = path) or CSV column holding the
            label (see :func:`read_annotations`).
        classnames: a class-name file (see :func:`read_classnames`): readable names of the
            class folders (or labels). Without it, folder names that look like WordNet
            ids draw a warning.
        empty_classes: a class folder with no image (even in sub-folders): ``"error"``
            (default: refuse, naming it) or ``"skip"`` (leave it out, with a warning).

    Each class folder is walked recursively (as torchvision's ``ImageFolder``): images in
    its sub-folders belong to the class (counted in ``extra["from_subfolders"]``).

    Raises:
        DatasetLayoutError: no such folder, no images, or an empty class folder.
        DataFileError: a malformed annotation file.
        MissingFilesError: annotated images that are not on disk.
    """
    if not os.path.isdir(root):
        raise DatasetLayoutError(f"imagefolder: {root} is not a folder\n{IMAGEFOLDER_LAYOUT}")
    splits = imagefolder_splits(root)
    if split not in splits:
        raise bad_split("imagefolder", split, splits)
    base = root if split == "all" else os.path.join(root, split)
    column = _column(label_column)
    if empty_classes not in EMPTY_CLASSES:
        raise ValueError(f"imagefolder: empty_classes must be one of {EMPTY_CLASSES}, got "
                         f"{empty_classes!r}")
    owner = labels_owner(root, labels)
    if owner is not None and owner != split:
        # an annotation file inside another split's folder labels that split only (e.g.
        # Tiny-ImageNet's val/val_annotations.txt): this split keeps its class folders
        labels = column = None
    if labels is not None:
        return _annotated_split(base, split, os.path.expanduser(os.fspath(labels)), column,
                                classnames)
    if column is not None:
        raise ValueError("imagefolder: label_column needs labels=FILE (an annotation file)")
    found = {c: _all_images(os.path.join(base, c)) for c in _class_dirs(base)}
    empty = [c for c, files in found.items() if not files]
    if empty and any(found.values()):
        where = ", ".join(os.path.join(base, c) for c in empty[:5])
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        if empty_classes == "error":
            raise DatasetLayoutError(
                f"imagefolder: {len(empty)} class folder(s) hold no image: {where}{more}; "
                f"they would enter the classifier as classes without images. Remove them, or "
                f"leave them out with imagefolder?empty_classes=skip")
        log.warning("imagefolder: %d class folder(s) without images left out "
                    "(empty_classes=skip): %s%s", len(empty), where, more)
    classes = [c for c, files in found.items() if files]
    items: list[str] = []
    ints: list[int] = []
    for k, c in enumerate(classes):
        items += [f"{c}/{f}" for f in found[c]]
        ints += [k] * len(found[c])
    if not items:
        raise DatasetLayoutError(f"imagefolder: no images under {base}\n{IMAGEFOLDER_LAYOUT}")
    nested = sum(f.count("/") > 1 for f in items)
    if nested:
        log.info("imagefolder: %d of %d images of %s come from sub-folders of class folders",
                 nested, len(items), base)
    return ImageSplit(
        name="imagefolder", split=split, items=items, paths=[os.path.join(base, i) for i in items],
        labels=np.array(ints, np.int64), classnames=readable_classnames(classes, classnames),
        root=base, extra={"from_subfolders": nested, "empty_classes_skipped": empty},
    )


def _column(value: int | str | None) -> int | None:
    """``label_column`` as an int (it arrives as text from a dataset name)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"imagefolder: label_column must be a field number (2 for "
                         f"'<path> <label> ...'), got {value!r}") from None


def find_imagefolder(root: str) -> str | None:
    """``root`` if it looks like an image folder (class sub-folders with images)."""
    if not os.path.isdir(root):
        return None
    for c in _class_dirs(root)[:3]:
        sub = os.path.join(root, c)
        if list_images(sub) or any(list_images(os.path.join(sub, x)) for x in _class_dirs(sub)):
            return root
    return None
