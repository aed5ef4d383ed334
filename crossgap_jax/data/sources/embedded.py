"""The embedded demo data: a small Caltech101 subset shipped inside the package.

``crossgap_jax/assets/demo_caltech101.npz`` holds, for the 100 classes of the CoOp
Caltech101 split, a few *train* images per class (the retrieval gallery) and a few *test*
images per class (the queries; the demo model was trained on the train split only), each
resized (shorter side) and centre-cropped to 64 px and stored as a JPEG, plus captions of
every class written with templates the model never saw in training (a text retrieval
task). It is built by ``python -m crossgap_jax.train.demo_caltech``; its licence and
attribution (Caltech101, CC BY 4.0) are in ``crossgap_jax/assets/demo_caltech101_LICENSE.txt``.

Registered datasets (no data root needed)::

    get_dataset("demo_caltech101", split="test")       # ImageSplit, the queries
    get_task("demo_caltech101")                         # test vs train, relevant = same class
    get_task("demo_caltech101_text")                    # caption queries vs captions

File format (one ``.npz``, no pickles): for each image split ``s`` in ``train``/``test``:
``{s}_jpeg`` (uint8, the JPEG files concatenated), ``{s}_offsets`` (int64, ``N + 1`` byte
offsets), ``{s}_labels`` (int64), ``{s}_items`` (str, the CoOp item names); ``classnames``
(str); for the text splits ``queries``/``gallery``: ``text_{s}`` (str), ``text_{s}_labels``
(int64); ``query_templates`` / ``gallery_templates`` (str).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from crossgap_jax.data.types import DatasetLayoutError, ImageSplit, TextSplit

# crossgap_jax/assets (this file is crossgap_jax/data/sources/embedded.py)
ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "assets")
ASSET_DIR = os.path.normpath(ASSET_DIR)
DEMO_DATA = os.path.join(ASSET_DIR, "demo_caltech101.npz")
DEMO_DATA_LICENSE = os.path.join(ASSET_DIR, "demo_caltech101_LICENSE.txt")
IMAGE_NAME = "demo_caltech101"
TEXT_NAME = "demo_caltech101_text"
CARD_NAME = "demo_caltech101.json"  # the shipped model's card, beside its weights

LAYOUT = ("shipped with the package: crossgap_jax/assets/demo_caltech101.npz "
          "(rebuild: python -m crossgap_jax.train.demo_caltech)")


class JpegBytesReader:
    """:class:`~crossgap_jax.data.types.ImageReader` over JPEGs concatenated in one array."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, name: str):
        self.blob, self.offsets, self.name = blob, np.asarray(offsets, np.int64), name

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def read(self, index: int) -> bytes:
        return self.blob[self.offsets[index]:self.offsets[index + 1]].tobytes()

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"


@functools.lru_cache(maxsize=4)
def _arrays(path: str, mtime: float) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def demo_arrays(path: str = DEMO_DATA) -> dict[str, np.ndarray]:
    """The arrays of the embedded data file (read once per process).

    Raises:
        DatasetLayoutError: the file is missing (it ships with the package; the message
            says how to rebuild it).
    """
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"embedded demo data not found: {path}\n"
                                 "It ships with the package; rebuild it with: "
                                 "python -m crossgap_jax.train.demo_caltech")
    return _arrays(path, os.path.getmtime(path))


def locate_demo(root: str | None = None) -> str | None:
    """Where the embedded data is (``root`` is ignored: the data is in the package)."""
    return DEMO_DATA if os.path.isfile(DEMO_DATA) else None


def load_demo_images(root: str | None, split: str, *, path: str = DEMO_DATA) -> ImageSplit:
    """The ``train`` (gallery) or ``test`` (queries) images of the embedded subset.

    Args:
        root: ignored (the data ships with the package; accepted for the registry's
            ``load(root, split)`` signature).
        split: ``"train"`` or ``"test"``.
        path: the ``.npz`` (default: the shipped one).
    """
    if split not in ("train", "test"):
        raise ValueError(f"{IMAGE_NAME}: unknown split {split!r}; valid splits: train, test")
    z = demo_arrays(path)
    reader = JpegBytesReader(z[f"{split}_jpeg"], z[f"{split}_offsets"], f"{IMAGE_NAME}/{split}")
    return ImageSplit(IMAGE_NAME, split, [str(s) for s in z[f"{split}_items"]],
                      reader=reader, labels=z[f"{split}_labels"],
                      classnames=[str(c) for c in z["classnames"]], root=path)


def load_demo_texts(root: str | None, split: str, *, path: str = DEMO_DATA) -> TextSplit:
    """Captions of the subset's classes from held-out templates: ``queries`` (one template)
    or ``gallery`` (the others); relevant = same class."""
    if split not in ("queries", "gallery"):
        raise ValueError(f"{TEXT_NAME}: unknown split {split!r}; valid splits: queries, gallery")
    z = demo_arrays(path)
    texts = [str(t) for t in z[f"text_{split}"]]
    prefix = "q" if split == "queries" else "g"
    return TextSplit(TEXT_NAME, split, [f"{prefix}{i:05d}" for i in range(len(texts))], texts,
                     labels=z[f"text_{split}_labels"],
                     classnames=[str(c) for c in z["classnames"]], root=path,
                     extra={"templates": [str(t) for t in z[
                         "query_templates" if split == "queries" else "gallery_templates"]]})
