"""Input pipeline: parallel decode + CLIP preprocessing into fixed-shape, masked batches.

Images are decoded and preprocessed by a thread pool (PIL releases the GIL while it
decodes and resizes), a bounded number of batches ahead of the consumer, and come out in
the split's order whatever the thread timing. Every batch has exactly ``batch_size``
rows, the last one padded, with a boolean mask, so a jitted encoder compiles once::

    loader = ImageBatchLoader(split, batch_size=256, process_index=jax.process_index(),
                              process_count=jax.process_count())
    for batch in loader:                      # ImageBatch(names, images, mask, indices)
        feats = encode(params, batch.images)  # (256, D)
        keep(batch.names, feats[batch.mask])
    print(loader.report())

Multi-host runs give each process a contiguous block of the items; all processes run the
same number of batches (a process may get all-padding batches at the end), so collective
operations stay in step.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from crossgap_jax.data.decoding import EXIF_ORIENTATION, RESCALED_FROM, ImageDecodeError
from crossgap_jax.data.preprocess import OPENAI_MEAN, OPENAI_STD, preprocess_image
from crossgap_jax.data.types import ImageSplit, MissingFilesError, TextSplit
from crossgap_jax.fileio import atomic_write_text

log = logging.getLogger(__name__)

OnError = Literal["skip", "raise"]


class ImageBatch(NamedTuple):
    """One fixed-size batch.

    Attributes:
        names: ``B`` item names; ``""`` for padding and skipped (undecodable) rows.
        images: ``(B, H, W, 3)`` float32, CLIP-normalised, NHWC; zeros where masked out.
        mask: ``(B,)`` bool, True for real images.
        indices: ``(B,)`` int64 positions in the split; -1 where masked out.
    """

    names: list[str]
    images: np.ndarray
    mask: np.ndarray
    indices: np.ndarray


class TextBatch(NamedTuple):
    """One fixed-size batch of raw texts (tokenise them with the model's tokenizer).

    Attributes:
        names: ``B`` item names, ``""`` for padding.
        texts: ``B`` texts, ``""`` for padding.
        mask: ``(B,)`` bool, True for real texts.
        indices: ``(B,)`` int64 positions in the split, -1 for padding.
    """

    names: list[str]
    texts: list[str]
    mask: np.ndarray
    indices: np.ndarray


def shard_indices(num_items: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """The item positions process ``process_index`` of ``process_count`` handles.

    Contiguous blocks whose sizes differ by at most one; together they cover
    ``range(num_items)`` exactly once.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    bounds = (np.arange(process_count + 1, dtype=np.int64) * num_items) // process_count
    return np.arange(bounds[process_index], bounds[process_index + 1], dtype=np.int64)


def num_batches_per_process(num_items: int, batch_size: int, process_count: int = 1) -> int:
    """Batches every process runs: enough for the largest shard (equal on all processes)."""
    largest = math.ceil(num_items / process_count) if num_items else 0
    return math.ceil(largest / batch_size)


def pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with its leading axis padded to ``size`` by repeating the last row: the one pad
    of a ragged last batch before a fixed-shape (compiled once) call. The padding rows are
    real values, so they never produce NaN; callers discard their outputs.

    Args:
        x: ``(n, ...)`` with ``1 <= n <= size``.
        size: the batch size.

    Returns:
        ``(size, ...)``, ``x`` itself when ``n == size``.
    """
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def iterate_text_batches(
    split: TextSplit,
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[TextBatch]:
    """Fixed-size, masked batches of raw texts, sharded per process like the images."""
    idx = shard_indices(len(split), process_index, process_count)
    nb = num_batches_per_process(len(split), batch_size, process_count)
    for b in range(nb):
        sel = idx[b * batch_size : (b + 1) * batch_size]
        pad = batch_size - len(sel)
        yield TextBatch(
            names=[split.items[i] for i in sel] + [""] * pad,
            texts=[split.texts[i] for i in sel] + [""] * pad,
            mask=np.arange(batch_size) < len(sel),
            indices=np.concatenate([sel, np.full(pad, -1, np.int64)]),
        )


class ImageBatchLoader:
    """Iterable of :class:`ImageBatch` over (this process's share of) an image split.

    Args:
        split: the images.
        batch_size: rows per batch (the last batch is padded, with ``mask`` False).
        image_size: output resolution (shortest-side bicubic resize + centre crop).
        mean: normalisation mean (CLIP's by default).
        std: normalisation std.
        resize: ``"shortest"`` (shorter side + centre crop) or ``"squash"`` (see
            :func:`~crossgap_jax.data.preprocess.preprocess_image`).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        resize_size: shorter side before the centre crop (DINOv2: 256); None: ``image_size``.
        crop_offset: ``"round"`` (torchvision) or ``"floor"`` (transformers; DINOv2).
        resize_float: resize the [0, 1] float image, not the 8-bit one (DINOv3).
        num_threads: decode threads (default: CPU count, at least 2).
        prefetch_batches: batches decoded ahead of the consumer (bounded memory:
            ``(prefetch_batches + 1) * batch_size`` images in flight).
        process_index: this process (``jax.process_index()``) for multi-host sharding.
        process_count: number of processes (``jax.process_count()``).
        on_error: what to do with a corrupt / truncated image: ``"skip"`` (its row is
            masked out, it is counted, logged and listed by :meth:`report`) or
            ``"raise"`` (:class:`ImageDecodeError` naming the file). A *missing* file is
            always an error, raised before any decoding (all missing files are counted).
        error_log: file that receives the names of skipped images (one per line,
            ``name<TAB>reason``), written at the end of each pass.
        fast_decode: decode large JPEGs at reduced size with ``PIL.Image.draft`` (never
            below ``draft_margin * image_size`` on the short side; see
            :func:`~crossgap_jax.data.decoding.open_image`). Images that are not reduced come
            out bit-identical to the exact path. ``False``: exact full decode, the
            reference preprocessing bit for bit, for every image.
        draft_margin: see :func:`~crossgap_jax.data.decoding.open_image` (2: ~0.7 grey
            levels mean abs difference; 1: faster, ~2 grey levels).
        check_files: check up front that every image file of this process exists.
        progress: show a tqdm progress bar (images/s).
        desc: progress-bar label (default ``"<dataset>/<split>"``).
    """

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        *,
        image_size: int = 224,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        resize: str = "shortest",
        interpolation: str = "bicubic",
        resize_size: int | None = None,
        crop_offset: str = "round",
        resize_float: bool = False,
        num_threads: int | None = None,
        prefetch_batches: int = 2,
        process_index: int = 0,
        process_count: int = 1,
        on_error: OnError = "skip",
        error_log: str | os.PathLike | None = None,
        fast_decode: bool = True,
        draft_margin: float = 2.0,
        check_files: bool = True,
        progress: bool = False,
        desc: str | None = None,
    ):
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.split = split
        self.batch_size = batch_size
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.resize, self.interpolation = resize, interpolation
        self.resize_size, self.crop_offset = resize_size, crop_offset
        self.resize_float = resize_float
        self.num_threads = num_threads or max(2, os.cpu_count() or 1)
        self.prefetch_batches = max(0, prefetch_batches)
        self.process_index, self.process_count = process_index, process_count
        self.on_error = on_error
        self.error_log = os.fspath(error_log) if error_log is not None else None
        self.fast_decode = fast_decode
        self.draft_margin = draft_margin
        self.progress = progress
        self.desc = desc or f"{split.name}/{split.split}"
        self.indices = shard_indices(len(split), process_index, process_count)
        self.num_batches = num_batches_per_process(len(split), batch_size, process_count)
        self.skipped: list[tuple[str, str]] = []
        # Greyscale images deeper than 8 bits (16-bit, float), scaled to 8 bits by their
        # depth where the reference clamps them (see decoding.to_rgb): (name, mode).
        self.rescaled: list[tuple[str, str]] = []
        # Images whose EXIF orientation tag is not 1: (name, tag). Applied only when the
        # split says so (ImageSplit.exif_transpose); the reference ignores the tag.
        self.oriented: list[tuple[str, int]] = []
        self.num_decoded = 0
        self.seconds = 0.0
        if check_files:
            self.check_files()

    def __len__(self) -> int:
        return self.num_batches

    def check_files(self) -> None:
        """Raise :class:`MissingFilesError` if any image file of this process is missing."""
        if self.split.paths is None:
            return
        missing = [self.split.paths[i] for i in self.indices
                   if not os.path.isfile(self.split.paths[i])]
        if missing:
            shown = "\n  ".join(missing[:10])
            more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise MissingFilesError(
                f"{len(missing)} of {len(self.indices)} image files of "
                f"{self.split.name}/{self.split.split} are missing (root {self.split.root}):"
                f"\n  {shown}{more}"
            )

    def _load(self, index: int) -> tuple[np.ndarray, str | None, int] | ImageDecodeError:
        """``(preprocessed image, original mode if it was rescaled to 8 bits else None,
        EXIF orientation tag (1: none))``."""
        draft = (self.resize_size or self.image_size) if self.fast_decode else None
        try:
            img = self.split.open_image(index, draft_size=draft, draft_margin=self.draft_margin)
        except ImageDecodeError as e:
            if self.on_error == "raise":
                raise
            return e
        return (preprocess_image(img, self.image_size, self.mean, self.std, resize=self.resize,
                                 interpolation=self.interpolation, resize_size=self.resize_size,
                                 crop_offset=self.crop_offset,
                                 resize_float=self.resize_float),
                img.info.get(RESCALED_FROM), int(img.info.get(EXIF_ORIENTATION, 1)))

    def __iter__(self) -> Iterator[ImageBatch]:
        self.skipped = []
        self.rescaled = []
        self.oriented = []
        self.num_decoded = 0
        t0 = time.perf_counter()
        bs, s = self.batch_size, self.image_size
        n_local = len(self.indices)
        window = (self.prefetch_batches + 1) * bs
        pending: collections.deque[tuple[int, Future]] = collections.deque()
        bar = None
        if self.progress:
            bar = tqdm(total=n_local, desc=self.desc, unit="img", smoothing=0.1)
        pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="crossgap-decode")
        submitted = 0
        try:
            for b in range(self.num_batches):
                # Keep the pool `window` images ahead of the batch being assembled.
                while submitted < n_local and submitted < (b * bs) + window:
                    i = int(self.indices[submitted])
                    pending.append((i, pool.submit(self._load, i)))
                    submitted += 1
                lo, hi = b * bs, min(n_local, (b + 1) * bs)
                images = np.zeros((bs, s, s, 3), np.float32)
                mask = np.zeros(bs, bool)
                indices = np.full(bs, -1, np.int64)
                names = [""] * bs
                for row in range(hi - lo):
                    i, fut = pending.popleft()
                    out = fut.result()  # re-raises a worker's error here, in order
                    if isinstance(out, ImageDecodeError):
                        self.skipped.append((self.split.items[i], str(out)))
                        log.warning("skipping undecodable image: %s", out)
                    else:
                        images[row], rescaled_from, orientation = out
                        if rescaled_from is not None:
                            self.rescaled.append((self.split.items[i], rescaled_from))
                        if orientation != 1:
                            self.oriented.append((self.split.items[i], orientation))
                        mask[row] = True
                        indices[row] = i
                        names[row] = self.split.items[i]
                        self.num_decoded += 1
                if bar is not None:
                    bar.update(hi - lo if hi > lo else 0)
                yield ImageBatch(names, images, mask, indices)
        finally:
            for _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
            self.seconds = time.perf_counter() - t0
            self._finish()

    def _finish(self) -> None:
        if self.error_log is not None:
            if self.skipped:
                atomic_write_text(self.error_log, "".join(
                    f"{name}\t{reason}\n" for name, reason in self.skipped))
            elif os.path.isfile(self.error_log):
                os.remove(self.error_log)  # a stale list from an earlier, failed run
        if self.rescaled:
            modes = sorted({m for _, m in self.rescaled})
            log.warning(
                "%d of %d images of %s/%s are greyscale deeper than 8 bits (%s): scaled to 8 "
                "bits by their depth (the reference pipeline clamps them instead)",
                len(self.rescaled), len(self.indices), self.split.name, self.split.split,
                ", ".join(modes))
        if self.oriented:
            what = ("turned upright (exif_transpose)" if self.split.exif_transpose else
                    "ignored, as the reference does (--exif-transpose applies it)")
            log.warning("%d of %d images of %s/%s carry an EXIF orientation: %s",
                        len(self.oriented), len(self.indices), self.split.name,
                        self.split.split, what)
        if self.skipped:
            where = f" (list in {self.error_log})" if self.error_log else ""
            log.warning(
                "%d of %d images of %s/%s could not be decoded and were skipped%s",
                len(self.skipped), len(self.indices), self.split.name, self.split.split, where,
            )

    def report(self) -> dict[str, object]:
        """Counts and speed of the last (or current) pass (``skipped``: undecodable images,
        including those over PIL's decompression-bomb limit; ``rescaled``: 16-bit / float
        greyscale images scaled to 8 bits by their depth; ``exif_oriented``: images with an
        EXIF orientation tag other than 1, turned upright only if ``exif_transpose``)."""
        return {
            "dataset": self.split.name,
            "split": self.split.split,
            "process": f"{self.process_index}/{self.process_count}",
            "images": len(self.indices),
            "decoded": self.num_decoded,
            "skipped": len(self.skipped),
            "skipped_names": [n for n, _ in self.skipped],
            "rescaled": len(self.rescaled),
            "rescaled_names": [n for n, _ in self.rescaled],
            "exif_oriented": len(self.oriented),
            "exif_oriented_names": [n for n, _ in self.oriented],
            "exif_transpose": self.split.exif_transpose,
            "seconds": self.seconds,
            "images_per_s": self.num_decoded / self.seconds if self.seconds else 0.0,
        }


def iterate_image_batches(split: ImageSplit, batch_size: int, **kwargs) -> ImageBatchLoader:
    """Shorthand for :class:`ImageBatchLoader` ``(split, batch_size, **kwargs)``."""
    return ImageBatchLoader(split, batch_size, **kwargs)
