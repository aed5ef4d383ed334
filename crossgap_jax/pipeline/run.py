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
from typing import Any

import numpy as np

from crossgap_jax.baselines import (
    SpanClasses,
    isoclip_features,
    isoclip_map,
    projection_heads,
    read_span_classes,
    span_basis,
    span_project,
    window_basis_for,
    window_features,
)
from crossgap_jax.data import (
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
    invert_dataset,
    load_inverted,
)
from crossgap_jax.models import CLIP, get_config, load_clip, require_text_tower
from crossgap_jax.pipeline.distributed import barrier
from crossgap_jax.pipeline.feature_types import NEEDS_TEXT_TOWER, check_feature_type
from crossgap_jax.pipeline.features import cached_split_features
from crossgap_jax.pipeline.presets import PRESETS, Preset, isoclip_k
from crossgap_jax.pipeline.prompts import ovi_target_split
from crossgap_jax.pipeline.settings import BaselineSettings, RunSettings
from crossgap_jax.pipeline.store import FeatureSet, meta_key
from crossgap_jax.pipeline.tasks import limit_task, with_revisitop1m
from crossgap_jax.pipeline.weights import (
    checkpoint_sha256,
    claimed_by_family,
    is_tag,
    resolve_source,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder, its typed settings and the loaded model (frozen), with the caches of
    what it computed.

    Making a run writes nothing: features and inversions are cached when computed, and
    each command writes its own record (:func:`~crossgap_jax.pipeline.records.write_record`),
    so no command rewrites another's files. The measurements are functions of a run
    (:mod:`crossgap_jax.pipeline.measure`); this module imports none of its consumers.

    Attributes:
        run_dir: output folder.
        settings: the typed settings (:class:`~crossgap_jax.pipeline.settings.RunSettings`),
            built once by the caller.
        clip: the loaded CLIP bundle.
        checkpoint: where the weights came from (a file, hub id or tag source; None: not
            known, e.g. a bundle made in memory).
        data_root: dataset root (``None``: ``$CROSSGAP_SHARED_DATA``).
        progress: show progress bars.
        shard_size: items per atomic result file of an inversion (what a kill can lose).
        roots: per-dataset data roots (beside ``data_root``, the default).
        text_sources: per dataset, which texts its task used (filled by :meth:`task`).
        data_fingerprints: per ``"<dataset>/<split>"`` whose features were used, its data
            root and fingerprint (``root``, ``mode``, ``digest``, ``num_items``; filled by
            :meth:`features`, recorded in the provenance).
    """

    run_dir: str
    settings: RunSettings
    clip: CLIP
    checkpoint: str | None = None
    data_root: str | None = None
    progress: bool = True
    shard_size: int = 256
    roots: dict[str, str] = dataclasses.field(default_factory=dict)
    text_sources: dict = dataclasses.field(default_factory=dict)
    data_fingerprints: dict = dataclasses.field(default_factory=dict)
    # one fingerprint per split object of this run (a run reads its data once):
    # id(split) -> (split, SplitFingerprint); shared by dataclasses.replace copies
    _fingerprints: dict = dataclasses.field(default_factory=dict, repr=False)
    _baseline_cache: dict = dataclasses.field(default_factory=dict, repr=False)
    # not an init field: dataclasses.replace (other roots, settings) starts an empty cache
    _task_cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    @property
    def preset(self) -> Preset:
        """The backbone's settings (:attr:`settings`'s stored
        :class:`~crossgap_jax.pipeline.presets.Preset`)."""
        return self.settings.preset

    @property
    def baselines(self) -> BaselineSettings:
        """The fitted baselines' settings (:attr:`settings`'s stored
        :class:`~crossgap_jax.pipeline.settings.BaselineSettings`)."""
        return self.settings.baselines

    @property
    def config(self) -> dict[str, Any]:
        """The JSON form of the settings kept in records (:meth:`RunSettings.as_dict`) with
        the weights: ``checkpoint`` and ``checkpoint_sha256``."""
        return {**self.settings.as_dict(), "checkpoint": self.checkpoint,
                "checkpoint_sha256": checkpoint_sha256(self.clip)}

    def with_settings(self, **changes: Any) -> Run:
        """This run with ``changes`` to its :attr:`settings` (checked again; the task cache
        starts empty, the feature and baseline caches are shared)."""
        return dataclasses.replace(self, settings=self.settings.replace(**changes))

    def root_for(self, dataset: str) -> str | None:
        """The data root of ``dataset``: its own (``roots``), else :attr:`data_root`."""
        return self.roots.get(dataset, self.data_root)

    def require_text_tower(self, *kinds: str) -> None:
        """Raise :class:`~crossgap_jax.models.families.NoTextTowerError` (a ValueError naming
        the backbone and the operation) when the model is image-only and any of ``kinds``
        (feature types, classify variants: ``feature_types.NEEDS_TEXT_TOWER``) needs a text
        tower."""

        for kind in kinds:
            if kind in NEEDS_TEXT_TOWER:
                require_text_tower(self.clip.config, NEEDS_TEXT_TOWER[kind])

    # --- features ---------------------------------------------------------------------
    def features(self, split, template: str = "{}", project: bool = True) -> FeatureSet:
        """Features of ``split``, cached in the run folder keyed by model, settings and the
        split's data fingerprint (taken once per split per run; see
        :func:`~crossgap_jax.pipeline.features.cached_split_features`)."""
        if split.modality == "text":
            self.require_text_tower("text")
        fp = self.data_fingerprint(split)
        name = self._fingerprints[id(split)][2]
        if split.modality == "image" and self.settings.exif_transpose:
            split = dataclasses.replace(split, exif_transpose=True)  # in the cache key
        fs = cached_split_features(self.clip, split, self.run_dir, template=template,
                                   batch_size=self.preset.batch_size,
                                   on_error=self.settings.on_error,
                                   progress=self.progress, project=project, fingerprint=fp)
        if split.modality == "image":  # reported with the split's data (records, tables)
            entry = self.data_fingerprints[name]
            entry["exif_oriented"] = len(fs.oriented)
            for key in ("from_subfolders", "empty_classes_skipped"):  # image folders
                if split.extra.get(key):
                    entry[key] = split.extra[key]
        return fs

    def data_fingerprint(self, split) -> SplitFingerprint:
        """The data fingerprint of ``split`` (``settings.verify_data``), taken on first use
        and noted in :attr:`data_fingerprints`."""
        if id(split) not in self._fingerprints:
            fp = split_fingerprint(split, verify=self.settings.verify_data)
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
        (k_top, k_bottom), source = isoclip_k(self.preset, task)
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

    def span_map(self, classes: SpanClasses | None = None, reduce: int | None = None
                 ) -> tuple[np.ndarray, dict]:
        """Herzog & Wang's span basis ``U`` ``(d // r, d)`` (:func:`span_basis`) and its
        settings: the text features are the model's unnormalised ``encode_text`` of the raw
        class names of ``classes`` (default: ``baselines.span_classes``, else the shipped
        ImageNet list; no template), cached like every text split (keyed by the names); the
        basis is kept in memory per (class-list sha256, ``reduce``; default
        ``baselines.span_reduce``). Returns ``(U, info)``.

        Raises:
            NoTextTowerError: an image-only backbone.
            FileNotFoundError, ValueError: a bad ``--span-classes`` file.
        """
        self.require_text_tower("span")
        classes = classes or read_span_classes(self.baselines.span_classes)
        reduce = reduce or self.baselines.span_reduce
        key = ("span", classes.sha256, reduce)
        if key not in self._baseline_cache:
            names = list(classes.names)
            split = TextSplit(name="span-classes", split=classes.sha256[:12],
                              items=[f"class{i:05d}" for i in range(len(names))], texts=names)
            ft = self.features(split)
            basis = span_basis(ft.features, reduce)
            info = dict(classes.info(), reduce=reduce, dim=int(basis.shape[1]),
                        kept=int(basis.shape[0]), template="{}",
                        source="Herzog & Wang, cvpr26-suppl/span_projection.py")
            self._baseline_cache[key] = (basis, info)
        return self._baseline_cache[key]

    def span(self, split) -> FeatureSet:
        """``span`` features of ``split``: its (projected, unnormalised) embeddings mapped by
        ``U^T U`` (:meth:`span_map`, :func:`span_project`), float32; the settings are in
        ``meta["span"]``."""
        basis, info = self.span_map()
        base = self.features(split)
        return dataclasses.replace(
            base, features=span_project(base.features, basis).astype(np.float32),
            meta=dict(base.meta, span=info))

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
        settings, execution = self.inversion_settings(method)
        fields = inversion_key_fields(settings, execution)
        key = meta_key({"features": fs.meta, "method": method, **fields,
                        "record_steps": list(settings.record_steps)})
        safe = fs.meta["dataset"].replace(":", "_").replace("/", "_")
        out = os.path.join(self.run_dir, "inversions", method, safe, f"{fs.meta['split']}-{key}")
        # Multi-host: each process inverts its share of the items into the shared folder,
        # then all wait for each other before the shards are gathered.
        invert_dataset(self.clip, fs.items, fs.features, out, settings, execution,
                       shard_size=self.shard_size)
        barrier(f"inverted:{out}")
        names, arrays = load_inverted(out)
        meta = dict(fs.meta, inversion={"method": method, **fields}, inversion_dir=out)
        # extra is item-major: losses (N, steps), recorded_features (N, S, D), ...
        return FeatureSet(list(names), arrays["features"], meta, extra=arrays)

    def inversion_settings(self, method: str) -> tuple[InversionSettings, ExecutionSettings]:
        """The typed settings of ``method``'s inversions in this run: the preset's, with the
        run's record steps and loss reduction (:meth:`Preset.inversion`) and the run's
        progress switch."""
        p = self.preset
        return (p.inversion(method, record_steps=self.settings.record_steps,
                            loss_reduction=self.settings.loss_reduction),
                dataclasses.replace(p.execution(), progress=self.progress))

    # --- tasks ------------------------------------------------------------------------
    def task(self, dataset: str, split: str | None = None) -> RetrievalTask:
        """The dataset's retrieval task (``split``: the query split; for caption datasets
        the split whose captions are used), with the authors' texts when
        ``settings.authors_assets`` is set, limited by ``settings.max_queries`` /
        ``max_gallery``.
        Loaded once per run (``reproduce`` asks for each task three times)."""
        key = (dataset, split)
        if key not in self._task_cache:
            self._task_cache[key] = self._load_task(dataset, split)
        return self._task_cache[key]

    def _load_task(self, dataset: str, split: str | None) -> RetrievalTask:
        task, source = apply_authors_assets(
            get_task(dataset, self.root_for(dataset), query_split=split,
                     qrels_missing=self.settings.qrels_missing),
            self.settings.authors_assets)
        if source:
            self.text_sources[task.name] = source
        if task.relevance == "revisitop":
            task = with_revisitop1m(task, self.revisitop1m_dir(task))
        s = self.settings
        if s.max_queries or s.max_gallery:
            task = limit_task(task, s.max_queries, s.max_gallery, seed=self.preset.seed)
        return task

    def revisitop1m_dir(self, task: RetrievalTask | None = None) -> str | None:
        """The +1M distractor folder (``.../revisitop1m/jpg``) of revisitop tasks, or None.

        ``settings.revisitop1m``: ``"auto"`` (default: ``revisitop1m/jpg`` under the data root
        or beside the dataset's folder, e.g. ``data/datasets/revisitop1m/jpg`` of the
        revisitop toolkit, when it exists, as the authors' loader does), ``"none"``
        (never), or a folder.
        """
        opt = self.settings.revisitop1m
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
        """Features of ``split`` of type ``image|text|oti|ovi|isoclip|isotropic-window|span``
        (the fitted types ``pca|centered|i0t|gr-clip``: the plain embeddings; ``task``:
        IsoCLIP's ``(k_top, k_bottom)`` column, default the split's modality)."""
        check_feature_type(split, feature_type)
        self.require_text_tower(feature_type)
        if feature_type == "isoclip":
            return self.isoclip(split, task)
        if feature_type == "isotropic-window":
            return self.isotropic_window(split)
        if feature_type == "span":
            return self.span(split)
        if feature_type == "ovi":  # the authors' target texts (docs/fidelity.md)
            split = ovi_target_split(split, self.settings.ovi_text)
        base = self.features(split)
        if feature_type in ("image", "text", "pca", "centered", "i0t", "gr-clip"):
            return base  # pca / centered / i0t / gr-clip: fitted later (apply_fitted)
        return self.inverted(base, feature_type)

    def split(self, dataset: str, split: str | None = None):
        """One split of ``dataset``, with the authors' texts when ``settings.authors_assets`` is set
        (the gallery summaries, the 20NG queries)."""
        data = get_dataset(dataset, self.root_for(dataset), split)
        if isinstance(data, TextSplit):
            name = dataset_info(dataset).name if not dataset.startswith("tfds:") else dataset
            data, _ = apply_authors_assets_to_split(data, name, self.settings.authors_assets)
        return data


def default_run_dir(p: Preset) -> str:
    """``results/<preset>`` when the preset's own model runs, else ``results/<model>``."""

    if p.name in PRESETS and PRESETS[p.name].model == p.model:
        return os.path.join("results", p.name)
    return os.path.join("results", re.sub(r"[^A-Za-z0-9_.-]+", "_", str(p.model)))


def make_run(run_dir: str | None, settings: RunSettings | Preset, *,
             checkpoint: str | None = None, tokenizer: str | None = None,
             model_explicit: bool = False, data_root: str | None = None,
             roots: dict[str, str] | None = None, progress: bool = True,
             shard_size: int = 256) -> Run:
    """Load the model of ``settings.preset`` (``checkpoint`` overrides its pretrained
    source) and make a run. Nothing is written.

    ``settings``: the run's typed settings (:class:`~crossgap_jax.pipeline.settings.RunSettings`,
    built once by the caller: the CLI, the demo, a test); a bare
    :class:`~crossgap_jax.pipeline.presets.Preset` is ``RunSettings(preset)`` (every switch
    at its default). The run's settings are these with the preset's ``model`` / ``pretrained``
    as loaded, and ``authors_assets`` as an absolute path (checked to be a folder with the
    summaries first).

    A native file (:func:`~crossgap_jax.models.save_native`) carries its architecture: it
    is loaded as the file says, and the preset's ``model`` becomes that name. With
    ``model_explicit`` (the user named the model), a file holding another architecture is
    an error. ``"demo"`` as checkpoint or pretrained tag is the shipped demo model
    (:func:`~crossgap_jax.pipeline.weights.pretrained_aliases`).

    ``tokenizer``: the tokenizer model file of families that need one (SigLIP).
    ``run_dir`` None: :func:`default_run_dir`. ``roots``: per-dataset data roots.

    Raises:
        ValueError: an explicit model that the native file contradicts; checkpoint errors
            (:class:`~crossgap_jax.models.checkpoint.errors.CheckpointError`).
    """

    if isinstance(settings, Preset):
        settings = RunSettings(settings)
    p = settings.preset
    if settings.authors_assets is not None:
        find_summaries_dir(settings.authors_assets)  # a wrong folder fails before the model
        settings = settings.replace(authors_assets=os.path.abspath(
            os.path.expanduser(settings.authors_assets)))
    dtype = settings.dtype
    source, native = resolve_source(p.pretrained, checkpoint)
    if native is not None:
        if model_explicit and p.model != native.name:
            if get_config(p.model) != native.replace(name=p.model):
                raise ValueError(f"{source} holds architecture {native.name!r}, not "
                                 f"{p.model!r}")
        clip = load_clip(source, dtype=dtype, tokenizer=tokenizer)
        model = clip.config.name if not model_explicit else p.model
    elif not model_explicit and checkpoint is not None and claimed_by_family(source):
        # A checkpoint that names its own family (a DINOv2 / SigLIP directory, a SLIP .pt):
        # its architecture comes from the files, not from the default preset's model.
        clip = load_clip(source, dtype=dtype, tokenizer=tokenizer)
        model = clip.config.name
    else:
        clip = load_clip(p.model, source, dtype=dtype, tokenizer=tokenizer)
        model = p.model
    requested = checkpoint or p.pretrained
    pretrained = requested if is_tag(requested) else None
    settings = settings.replace(preset=dataclasses.replace(p, model=model,
                                                           pretrained=pretrained))
    return Run(run_dir or default_run_dir(settings.preset), settings, clip,
               checkpoint=source, data_root=data_root, progress=progress,
               shard_size=shard_size, roots=dict(roots or {}))


__all__ = ["Run", "make_run", "default_run_dir", "inversion_key_fields"]


def inversion_key_fields(settings: InversionSettings, execution: ExecutionSettings
                         ) -> dict[str, Any]:
    """The JSON edge of an inversion's settings: the fields that name its cache folder and
    its record entry (``steps``, ``learning_rate``, ``weight_decay``, ``seed``,
    ``batch_size``, ``num_tokens``; OTI's ``template``; ``loss_reduction`` only when not the
    default, so the keys of default runs stay as they were). The record steps are keyed
    apart."""
    fields: dict[str, Any] = dict(steps=settings.steps, learning_rate=settings.learning_rate,
                                  weight_decay=settings.weight_decay, seed=settings.seed,
                                  batch_size=execution.batch_size,
                                  num_tokens=settings.num_tokens)
    if settings.method == "oti":
        fields["template"] = settings.template
    if settings.loss_reduction != "per_example":
        fields["loss_reduction"] = settings.loss_reduction
    return fields
