"""End-to-end runs: features -> inversion -> retrieval / zero-shot -> metrics and tables.

Every artefact lives under one run folder::

    <run_dir>/records/<command>-<key>.json        one record per command and setting
    <run_dir>/features/<dataset>/<split>-<modality>-<key>.npz
    <run_dir>/inversions/<oti|ovi>/<dataset>/<split>-<key>/   resumable shards
    <run_dir>/metrics.json, <run_dir>/table.md     the latest ``reproduce`` (also in records/)

A record holds the command's results and its :func:`provenance` (model, checkpoint
sha256, preset, every setting, subset sizes, package version); its key hashes the
command, its arguments and that provenance, so no command rewrites another's record.

Keys hash everything an artefact depends on (model weights, preprocessing, template,
hyper-parameters, and the data: each split's data fingerprint, carried in the features'
``meta`` into the inversion keys), so a restarted run reuses finished work and a changed
setting or changed data never silently reuses stale work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax.baselines import (
    isoclip_features,
    isoclip_map,
    projection_heads,
    window_basis_for,
    window_features,
)
from crossgap_jax.data import (
    QRELS_MISSING,
    RetrievalTask,
    SplitFingerprint,
    TextSplit,
    apply_authors_assets,
    apply_authors_assets_to_split,
    dataset_info,
    find_summaries_dir,
    get_dataset,
    get_task,
    resolve_root,
    split_fingerprint,
)
from crossgap_jax.inversion import (
    ExecutionSettings,
    InversionSettings,
    check_loss_reduction,
    invert_dataset,
    load_inverted,
)
from crossgap_jax.models import CLIP, get_config, load_clip, require_text_tower
from crossgap_jax.pipeline import measure as measure_mod
from crossgap_jax.pipeline.features import cached_split_features
from crossgap_jax.pipeline.measure import check_feature_type
from crossgap_jax.pipeline.presets import PRESETS, Preset, isoclip_k
from crossgap_jax.pipeline.prompts import (
    DEFAULT_CLASS_TEMPLATE,  # noqa: F401 (re-export)
    OVI_TEXT_MODES,
    ovi_target_split,
)
from crossgap_jax.pipeline.records import _barrier, checkpoint_sha256
from crossgap_jax.pipeline.store import FeatureSet, meta_key
from crossgap_jax.pipeline.tasks import limit_task, with_revisitop1m
from crossgap_jax.pipeline.weights import (
    _claimed_by_family,
    _is_tag,
    pretrained_aliases,
    resolve_source,
    written_as_path,
)
from crossgap_jax.retrieval import check_metric_variant

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder, its resolved configuration and the loaded model (frozen).

    Making a run writes nothing: features and inversions are cached when computed, and
    each command writes its own record (:func:`~crossgap_jax.pipeline.records.write_record`),
    so no command rewrites another's files.

    Attributes:
        run_dir: output folder.
        cfg: resolved preset (see :mod:`crossgap_jax.pipeline.presets`).
        clip: the loaded CLIP bundle.
        data_root: dataset root (``None``: ``$CROSSGAP_SHARED_DATA``).
        progress: show progress bars.
        shard_size: items per atomic result file of an inversion (what a kill can lose).
        on_error: corrupt images: ``"skip"`` (counted) or ``"raise"``.
        record_steps: OTI/OVI steps to snapshot (Figure-2 analysis).
        max_queries, max_gallery: subset caps of every task (None: full; see
            :func:`limit_task`).
        roots: per-dataset data roots (beside ``data_root``, the default).
        authors_assets: a checkout of the paper authors' repository (or its
            ``data/summarized_texts``): text datasets then use the authors' gallery
            summaries and 20NG queries, as the paper did (see
            :mod:`crossgap_jax.data.authors_assets`); ``None``: raw texts, our queries.
        text_sources: per dataset, which texts its task used (filled by :meth:`task`).
        verify_data: fingerprint image files by their sha256 instead of path, size and mtime
            (CLI ``--verify-data``; see :mod:`crossgap_jax.data.fingerprint`).
        data_fingerprints: per ``"<dataset>/<split>"`` whose features were used, its data
            root and fingerprint (``root``, ``mode``, ``digest``, ``num_items``; filled by
            :meth:`features`, recorded in the provenance).
    """

    run_dir: str
    cfg: dict
    clip: CLIP
    data_root: str | None = None
    progress: bool = True
    on_error: str = "skip"
    record_steps: tuple[int, ...] = ()
    max_queries: int | None = None
    max_gallery: int | None = None
    shard_size: int = 256
    roots: dict[str, str] = dataclasses.field(default_factory=dict)
    authors_assets: str | None = None
    text_sources: dict = dataclasses.field(default_factory=dict)
    verify_data: bool = False
    data_fingerprints: dict = dataclasses.field(default_factory=dict)
    # one fingerprint per split object of this run (a run reads its data once):
    # id(split) -> (split, SplitFingerprint); shared by dataclasses.replace copies
    _fingerprints: dict = dataclasses.field(default_factory=dict, repr=False)
    _baseline_cache: dict = dataclasses.field(default_factory=dict, repr=False)
    # not an init field: dataclasses.replace (other roots, settings) starts an empty cache
    _task_cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def root_for(self, dataset: str) -> str | None:
        """The data root of ``dataset``: its own (``roots``), else :attr:`data_root`."""
        return self.roots.get(dataset, self.data_root)

    def require_text_tower(self, *kinds: str) -> None:
        """Raise :class:`~crossgap_jax.models.families.NoTextTowerError` (a ValueError naming
        the backbone and the operation) when the model is image-only and any of ``kinds``
        (feature types, classify variants: ``measure.NEEDS_TEXT_TOWER``) needs a text
        tower."""

        for kind in kinds:
            if kind in measure_mod.NEEDS_TEXT_TOWER:
                require_text_tower(self.clip.config, measure_mod.NEEDS_TEXT_TOWER[kind])

    # --- features ---------------------------------------------------------------------
    def features(self, split, template: str = "{}", project: bool = True) -> FeatureSet:
        """Features of ``split``, cached in the run folder keyed by model, settings and the
        split's data fingerprint (taken once per split per run; see
        :func:`~crossgap_jax.pipeline.features.cached_split_features`)."""
        if split.modality == "text":
            self.require_text_tower("text")
        fp = self.data_fingerprint(split)
        name = self._fingerprints[id(split)][2]
        if split.modality == "image" and self.cfg.get("exif_transpose"):
            split = dataclasses.replace(split, exif_transpose=True)  # in the cache key
        fs = cached_split_features(self.clip, split, self.run_dir, template=template,
                                   batch_size=self.preset.batch_size, on_error=self.on_error,
                                   progress=self.progress, project=project, fingerprint=fp)
        if split.modality == "image":  # reported with the split's data (records, tables)
            self.data_fingerprints[name]["exif_oriented"] = len(fs.oriented)
        return fs

    def data_fingerprint(self, split) -> SplitFingerprint:
        """The data fingerprint of ``split`` (with :attr:`verify_data`), taken on first use
        and noted in :attr:`data_fingerprints`."""
        if id(split) not in self._fingerprints:
            fp = split_fingerprint(split, verify=self.verify_data)
            entry = dict(fp.as_meta(), num_items=len(split))
            name = f"{split.name}/{split.split}"
            known = self.data_fingerprints.get(name)
            if known is not None and {k: known[k] for k in entry} != entry:  # another subset
                name = f"{name} ({len(split)} items, {fp.digest[:8]})"
            self._fingerprints[id(split)] = (split, fp, name)
            self.data_fingerprints.setdefault(name, entry)
        return self._fingerprints[id(split)][1]

    def isoclip_map(self, side: str, task: str):
        """IsoCLIP's map of one side (``"image"``/``"text"``) with the ``(k_top, k_bottom)``
        of ``task`` (``"image"``: image retrieval / NCM; ``"text"``: text retrieval): the
        ``--isoclip-k`` override, else the published value of the backbone
        (:func:`~crossgap_jax.pipeline.presets.isoclip_k`, which raises when there is none).
        Returns ``(map, info)``."""

        self.require_text_tower("isoclip")
        (k_top, k_bottom), source = isoclip_k(self.cfg, task)
        key = ("isoclip", side, k_top, k_bottom)
        if key not in self._baseline_cache:
            self._baseline_cache[key] = isoclip_map(*projection_heads(self.clip), side, k_top,
                                                    k_bottom)
        m = self._baseline_cache[key]
        return m, dict(m.info(), task=task, source=source)

    def isoclip(self, split, task: str | None = None) -> FeatureSet:
        """IsoCLIP features of ``split`` (training-free baseline): its pre-projection
        features mapped by :meth:`isoclip_map` of its modality; ``task`` picks the published
        ``(k_top, k_bottom)`` column (default: the split's modality)."""

        m, info = self.isoclip_map(split.modality, task or split.modality)
        pre = self.features(split, project=False)
        return dataclasses.replace(pre, features=np.asarray(isoclip_features(pre.features, m)),
                                   meta=dict(pre.meta, isoclip=info))

    def isotropic_window(self, split) -> FeatureSet:
        """Our own ``isotropic-window`` heuristic (NOT IsoCLIP): pre-projection features
        mapped onto an automatically chosen, approximately isotropic window of the
        singular directions (:mod:`crossgap_jax.baselines.window`)."""

        self.require_text_tower("isotropic-window")
        if "window" not in self._baseline_cache:
            self._baseline_cache["window"] = window_basis_for(self.clip)
        basis = self._baseline_cache["window"]
        pre = self.features(split, project=False)
        mapping = basis.image_map if split.modality == "image" else basis.text_map
        window = {"start": basis.start, "stop": basis.stop, "power": basis.power}
        return dataclasses.replace(pre, features=np.asarray(window_features(pre.features,
                                                                            mapping)),
                                   meta=dict(pre.meta, isotropic_window=window))

    def inverted(self, fs: FeatureSet, method: str) -> FeatureSet:
        """OTI (image features) or OVI (text features) of every item of ``fs``, resumable.

        The folder key hashes ``fs.meta``, which holds the split's data fingerprint (image
        splits: ``meta["data"]``; texts: ``texts_sha256``): when the data changes, the
        split's inversions are redone in a new folder (per split: a shard holds many items,
        and the authors' batch-mean objective couples the items of a batch)."""

        self.require_text_tower(method)
        kwargs = self.inversion_kwargs(method)
        key = meta_key({"features": fs.meta, "method": method, **kwargs,
                        "record_steps": list(self.record_steps)})
        safe = fs.meta["dataset"].replace(":", "_").replace("/", "_")
        out = os.path.join(self.run_dir, "inversions", method, safe, f"{fs.meta['split']}-{key}")
        # Multi-host: each process inverts its share of the items into the shared folder,
        # then all wait for each other before the shards are gathered.
        invert_dataset(self.clip, fs.items, fs.features, out, method=method,
                       shard_size=self.shard_size, record_steps=self.record_steps,
                       progress=self.progress, **kwargs)
        _barrier(f"inverted:{out}")
        names, arrays = load_inverted(out)
        meta = dict(fs.meta, inversion={"method": method, **kwargs}, inversion_dir=out)
        # extra is item-major: losses (N, steps), recorded_features (N, S, D), ...
        return FeatureSet(list(names), arrays["features"], meta, extra=arrays)

    @property
    def preset(self) -> Preset:
        """The typed settings of :attr:`cfg` (:class:`~crossgap_jax.pipeline.presets.Preset`)."""
        return Preset.from_dict(self.cfg)

    def inversion_settings(self, method: str) -> tuple[InversionSettings, ExecutionSettings]:
        """The typed settings of ``method``'s inversions in this run: the preset's, with the
        run's record steps and loss reduction (:meth:`Preset.inversion`)."""
        p = self.preset
        return (p.inversion(method, record_steps=self.record_steps,
                            loss_reduction=self.cfg.get("loss_reduction", "per_example")),
                p.execution())

    def inversion_kwargs(self, method: str) -> dict:
        """Keyword arguments of :func:`~crossgap_jax.inversion.invert_dataset` for
        ``method`` (``"oti"`` / ``"ovi"``), from :meth:`inversion_settings` (the record
        steps are passed apart; these keys also name the inversion's cache folder)."""
        s, ex = self.inversion_settings(method)
        kw: dict[str, Any] = dict(steps=s.steps, learning_rate=s.learning_rate,
                                  weight_decay=s.weight_decay, seed=s.seed,
                                  batch_size=ex.batch_size, num_tokens=s.num_tokens)
        if method == "oti":
            kw["template"] = s.template
        if s.loss_reduction != "per_example":  # default: keys unchanged
            kw["loss_reduction"] = s.loss_reduction
        return kw

    @property
    def ovi_text(self) -> str:
        """OVI's target texts: ``"authors"`` (default, ``_`` -> space) or ``"raw"``
        (:func:`~crossgap_jax.pipeline.prompts.ovi_target_split`)."""
        return str(self.cfg.get("ovi_text", "authors"))

    @property
    def metric_variant(self) -> str:
        """``"standard"`` (default) or ``"authors"`` (see docs/fidelity.md)."""
        return str(self.cfg.get("metric_variant", "standard"))

    # --- tasks ------------------------------------------------------------------------
    def task(self, dataset: str, split: str | None = None) -> RetrievalTask:
        """The dataset's retrieval task (``split``: the query split; for caption datasets
        the split whose captions are used), with the authors' texts when
        :attr:`authors_assets` is set, limited by ``max_queries`` / ``max_gallery``.
        Loaded once per run (``reproduce`` asks for each task three times)."""
        key = (dataset, split)
        if key not in self._task_cache:
            self._task_cache[key] = self._load_task(dataset, split)
        return self._task_cache[key]

    def _load_task(self, dataset: str, split: str | None) -> RetrievalTask:
        task, source = apply_authors_assets(
            get_task(dataset, self.root_for(dataset), query_split=split,
                     qrels_missing=str(self.cfg.get("qrels_missing") or "drop")),
            self.authors_assets)
        if source:
            self.text_sources[task.name] = source
        if task.relevance == "revisitop":
            task = with_revisitop1m(task, self.revisitop1m_dir(task))
        if self.max_queries or self.max_gallery:
            task = limit_task(task, self.max_queries, self.max_gallery, seed=self.preset.seed)
        return task

    def revisitop1m_dir(self, task: RetrievalTask | None = None) -> str | None:
        """The +1M distractor folder (``.../revisitop1m/jpg``) of revisitop tasks, or None.

        ``cfg["revisitop1m"]``: ``"auto"`` (default: ``revisitop1m/jpg`` under the data root
        or beside the dataset's folder, e.g. ``data/datasets/revisitop1m/jpg`` of the
        revisitop toolkit, when it exists, as the authors' loader does), ``"none"``
        (never), or a folder.
        """
        opt = str(self.cfg.get("revisitop1m") or "auto")
        if opt == "none":
            return None
        if opt != "auto":
            d = opt if os.path.basename(os.path.normpath(opt)) == "jpg" else os.path.join(
                opt, "jpg")
            if not os.path.isdir(d):
                raise FileNotFoundError(f"revisitop1m distractors: no folder {d} (expected "
                                        "<dir>/jpg/<sub>/<image>.jpg)")
            return d

        places = []
        try:
            places.append(resolve_root(self.data_root))
        except (FileNotFoundError, ValueError):
            pass
        if task is not None and task.gallery.root:  # <parent>/<dataset>/jpg
            places.append(os.path.dirname(os.path.dirname(os.path.normpath(task.gallery.root))))
        for place in places:
            d = os.path.join(os.fspath(place), "revisitop1m", "jpg")
            if os.path.isdir(d):
                return d
        return None

    def side_features(self, split, feature_type: str, task: str | None = None) -> FeatureSet:
        """Features of ``split`` of type ``image|text|oti|ovi|isoclip|isotropic-window``
        (``task``: IsoCLIP's ``(k_top, k_bottom)`` column, default the split's modality)."""
        check_feature_type(split, feature_type)
        self.require_text_tower(feature_type)
        if feature_type == "isoclip":
            return self.isoclip(split, task)
        if feature_type == "isotropic-window":
            return self.isotropic_window(split)
        if feature_type == "ovi":  # the authors' target texts (docs/fidelity.md)
            split = ovi_target_split(split, self.ovi_text)
        base = self.features(split)
        if feature_type in ("image", "text", "pca", "centered"):  # pca/centered: fitted later
            return base
        return self.inverted(base, feature_type)
    def retrieve(self, dataset: str, query_type: str | None = None,
                 gallery_type: str | None = None, split: str | None = None) -> dict:
        """Retrieval metrics for one dataset (:func:`crossgap_jax.pipeline.measure.retrieve`)."""
        return measure_mod.retrieve(self, dataset, query_type, gallery_type, split)

    def split(self, dataset: str, split: str | None = None):
        """One split of ``dataset``, with the authors' texts when :attr:`authors_assets` is set
        (the gallery summaries, the 20NG queries)."""
        data = get_dataset(dataset, self.root_for(dataset), split)
        if isinstance(data, TextSplit):
            name = dataset_info(dataset).name if not dataset.startswith("tfds:") else dataset
            data, _ = apply_authors_assets_to_split(data, name, self.authors_assets)
        return data

    def classify(self, dataset: str, variants: Sequence[str] = ("inter", "oti", "ovi"),
                 split: str | None = None, per_item: bool = False) -> dict:
        """Zero-shot / NCM accuracy (:func:`crossgap_jax.pipeline.measure.classify`)."""
        return measure_mod.classify(self, dataset, variants, split, per_item)

    def ncm(self, dataset: str, images, variants: Sequence[str] = ("ncm", "isoclip-ncm"),
            train_split: str = "train") -> dict:
        """Nearest-class-mean accuracy (:func:`crossgap_jax.pipeline.measure.ncm`)."""
        return measure_mod.ncm(self, dataset, images, variants, train_split)


def default_run_dir(cfg: dict) -> str:
    """``results/<preset>`` when the preset's own model runs, else ``results/<model>``."""

    preset = cfg.get("preset")
    if preset in PRESETS and PRESETS[preset].model == cfg.get("model"):
        return os.path.join("results", preset)
    return os.path.join("results", re.sub(r"[^A-Za-z0-9_.-]+", "_", str(cfg.get("model"))))


def make_run(run_dir: str | None, cfg: Preset | dict, *, data_root: str | None = None,
             progress: bool = True, on_error: str = "skip", record_steps: Sequence[int] = (),
             checkpoint: str | None = None, dtype: str = "float32",
             max_queries: int | None = None, max_gallery: int | None = None,
             shard_size: int = 256, tokenizer: str | None = None,
             model_explicit: bool = False, roots: dict[str, str] | None = None,
             authors_assets: str | None = None, metric_variant: str = "standard",
             loss_reduction: str = "per_example", revisitop1m: str = "auto",
             baselines: dict | None = None, ovi_text: str = "authors",
             qrels_missing: str = "drop",
             exif_transpose: bool = False, verify_data: bool = False) -> Run:
    """Load the model of ``cfg`` (``checkpoint`` overrides its pretrained source) and a run.

    ``cfg``: a :class:`~crossgap_jax.pipeline.presets.Preset` (typed; the CLI's), or its
    dict form (:meth:`~crossgap_jax.pipeline.presets.Preset.as_dict`, checked by
    :meth:`~crossgap_jax.pipeline.presets.Preset.from_dict`). Nothing is written.

    A native file (:func:`~crossgap_jax.models.native.save_native`) carries its
    architecture: it is loaded as the file says, and ``cfg["model"]`` becomes that name.
    With ``model_explicit`` (the user named ``cfg["model"]``), a file holding another
    architecture is an error. ``"demo"`` as checkpoint or pretrained tag is the shipped demo
    model (:func:`pretrained_aliases`).

    ``tokenizer``: the tokenizer model file of families that need one (SigLIP).
    ``run_dir`` None: :func:`default_run_dir`. ``roots``: per-dataset data roots.
    ``authors_assets``: see :class:`Run` (checked to be a folder with the summaries first).
    ``metric_variant`` (``"standard"`` / ``"authors"``), ``loss_reduction``
    (``"per_example"`` / ``"mean"``), ``revisitop1m`` (``"auto"`` / ``"none"`` / a folder)
    and ``ovi_text`` (``"authors"``: ``_`` -> space in OVI's target texts / ``"raw"``)
    are the compatibility switches of docs/fidelity.md; they are recorded in the config.
    ``baselines``: the settings of the fitted baselines and few-shot NCM
    (:class:`~crossgap_jax.pipeline.baselines.BaselineSettings` as a dict; None: defaults),
    recorded in the config. ``qrels_missing`` (``"drop"`` / ``"count"``) and
    ``exif_transpose`` are data switches of docs/fidelity.md, recorded in the config.
    ``verify_data``: see :class:`Run`.

    Raises:
        ValueError: an explicit model that the native file contradicts; checkpoint errors
            (:class:`~crossgap_jax.models.errors.CheckpointError`).
    """

    if isinstance(cfg, dict) and checkpoint is None:
        checkpoint = cfg.get("checkpoint")  # a run configuration's own weights
    cfg = (cfg if isinstance(cfg, Preset) else Preset.from_dict(cfg)).as_dict()
    check_metric_variant(metric_variant)
    if ovi_text not in OVI_TEXT_MODES:
        raise ValueError(f"ovi_text must be one of {OVI_TEXT_MODES}, got {ovi_text!r}")
    if qrels_missing not in QRELS_MISSING:
        raise ValueError(f"qrels_missing must be one of {QRELS_MISSING}, got {qrels_missing!r}")
    check_loss_reduction(loss_reduction)
    if authors_assets is not None:
        find_summaries_dir(authors_assets)  # a wrong folder fails before the model loads
        authors_assets = os.path.abspath(os.path.expanduser(authors_assets))
    source, native = resolve_source(cfg, checkpoint)
    if native is not None:
        if model_explicit and cfg["model"] != native.name:
            if get_config(cfg["model"]) != native.replace(name=cfg["model"]):
                raise ValueError(f"{source} holds architecture {native.name!r}, not "
                                 f"{cfg['model']!r}")
        clip = load_clip(source, dtype=dtype, tokenizer=tokenizer)
        model = clip.config.name if not model_explicit else cfg["model"]
    elif not model_explicit and checkpoint is not None and _claimed_by_family(source):
        # A checkpoint that names its own family (a DINOv2 / SigLIP directory, a SLIP .pt):
        # its architecture comes from the files, not from the default preset's model.
        clip = load_clip(source, dtype=dtype, tokenizer=tokenizer)
        model = clip.config.name
    else:
        clip = load_clip(cfg["model"], source, dtype=dtype, tokenizer=tokenizer)
        model = cfg["model"]
    requested = checkpoint or cfg.get("checkpoint") or cfg.get("pretrained")
    pretrained = requested if _is_tag(requested) else None
    cfg = dict(cfg, model=model, pretrained=pretrained, checkpoint=source, dtype=dtype,
               max_queries=max_queries, max_gallery=max_gallery,
               checkpoint_sha256=checkpoint_sha256(clip), authors_assets=authors_assets,
               metric_variant=metric_variant, loss_reduction=loss_reduction,
               revisitop1m=revisitop1m, baselines=baselines, ovi_text=ovi_text,
               qrels_missing=qrels_missing,
               exif_transpose=exif_transpose)
    return Run(run_dir or default_run_dir(cfg), cfg, clip, data_root=data_root,
               progress=progress, on_error=on_error, record_steps=tuple(record_steps),
               max_queries=max_queries, max_gallery=max_gallery, shard_size=shard_size,
               roots=dict(roots or {}), authors_assets=authors_assets,
               verify_data=verify_data)


__all__ = ["Run", "DEFAULT_CLASS_TEMPLATE", "make_run", "resolve_source", "default_run_dir",
           "pretrained_aliases", "written_as_path"]
