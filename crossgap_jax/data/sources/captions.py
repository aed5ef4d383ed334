"""Text source: Captions: Karpathy json, one-caption-per-line files, NoCaps (COCO-format json)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    open_text,
    read_json,
)
from crossgap_jax.data.types import TextSplit

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CaptionSpec:
    """Where the captions of one caption dataset may be found."""

    name: str
    subdirs: tuple[str, ...]
    karpathy_json: str | None  # Karpathy's dataset_<x>.json (all splits in one file)
    coco_json: Mapping[str, str]  # split -> COCO-format caption json (NoCaps)
    txt_files: Mapping[str, tuple[str, ...]]  # split -> one-caption-per-line file names
    splits: tuple[str, ...]
    captions_per_image: int | None  # default cap on captions per image (None: all)


CAPTION_SPECS: dict[str, CaptionSpec] = {
    s.name: s
    for s in [
        CaptionSpec(
            "coco_text", ("coco_karpathy", "coco", "karpathy", "coco/annotations", "data"),
            "dataset_coco.json", {},
            {"test": ("test5k_captions.txt", "testall_caps.txt", "coco_test5k_captions.txt")},
            ("test", "val", "train"), None,
        ),
        CaptionSpec(
            "flickr30k_text", ("flickr30k", "f30k", "flickr30k_karpathy", "karpathy", "data"),
            "dataset_flickr30k.json", {},
            {"val": ("val_captions.txt", "dev_caps.txt"), "test": ("test_captions.txt",
                                                                   "test_caps.txt")},
            ("val", "test", "train"), None,
        ),
        CaptionSpec(
            "nocaps_text", ("nocaps", "nocaps/annotations", "data"), None,
            {"val": "nocaps_val_4500_captions.json"}, {"val": ("val_captions.txt",)},
            ("val",), None,
        ),
    ]
}


LINES_PER_IMAGE = 5  # one-caption-per-line files: consecutive lines per image by default


def caption_layout(spec: CaptionSpec) -> str:
    lines = []
    if spec.karpathy_json:
        lines.append(f"<root>/{spec.subdirs[0]}/{spec.karpathy_json}  (Karpathy split file)")
    for split, f in spec.coco_json.items():
        lines.append(f"<root>/{spec.subdirs[0]}/{f}  (COCO-format captions, split {split})")
    for split, files in spec.txt_files.items():
        lines.append(
            f"<root>/{spec.subdirs[0]}/{{{','.join(files)}}}  (split {split}: one caption per "
            "line, consecutive lines per image)"
        )
    return "\n".join(lines)


def _caption_sources(spec: CaptionSpec, root: str, split: str) -> list[tuple[str, str]]:
    """``(kind, path)`` candidates in preference order; kind: karpathy, coco, txt."""
    out = []
    for d in candidate_dirs(root, spec.subdirs):
        if spec.karpathy_json:
            out.append(("karpathy", os.path.join(d, spec.karpathy_json)))
        if split in spec.coco_json:
            out.append(("coco", os.path.join(d, spec.coco_json[split])))
        generic = (f"{split}_captions.txt", f"{split}_caps.txt")
        for f in tuple(spec.txt_files.get(split, ())) + generic:
            out.append(("txt", os.path.join(d, f)))
    return out


def locate_captions(spec: CaptionSpec, root: str, split: str | None = None) -> str | None:
    for split_ in [split] if split else spec.splits:
        for _, path in _caption_sources(spec, root, split_):
            if os.path.isfile(path):
                return path
    return None


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _grouped_split(
    name: str, split: str, keys: list[str], caps: list[list[str]], cap: int | None, root: str,
    extra: dict | None = None,
) -> TextSplit:
    items, texts, groups = [], [], []
    for g, (key, cs) in enumerate(zip(keys, caps)):
        for k, c in enumerate(cs[:cap] if cap else cs):
            items.append(f"{key}#{k}")
            texts.append(c)
            groups.append(g)
    return TextSplit(name=name, split=split, items=items, texts=texts,
                     groups=np.array(groups, np.int64), root=root,
                     extra=dict(extra or {}, image_keys=keys))


def load_captions(
    spec: CaptionSpec,
    root: str,
    split: str,
    captions_per_image: int | None | str = "default",
    captions_file: str | None = None,
) -> TextSplit:
    """All captions of one split, grouped by image (``groups`` = image index).

    Items are ``"<image>#<k>"``: ``<image>`` is the image file stem for json sources, the
    zero-padded image index for line files; ``k`` is the caption's rank for that image.

    Args:
        spec: the dataset's :class:`CaptionSpec`.
        root: data root or dataset folder.
        split: a split of ``spec.splits``.
        captions_per_image: keep at most this many captions per image (``None``: all);
            for line files, the number of consecutive lines per image. ``"default"``:
            every caption of every image, as the authors do (some COCO images have 6 or 7
            in the Karpathy json; Flickr30k has 5, NoCaps 10); line files, which cannot
            say where an image's captions end, are read as 5 lines per image.
        captions_file: read this file instead of searching (json or txt, by extension).
    """
    if split not in spec.splits:
        raise bad_split(spec.name, split, spec.splits)
    cap = spec.captions_per_image if captions_per_image == "default" else captions_per_image
    if captions_file is not None:
        path = captions_file if os.path.isabs(captions_file) else os.path.join(root, captions_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{spec.name}: captions file not found: {path}")
        kind = "txt" if path.endswith(".txt") else None
    else:
        found = [(k, p) for k, p in _caption_sources(spec, root, split) if os.path.isfile(p)]
        if not found:
            searched = "\n".join(f"  {p}" for _, p in _caption_sources(spec, root, split))
            raise layout_error(spec.name, root, searched, caption_layout(spec))
        kind, path = found[0]
    if kind is None:
        data = read_json(path)
        kind = "coco" if "annotations" in data else "karpathy"
    else:
        data = None
    if kind == "txt":
        per = cap or LINES_PER_IMAGE
        with open_text(path) as f:
            lines = [ln.strip() for ln in f.read().splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if len(lines) % per:
            raise ValueError(f"{path}: {len(lines)} lines is not a multiple of {per} per image")
        n = len(lines) // per
        width = max(5, len(str(n - 1)))
        keys = [f"{i:0{width}d}" for i in range(n)]
        caps = [lines[i * per : (i + 1) * per] for i in range(n)]
        return _grouped_split(spec.name, split, keys, caps, per, path)
    if data is None:
        data = read_json(path)
    if kind == "karpathy":
        want = {"train": {"train", "restval"}}.get(split, {split})
        images = [im for im in data["images"] if im.get("split") in want]
        if not images:
            raise ValueError(f"{path}: no images with split {split!r}")
        keys = [_stem(im["filename"]) for im in images]
        caps = [[s["raw"].strip() for s in im["sentences"]] for im in images]
        return _grouped_split(spec.name, split, keys, caps, cap, path)
    # COCO-format (NoCaps): images + annotations
    by_image: dict[int, list[tuple[int, str]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append((a.get("id", 0), a["caption"].strip()))
    images = [im for im in data["images"] if im["id"] in by_image]
    keys = [_stem(im["file_name"]) for im in images]
    caps = [[c for _, c in sorted(by_image[im["id"]], key=lambda t: t[0])] for im in images]
    extra = {"domains": [im.get("domain") for im in images]}
    return _grouped_split(spec.name, split, keys, caps, cap, path, extra)


def first_caption_split(split: TextSplit) -> tuple[TextSplit, TextSplit]:
    """The paper's caption protocol: ``(first caption of each image, all other captions)``.

    Both halves keep ``groups`` (the image index), so relevance is "same group".
    """
    assert split.groups is not None, "captions need groups"
    first = np.ones(len(split), bool)
    first[1:] = split.groups[1:] != split.groups[:-1]
    q_idx, g_idx = np.flatnonzero(first), np.flatnonzero(~first)
    query = dataclasses.replace(split.subset(q_idx), split=f"{split.split}_queries")
    gallery = dataclasses.replace(split.subset(g_idx), split=f"{split.split}_gallery")
    return query, gallery
