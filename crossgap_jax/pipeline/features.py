"""Encoding dataset splits with a CLIP bundle, cached on disk by what produced them."""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crossgap_jax.data import ImageBatchLoader, ImageSplit, TextSplit, iterate_text_batches
from crossgap_jax.pipeline.store import (
    FeatureSet,
    load_features,
    meta_key,
    model_fingerprint,
    save_features,
)

log = logging.getLogger(__name__)


def feature_meta(clip: Any, split: ImageSplit | TextSplit, *, template: str = "{}",
                 project: bool = True) -> dict:
    """Everything a split's features depend on (the cache key)."""
    meta = {"model": model_fingerprint(clip), "dataset": split.name, "split": split.split,
            "modality": split.modality, "num_items": len(split),
            "items_sha256": hashlib.sha256("\n".join(split.items).encode()).hexdigest(),
            "projected": project}
    if split.modality == "image":
        exif = {"exif_transpose": True} if split.exif_transpose else {}  # --exif-transpose
        meta["preprocessing"] = dict(clip.preprocess_options, **exif)
    else:
        meta["template"] = template
        meta["context_length"] = clip.config.text.context_length
        # The texts themselves (e.g. raw text vs the authors' summaries of the same items).
        meta["texts_sha256"] = hashlib.sha256(json.dumps(split.texts).encode()).hexdigest()
    return meta


def encode_split(clip: Any, split: ImageSplit | TextSplit, *, batch_size: int = 64,
                 template: str = "{}", on_error: str = "skip", error_log: str | None = None,
                 progress: bool = True, fast_decode: bool = False,
                 project: bool = True) -> FeatureSet:
    """Features of every item of ``split``.

    Images go through the threaded decode/preprocess pipeline in fixed-size masked batches
    (one compilation); texts are formatted with ``template`` and tokenized (truncated to
    the context, EOT kept last).

    Args:
        clip: a CLIP bundle.
        split: an image or text split.
        batch_size: rows per compiled batch.
        template: text template (``"{}"``: raw text; ``"a photo of {}"`` for class names).
        on_error: corrupt images: ``"skip"`` (counted, listed in ``skipped``) or ``"raise"``.
        error_log: file receiving the names of skipped images.
        progress: show a progress bar.
        project: False gives the features before the projection (IsoCLIP's input).
        fast_decode: decode large JPEGs at reduced size (faster, ~0.65 grey levels off);
            False (default) keeps the reference preprocessing bit for bit.

    Returns:
        A :class:`FeatureSet` (``features`` ``(N', embed_dim)``, N' = N minus skipped items).
    """
    meta = feature_meta(clip, split, template=template, project=project)
    if split.modality == "image":
        loader = ImageBatchLoader(split, batch_size, on_error=on_error, error_log=error_log,
                                  fast_decode=fast_decode, **clip.preprocess_options)
        names, feats = [], []
        bar = tqdm(loader, total=len(loader), desc=f"encode {split.name}/{split.split}",
                   unit="batch", disable=not progress)
        for batch in bar:
            f = clip.encode_image(batch.images, batch_size=batch_size, progress=False,
                                  project=project)
            names += [n for n, m in zip(batch.names, batch.mask) if m]
            feats.append(f[batch.mask])
        skipped, rescaled = dict(loader.skipped), dict(loader.rescaled)
        if rescaled:
            log.warning("%s/%s: %d images deeper than 8 bits scaled by their bit depth "
                        "(the reference clamps them); see the feature file's 'rescaled'",
                        split.name, split.split, len(rescaled))
        if skipped:
            log.warning("%s/%s: %d images skipped (corrupt); see the feature file's 'skipped'",
                        split.name, split.split, len(skipped))
    else:
        names, feats, skipped, rescaled = [], [], {}, {}
        batches = iterate_text_batches(split, batch_size)
        n_batches = -(-len(split) // batch_size)
        for batch in tqdm(batches, total=n_batches, desc=f"encode {split.name}/{split.split}",
                          unit="batch", disable=not progress):
            texts = [template.format(t) for t in batch.texts]
            ids = clip.tokenize(texts)
            f = clip.encode_text(ids, batch_size=batch_size, progress=False, project=project)
            names += [n for n, m in zip(batch.names, batch.mask) if m]
            feats.append(f[batch.mask])
    features = (np.concatenate(feats).astype(np.float32) if feats
                else np.zeros((0, 0), np.float32))
    extra = {}
    if split.modality == "text":
        text_of = dict(zip(split.items, split.texts))
        extra["item_digests"] = _text_digests([text_of[n] for n in names])
    return FeatureSet(names, features, meta, skipped, rescaled=rescaled, extra=extra)


#: Metadata that depends on the item list (the rest is the settings key of a cache entry).
_ITEM_KEYS = ("num_items", "items_sha256", "texts_sha256")


def _text_digests(texts: list[str]) -> np.ndarray:
    """A short content digest per text (so that a subset can be checked against a cached
    entry: same ids with other texts - e.g. summaries - must not be reused)."""
    return np.array([hashlib.blake2b(t.encode(), digest_size=8).hexdigest() for t in texts])


def _subset_of(fs: FeatureSet, split: ImageSplit | TextSplit, meta: dict) -> FeatureSet | None:
    """``split``'s rows of a cached ``fs`` (skipped items stay skipped), or None when ``fs``
    does not cover every item (for texts: with the same text)."""
    have = {it: i for i, it in enumerate(fs.items)}
    items = list(split.items)
    if any(it not in have and it not in fs.skipped for it in items):
        return None
    keep = [it for it in items if it in have]
    idx = np.array([have[it] for it in keep], np.int64)
    extra = {}
    if split.modality == "text":
        if "item_digests" not in fs.extra:
            return None
        mine = _text_digests(list(split.texts))
        if not np.array_equal(np.asarray(fs.extra["item_digests"])[idx], mine):
            return None
        extra["item_digests"] = mine
    skipped = {it: fs.skipped[it] for it in items if it not in have}
    rescaled = {it: fs.rescaled[it] for it in keep if it in fs.rescaled}
    return FeatureSet(keep, fs.features[idx], meta, skipped, rescaled=rescaled, extra=extra)


def cached_split_features(clip: Any, split: ImageSplit | TextSplit, cache_dir: str, *,
                          template: str = "{}", batch_size: int = 64, on_error: str = "skip",
                          progress: bool = True, project: bool = True) -> FeatureSet:
    """:func:`encode_split`, cached under ``cache_dir`` keyed by the model and settings.

    The file name is ``<split>-<modality>-<settings key>-<items key>.npz``: the settings key
    hashes everything but the item list (model weights hash - by content, so another path
    or a symlink to the same checkpoint hits the same entry -, dataset, split,
    preprocessing / template), the items key the item list (and, for texts, the texts).
    A split whose items are all in an existing entry with the same settings (a
    ``--max-queries`` subset of a split encoded in full) takes its rows from that entry and
    encodes nothing.

    An existing file is reused only if its metadata equals what is asked for; otherwise
    :class:`~crossgap_jax.pipeline.store.StaleArtifactError` is raised.
    """
    meta = feature_meta(clip, split, template=template, project=project)
    settings = {k: v for k, v in meta.items() if k not in _ITEM_KEYS}
    safe = split.name.replace(":", "_").replace("/", "_")
    stem = f"{split.split}-{split.modality}-{meta_key(settings)}"
    folder = os.path.join(cache_dir, "features", safe)
    items_key = meta_key({k: meta[k] for k in _ITEM_KEYS if k in meta})
    path = os.path.join(folder, f"{stem}-{items_key}.npz")
    if os.path.exists(path):
        return load_features(path, expect=meta)
    others = sorted(glob.glob(os.path.join(glob.escape(folder), glob.escape(stem) + "-*.npz")),
                    key=os.path.getsize, reverse=True)
    for other in others:
        sub = _subset_of(load_features(other, expect=settings), split, meta)
        if sub is not None:
            log.info("%s/%s: %d items taken from the cached %s (nothing encoded)", split.name,
                     split.split, len(split), other)
            return sub
    fs = encode_split(clip, split, batch_size=batch_size, template=template, on_error=on_error,
                      error_log=path[:-4] + ".skipped.txt", progress=progress, project=project)
    save_features(path, fs)
    return fs
