"""The data model: image and text splits, registry entries, and the errors of the data layer.

A *split* is one list of items of one dataset (``caltech101`` ``test``, ``coco_text``
``test``, ``nanoscifact`` ``corpus``...). Every item has a stable, unique name (a relative
file path, a corpus id, ``"<image>#<caption>"``...) so features computed from it can be
cached and joined with artefacts produced elsewhere. :mod:`crossgap_jax.data.task` pairs a
query split with a gallery split.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from crossgap_jax.data.decoding import ImageDecodeError, decode_error, open_image, to_rgb

__all__ = [
    "DataFileError",
    "DatasetEntry",
    "DatasetInfo",
    "DatasetLayoutError",
    "DegenerateTaskError",
    "ImageDecodeError",
    "ImageReader",
    "ImageSplit",
    "MissingFilesError",
    "Split",
    "TextSplit",
]


class DatasetLayoutError(FileNotFoundError):
    """A dataset root does not have the expected layout.

    The message names the dataset, the root, every file or folder that was looked for
    and the layout that was expected.
    """


class DataFileError(ValueError):
    """A data file is malformed or empty: the message names the file (and line) and says
    what is wrong and what was expected."""


class DegenerateTaskError(ValueError):
    """A retrieval task whose scores would mean nothing (one class, or most queries without
    a relevant item); the message gives the numbers and the fix."""


class MissingFilesError(FileNotFoundError):
    """Files listed by a dataset are not on disk; the message counts and names them."""


@runtime_checkable
class ImageReader(Protocol):
    """Random access to the encoded images of a split that does not live in files (tfds)."""

    def __len__(self) -> int: ...

    def read(self, index: int) -> bytes | np.ndarray:
        """Encoded image bytes, or an already decoded ``(H, W, C)`` uint8 array."""
        ...

    def describe(self, index: int) -> str:
        """A human-readable name for error messages (dataset, split, record index)."""
        ...


def _as_int_array(x: Any, n: int, what: str) -> np.ndarray | None:
    if x is None:
        return None
    a = np.asarray(x)
    if a.shape != (n,):
        raise ValueError(f"{what} has shape {a.shape}, expected ({n},)")
    return a.astype(np.int64, copy=False)


def _check_unique(items: Sequence[str], where: str) -> None:
    if len(set(items)) != len(items):
        seen: set[str] = set()
        dups = []
        for it in items:
            if it in seen:
                dups.append(it)
            seen.add(it)
        raise ValueError(
            f"{where}: item names must be unique; {len(dups)} duplicates, e.g. {dups[:5]}"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSplit:
    """The images of one split of one dataset.

    Attributes:
        name: dataset name (``"caltech101"``, ``"tfds:oxford_iiit_pet"``, ...).
        split: split name (``"test"``, ``"train"``, ``"all"``, ``"query"``, ...).
        items: ``N`` stable unique item names (usually the path relative to the root).
        paths: ``N`` absolute image paths, or ``None`` when ``reader`` provides the images.
        labels: ``(N,)`` int64 class labels, or ``None``.
        groups: ``(N,)`` int64 group ids (e.g. SOP super-class), or ``None``.
        classnames: class names indexed by label, or ``None``.
        boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` crop boxes in pixels (NaN row: no
            crop), or ``None``.
        reader: random access to the images when they are not files (tfds), else ``None``.
        root: the folder the dataset was read from (informative).
        extra: loader-specific metadata (e.g. the revisitop ground truth of query splits).
        exif_transpose: decode each image turned as its EXIF orientation tag says
            (``PIL.ImageOps.exif_transpose``); ``False`` (default): the tag is ignored, as
            in the reference. Part of the feature cache key.
    """

    modality: ClassVar[str] = "image"

    name: str
    split: str
    items: list[str]
    paths: list[str] | None = None
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    classnames: list[str] | None = None
    boxes: np.ndarray | None = None
    reader: ImageReader | None = None
    root: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    exif_transpose: bool = False

    def __post_init__(self) -> None:
        n = len(self.items)
        object.__setattr__(self, "items", list(self.items))
        if (self.paths is None) == (self.reader is None):
            raise ValueError("an ImageSplit needs exactly one of paths= or reader=")
        if self.paths is not None and len(self.paths) != n:
            raise ValueError(f"{len(self.paths)} paths for {n} items")
        if self.reader is not None and len(self.reader) != n:
            raise ValueError(f"reader has {len(self.reader)} records for {n} items")
        object.__setattr__(self, "labels", _as_int_array(self.labels, n, "labels"))
        object.__setattr__(self, "groups", _as_int_array(self.groups, n, "groups"))
        if self.boxes is not None:
            boxes = np.asarray(self.boxes, np.float32)
            if boxes.shape != (n, 4):
                raise ValueError(f"boxes has shape {boxes.shape}, expected ({n}, 4)")
            object.__setattr__(self, "boxes", boxes)
        _check_unique(self.items, f"{self.name}/{self.split}")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        ncls = len(self.classnames) if self.classnames is not None else None
        return f"ImageSplit({self.name!r}, {self.split!r}, {len(self)} images, classes={ncls})"

    def describe(self, index: int) -> str:
        """The path of item ``index`` (or its reader description), for messages."""
        if self.paths is not None:
            return self.paths[index]
        assert self.reader is not None
        return self.reader.describe(index)

    def open_image(
        self, index: int, *, draft_size: int | None = None, draft_margin: float = 2.0
    ) -> Image.Image:
        """Decode item ``index`` as an RGB PIL image, cropped to its box if it has one.

        Args:
            index: position in :attr:`items`.
            draft_size: reduced-size JPEG decode target, see :func:`open_image`. Ignored
                for items with a crop box (the crop must come from the full image).
            draft_margin: see :func:`open_image`.

        Raises:
            FileNotFoundError: the image file is missing.
            ImageDecodeError: the image is corrupt or truncated (the message names it).
        """
        box = None
        if self.boxes is not None and not np.isnan(self.boxes[index]).any():
            box = self.boxes[index]
            draft_size = None
        if self.paths is not None:
            img = open_image(self.paths[index], draft_size=draft_size, draft_margin=draft_margin,
                             exif_transpose=self.exif_transpose)
        else:
            assert self.reader is not None
            data = self.reader.read(index)
            if isinstance(data, np.ndarray):
                img = Image.fromarray(data.squeeze(-1) if data.shape[-1] == 1 else data)
                try:
                    img = to_rgb(img)
                except ValueError as e:
                    raise decode_error(self.describe(index), e) from e
            else:
                img = open_image(data, draft_size=draft_size, draft_margin=draft_margin,
                                 name=self.describe(index), exif_transpose=self.exif_transpose)
        if box is not None:
            w, h = img.size
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, y1 = max(0.0, x1), max(0.0, y1)
            x2, y2 = min(float(w), x2), min(float(h), y2)
            if x2 > x1 and y2 > y1:
                img = img.crop((int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))))
        return img

    def missing_files(self) -> list[str]:
        """Paths of the items whose image file does not exist (empty for reader splits)."""
        if self.paths is None:
            return []
        return [p for p in self.paths if not os.path.isfile(p)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSplit:
        """A new split with the items at ``indices`` (in that order)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        reader = _SubsetReader(self.reader, idx) if self.reader is not None else None
        return dataclasses.replace(
            self,
            items=[self.items[i] for i in idx],
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            labels=self.labels[idx] if self.labels is not None else None,
            groups=self.groups[idx] if self.groups is not None else None,
            boxes=self.boxes[idx] if self.boxes is not None else None,
            reader=reader,
        )


class _SubsetReader:
    """An :class:`ImageReader` over a subset of another reader's records."""

    def __init__(self, base: ImageReader, indices: np.ndarray):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int) -> bytes | np.ndarray:
        return self.base.read(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.base.describe(int(self.indices[index]))


@dataclasses.dataclass(frozen=True, eq=False)
class TextSplit:
    """The texts of one split of one dataset (raw strings; tokenisation happens later).

    Attributes:
        name: dataset name.
        split: split name (``"test"``, ``"queries"``, ``"corpus"``, ...).
        items: ``N`` stable unique item names (document ids, ``"<image>#<k>"``, ...).
        texts: ``N`` raw texts.
        labels: ``(N,)`` int64 class labels, or ``None``.
        groups: ``(N,)`` int64 group ids (the image a caption belongs to), or ``None``.
        classnames: class names indexed by label, or ``None``.
        qrels: for query splits of qrels datasets, ``{query item: {gallery item: grade}}``
            (grade > 0 is relevant), else ``None``.
        root: the folder or file the dataset was read from (informative).
        extra: loader-specific metadata.
    """

    modality: ClassVar[str] = "text"

    name: str
    split: str
    items: list[str]
    texts: list[str]
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    classnames: list[str] | None = None
    qrels: dict[str, dict[str, int]] | None = None
    root: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.items)
        object.__setattr__(self, "items", list(self.items))
        object.__setattr__(self, "texts", list(self.texts))
        if len(self.texts) != n:
            raise ValueError(f"{len(self.texts)} texts for {n} items")
        object.__setattr__(self, "labels", _as_int_array(self.labels, n, "labels"))
        object.__setattr__(self, "groups", _as_int_array(self.groups, n, "groups"))
        _check_unique(self.items, f"{self.name}/{self.split}")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"TextSplit({self.name!r}, {self.split!r}, {len(self)} texts)"

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextSplit:
        """A new split with the items at ``indices`` (in that order); qrels are filtered."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        items = [self.items[i] for i in idx]
        qrels = None
        if self.qrels is not None:
            keep = set(items)
            qrels = {q: r for q, r in self.qrels.items() if q in keep}
        return dataclasses.replace(
            self,
            items=items,
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx] if self.labels is not None else None,
            groups=self.groups[idx] if self.groups is not None else None,
            qrels=qrels,
        )

    def with_texts(self, replacements: Mapping[str, str], *, strict: bool = True) -> TextSplit:
        """Replace the texts of some items (e.g. LLM summaries of over-long documents).

        Args:
            replacements: ``{item name: new text}``.
            strict: raise if a key of ``replacements`` is not an item of this split.

        Returns:
            A new split; ``extra["replaced"]`` counts the replaced texts.
        """
        pos = {it: i for i, it in enumerate(self.items)}
        unknown = [k for k in replacements if k not in pos]
        if strict and unknown:
            raise KeyError(
                f"{len(unknown)} of {len(replacements)} replacement ids are not items of "
                f"{self.name}/{self.split}, e.g. {unknown[:5]}"
            )
        texts = list(self.texts)
        n = 0
        for k, v in replacements.items():
            if k in pos:
                texts[pos[k]] = str(v)
                n += 1
        extra = dict(self.extra, replaced=n)
        return dataclasses.replace(self, texts=texts, extra=extra)


Split = ImageSplit | TextSplit


TaskProtocol = Literal["label", "captions", "class_queries", "qrels", "revisitop"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about one dataset.

    Attributes:
        name: registry name (the authors' name).
        modality: ``"image"`` or ``"text"``.
        splits: split names accepted by :func:`~crossgap_jax.data.registry.get_dataset`.
        query_split: the paper's default query split.
        gallery_split: the paper's default gallery split.
        protocol: how :func:`~crossgap_jax.data.registry.get_task` builds the task:
            ``"label"`` (same class),
            ``"captions"`` (first caption of each image vs the other captions),
            ``"class_queries"`` (class-description queries vs labelled documents),
            ``"qrels"`` (queries vs corpus), ``"revisitop"`` (Easy/Medium/Hard).
        layout: the expected files and folders, for messages and docs.
        description: one line.
        load: ``load(root, split, **options) -> ImageSplit | TextSplit``.
        locate: ``locate(root) -> path | None``: where the dataset is under ``root``.
        generic: True for ``imagefolder``/``jsonl``/``beir`` (root = the dataset itself).
        packaged: True for data shipped inside the package (the demo's): no root needed,
            ``root`` is ignored.
        root_optional: ``root`` goes to ``load`` as given, ``None`` included (tfds: the
            data dir, ``None`` meaning tfds' own default); no data-root resolution.
        members: for a *family* entry (``tfds``): the entry stands for every name
            ``<name>:<member>`` and ``members(member)`` returns that member's entry.
            ``None`` for an ordinary dataset.

    An empty ``splits`` accepts any split name (the reader checks it: tfds split
    arithmetic such as ``"train+test"``).
    """

    name: str
    modality: Literal["image", "text"]
    splits: tuple[str, ...]
    query_split: str
    gallery_split: str
    protocol: TaskProtocol
    layout: str
    description: str
    load: Callable[..., Split]
    locate: Callable[[str], str | None]
    generic: bool = False
    packaged: bool = False
    root_optional: bool = False
    members: Callable[[str], DatasetInfo] | None = None

    @property
    def exclude_self(self) -> bool:
        """Whether queries are removed from their own gallery (query split == gallery split)."""
        return self.protocol == "label" and self.query_split == self.gallery_split


class DatasetEntry(NamedTuple):
    """A row of :func:`~crossgap_jax.data.registry.list_datasets`."""

    name: str
    modality: str
    query_split: str
    gallery_split: str
    protocol: str
    found: str | None  # where the dataset was found under the root, or None
