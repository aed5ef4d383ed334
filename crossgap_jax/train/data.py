"""Training data: class-labelled images held in memory, and captions from templates.

A :class:`LabelledImages` holds ``(N, S, S, 3)`` uint8 images already resized and
centre-cropped to the model resolution (the ``clip.preprocess`` geometry, without the
normalisation), their labels and the class names. Captions are generated on the fly from
prompt templates: each training step draws, for every image, one template at random and
formats it with the image's class name, so the text side is not one string per class.

Two template sets per dataset: the *training* templates, and *held-out* templates never
seen in training, used only to build evaluation captions (text->text retrieval).

Sources: :func:`digits_data` (scikit-learn's bundled 8x8 digits, needs nothing but
scikit-learn) and :func:`coop_data` (a CoOp split through
:func:`crossgap_jax.data.get_dataset`, decoded once and cached as ``.npz``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from crossgap_jax.data import center_crop, get_dataset, resize_shortest_side
from crossgap_jax.fileio import atomic_write_with
from crossgap_jax.models import default_cache_dir, eot_indices, get_tokenizer

# --- templates ---------------------------------------------------------------------------
# Objects (Caltech101). Training templates: a subset of CLIP's ImageNet prompt style.
OBJECT_TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a low resolution photo of a {}.",
    "a good photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of one {}.",
    "itap of a {}.",
    "a drawing of a {}.",
    "a {} in the picture.",
    "there is a {} in this photo.",
)
# Held out: different wording, never used in training (evaluation captions only).
OBJECT_HELDOUT_TEMPLATES = (
    "a snapshot showing a {}.",
    "this is what a {} looks like.",
    "my favourite {}.",
    "a small {} seen from the side.",
    "look at this {}!",
    "someone took a photograph of a {}.",
    "an example of a {}.",
    "the {} is clearly visible here.",
)

# Digits (scikit-learn). Class names are the English number words.
DIGIT_CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                    "nine")


@dataclasses.dataclass
class LabelledImages:
    """Class-labelled images in memory.

    Attributes:
        images: ``(N, S, S, 3)`` uint8 (resized + centre-cropped, not normalised).
        labels: ``(N,)`` int32 class ids.
        classnames: class name of each label.
        items: ``N`` stable item names (file paths, ``digits/<index>``).
        name: dataset/split name.
    """

    images: np.ndarray
    labels: np.ndarray
    classnames: tuple[str, ...]
    items: list[str]
    name: str = ""

    def __post_init__(self):
        self.images = np.asarray(self.images, np.uint8)
        self.labels = np.asarray(self.labels, np.int32)
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be (N, S, S, 3) uint8, got {self.images.shape}")
        if len(self.labels) != len(self.images) or len(self.items) != len(self.images):
            raise ValueError("images, labels and items must have the same length")
        self.classnames = tuple(self.classnames)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def subset(self, idx: Sequence[int] | np.ndarray, name: str | None = None) -> LabelledImages:
        idx = np.asarray(idx, np.int64)
        return LabelledImages(self.images[idx], self.labels[idx], self.classnames,
                              [self.items[i] for i in idx], name or self.name)


def captions(classnames: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """``[class][template]`` caption strings."""
    return [[t.format(c.replace("_", " ")) for t in templates] for c in classnames]


def caption_table(classnames: Sequence[str], templates: Sequence[str], length: int,
                  context_length: int = 77) -> tuple[np.ndarray, np.ndarray]:
    """Tokenized captions of every (class, template) pair.

    Args:
        length: positions kept (the text encoder is causal and pools at EOT, so truncating
            the zero padding after the longest caption's EOT is exact).

    Returns:
        ``ids (C, T, length)`` int32 and ``eot (C, T)`` int32.

    Raises:
        ValueError: a caption does not fit in ``length`` positions.
    """
    tok = get_tokenizer(context_length)
    caps = captions(classnames, templates)
    flat = [c for row in caps for c in row]
    ids = tok(flat)
    eot = eot_indices(ids, tok.eot_token_id)
    if eot.max() >= length:
        i = int(np.argmax(eot))
        raise ValueError(f"caption {flat[i]!r} needs {eot[i] + 1} positions > length {length}")
    c, t = len(caps), len(templates)
    return ids[:, :length].reshape(c, t, length), eot.reshape(c, t)


# --- digits ------------------------------------------------------------------------------
def digits_images(image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as ``(N, S, S, 3)`` uint8 (bilinear upscaling)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits example needs scikit-learn: "
                          "pip install 'crossgap-jax[train]' (or scikit-learn)") from e

    d = load_digits()
    raw = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (N, 8, 8), 0..16
    out = np.empty((len(raw), image_size, image_size, 3), np.uint8)
    for i, im in enumerate(raw):
        big = Image.fromarray(im, mode="L").resize((image_size, image_size), Image.BILINEAR)
        out[i] = np.asarray(big)[..., None]
    return out, d.target.astype(np.int32)


def digits_data(image_size: int = 32, test_fraction: float = 0.3,
                split_seed: int = 0) -> tuple[LabelledImages, LabelledImages]:
    """Stratified train/test split of the digits (fixed by ``split_seed``).

    Returns:
        ``(train, test)``.
    """
    images, labels = digits_images(image_size)
    rng = np.random.default_rng(split_seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))].tolist())
    test_idx = np.sort(np.asarray(test_idx))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    items = [f"digits/{i}" for i in range(len(labels))]
    full = LabelledImages(images, labels, DIGIT_CLASSNAMES, items, "digits")
    return full.subset(train_idx, "digits/train"), full.subset(test_idx, "digits/test")


# --- CoOp image datasets (Caltech101) ----------------------------------------------------
def _load_image_split(split, image_size: int, progress: bool) -> np.ndarray:
    out = np.empty((len(split), image_size, image_size, 3), np.uint8)
    for i in tqdm(range(len(split)), desc=f"decode {split.name}/{split.split}", unit="img",
                  disable=not progress):
        im = split.open_image(i, draft_size=2 * image_size)
        out[i] = np.asarray(center_crop(resize_shortest_side(im, image_size), image_size))
    return out


def coop_data(name: str, root: str | None, split: str, image_size: int, *,
              cache_dir: str | None = None, progress: bool = True) -> LabelledImages:
    """One split of a CoOp dataset at ``image_size`` px, decoded once and cached.

    Args:
        name: dataset name known to :func:`crossgap_jax.data.get_dataset` (``"caltech101"``).
        root: data root (default ``$CROSSGAP_SHARED_DATA``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: side of the stored square images.
        cache_dir: where the ``.npz`` goes (default: the package cache,
            :func:`crossgap_jax.models.default_cache_dir`).

    Returns:
        :class:`LabelledImages`; the cache key covers the item list and labels, so a
        changed split file gives a new cache entry.
    """

    s = get_dataset(name, root, split)
    key = hashlib.sha256(json.dumps([s.items, s.labels.tolist(), image_size, 1]).encode())
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"{name}_{split}_{image_size}px_{key.hexdigest()[:12]}.npz")
    if os.path.isfile(path):
        with np.load(path) as z:
            images = z["images"]
    else:
        images = _load_image_split(s, image_size, progress)
        atomic_write_with(path, lambda f: np.savez(f, images=images))
    return LabelledImages(images, s.labels, tuple(s.classnames), list(s.items), f"{name}/{split}")
