"""The data model: image and text splits, retrieval tasks, and the errors of the data layer.

A *split* is one list of items of one dataset (``caltech101`` ``test``, ``coco_text``
``test``, ``nanoscifact`` ``corpus``...). Every item has a stable, unique name (a relative
file path, a corpus id, ``"<image>#<caption>"``...) so features computed from it can be
cached and joined with artefacts produced elsewhere. A :class:`RetrievalTask` pairs a
query split with a gallery split and says what "relevant" means.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from crossgap_jax.models.preprocess import ImageDecodeError, load_image, to_rgb

__all__ = [
    "DataFileError",
    "DatasetLayoutError",
    "DegenerateTaskError",
    "ImageDecodeError",
    "ImageReader",
    "ImageSplit",
    "MissingFilesError",
    "RetrievalTask",
    "Split",
    "TextSplit",
    "open_image",
]

Relevance = Literal["label", "group", "qrels", "revisitop"]
Difficulty = Literal["easy", "medium", "hard"]


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


def _decode_error(name: str, err: Exception) -> ImageDecodeError:
    return ImageDecodeError(f"cannot decode image {name}: {err}")


def _target_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """Shortest side -> ``size``, long side ``int(size * long / short)`` (the preprocess rule)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


log = logging.getLogger(__name__)
_TRUNCATED_LOCK = threading.Lock()


@contextlib.contextmanager
def _load_truncated_images():
    """PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` set for the duration (a module flag: one
    thread at a time; threads decoding meanwhile may also tolerate truncation, which is the
    default behaviour anyway)."""
    with _TRUNCATED_LOCK:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def open_image(
    source: str | os.PathLike | bytes,
    *,
    draft_size: int | None = None,
    draft_margin: float = 2.0,
    name: str | None = None,
    truncated: str = "decode",
) -> Image.Image:
    """Open and fully decode an image (file path or encoded bytes) as RGB.

    ``truncated``: what to do with a file PIL refuses as truncated or broken. ``"decode"``
    (default, what the paper authors' code does: PIL's ``LOAD_TRUNCATED_IMAGES``, the
    missing part left grey; logged as a warning) or ``"error"`` (raise
    :class:`ImageDecodeError`, which the batch loader skips and counts with
    ``on_error="skip"``). A file that cannot be decoded even so is an
    :class:`ImageDecodeError` either way. Other arguments: see :func:`_open_image`.
    """
    if truncated not in ("decode", "error"):
        raise ValueError(f"truncated must be 'decode' or 'error', got {truncated!r}")
    kw = dict(draft_size=draft_size, draft_margin=draft_margin, name=name)
    try:
        return _open_image(source, **kw)
    except ImageDecodeError as e:
        if truncated == "error":
            raise
        first = e
    with _load_truncated_images():
        try:
            img = _open_image(source, **kw)
        except ImageDecodeError:
            raise first from None
    log.warning("%s; decoded anyway, as PIL's LOAD_TRUNCATED_IMAGES does", first)
    return img


def _open_image(
    source: str | os.PathLike | bytes,
    *,
    draft_size: int | None = None,
    draft_margin: float = 2.0,
    name: str | None = None,
) -> Image.Image:
    """Open and fully decode an image (file path or encoded bytes) as RGB.

    Args:
        source: a file path, or the encoded bytes of an image.
        draft_size: fast mode for large JPEGs. If the image is a JPEG whose shorter side is
            at least ``2 * draft_margin * draft_size``, libjpeg decodes it at 1/2, 1/4 or
            1/8 scale (via ``PIL.Image.draft``; the shorter side stays
            ``>= draft_margin * draft_size``) and the result is resized (bicubic) so that
            its shorter side is ``draft_size``, the long side computed from the *original*
            size exactly as :func:`~crossgap_jax.models.preprocess.resize_shortest_side`
            does: the geometry matches the full decode, only the filtering differs
            slightly. Other images are returned at full size. ``None``: full decode.
        draft_margin: how much larger than ``draft_size`` the reduced decode must stay
            (2: mean abs difference ~0.01 in normalised units, about 0.7 grey levels,
            on upscaled Caltech101 photos; 1: ~0.03, faster).
        name: name used in error messages (defaults to the path).

    Returns:
        The decoded RGB image.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the data cannot be decoded (corrupt or truncated).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        fileobj: Any = io.BytesIO(source)
    else:
        path = os.fspath(source)
        label = name or path
        if draft_size is None:
            return load_image(path)  # the reference full decode
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file not found: {path}")
        fileobj = path
    try:
        with Image.open(fileobj) as im:
            original = im.size
            if draft_size is not None and im.format == "JPEG":
                req = int(np.ceil(draft_size * max(1.0, draft_margin)))
                im.draft("RGB", (req, req))
            im.load()  # full decode here so that truncation is caught here
            out = to_rgb(im)  # 16-bit / float greyscale scaled by bit depth
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _decode_error(label, e) from e
    if draft_size is not None and out.size != original:
        out = out.resize(_target_dims(*original, draft_size), Image.BICUBIC)
    return out


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
            img = open_image(self.paths[index], draft_size=draft_size, draft_margin=draft_margin)
        else:
            assert self.reader is not None
            data = self.reader.read(index)
            if isinstance(data, np.ndarray):
                img = Image.fromarray(data.squeeze(-1) if data.shape[-1] == 1 else data)
                try:
                    img = to_rgb(img)
                except ValueError as e:
                    raise _decode_error(self.describe(index), e) from e
            else:
                img = open_image(data, draft_size=draft_size, draft_margin=draft_margin,
                                 name=self.describe(index))
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


@dataclasses.dataclass(frozen=True, eq=False)
class RetrievalTask:
    """A query split, a gallery split and the relevance between them.

    ``relevance`` says how positives are found:

    * ``"label"``: gallery items with the query's class label;
    * ``"group"``: gallery items with the query's group id (captions of the same image);
    * ``"qrels"``: ``qrels[query item][gallery item] > 0``;
    * ``"revisitop"``: the easy/hard/junk lists of ``gnd`` (ROxford5k / RParis6k), read
      with a difficulty (Easy / Medium / Hard protocol).

    When ``exclude_self`` is set (query split == gallery split), each query's own gallery
    entry is neither a positive nor ranked: it is in :meth:`ignored`.

    Attributes:
        name: dataset name.
        query: the query split.
        gallery: the gallery split.
        relevance: one of ``"label"``, ``"group"``, ``"qrels"``, ``"revisitop"``.
        exclude_self: remove each query from its own gallery.
        qrels: ``{query item: {gallery item: grade}}`` for ``"qrels"``.
        gnd: per query ``{"easy", "hard", "junk": int arrays of gallery indices}`` for
            ``"revisitop"``.
    """

    name: str
    query: Split
    gallery: Split
    relevance: Relevance
    exclude_self: bool = False
    qrels: dict[str, dict[str, int]] | None = None
    gnd: list[dict[str, np.ndarray]] | None = None

    def __post_init__(self) -> None:
        if self.relevance in ("label", "group"):
            attr = "labels" if self.relevance == "label" else "groups"
            for side in (self.query, self.gallery):
                if getattr(side, attr) is None:
                    raise ValueError(
                        f"{self.name}: the {side.split!r} split read from {side.root} has no "
                        f"{attr}, and relevance={self.relevance!r} needs them"
                        + (" (give every JSONL record a 'label' field)"
                           if str(side.root).endswith(".jsonl") else ""))
        elif self.relevance == "qrels":
            if self.qrels is None:
                raise ValueError("relevance='qrels' needs qrels")
        elif self.relevance == "revisitop":
            if self.gnd is None or len(self.gnd) != len(self.query):
                raise ValueError("relevance='revisitop' needs one gnd entry per query")
        else:
            raise ValueError(f"unknown relevance {self.relevance!r}")

    def __repr__(self) -> str:
        return (
            f"RetrievalTask({self.name!r}, query={self.query!r}, gallery={self.gallery!r}, "
            f"relevance={self.relevance!r}, exclude_self={self.exclude_self})"
        )

    @property
    def num_queries(self) -> int:
        return len(self.query)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery)

    @functools.cached_property
    def _gallery_pos(self) -> dict[str, int]:
        return {it: i for i, it in enumerate(self.gallery.items)}

    @functools.cached_property
    def _self_index(self) -> np.ndarray:
        """Gallery index of each query's own item, -1 if it is not in the gallery."""
        pos = self._gallery_pos
        return np.array([pos.get(it, -1) for it in self.query.items], np.int64)

    @functools.cached_property
    def _buckets(self) -> dict[int, np.ndarray]:
        keys = self.gallery.labels if self.relevance == "label" else self.gallery.groups
        assert keys is not None
        order = np.argsort(keys, kind="stable")
        uniq, starts = np.unique(keys[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        return {int(u): order[s:e] for u, s, e in zip(uniq, starts, ends)}

    def positives(self, i: int, difficulty: Difficulty = "medium") -> np.ndarray:
        """Sorted gallery indices relevant to query ``i``.

        Args:
            i: query index.
            difficulty: revisitop protocol only: ``"easy"`` (easy positives), ``"medium"``
                (easy + hard) or ``"hard"`` (hard).
        """
        if self.relevance in ("label", "group"):
            keys = self.query.labels if self.relevance == "label" else self.query.groups
            assert keys is not None
            pos = self._buckets.get(int(keys[i]), np.zeros(0, np.int64))
        elif self.relevance == "qrels":
            assert self.qrels is not None
            rel = self.qrels.get(self.query.items[i], {})
            gp = self._gallery_pos
            pos = np.array([gp[d] for d, g in rel.items() if g > 0 and d in gp], np.int64)
        else:
            assert self.gnd is not None
            g = self.gnd[i]
            parts = {"easy": ["easy"], "medium": ["easy", "hard"], "hard": ["hard"]}[difficulty]
            pos = np.concatenate([np.asarray(g[k], np.int64) for k in parts])
        pos = np.unique(pos)
        if self.exclude_self and self._self_index[i] >= 0:
            pos = pos[pos != self._self_index[i]]
        return pos

    def positive_counts(self) -> np.ndarray:
        """``(Q,)`` int64: how many gallery items are relevant to each query (self excluded;
        revisitop: easy + hard)."""
        if self.relevance in ("label", "group"):
            keys_q = self.query.labels if self.relevance == "label" else self.query.groups
            assert keys_q is not None
            sizes = {k: len(v) for k, v in self._buckets.items()}
            counts = np.array([sizes.get(int(k), 0) for k in keys_q], np.int64)
            if self.exclude_self:
                own = self._self_index
                keys_g = self.gallery.labels if self.relevance == "label" else self.gallery.groups
                assert keys_g is not None
                same = (own >= 0) & (keys_g[np.maximum(own, 0)] == keys_q)
                counts -= same.astype(np.int64)
            return counts
        return np.array([len(self.positives(i)) for i in range(self.num_queries)], np.int64)

    def check_informative(self, max_without_positive: float = 0.5) -> None:
        """Refuse a task whose scores would mean nothing.

        Raises:
            DegenerateTaskError: the gallery has a single class (label relevance: every
                item is relevant to every query, mAP is 100 whatever the model), or more
                than ``max_without_positive`` of the queries have no relevant gallery item
                (their ids or labels do not match the gallery's). The message gives the
                numbers, examples and the usual fix.
        """
        if self.relevance == "label":
            assert self.gallery.labels is not None
            classes = np.unique(self.gallery.labels)
            if len(classes) <= 1 and self.num_gallery > 1:
                raise DegenerateTaskError(
                    f"{self.name}: all {self.num_gallery:,} gallery items have the same label "
                    f"(one class) - every item is relevant to every query and mAP would be "
                    f"100 whatever the model. Images that sit in a single sub-folder carry no "
                    f"labels: give the labels in an annotation file (imagefolder?labels=FILE, "
                    f"lines '<path> <label>' or a CSV path,label) or one sub-folder per class.")
        if not self.num_queries:
            return
        counts = self.positive_counts()
        none = np.flatnonzero(counts == 0)
        if len(none) > max_without_positive * self.num_queries:
            ex = [self.query.items[i] for i in none[:3]]
            hint = ""
            if self.relevance == "qrels" and self.qrels is not None:
                docs = [d for i in none[:20] for d in self.qrels.get(self.query.items[i], {})]
                hint = (f" Their judged ids (e.g. {docs[:3]}) are not gallery ids (e.g. "
                        f"{self.gallery.items[:3]}): do the qrels belong to this corpus?")
            elif self.relevance == "label":
                hint = " Their labels do not occur in the gallery: do the splits share classes?"
            raise DegenerateTaskError(
                f"{self.name}: {len(none):,} of {self.num_queries:,} queries have no relevant "
                f"gallery item (e.g. {ex}); their scores would be 0 by construction.{hint}")

    def ignored(self, i: int, difficulty: Difficulty = "medium") -> np.ndarray:
        """Sorted gallery indices to drop from query ``i``'s ranking before scoring.

        The query itself when ``exclude_self``; for revisitop the junk images plus, for
        the easy protocol the hard positives, for the hard protocol the easy ones.
        """
        out: list[np.ndarray] = [np.zeros(0, np.int64)]
        if self.exclude_self and self._self_index[i] >= 0:
            out.append(self._self_index[i : i + 1])
        if self.relevance == "revisitop":
            assert self.gnd is not None
            g = self.gnd[i]
            parts = {"easy": ["junk", "hard"], "medium": ["junk"], "hard": ["junk", "easy"]}
            out += [np.asarray(g[k], np.int64) for k in parts[difficulty]]
        return np.unique(np.concatenate(out))

    def relevance_matrix(
        self, difficulty: Difficulty = "medium", max_elements: int = 2**31
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``(Q, G)`` boolean ``(relevant, ignored)`` matrices.

        Args:
            difficulty: revisitop protocol (see :meth:`positives`).
            max_elements: refuse to build matrices larger than this (SOP's 60k x 60k
                would be 3.6 GB); iterate over :meth:`positives` instead.
        """
        q, g = self.num_queries, self.num_gallery
        if q * g > max_elements:
            raise MemoryError(f"relevance matrix {q}x{g} exceeds max_elements={max_elements}")
        rel = np.zeros((q, g), bool)
        ign = np.zeros((q, g), bool)
        if self.relevance in ("label", "group") and not self.exclude_self:
            keys_q = self.query.labels if self.relevance == "label" else self.query.groups
            keys_g = self.gallery.labels if self.relevance == "label" else self.gallery.groups
            assert keys_q is not None and keys_g is not None
            rel = keys_q[:, None] == keys_g[None, :]
            return rel, ign
        for i in range(q):
            rel[i, self.positives(i, difficulty)] = True
            ign[i, self.ignored(i, difficulty)] = True
        return rel, ign
