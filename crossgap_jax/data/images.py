"""Readers for the standard downloads of the image datasets of the paper.

Every reader takes the *data root* (the folder that holds one sub-folder per dataset, as
in CoOp's ``DATA`` folder; the dataset folder itself is accepted too) and a split name,
and returns an :class:`~crossgap_jax.data.core.ImageSplit` whose items are the image
paths relative to the image folder. Nothing is decoded here.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import pickle
import re
from collections.abc import Sequence

import numpy as np

from crossgap_jax.data._fs import (
    candidate_dirs,
    layout_error,
    looked_for,
    read_json,
    read_lines,
)
from crossgap_jax.data.core import DataFileError, DatasetLayoutError, ImageSplit, MissingFilesError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def _bad_split(name: str, split: str, valid: Sequence[str]) -> ValueError:
    return ValueError(f"{name}: unknown split {split!r}; valid splits: {', '.join(valid)}")


# --------------------------------------------------------------------------------------
# CoOp datasets with a split_zhou_<Name>.json file


@dataclasses.dataclass(frozen=True)
class CoopSpec:
    """Where CoOp keeps one dataset: folder names, image folder, split file."""

    name: str
    subdirs: tuple[str, ...]
    image_dir: str  # relative to the dataset folder; "" is the dataset folder itself
    split_file: str


COOP_SPECS: dict[str, CoopSpec] = {
    s.name: s
    for s in [
        CoopSpec("caltech101", ("caltech-101", "caltech101"), "101_ObjectCategories",
                 "split_zhou_Caltech101.json"),
        CoopSpec("dtd", ("dtd", "dtd/dtd"), "images", "split_zhou_DescribableTextures.json"),
        CoopSpec("eurosat", ("eurosat",), "2750", "split_zhou_EuroSAT.json"),
        CoopSpec("food101", ("food-101", "food101"), "images", "split_zhou_Food101.json"),
        CoopSpec("oxford_flowers", ("oxford_flowers", "flowers102", "oxford_flowers102"), "jpg",
                 "split_zhou_OxfordFlowers.json"),
        CoopSpec("oxford_pets", ("oxford_pets", "oxford-iiit-pet", "oxford_iiit_pet"), "images",
                 "split_zhou_OxfordPets.json"),
        CoopSpec("stanford_cars", ("stanford_cars", "stanford-cars"), "",
                 "split_zhou_StanfordCars.json"),
        CoopSpec("sun397", ("sun397",), "SUN397", "split_zhou_SUN397.json"),
        CoopSpec("ucf101", ("ucf101",), "UCF-101-midframes", "split_zhou_UCF101.json"),
    ]
}


def _coop_candidates(spec: CoopSpec, d: str) -> list[tuple[str, str]]:
    img = os.path.join(d, spec.image_dir) if spec.image_dir else d
    return [(img, os.path.join(d, spec.split_file)), (img, os.path.join(img, spec.split_file))]


def locate_coop(spec: CoopSpec, root: str) -> tuple[str, str] | None:
    """``(image_dir, split_json)`` of a CoOp dataset under ``root``, or None."""
    for d in candidate_dirs(root, spec.subdirs):
        for img, js in _coop_candidates(spec, d):
            if os.path.isfile(js) and os.path.isdir(img):
                return img, js
    return None


def coop_layout(spec: CoopSpec) -> str:
    img = spec.image_dir or "<images, paths as in the split file>"
    return (
        f"<root>/{spec.subdirs[0]}/{img}/...  (the images)\n"
        f"<root>/{spec.subdirs[0]}/{spec.split_file}  (or inside {img}/):\n"
        '  {"train"|"val"|"test": [[relative_path, label, classname], ...]}'
    )


def load_coop(spec: CoopSpec, root: str, split: str) -> ImageSplit:
    """One split of a CoOp dataset, as listed by its ``split_zhou_*.json`` file.

    Args:
        spec: the dataset's :class:`CoopSpec`.
        root: data root or dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        DatasetLayoutError: no split file / image folder under ``root``.
    """
    found = locate_coop(spec, root)
    if found is None:
        searched = "\n".join(
            f"  {js}  with images in {img}"
            for d in [root] + [os.path.join(root, s) for s in spec.subdirs]
            for img, js in _coop_candidates(spec, d)
        )
        raise layout_error(spec.name, root, searched, coop_layout(spec))
    img_dir, js = found
    data = read_json(js)
    if split not in data:
        raise _bad_split(spec.name, split, sorted(data))
    names: dict[int, str] = {}
    for part in data.values():
        for _, label, cname in part:
            if names.setdefault(int(label), cname) != cname:
                raise ValueError(f"{js}: label {label} has two class names")
    classnames = [names.get(i, f"class_{i}") for i in range(max(names) + 1)]
    rows = data[split]
    return ImageSplit(
        name=spec.name,
        split=split,
        items=[r[0] for r in rows],
        paths=[os.path.join(img_dir, r[0]) for r in rows],
        labels=np.array([int(r[1]) for r in rows], np.int64),
        classnames=classnames,
        root=img_dir,
        extra={"split_file": js},
    )


# --------------------------------------------------------------------------------------
# FGVC-Aircraft: images_variant_<split>.txt + variants.txt (CoOp reads these directly)

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
        raise _bad_split("fgvc_aircraft", split, valid)
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


# --------------------------------------------------------------------------------------
# ImageNet: CoOp's images/{train,val}/<wnid>/ + classnames.txt, or the ILSVRC folders

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


def _list_images(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(
            e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )


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
        raise _bad_split("imagenet", split, ["train", "test"])
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
            files = _list_images(os.path.join(split_dir, w))
            items += [f"{w}/{f}" for f in files]
            labels += [lab[w]] * len(files)
    else:  # the flat ILSVRC val folder: labels from LOC_val_solution.csv
        sol = _find_upwards(base, "LOC_val_solution.csv")
        if sol is None:
            raise DatasetLayoutError(
                f"imagenet: {split_dir} is flat and no LOC_val_solution.csv was found at or "
                f"above {base}\nExpected layout:\n{IMAGENET_LAYOUT}"
            )
        with open(sol, newline="") as f:
            gt = {row[0]: row[1].split()[0] for row in csv.reader(f) if row and row[0] != "ImageId"}
        for fname in _list_images(split_dir):
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


# --------------------------------------------------------------------------------------
# CUB-200-2011

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
        raise _bad_split("cub2011", split, ["all", "train", "test"])
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


# --------------------------------------------------------------------------------------
# Stanford Online Products

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
        raise _bad_split("sop", split, ["train", "test"])
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


# --------------------------------------------------------------------------------------
# Revisited Oxford / Paris (revisitop)


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
        raise _bad_split(name, split, ["query", "gallery"])
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


# --------------------------------------------------------------------------------------
# Generic: one sub-folder per class


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
    with open(path, encoding="utf-8", newline="") as f:
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
        raise _bad_split("imagefolder", split, splits)
    base = root if split == "all" else os.path.join(root, split)
    if labels is not None:
        return _annotated_split(base, split, os.path.expanduser(os.fspath(labels)))
    classes = _class_dirs(base)
    items: list[str] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        files = _list_images(os.path.join(base, c))
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
        if _list_images(sub) or any(_list_images(os.path.join(sub, x)) for x in _class_dirs(sub)):
            return root
    return None

