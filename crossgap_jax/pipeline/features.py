"""Encoding dataset splits with a CLIP bundle, cached on disk by what produced them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crossgap_jax.data import ImageBatchLoader, ImageSplit, TextSplit
from crossgap_jax.data.pipeline import iterate_text_batches
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
        meta["preprocessing"] = clip.preprocess_options
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
    return FeatureSet(names, features, meta, skipped, rescaled=rescaled)


def cached_split_features(clip: Any, split: ImageSplit | TextSplit, cache_dir: str, *,
                          template: str = "{}", batch_size: int = 64, on_error: str = "skip",
                          progress: bool = True, project: bool = True) -> FeatureSet:
    """:func:`encode_split`, cached under ``cache_dir`` keyed by the model and settings.

    An existing file is reused only if its metadata equals what is asked for (model
    weights hash, dataset, split, preprocessing / template); otherwise
    :class:`~crossgap_jax.pipeline.store.StaleArtifactError` is raised.
    """
    meta = feature_meta(clip, split, template=template, project=project)
    safe = split.name.replace(":", "_").replace("/", "_")
    path = os.path.join(cache_dir, "features", safe,
                        f"{split.split}-{split.modality}-{meta_key(meta)}.npz")
    if os.path.exists(path):
        return load_features(path, expect=meta)
    fs = encode_split(clip, split, batch_size=batch_size, template=template, on_error=on_error,
                      error_log=path[:-4] + ".skipped.txt", progress=progress, project=project)
    save_features(path, fs)
    return fs
