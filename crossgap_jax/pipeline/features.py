"""Encoding dataset splits with a CLIP bundle, cached on disk by what produced them."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crossgap_jax.data import (
    ImageBatchLoader,
    ImageDecodeError,
    ImageSplit,
    SplitFingerprint,
    TextSplit,
    iterate_text_batches,
    split_fingerprint,
)
from crossgap_jax.pipeline.store import (
    FeatureSet,
    load_features,
    meta_key,
    model_fingerprint,
    save_features,
)

log = logging.getLogger(__name__)


def feature_meta(clip: Any, split: ImageSplit | TextSplit, *, template: str = "{}",
                 project: bool = True, fingerprint: SplitFingerprint | None = None) -> dict:
    """Everything a split's features depend on (the cache key): model, dataset, split,
    items, preprocessing (images) or template and texts (texts), and for images the data
    fingerprint (``"data"``: root, mode, digest; ``fingerprint`` None: taken now, mode
    ``stat``). Texts are keyed by their contents (``texts_sha256``), which is their data."""
    meta = {"model": model_fingerprint(clip), "dataset": split.name, "split": split.split,
            "modality": split.modality, "num_items": len(split),
            "items_sha256": hashlib.sha256("\n".join(split.items).encode()).hexdigest(),
            "projected": project}
    if split.modality == "image":
        exif = {"exif_transpose": True} if split.exif_transpose else {}  # --exif-transpose
        meta["preprocessing"] = dict(clip.preprocess_options, **exif)
        meta["data"] = (fingerprint or split_fingerprint(split)).as_meta()
    else:
        meta["template"] = template
        meta["context_length"] = clip.config.text.context_length
        # The texts themselves (e.g. raw text vs the authors' summaries of the same items).
        meta["texts_sha256"] = hashlib.sha256(json.dumps(split.texts).encode()).hexdigest()
    return meta


def encode_split(clip: Any, split: ImageSplit | TextSplit, *, batch_size: int = 64,
                 template: str = "{}", on_error: str = "skip", error_log: str | None = None,
                 progress: bool = True, fast_decode: bool = False,
                 project: bool = True, fingerprint: SplitFingerprint | None = None
                 ) -> FeatureSet:
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
        fingerprint: the split's data fingerprint taken before reading it (None: taken
            now, mode ``stat``); its item keys go to ``fingerprints``.

    Returns:
        A :class:`FeatureSet` (``features`` ``(N', embed_dim)``, N' = N minus skipped items).
    """
    fingerprint = fingerprint or split_fingerprint(split)
    meta = feature_meta(clip, split, template=template, project=project,
                        fingerprint=fingerprint)
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
        oriented = dict(loader.oriented)
        if rescaled:
            log.warning("%s/%s: %d images deeper than 8 bits scaled by their bit depth "
                        "(the reference clamps them); see the feature file's 'rescaled'",
                        split.name, split.split, len(rescaled))
        if skipped:
            log.warning("%s/%s: %d images skipped (corrupt); see the feature file's 'skipped'",
                        split.name, split.split, len(skipped))
    else:
        names, feats, skipped, rescaled, oriented = [], [], {}, {}, {}
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
    return FeatureSet(names, features, meta, skipped, rescaled=rescaled,
                      fingerprints=fingerprint.keys(split.items), oriented=oriented)


#: Metadata that depends on the item list or the data (the rest is the settings key of a
#: cache entry).
_ITEM_KEYS = ("num_items", "items_sha256", "texts_sha256", "data")


def _reusable(fs: FeatureSet, keys: dict[str, str]) -> list[str]:
    """The items of ``keys`` (``{item: data key}``) that ``fs`` covers with the same data
    key (encoded or skipped)."""
    return [it for it, k in keys.items() if fs.fingerprints.get(it) == k]


def _merge(split: ImageSplit | TextSplit, meta: dict, keys: dict[str, str],
           parts: list[tuple[FeatureSet, set[str]]]) -> FeatureSet:
    """``split``'s features in its order from ``parts``: ``(features, items to take from
    them)`` (rows, or the reason an item was skipped), the first part holding an item wins."""
    rows: dict[str, tuple[int, int]] = {}
    skipped: dict[str, str] = {}
    rescaled: dict[str, str] = {}
    oriented: dict[str, int] = {}
    for p, (fs, take) in enumerate(parts):
        pos = {it: i for i, it in enumerate(fs.items)}
        for it in keys:
            if it not in take:
                continue
            if it in pos and it not in rows and it not in skipped:
                rows[it] = (p, pos[it])
                if it in fs.rescaled:
                    rescaled[it] = fs.rescaled[it]
                if it in fs.oriented:
                    oriented[it] = fs.oriented[it]
            elif it in fs.skipped and it not in rows and it not in skipped:
                skipped[it] = fs.skipped[it]
    names = [it for it in split.items if it in rows]
    dim = max((fs.features.shape[1] for fs, _ in parts if len(fs)), default=0)
    feats = np.zeros((len(names), dim), np.float32)
    for p, (fs, _) in enumerate(parts):
        out = [r for r, it in enumerate(names) if rows[it][0] == p]
        if out:
            feats[out] = fs.features[[rows[names[r]][1] for r in out]]
    return FeatureSet(names, feats, meta, {it: skipped[it] for it in split.items
                                           if it in skipped},
                      rescaled=rescaled, fingerprints=dict(keys), oriented=oriented)


def cached_split_features(clip: Any, split: ImageSplit | TextSplit, cache_dir: str, *,
                          template: str = "{}", batch_size: int = 64, on_error: str = "skip",
                          progress: bool = True, project: bool = True,
                          verify_data: bool = False,
                          fingerprint: SplitFingerprint | None = None) -> FeatureSet:
    """:func:`encode_split`, cached under ``cache_dir`` keyed by the model, the settings and
    the data.

    The file name is ``<split>-<modality>-<settings key>-<items key>.npz``: the settings key
    hashes everything but the item list and the data (model weights hash - by content, so
    another path or a symlink to the same checkpoint hits the same entry -, dataset, split,
    preprocessing / template), the items key the item list and the data: for images the
    data fingerprint (root, and per item path + size + mtime, or with ``verify_data`` the
    sha256 of the file; :func:`~crossgap_jax.data.fingerprint.split_fingerprint`), for
    texts the texts.

    Without an exact entry, the entry of the same settings that holds the most items of the
    split with the same per-item data key gives their rows (a ``--max-queries`` subset of a
    split encoded in full encodes nothing); only the other items are encoded (new ones, and
    changed ones - counted in a one-line warning -, including previously skipped images
    whose file changed), and the merged entry is written.

    An existing file is reused only if its metadata equals what is asked for; otherwise
    :class:`~crossgap_jax.pipeline.store.StaleArtifactError` is raised.

    Args:
        fingerprint: the split's data fingerprint if already taken (else taken here, with
            ``verify_data``).
    """
    fp = fingerprint or split_fingerprint(split, verify=verify_data)
    meta = feature_meta(clip, split, template=template, project=project, fingerprint=fp)
    settings = {k: v for k, v in meta.items() if k not in _ITEM_KEYS}
    safe = split.name.replace(":", "_").replace("/", "_")
    stem = f"{split.split}-{split.modality}-{meta_key(settings)}"
    folder = os.path.join(cache_dir, "features", safe)
    items_key = meta_key({k: meta[k] for k in _ITEM_KEYS if k in meta})
    path = os.path.join(folder, f"{stem}-{items_key}.npz")
    if os.path.exists(path):
        return _raise_if_skipped(load_features(path, expect=meta), split, on_error)
    keys = fp.keys(split.items)
    others = sorted(glob.glob(os.path.join(glob.escape(folder), glob.escape(stem) + "-*.npz")),
                    key=os.path.getsize, reverse=True)
    best, reuse, rank = None, [], (0, 0)
    for other in others:
        cached = load_features(other, expect=settings)
        if cached.meta.get("data", {}).get("mode") != meta.get("data", {}).get("mode"):
            continue  # keys of another fingerprint mode (stat vs sha256) never match
        found = _reusable(cached, keys)
        covered = sum(1 for it in keys if it in cached.fingerprints)
        if (len(found), covered) > rank:  # most reusable rows, then most items known
            best, reuse, rank = (other, cached), found, (len(found), covered)
        if len(reuse) == len(split):
            break
    if best is not None and len(reuse) == len(split):
        log.info("%s/%s: %d items taken from the cached %s (nothing encoded)", split.name,
                 split.split, len(split), best[0])
        return _raise_if_skipped(_merge(split, meta, keys, [(best[1], set(reuse))]), split,
                                 on_error)
    done = set(reuse)
    todo = [i for i, it in enumerate(split.items) if it not in done]
    changed = (sum(1 for it in split.items if it not in done and it in best[1].fingerprints)
               if best is not None else 0)
    if changed:
        log.warning("%s/%s: %d of %d items changed since the cached %s (data fingerprint, "
                    "%s), %d new: encoding %d, reusing %d", split.name, split.split, changed,
                    len(split), os.path.basename(best[0]), fp.mode,
                    len(todo) - changed, len(todo), len(reuse))
    part = split if len(todo) == len(split) else split.subset(todo)
    new = encode_split(clip, part, batch_size=batch_size, template=template, on_error=on_error,
                       error_log=path[:-4] + ".skipped.txt", progress=progress,
                       project=project,
                       fingerprint=dataclasses.replace(
                           fp, item_keys=tuple(fp.item_keys[i] for i in todo)))
    fs = new if part is split else _merge(
        split, meta, keys, [(new, set(new.fingerprints))] + ([(best[1], done)] if best else []))
    fs = dataclasses.replace(fs, meta=meta)
    save_features(path, fs)
    return _raise_if_skipped(fs, split, on_error)


def _raise_if_skipped(fs: FeatureSet, split: ImageSplit | TextSplit, on_error: str
                      ) -> FeatureSet:
    """``fs``, unless ``on_error="raise"`` and it leaves out images skipped as undecodable
    by an earlier ``skip`` run whose cache entry is reused (they are errors now too).

    Raises:
        ImageDecodeError: names how many, the first file and its reason, and the fixes.
    """
    if on_error != "raise" or not fs.skipped:
        return fs
    item, reason = next(iter(fs.skipped.items()))
    raise ImageDecodeError(
        f"{split.name}/{split.split}: {len(fs.skipped)} image(s) of the cached features were "
        f"skipped as undecodable by an earlier --on-error skip run (first: {item}: "
        f"{reason}); with --on-error raise they are errors: repair or remove them (a "
        f"changed file is re-read), or run with --on-error skip")
