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
import difflib
import functools
import inspect
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.data._fs import resolve_root
from crossgap_jax.data.catalog import builtin_datasets
from crossgap_jax.data.sources import captions, imagefolder, jsonl, tfds
from crossgap_jax.data.sources.tfds import TFDS_DEFAULTS
from crossgap_jax.data.task import RetrievalTask
from crossgap_jax.data.types import (
    DatasetEntry,
    DatasetInfo,
    DatasetLayoutError,
    ImageSplit,
    Split,
    TaskProtocol,
    TextSplit,
)

Protocol = TaskProtocol  # the former name, kept for importers
log = logging.getLogger(__name__)

_REGISTRY: dict[str, DatasetInfo] = {}

ALIASES: dict[str, str] = {
    "cub": "cub2011", "cub200": "cub2011", "caltech-101": "caltech101", "food-101": "food101",
    "flowers102": "oxford_flowers", "oxford_flowers102": "oxford_flowers",
    "oxford_iiit_pet": "oxford_pets", "fgvc-aircraft": "fgvc_aircraft",
    "stanford_online_products": "sop", "coco": "coco_text", "flickr30k": "flickr30k_text",
    "nocaps": "nocaps_text", "imdb": "imdb_text", "20newsgroups": "newsgroup_text",
    "newsgroups": "newsgroup_text",
    "places": "places365", "places365_standard": "places365", "inat2021": "inaturalist2021",
    "mini_inaturalist": "inaturalist2021", "inaturalist2021_mini": "inaturalist2021",
}


def register_dataset(info: DatasetInfo, overwrite: bool = False) -> None:
    """Add a dataset to the registry (e.g. a private collection with its own reader)."""
    if info.name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {info.name!r} is already registered")
    _REGISTRY[info.name] = info


def register_builtin_datasets() -> None:
    """Register the datasets of the paper, the generic layouts, the packaged demo data and
    the ``tfds`` family (:func:`crossgap_jax.data.catalog.builtin_datasets`); idempotent.
    Called once when this module is imported."""
    for info in builtin_datasets():
        register_dataset(info, overwrite=True)


register_builtin_datasets()

IMAGE_DATASETS: tuple[str, ...] = tuple(
    n for n, i in _REGISTRY.items()
    if i.modality == "image" and not (i.generic or i.packaged or i.members)
)
TEXT_DATASETS: tuple[str, ...] = tuple(
    n for n, i in _REGISTRY.items()
    if i.modality == "text" and not (i.generic or i.packaged or i.members)
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


def _family(name: str) -> tuple[DatasetInfo, str] | None:
    """``(family entry, member)`` for a name ``<family>:<member>`` of a registered family
    (an entry with ``members``, such as ``tfds``), else None."""
    family, sep, member = name.partition(":")
    info = _REGISTRY.get(family.lower()) if sep else None
    if info is None or info.members is None:
        return None
    return info, member


def _canonical(name: str) -> str:
    name = parse_dataset_name(name)[0]
    fam = _family(name)
    if fam is not None:
        return f"{fam[0].name}:{fam[1]}"
    low = name.lower()
    return ALIASES.get(low, low)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (aliases accepted), or of a member
    ``<family>:<member>`` of a registered family (``tfds:caltech101``).

    Raises:
        KeyError: unknown name (the message lists the known ones), or a family name
            without a member.
    """
    key = _canonical(name)
    fam = _family(key)
    if fam is not None:
        assert fam[0].members is not None
        return fam[0].members(fam[1])
    if key in _REGISTRY and _REGISTRY[key].members is not None:
        raise KeyError(f"{name!r} is a family of datasets: name one as {key}:<name>")
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
        if info.members is not None:
            continue  # a family (tfds): its members are listed below
        found = None
        if info.packaged:
            found = info.locate("")
        elif r is not None and os.path.isdir(r):
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
            modality = tfds.member_info(name).modality
            out.append(DatasetEntry(tfds.PREFIX + name, modality, d.query_split,
                                    d.gallery_split, d.protocol, path if ok else None))
    return out


def check_options(info: DatasetInfo, options: Mapping[str, Any]) -> None:
    """Refuse reader options that ``info``'s reader does not take (given as keywords or on
    the name: ``imagefolder?labels=FILE``), naming the ones it does take.

    Raises:
        ValueError: an unknown option (with the closest valid one).
    """
    try:
        params = inspect.signature(info.load).parameters
    except (TypeError, ValueError):  # a reader whose signature cannot be read
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k in list(params)[2:]] + ["replacements"]  # after (root, split)
    bad = [k for k in options if k not in valid]
    if bad:
        close = difflib.get_close_matches(bad[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{info.name}: unknown option {bad[0]!r}{hint}; its options: "
                         f"{', '.join(valid)} (query and gallery splits are not options: "
                         f"see --split)")


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
    info = dataset_info(name)
    check_options(info, options)
    replacements = options.pop("replacements", None)
    split = split or info.gallery_split
    if (info.splits and split not in info.splits
            and not (info.name == "imagenet" and split == "val")):
        raise ValueError(
            f"{info.name}: unknown split {split!r}; valid splits: {', '.join(info.splits)}"
        )
    if info.packaged:
        data = info.load(None, split, **options)
    elif info.root_optional:
        data = info.load(root, split, **options)
    else:
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
        replacements = jsonl.load_text_replacements(replacements)
    return data.with_texts(replacements)


def get_task(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    query_split: str | None = None,
    gallery_split: str | None = None,
    replacements: Mapping[str, str] | str | os.PathLike | None = None,
    check: bool = True,
    qrels_missing: str = "drop",
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
        qrels_missing: qrels tasks: ``"drop"`` (default, the authors') or ``"count"``
            (BEIR / pytrec_eval): whether relevant judged documents absent from the corpus
            count in R. Either way they are counted in the task's ``qrels_audit`` and a
            warning names some.
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
    info = dataset_info(name)
    check_options(info, options)
    name = info.name  # canonical, not the alias
    protocol = info.protocol
    q, g = query_split or info.query_split, gallery_split or info.gallery_split
    if info.generic and info.modality == "image":
        folder = os.fspath(root) if root is not None else None
        q, g = imagefolder.default_task_splits(
            imagefolder.imagefolder_splits(folder) if folder is not None else ["all"],
            query_split, gallery_split,
            imagefolder.labels_owner(folder, options.get("labels")) if folder else None)
    load = functools.partial(get_dataset, info.name, root, **options)
    if protocol == "captions":
        query, gallery = captions.first_caption_split(load(q))
        task = RetrievalTask(name, query, gallery, "group")
    elif protocol == "class_queries":
        query, gallery = load("queries"), load(g)
        task = RetrievalTask(name, query, gallery, "label")
    elif protocol == "qrels":
        query, gallery = load("queries"), load("corpus")
        task = RetrievalTask(name, query, gallery, "qrels", qrels=query.qrels,
                             qrels_missing=qrels_missing)
        audit = task.qrels_audit
        if audit is not None and (audit.outside_pairs or audit.duplicate_pairs):
            rule = ("counted in R (--qrels-missing count)" if qrels_missing == "count" else
                    "left out of R as the authors do (--qrels-missing count counts them)")
            log.warning("%s: %s; outside pairs %s", name, audit.summary(), rule)
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
