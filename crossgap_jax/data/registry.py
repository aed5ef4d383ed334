"""The dataset registry: every dataset of the paper by the authors' names, and its protocol.

Example::

    import crossgap_jax.data as cgd
    split = cgd.get_dataset("caltech101", root, "test")      # an ImageSplit
    task = cgd.get_task("coco_text", root)                    # a RetrievalTask
    [e.name for e in cgd.list_datasets(root) if e.found]      # what is under root

``root`` is the data root (one sub-folder per dataset, CoOp style; the dataset folder
itself is accepted too) and defaults to ``$CROSSGAP_SHARED_DATA``. ``tfds:<name>``
reads a prepared tensorflow-datasets ``data_dir`` instead (``root`` is the data dir).
The generic ``imagefolder``, ``jsonl`` and ``beir`` entries take the dataset folder (or
file) itself as ``root``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

from crossgap_jax.data import images as im
from crossgap_jax.data import texts as tx
from crossgap_jax.data._fs import layout_error, looked_for, resolve_root
from crossgap_jax.data.core import (
    DatasetLayoutError,
    ImageSplit,
    RetrievalTask,
    Split,
    TextSplit,
)
from crossgap_jax.data.tfds_backend import PREFIX as TFDS_PREFIX
from crossgap_jax.data.tfds_backend import TFDS_DEFAULTS, load_tfds

Protocol = Literal["label", "captions", "class_queries", "qrels", "revisitop"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about one dataset.

    Attributes:
        name: registry name (the authors' name).
        modality: ``"image"`` or ``"text"``.
        splits: split names accepted by :func:`get_dataset`.
        query_split: the paper's default query split.
        gallery_split: the paper's default gallery split.
        protocol: how :func:`get_task` builds the task: ``"label"`` (same class),
            ``"captions"`` (first caption of each image vs the other captions),
            ``"class_queries"`` (class-description queries vs labelled documents),
            ``"qrels"`` (queries vs corpus), ``"revisitop"`` (Easy/Medium/Hard).
        layout: the expected files and folders, for messages and docs.
        description: one line.
        load: ``load(root, split, **options) -> ImageSplit | TextSplit``.
        locate: ``locate(root) -> path | None``: where the dataset is under ``root``.
        generic: True for ``imagefolder``/``jsonl``/``beir`` (root = the dataset itself).
    """

    name: str
    modality: Literal["image", "text"]
    splits: tuple[str, ...]
    query_split: str
    gallery_split: str
    protocol: Protocol
    layout: str
    description: str
    load: Callable[..., Split]
    locate: Callable[[str], str | None]
    generic: bool = False

    @property
    def exclude_self(self) -> bool:
        """Whether queries are removed from their own gallery (query split == gallery split)."""
        return self.protocol == "label" and self.query_split == self.gallery_split


class DatasetEntry(NamedTuple):
    """A row of :func:`list_datasets`."""

    name: str
    modality: str
    query_split: str
    gallery_split: str
    protocol: str
    found: str | None  # where the dataset was found under the root, or None


_REGISTRY: dict[str, DatasetInfo] = {}

ALIASES: dict[str, str] = {
    "cub": "cub2011", "cub200": "cub2011", "caltech-101": "caltech101", "food-101": "food101",
    "flowers102": "oxford_flowers", "oxford_flowers102": "oxford_flowers",
    "oxford_iiit_pet": "oxford_pets", "fgvc-aircraft": "fgvc_aircraft",
    "stanford_online_products": "sop", "coco": "coco_text", "flickr30k": "flickr30k_text",
    "nocaps": "nocaps_text", "imdb": "imdb_text", "20newsgroups": "newsgroup_text",
    "newsgroups": "newsgroup_text",
}


def register_dataset(info: DatasetInfo, overwrite: bool = False) -> None:
    """Add a dataset to the registry (e.g. a private collection with its own reader)."""
    if info.name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {info.name!r} is already registered")
    _REGISTRY[info.name] = info


def _found(locate: Callable[..., Any]) -> Callable[[str], str | None]:
    def wrapped(root: str) -> str | None:
        r = locate(root)
        if isinstance(r, tuple):
            r = r[0]
        return r

    return wrapped


def _register_builtin() -> None:
    coop_desc = {
        "caltech101": "Caltech101 objects (CoOp split, 100 classes)",
        "dtd": "Describable Textures (CoOp split, 47 classes)",
        "eurosat": "EuroSAT satellite images (CoOp split, 10 classes)",
        "food101": "Food-101 (CoOp split, 101 classes)",
        "oxford_flowers": "Oxford Flowers102 (CoOp split, 102 classes)",
        "oxford_pets": "Oxford-IIIT Pets (CoOp split, 37 classes)",
        "stanford_cars": "Stanford Cars (CoOp split, 196 classes)",
        "sun397": "SUN397 scenes (CoOp split, 397 classes)",
        "ucf101": "UCF101 action mid-frames (CoOp split, 101 classes)",
    }
    for name, spec in im.COOP_SPECS.items():
        register_dataset(DatasetInfo(
            name, "image", ("train", "val", "test"), "test", "train", "label",
            im.coop_layout(spec), coop_desc[name],
            functools.partial(im.load_coop, spec), _found(functools.partial(im.locate_coop, spec)),
        ))
    register_dataset(DatasetInfo(
        "fgvc_aircraft", "image", ("train", "val", "test"), "test", "train", "label",
        im.FGVC_LAYOUT, "FGVC-Aircraft variants (official split as CoOp, 100 classes)",
        im.load_fgvc_aircraft, im.locate_fgvc,
    ))
    register_dataset(DatasetInfo(
        "imagenet", "image", ("train", "test"), "test", "train", "label", im.IMAGENET_LAYOUT,
        "ImageNet-1k (test = the 50k val images, as CoOp)", im.load_imagenet, im.locate_imagenet,
    ))
    register_dataset(DatasetInfo(
        "cub2011", "image", ("all", "train", "test"), "all", "all", "label", im.CUB_LAYOUT,
        "CUB-200-2011 birds, all vs all (query removed from its gallery)", im.load_cub,
        im.locate_cub,
    ))
    register_dataset(DatasetInfo(
        "sop", "image", ("test", "train"), "test", "test", "label", im.SOP_LAYOUT,
        "Stanford Online Products, test vs test (query removed from its gallery)",
        im.load_sop, im.locate_sop,
    ))
    for name, title in (("roxford5k", "Revisited Oxford"), ("rparis6k", "Revisited Paris")):
        register_dataset(DatasetInfo(
            name, "image", ("query", "gallery"), "query", "gallery", "revisitop",
            im.revisitop_layout(name), f"{title}: 70 queries, revisitop Easy/Medium/Hard",
            functools.partial(im.load_revisitop, name),
            functools.partial(im.locate_revisitop, name),
        ))
    for name, spec in tx.CAPTION_SPECS.items():
        default = "test" if name == "coco_text" else "val"
        register_dataset(DatasetInfo(
            name, "text", spec.splits, default, default, "captions", tx.caption_layout(spec),
            {"coco_text": "COCO captions (Karpathy 5k test)",
             "flickr30k_text": "Flickr30k captions (Karpathy val)",
             "nocaps_text": "NoCaps val captions"}[name]
            + ": first caption of each image vs the others",
            functools.partial(tx.load_captions, spec),
            functools.partial(tx.locate_captions, spec),
        ))
    register_dataset(DatasetInfo(
        "imdb_text", "text", ("queries", "all", "train", "test"), "queries", "all",
        "class_queries", tx.IMDB_LAYOUT,
        "IMDB: 2 sentiment descriptions vs the 50k reviews", tx.load_imdb, tx.locate_imdb,
    ))
    register_dataset(DatasetInfo(
        "newsgroup_text", "text", ("queries", "test", "train", "all"), "queries", "test",
        "class_queries", tx.NEWSGROUP_LAYOUT,
        "20 Newsgroups: 20 class descriptions vs the test posts (sklearn order)",
        tx.load_newsgroups, tx.locate_newsgroups,
    ))
    for name, hub in tx.NANOBEIR_NAMES.items():
        subdirs = tx.beir_subdirs(hub)
        locate = functools.partial(tx.locate_beir, subdirs=subdirs)
        register_dataset(DatasetInfo(
            name, "text", ("queries", "corpus"), "queries", "corpus", "qrels",
            f"<root>/{hub}/ (or {subdirs[1]}/, NanoBEIR/{hub}/):\n" + tx.BEIR_LAYOUT,
            f"{hub} (NanoBEIR): queries vs corpus with qrels",
            functools.partial(_load_beir_named, name, locate, hub), locate,
        ))
    register_dataset(DatasetInfo(
        "cisi", "text", ("queries", "corpus"), "queries", "corpus", "qrels", tx.CISI_LAYOUT,
        "CISI (Glasgow): 76 judged queries vs 1,460 abstracts", tx.load_cisi, tx.locate_cisi,
    ))
    # Generic layouts: root is the dataset folder / file itself.
    register_dataset(DatasetInfo(
        "imagefolder", "image", ("all", "train", "val", "test", "query", "gallery"), "all", "all",
        "label",
        im.IMAGEFOLDER_LAYOUT, "any folder with one sub-folder per class", im.load_imagefolder,
        im.find_imagefolder, generic=True,
    ))
    register_dataset(DatasetInfo(
        "jsonl", "text", ("all",), "all", "all", "label", tx.JSONL_LAYOUT,
        "texts with labels in a JSONL file", tx.load_jsonl,
        lambda r: r if os.path.isfile(r) and r.endswith(".jsonl") else None, generic=True,
    ))
    register_dataset(DatasetInfo(
        "beir", "text", ("queries", "corpus"), "queries", "corpus", "qrels", tx.BEIR_LAYOUT,
        "any BEIR / NanoBEIR collection folder", _load_beir_generic,
        lambda r: r if tx.beir_format(r) else None, generic=True,
    ))


def _load_beir_named(
    name: str, locate: Callable[[str], str | None], hub: str, root: str, split: str,
    **options: Any,
) -> TextSplit:
    d = locate(root)
    if d is None:
        searched = looked_for(root, tx.beir_subdirs(hub), ["corpus/", "queries/", "qrels/",
                                                           "corpus.jsonl", "queries.jsonl"])
        raise layout_error(name, root, searched, tx.BEIR_LAYOUT)
    return tx.load_beir(name, d, split, **options)


def _load_beir_generic(root: str, split: str, **options: Any) -> TextSplit:
    return tx.load_beir("beir", root, split, **options)


_register_builtin()

IMAGE_DATASETS: tuple[str, ...] = tuple(
    n for n, i in _REGISTRY.items() if i.modality == "image" and not i.generic
)
TEXT_DATASETS: tuple[str, ...] = tuple(
    n for n, i in _REGISTRY.items() if i.modality == "text" and not i.generic
)


def parse_dataset_name(name: str) -> tuple[str, dict[str, str]]:
    """``"imagefolder?labels=/x/val.txt"`` -> ``("imagefolder", {"labels": "/x/val.txt"})``.

    Reader options can ride on a dataset name (URL query style, ``&``-separated), so that a
    command line taking only a name can pass them.

    Raises:
        ValueError: an option without ``=``.
    """
    base, sep, query = name.partition("?")
    options: dict[str, str] = {}
    if sep:
        for part in filter(None, query.split("&")):
            key, eq, value = part.partition("=")
            if not eq or not key:
                raise ValueError(f"dataset {name!r}: option {part!r} is not key=value "
                                 f"(e.g. imagefolder?labels=FILE)")
            options[key] = value
    return base, options


def _canonical(name: str) -> str:
    name = parse_dataset_name(name)[0]
    if name.startswith(TFDS_PREFIX):
        return name
    low = name.lower()
    return ALIASES.get(low, low)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (aliases accepted).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    key = _canonical(name)
    if key not in _REGISTRY:
        raise KeyError(
            f"unknown dataset {name!r}; known: {', '.join(_REGISTRY)} "
            f"(or 'tfds:<name>' for a prepared tensorflow-datasets data_dir)"
        )
    return _REGISTRY[key]


def list_datasets(
    root: str | os.PathLike | None = None, *, tfds_data_dir: str | os.PathLike | None = None
) -> list[DatasetEntry]:
    """Every registered dataset, with where it was found under ``root`` (or None).

    Args:
        root: data root; ``None`` uses ``$CROSSGAP_SHARED_DATA`` if set (else nothing is
            searched and every ``found`` is None).
        tfds_data_dir: also list the ``tfds:`` datasets of :data:`TFDS_DEFAULTS` prepared
            in this tfds data dir.
    """
    try:
        r: str | None = resolve_root(root)
    except ValueError:
        r = None
    out = []
    for info in _REGISTRY.values():
        found = None
        if r is not None and os.path.isdir(r):
            try:
                found = info.locate(r)
            except OSError:
                found = None
        out.append(DatasetEntry(info.name, info.modality, info.query_split, info.gallery_split,
                                info.protocol, found))
    if tfds_data_dir is not None:
        dd = os.fspath(tfds_data_dir)
        for name, d in TFDS_DEFAULTS.items():
            path = os.path.join(dd, name)
            ok = os.path.isdir(path) and any(
                os.path.isfile(os.path.join(dp, "dataset_info.json"))
                for dp, _, _ in os.walk(path)
            )
            modality = "text" if name in ("imdb_reviews", "coco_captions") else "image"
            out.append(DatasetEntry(TFDS_PREFIX + name, modality, d.query_split,
                                    d.gallery_split, d.protocol, path if ok else None))
    return out


def get_dataset(
    name: str, root: str | os.PathLike | None = None, split: str | None = None, **options: Any
) -> ImageSplit | TextSplit:
    """One split of a dataset.

    Args:
        name: a registered name (see :func:`list_datasets`), an alias, or ``tfds:<name>``.
        root: data root (default ``$CROSSGAP_SHARED_DATA``); for ``tfds:`` the tfds data
            dir (default: tfds' own); for the generic entries the dataset folder / file.
        split: split name; default: the dataset's gallery split.
        **options: reader options, e.g. ``crop_queries=True`` (revisitop),
            ``captions_per_image=5`` / ``captions_file=...`` (captions),
            ``include_title=False`` (BEIR), ``replacements=<mapping or path>`` (text:
            replace some texts, e.g. LLM summaries of long documents).

    Returns:
        An :class:`ImageSplit` or :class:`TextSplit`.

    Raises:
        KeyError: unknown dataset name.
        ValueError: unknown split.
        DatasetLayoutError: nothing under ``root`` has the expected layout (the message
            lists what was looked for).
    """
    name, named_options = parse_dataset_name(name)
    options = {**named_options, **options}
    replacements = options.pop("replacements", None)
    if name.startswith(TFDS_PREFIX):
        unknown = set(options) - {"modality"}
        if unknown:
            raise TypeError(f"tfds datasets take only modality=, got {sorted(unknown)}")
        tname = name[len(TFDS_PREFIX):]
        default = TFDS_DEFAULTS.get(tname)
        split = split or (default.gallery_split if default else "train")
        data = load_tfds(name, root, split, **options)
    else:
        info = dataset_info(name)
        split = split or info.gallery_split
        if split not in info.splits and not (info.name == "imagenet" and split == "val"):
            raise ValueError(
                f"{info.name}: unknown split {split!r}; valid splits: {', '.join(info.splits)}"
            )
        r = resolve_root(root)
        if not os.path.exists(r):
            raise DatasetLayoutError(f"{info.name}: data root {r} does not exist.\n"
                                     f"Expected layout:\n{info.layout}")
        data = info.load(r, split, **options)
    if replacements is not None:
        data = _apply_replacements(data, replacements)
    return data


def _same_label_space(split: Split, other: Split) -> Split:
    """``split`` with labels indexing the sorted union of both splits' class names, when the
    two splits name their classes differently (an image folder whose ``train/`` and
    ``test/`` hold different class sub-folders: label 0 must mean the same class on both
    sides). Unchanged when the class names agree or either split has none."""
    a, b = split.classnames, other.classnames
    if not a or not b or list(a) == list(b) or split.labels is None:
        return split
    union = sorted(set(a) | set(b))
    pos = {c: i for i, c in enumerate(union)}
    remap = np.array([pos[c] for c in a], np.int64)
    return dataclasses.replace(split, labels=remap[split.labels], classnames=union)


def _apply_replacements(data: Split, replacements: Mapping[str, str] | str | os.PathLike
                        ) -> TextSplit:
    if not isinstance(data, TextSplit):
        raise TypeError("replacements only apply to text datasets")
    if not isinstance(replacements, Mapping):
        replacements = tx.load_text_replacements(replacements)
    return data.with_texts(replacements)


def get_task(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    query_split: str | None = None,
    gallery_split: str | None = None,
    replacements: Mapping[str, str] | str | os.PathLike | None = None,
    check: bool = True,
    **options: Any,
) -> RetrievalTask:
    """The paper's retrieval task for a dataset: default query / gallery splits + relevance.

    Args:
        name: registered name, alias or ``tfds:<name>``.
        root: as for :func:`get_dataset`.
        query_split: override the query split (``"label"`` protocol only).
        gallery_split: override the gallery split (``"label"``/``"class_queries"``).
        replacements: gallery texts to replace (``{item: text}`` or a JSON/JSONL file).
            The authors' own summary pickles are read by
            :func:`crossgap_jax.data.authors_assets.apply_authors_assets` instead.
        check: refuse a task whose scores would mean nothing
            (:meth:`RetrievalTask.check_informative`: one class, or most queries without a
            relevant item).
        **options: reader options, see :func:`get_dataset` (they may also ride on the name:
            ``imagefolder?labels=FILE``).

    Returns:
        A :class:`RetrievalTask`. ``exclude_self`` is set when queries and gallery are the
        same split (CUB all/all, SOP test/test, generic folders).

    Raises:
        DegenerateTaskError: see ``check``.
    """
    name, named_options = parse_dataset_name(name)
    options = {**named_options, **options}
    if name.startswith(TFDS_PREFIX):
        tname = name[len(TFDS_PREFIX):]
        d = TFDS_DEFAULTS.get(tname)
        protocol = d.protocol if d else "label"
        q = query_split or (d.query_split if d else "test")
        g = gallery_split or (d.gallery_split if d else "train")
        load = functools.partial(get_dataset, name, root, **options)
    else:
        info = dataset_info(name)
        name = info.name  # canonical, not the alias
        protocol = info.protocol
        q, g = query_split or info.query_split, gallery_split or info.gallery_split
        if info.generic and info.modality == "image" and query_split is None:
            splits = im.imagefolder_splits(os.fspath(root)) if root is not None else ["all"]
            if "query" in splits and "gallery" in splits:
                q, g = "query", gallery_split or "gallery"
            elif "test" in splits and "train" in splits:
                q, g = "test", gallery_split or "train"
            elif len(splits) == 1:  # e.g. only val/: queries and gallery from it
                q, g = splits[0], gallery_split or splits[0]
        load = functools.partial(get_dataset, info.name, root, **options)
    if protocol == "captions":
        query, gallery = tx.first_caption_split(load(q))
        task = RetrievalTask(name, query, gallery, "group")
    elif protocol in ("class_queries", "imdb"):
        query, gallery = load("queries"), load(g)
        task = RetrievalTask(name, query, gallery, "label")
    elif protocol == "qrels":
        query, gallery = load("queries"), load("corpus")
        task = RetrievalTask(name, query, gallery, "qrels", qrels=query.qrels)
    elif protocol == "revisitop":
        query, gallery = load("query"), load("gallery")
        task = RetrievalTask(name, query, gallery, "revisitop", gnd=query.extra["gnd"])
    else:
        query = load(q)
        gallery = query if g == q else _same_label_space(load(g), query)
        if gallery is not query:
            query = _same_label_space(query, gallery)
        task = RetrievalTask(name, query, gallery, "label", exclude_self=(q == g))
    if replacements is not None:
        task = dataclasses.replace(task, gallery=_apply_replacements(task.gallery, replacements))
    if check:
        task.check_informative()
    return task
