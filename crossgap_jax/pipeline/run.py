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
hyper-parameters), so a restarted run reuses finished work and a changed setting never
silently reuses stale work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax import retrieval
from crossgap_jax.data import RetrievalTask, TextSplit, dataset_info, get_dataset, get_task
from crossgap_jax.data.authors_assets import (
    apply_authors_assets,
    apply_authors_assets_to_split,
    check_authors_assets,
    find_summaries_dir,
)
from crossgap_jax.fileio import atomic_write_bytes, atomic_write_json, ensure_dir
from crossgap_jax.models import CLIP, load_clip
from crossgap_jax.models.families import has_text_tower
from crossgap_jax.pipeline.features import cached_split_features
from crossgap_jax.pipeline.prompts import (
    DEFAULT_CLASS_TEMPLATE,
    OVI_CLASS_TEMPLATE,
    class_prompt,
    clean_classname,
)
from crossgap_jax.pipeline.published import published_for
from crossgap_jax.pipeline.store import FeatureSet, meta_key

log = logging.getLogger(__name__)

FEATURE_TYPES = ("image", "text", "oti", "ovi", "isoclip", "isotropic-window")
# classify variants: zero-shot (inter-modal, OTI, OVI) and nearest-class-mean (plain projected
# image features, IsoCLIP-mapped features).
CLASSIFY_VARIANTS = ("inter", "oti", "ovi", "ncm", "isoclip-ncm")
# Feature types and classify variants that need a text tower (refused, before any work, for
# an image-only backbone such as DINOv2; see models.families.require_text_tower).
NEEDS_TEXT_TOWER = {"text": "text features", "oti": "OTI", "ovi": "OVI",
                    "isoclip": "IsoCLIP", "isotropic-window": "the isotropic-window baseline",
                    "inter": "zero-shot classification", "isoclip-ncm": "IsoCLIP NCM"}


@dataclasses.dataclass
class Run:
    """A run folder, its resolved configuration and the loaded model.

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
    _baseline_cache: dict = dataclasses.field(default_factory=dict, repr=False)
    # not an init field: dataclasses.replace (other roots, settings) starts an empty cache
    _task_cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        # No file is written here: each command writes its own record (write_record).
        ensure_dir(self.run_dir)

    def root_for(self, dataset: str) -> str | None:
        """The data root of ``dataset``: its own (``roots``), else :attr:`data_root`."""
        return self.roots.get(dataset, self.data_root)

    def require_text_tower(self, *kinds: str) -> None:
        """Raise :class:`~crossgap_jax.models.families.NoTextTowerError` (a ValueError naming
        the backbone and the operation) when the model is image-only and any of ``kinds``
        (feature types, classify variants: :data:`NEEDS_TEXT_TOWER`) needs a text tower."""
        from crossgap_jax.models.families import require_text_tower

        for kind in kinds:
            if kind in NEEDS_TEXT_TOWER:
                require_text_tower(self.clip.config, NEEDS_TEXT_TOWER[kind])

    # --- features ---------------------------------------------------------------------
    def features(self, split, template: str = "{}", project: bool = True) -> FeatureSet:
        if split.modality == "text":
            self.require_text_tower("text")
        return cached_split_features(self.clip, split, self.run_dir, template=template,
                                     batch_size=self.cfg["batch_size"], on_error=self.on_error,
                                     progress=self.progress, project=project)

    def isoclip_map(self, side: str, task: str):
        """IsoCLIP's map of one side (``"image"``/``"text"``) with the ``(k_top, k_bottom)``
        of ``task`` (``"image"``: image retrieval / NCM; ``"text"``: text retrieval): the
        ``--isoclip-k`` override, else the published value of the backbone
        (:func:`~crossgap_jax.pipeline.presets.isoclip_k`, which raises when there is none).
        Returns ``(map, info)``."""
        from crossgap_jax.baselines.isoclip import isoclip_map, projection_heads
        from crossgap_jax.pipeline.presets import isoclip_k

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
        from crossgap_jax.baselines.isoclip import isoclip_features

        m, info = self.isoclip_map(split.modality, task or split.modality)
        pre = self.features(split, project=False)
        return dataclasses.replace(pre, features=np.asarray(isoclip_features(pre.features, m)),
                                   meta=dict(pre.meta, isoclip=info))

    def isotropic_window(self, split) -> FeatureSet:
        """Our own ``isotropic-window`` heuristic (NOT IsoCLIP): pre-projection features
        mapped onto an automatically chosen, approximately isotropic window of the
        singular directions (:mod:`crossgap_jax.baselines.window`)."""
        from crossgap_jax.baselines.window import window_basis_for, window_features

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
        """OTI (image features) or OVI (text features) of every item of ``fs``, resumable."""
        from crossgap_jax.inversion.resumable import invert_dataset, load_inverted

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

    def inversion_kwargs(self, method: str) -> dict:
        c = self.cfg
        kw = dict(steps=int(c[f"{method}_steps"]), learning_rate=float(c["learning_rate"]),
                  weight_decay=float(c["weight_decay"]), seed=int(c["seed"]),
                  batch_size=int(c["batch_size"]))
        if method == "oti":
            kw.update(num_tokens=int(c["num_pseudo_tokens"]), template=c["template_sentence"])
        else:
            kw.update(num_tokens=int(c["ovi_num_pseudo_tokens"]))
        if c.get("loss_reduction", "per_example") != "per_example":  # default: keys unchanged
            kw["loss_reduction"] = c["loss_reduction"]
        return kw

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
            get_task(dataset, self.root_for(dataset), query_split=split), self.authors_assets)
        if source:
            self.text_sources[task.name] = source
        if task.relevance == "revisitop":
            task = with_revisitop1m(task, self.revisitop1m_dir(task))
        if self.max_queries or self.max_gallery:
            task = limit_task(task, self.max_queries, self.max_gallery, seed=int(self.cfg["seed"]))
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
        from crossgap_jax.data._fs import resolve_root

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
        base = self.features(split)
        if feature_type in ("image", "text"):
            return base
        return self.inverted(base, feature_type)

    def retrieve(self, dataset: str, query_type: str | None = None,
                 gallery_type: str | None = None, split: str | None = None) -> dict:
        """Retrieval metrics for one dataset (defaults: the modality of each side;
        ``split``: see :meth:`task`)."""
        task = self.task(dataset, split)
        check_feature_type(task.query, query_type or task.query.modality)  # before any work
        check_feature_type(task.gallery, gallery_type or task.gallery.modality)
        self.require_text_tower(query_type or task.query.modality,
                                gallery_type or task.gallery.modality)
        kind = task.query.modality  # IsoCLIP: image or text retrieval, both sides alike
        q = self.side_features(task.query, query_type or task.query.modality, kind)
        g = self.side_features(task.gallery, gallery_type or task.gallery.modality, kind)
        metrics = evaluate_task(task, q, g, metric_variant=self.metric_variant)
        metrics["metric_variant"] = self.metric_variant
        if task.relevance == "revisitop":
            metrics["gallery_size"] = len(task.gallery)
            metrics["num_distractors"] = int(task.gallery.extra.get("num_distractors", 0))
        for side, fs in (("query", q), ("gallery", g)):
            for key in ("isoclip", "isotropic_window"):
                if key in fs.meta:
                    metrics[f"{side}_{key}"] = fs.meta[key]
        metrics["query_type"] = query_type or task.query.modality
        metrics["gallery_type"] = gallery_type or task.gallery.modality
        metrics["query_split"] = task.query.split
        metrics["gallery_split"] = task.gallery.split
        metrics["num_gallery"] = len(task.gallery)
        if task.name in self.text_sources:
            metrics["text_source"] = self.text_sources[task.name]
        return metrics

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
        """Zero-shot accuracy: standard (inter-modal) and the intra-modal OTI/OVI variants.

        - ``inter``: image features vs the text classifier of CoOp's class prompts.
        - ``oti``: OTI features of the images vs that text classifier.
        - ``ovi``: image features vs a classifier of OVI-inverted ``"a photo of {}"`` class
          prompts (the authors' OVI template, not the CoOp prompt).
        - ``ncm`` / ``isoclip-ncm``: nearest class mean (IsoCLIP's classification task,
          :meth:`ncm`), with plain projected or IsoCLIP-mapped image features.

        Class names have ``_`` replaced by a space in every prompt (as the authors do).

        ``split``: default ``test`` when the dataset has one, else its query split (an
        image folder without split sub-folders: ``all``).
        ``per_item``: also return ``"top1_correct"``: ``{variant: (N,) bool}`` per image
        (in the order of ``"items"``) for ``inter``/``oti``/``ovi``, e.g. for a paired
        bootstrap interval.
        """
        unknown = [v for v in variants if v not in CLASSIFY_VARIANTS]
        if unknown:
            raise ValueError(f"unknown classify variant(s) {unknown}; known: "
                             f"{', '.join(CLASSIFY_VARIANTS)}")
        self.require_text_tower(*variants)
        split = split or default_classify_split(dataset, self.root_for(dataset))
        images = get_dataset(dataset, self.root_for(dataset), split)
        if self.max_queries and self.max_queries < len(images):
            rng = np.random.default_rng(int(self.cfg["seed"]))
            images = images.subset(np.sort(rng.choice(len(images), self.max_queries, False)))
        if images.modality != "image" or not images.classnames or images.labels is None:
            raise ValueError(f"{dataset}/{split}: zero-shot needs a labelled image split "
                             "with class names")
        fi = self.features(images)
        labels = _labels_for(images, fi.items)
        prompt = class_prompt(dataset)
        classes = _classnames_split(dataset, images.classnames)
        classifier = None  # image-only backbone: only NCM variants get here (checked above)
        if has_text_tower(self.clip.config):
            ft = self.features(classes, template=prompt)
            classifier = retrieval.build_classifier(ft.features)
        out: dict[str, Any] = {"prompt": prompt if classifier is not None else None,
                               "num_classes": len(images.classnames),
                               "split": split, "num_images": len(fi.items)}
        pairs = {}  # variant -> (features, classifier)
        if "inter" in variants:
            pairs["inter"] = (fi.features, classifier)
        if "oti" in variants:
            pairs["oti"] = (self.inverted(fi, "oti").features, classifier)
        if "ovi" in variants:
            fo = self.features(classes, template=OVI_CLASS_TEMPLATE)
            inv_c = self.inverted(fo, "ovi")
            pairs["ovi"] = (fi.features, retrieval.build_classifier(inv_c.features))
            out["ovi_prompt"] = OVI_CLASS_TEMPLATE
        for name, (x, w) in pairs.items():
            out[name] = retrieval.zero_shot_accuracy(x, w, labels)
        if per_item:
            out["items"] = list(fi.items)
            out["top1_correct"] = {name: retrieval.class_ranks(x, w, labels) == 1
                                   for name, (x, w) in pairs.items()}
        ncm_variants = [v for v in variants if v in ("ncm", "isoclip-ncm")]
        if ncm_variants:
            out.update(self.ncm(dataset, images, ncm_variants))
        return out

    def ncm(self, dataset: str, images, variants: Sequence[str] = ("ncm", "isoclip-ncm"),
            train_split: str = "train") -> dict:
        """Nearest-class-mean accuracy of the labelled image split ``images``.

        Prototypes: the mean pre-projection image feature of each class over ``train_split``
        (CoOp's ``train``), mapped like the queries: ``ncm`` by the plain image head
        (``x @ P_i (+ b_i)``), ``isoclip-ncm`` by IsoCLIP's image map with the image-task
        ``(k_top, k_bottom)``. Cosine to the prototypes, top-k accuracy in percent
        (:mod:`crossgap_jax.baselines.ncm`). With ``max_gallery`` (smoke runs) the training
        split is cut to ``max(1, max_gallery // C)`` seeded random images per class.
        """
        from crossgap_jax.baselines.isoclip import isoclip_features, projection_heads
        from crossgap_jax.baselines.ncm import class_means, ncm_accuracy

        train = get_dataset(dataset, self.root_for(dataset), train_split)
        if list(train.classnames or []) != list(images.classnames):
            raise ValueError(f"{dataset}: the class names of the {train_split!r} split differ "
                             f"from those of {images.split!r}; NCM needs the same classes")
        num_classes = len(images.classnames)
        if self.max_gallery:
            train = _per_class_subset(train, max(1, self.max_gallery // num_classes),
                                      seed=int(self.cfg["seed"]))
        xtr = self.features(train, project=False)
        xte = self.features(images, project=False)
        means = class_means(xtr.features, _labels_for(train, xtr.items), num_classes)
        yte = _labels_for(images, xte.items)
        out: dict[str, Any] = {"ncm_train": {"split": train_split, "num_images": len(xtr)}}
        if "ncm" in variants:
            head = projection_heads(self.clip)[0]
            out["ncm"] = ncm_accuracy(head(xte.features), yte, head(means))
        if "isoclip-ncm" in variants:
            m, info = self.isoclip_map("image", "image")
            out["isoclip-ncm"] = dict(
                ncm_accuracy(isoclip_features(xte.features, m), yte,
                             isoclip_features(means, m)), isoclip=info)
        return out


def check_feature_type(split, feature_type: str) -> None:
    """Raise ValueError unless ``feature_type`` applies to ``split``'s modality."""
    if feature_type not in FEATURE_TYPES:
        raise ValueError(f"feature type must be one of {FEATURE_TYPES}, got {feature_type!r}")
    if feature_type in ("image", "text") and split.modality != feature_type:
        raise ValueError(f"{split.name}/{split.split} holds {split.modality}s; "
                         f"feature type {feature_type!r} does not apply")
    if feature_type in ("oti", "ovi"):
        needed = "image" if feature_type == "oti" else "text"
        if split.modality != needed:
            raise ValueError(f"{feature_type.upper()} inverts {needed} features, but "
                             f"{split.name}/{split.split} holds {split.modality}s")


def _barrier(name: str) -> None:
    """Wait for every process of a multi-host run (no-op on one host)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_writer() -> bool:
    """Whether this process writes run-level results (process 0 of a multi-host run)."""
    import jax

    return jax.process_index() == 0


def limit_task(task: RetrievalTask, max_queries: int | None, max_gallery: int | None,
               seed: int = 0) -> RetrievalTask:
    """A smaller task for smoke runs: a seeded random subset of the queries, and a gallery
    that keeps the positives of the chosen queries first, then random other items.

    Metrics on a limited task are not comparable with the paper's; every record and table
    states the limits. On all-vs-all tasks (``exclude_self``: the queries are the gallery)
    both limits cap that one set: ``min(max_queries, max_gallery)`` items.
    """
    if task.relevance == "revisitop":
        raise ValueError("revisitop tasks cannot be subset (the ground truth indexes the "
                         "full gallery)")
    rng = np.random.default_rng(seed)
    q = task.query
    if task.exclude_self and (max_queries or max_gallery):
        max_queries = min(x for x in (max_queries, max_gallery) if x)
    if max_queries and max_queries < len(q):
        q = q.subset(np.sort(rng.choice(len(q), max_queries, replace=False)))
    g = task.gallery
    if task.exclude_self:
        g = q
    elif max_gallery and max_gallery < len(g):
        if task.relevance in ("label", "group"):
            attr = "labels" if task.relevance == "label" else "groups"
            pos = np.isin(getattr(g, attr), getattr(q, attr))
        else:
            keep_q = set(q.items)
            wanted = {d for qi, r in (task.qrels or {}).items() if qi in keep_q
                      for d, v in r.items() if v > 0}
            pos = np.array([it in wanted for it in g.items])
        first = np.flatnonzero(pos)
        rest = np.flatnonzero(~pos)
        first = rng.permutation(first)[:max_gallery]
        fill = rng.permutation(rest)[: max(0, max_gallery - len(first))]
        g = g.subset(np.sort(np.concatenate([first, fill])))
    qrels = task.qrels
    if qrels is not None:
        keep_q = set(q.items)
        qrels = {k: v for k, v in qrels.items() if k in keep_q}
    return dataclasses.replace(task, query=q, gallery=g, qrels=qrels)


def with_revisitop1m(task: RetrievalTask, distractor_dir: str | None) -> RetrievalTask:
    """``task`` with every ``<distractor_dir>/*/*.jpg`` appended to its gallery (ROxford5k /
    RParis6k +1M, as the authors' loader does when ``revisitop1m/jpg`` exists).

    The distractors come after the ``imlist`` images, so the ground-truth indices stay valid;
    they are never positive. Item names are ``revisitop1m/<sub>/<file>``; the gallery split is
    named ``gallery+1m`` and records ``extra["num_distractors"]``.

    Raises:
        FileNotFoundError: ``distractor_dir`` holds no ``*/*.jpg``.
    """
    if distractor_dir is None:
        return task
    import glob

    from crossgap_jax.data import ImageSplit

    paths = sorted(glob.glob(os.path.join(distractor_dir, "*", "*.jpg")))
    if not paths:
        raise FileNotFoundError(f"revisitop1m distractors: no {distractor_dir}/*/*.jpg images")
    g = task.gallery
    if g.paths is None:
        raise ValueError(f"{task.name}: distractors need a file-based gallery")
    items = [f"revisitop1m/{os.path.relpath(p, distractor_dir)}" for p in paths]
    gallery = ImageSplit(name=g.name, split=f"{g.split}+1m", items=g.items + items,
                         paths=list(g.paths) + paths, root=g.root,
                         extra=dict(g.extra, num_distractors=len(paths),
                                    num_base=len(g.items), distractor_dir=distractor_dir))
    return dataclasses.replace(task, gallery=gallery)


def _classnames_split(dataset: str, classnames: Sequence[str]):
    """The class names as a text split, ``_`` replaced by a space (as in every prompt)."""
    from crossgap_jax.data import TextSplit

    return TextSplit(name=f"{dataset}-classnames", split="classes",
                     items=[f"class{i:05d}" for i in range(len(classnames))],
                     texts=[clean_classname(c) for c in classnames],
                     labels=np.arange(len(classnames)))


def _per_class_subset(split, per_class: int, seed: int = 0):
    """At most ``per_class`` seeded random items of each class (smoke runs)."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(split.labels == c))[:per_class]
            for c in np.unique(split.labels)]
    return split.subset(np.sort(np.concatenate(keep)))


def _labels_for(split, items: Sequence[str]) -> np.ndarray:
    pos = {it: i for i, it in enumerate(split.items)}
    return np.asarray([split.labels[pos[it]] for it in items])


def _aligned(split, fs: FeatureSet) -> tuple[Any, np.ndarray]:
    """The split restricted to the items that have features, and those features in order."""
    pos = {it: i for i, it in enumerate(fs.items)}
    keep = [i for i, it in enumerate(split.items) if it in pos]
    sub = split if len(keep) == len(split) else split.subset(keep)
    feats = fs.features[[pos[split.items[i]] for i in keep]]
    return sub, feats


def evaluate_task(task: RetrievalTask, query: FeatureSet, gallery: FeatureSet,
                  metric_variant: str = "standard") -> dict:
    """Metrics of ``task`` for the given query / gallery features (percent).

    Items missing from a feature set (corrupt images that were skipped) are left out and
    counted in ``num_query_items_missing`` / ``num_gallery_items_missing``.
    ``metric_variant``: see :func:`crossgap_jax.retrieval.evaluate` (revisitop tasks follow
    the revisitop protocol either way).
    """
    q_split, qf = _aligned(task.query, query)
    g_split, gf = _aligned(task.gallery, gallery)
    missing = {"num_query_items_missing": len(task.query) - len(q_split),
               "num_gallery_items_missing": len(task.gallery) - len(g_split)}
    if task.relevance == "revisitop":
        # Skipped distractors (after the imlist images) do not move any ground-truth index.
        base = int(task.gallery.extra.get("num_base", len(task.gallery)))
        if missing["num_query_items_missing"] or g_split.items[:base] != task.gallery.items[:base]:
            raise ValueError(f"{task.name}: revisitop needs every query and gallery image; "
                             f"missing: {missing}")
        res = retrieval.revisitop_evaluate(qf, gf, task.gnd)
        return {**_flatten(res), **missing}
    args, kwargs = _relevance_args(task, q_split, g_split)
    res = retrieval.evaluate(qf, gf, *args, metric_variant=metric_variant, **kwargs)
    return {**res, **missing}


def _relevance_args(task: RetrievalTask, q_split, g_split) -> tuple[tuple, dict]:
    """``retrieval.evaluate`` arguments of a label / group / qrels task."""
    if task.relevance in ("label", "group"):
        attr = "labels" if task.relevance == "label" else "groups"
        rel = (getattr(q_split, attr), getattr(g_split, attr))
        if task.exclude_self and len(q_split) != len(g_split):
            raise ValueError("exclude_self with differing query/gallery items after skips")
        return (rel,), {"exclude_self": task.exclude_self}
    return (task.qrels,), {"query_ids": q_split.items, "gallery_ids": g_split.items}


def evaluate_task_per_query(task: RetrievalTask, query: FeatureSet, gallery: FeatureSet
                            ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per-query metrics of ``task`` (what :func:`evaluate_task` averages).

    Returns:
        ``(query items, per-query dict)`` with ``"AP"`` etc. as ``(Q,)`` arrays in [0, 1]
        (see :func:`crossgap_jax.retrieval.evaluate_per_query`), for the queries that have
        features; ``retrieval.summarize`` of the dict gives :func:`evaluate_task`'s numbers.

    Raises:
        ValueError: revisitop tasks (their per-query metrics are per protocol).
    """
    if task.relevance == "revisitop":
        raise ValueError(f"{task.name}: per-query metrics are not defined for revisitop tasks")
    q_split, qf = _aligned(task.query, query)
    g_split, gf = _aligned(task.gallery, gallery)
    args, kwargs = _relevance_args(task, q_split, g_split)
    return list(q_split.items), retrieval.evaluate_per_query(qf, gf, *args, **kwargs)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, np.floating, np.integer)):
            out[f"{prefix}{k}"] = float(v)
    return out


# ---------------------------------------------------------------------------------------
# reproduce: baseline vs inverted retrieval for presets x datasets, with tables
# ---------------------------------------------------------------------------------------
def paper_modes(modality: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """(baseline, inverted) (query type, gallery type) pairs for a dataset modality."""
    if modality == "image":
        return ("image", "image"), ("oti", "image")
    return ("text", "text"), ("ovi", "text")


class DatasetFailure(RuntimeError):
    """A dataset of :func:`reproduce` failed after others finished; ``results`` holds what
    finished (already written to ``metrics.json`` / ``table.md``)."""

    def __init__(self, dataset: str, error: BaseException, results: dict):
        super().__init__(f"dataset {dataset!r} failed: {type(error).__name__}: {error} "
                         f"(the table holds the {len(results.get('datasets', {}))} dataset(s) "
                         f"that finished)")
        self.dataset, self.error, self.results = dataset, error, results


def reproduce(run: Run, datasets: Sequence[str], roots: dict[str, str] | None = None) -> dict:
    """Intra-modal baseline vs inverted retrieval on each dataset; writes metrics + table.

    Args:
        run: the run (model, settings, folder).
        datasets: dataset names, in order.
        roots: per-dataset data roots (default: ``run.roots``, then ``run.data_root``).

    Returns:
        The metrics dict written to ``<run_dir>/metrics.json``.

    Raises:
        DatasetFailure: a dataset failed; the datasets before it are in its ``results``,
            and their table was written.
    """
    if roots:
        run = dataclasses.replace(run, roots={**run.roots, **roots})
    results: dict[str, Any] = {"provenance": provenance(run), "config": run.cfg,
                               "datasets": {}, "metric_variant": run.metric_variant,
                               "loss_reduction": run.cfg.get("loss_reduction", "per_example")}
    check_authors_assets([_canonical_name(ds) for ds in datasets], run.authors_assets)
    failure = None
    for ds in datasets:
        try:
            task = run.task(ds)
            base_mode, inv_mode = paper_modes(task.query.modality)
            entry = {"modality": task.query.modality,
                     "baseline": run.retrieve(ds, *base_mode),
                     "inverted": run.retrieve(ds, *inv_mode),
                     "text_source": run.text_sources.get(task.name)}  # None: as read
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - reported after the finished ones are written
            failure = (ds, e)
            break
        results["datasets"][ds] = entry
        if is_writer():
            atomic_write_json(os.path.join(run.run_dir, "metrics.json"), results)
    results["provenance"] = provenance(run)  # now with the text sources the tasks used
    summarize(results)
    if is_writer() and results["datasets"]:
        atomic_write_json(os.path.join(run.run_dir, "metrics.json"), results)
        atomic_write_bytes(os.path.join(run.run_dir, "table.md"),
                           results_table(results).encode())
    _barrier(f"reproduce:{run.run_dir}")  # every process may read the written table
    if failure is not None:
        raise DatasetFailure(failure[0], failure[1], results) from failure[1]
    return results


def summarize(results: dict) -> dict:
    """Add ``average`` (per modality) and the paper's ``published`` row to a
    :func:`reproduce` results dict (in place; also returned). The published row is the one
    of the model and weights in ``results["provenance"]``
    (:func:`~crossgap_jax.pipeline.published.published_for`), ``{}`` for any other model;
    ``published_preset`` names whose row it is."""
    results["average"] = _averages(results["datasets"])
    prov = results.get("provenance") or {}
    match = published_for(prov.get("model"), prov.get("pretrained"),
                          prov.get("checkpoint_sha256"))
    results["published"] = match[1] if match else {}
    results["published_preset"] = match[0] if match else None
    return results


def _canonical_name(dataset: str) -> str:
    return dataset if dataset.startswith("tfds:") else dataset_info(dataset).name


def _text_source_lines(per_ds: dict) -> list[str]:
    """The table's note on which texts each text dataset used (gallery, 20NG queries)."""
    lines = []
    for ds, v in per_ds.items():
        src = v.get("text_source")
        if not src:
            continue
        line = f"- `{ds}`: gallery texts: {src['gallery']}"
        if "queries" in src:
            line += f"; queries: {src['queries']}"
        lines.append(line)
    return ["", "Text sources:", "", *lines] if lines else []


def _main_metric(m: dict) -> float | None:
    for k in ("mAP", "mAP_medium"):
        if k in m:
            return float(m[k])
    return None


def _averages(per_ds: dict) -> dict:
    out = {}
    for modality in ("image", "text"):
        rows = [v for v in per_ds.values() if v["modality"] == modality]
        if rows:
            out[modality] = {
                side: float(np.mean([_main_metric(r[side]) for r in rows]))
                for side in ("baseline", "inverted")}
            out[modality]["num_datasets"] = len(rows)
    return out


def _subset_line(prov: dict) -> str | None:
    sub = prov.get("subset") or {}
    if not (sub.get("max_queries") or sub.get("max_gallery")):
        return None
    return (f"> **Caveat: subset run** (--max-queries {sub.get('max_queries')}, --max-gallery "
            f"{sub.get('max_gallery')}): numbers are on a seeded random subset and are not "
            "comparable with the paper's.")


def _format_text_sources(sources: dict) -> str:
    """One line: which texts each text dataset used (empty: as read from the files)."""
    if not sources:
        return "as read from the dataset files"
    parts = []
    for ds, src in sources.items():
        part = f"{ds}: gallery {src.get('gallery')}"
        if "queries" in src:
            part += f", queries {src['queries']}"
        parts.append(part)
    return "; ".join(parts)


def provenance_header(prov: dict, title: str) -> str:
    """Markdown lines naming what produced a table: model, checkpoint sha256, preset, every
    setting, subset caveat, text sources and the package version."""
    s = prov.get("settings", {})
    lines = [f"# {title}", "",
             f"- model: `{prov.get('model')}`; weights: `{prov.get('checkpoint')}`"
             + (f" (pretrained `{prov['pretrained']}`)" if prov.get("pretrained") else ""),
             f"- checkpoint sha256: `{prov.get('checkpoint_sha256') or 'not available'}`",
             f"- preset (settings): `{prov.get('preset')}`; "
             + ", ".join(f"{k}={s[k]!r}" if isinstance(s[k], str) else f"{k}={s[k]}"
                         for k in sorted(s)),
             f"- text sources: {_format_text_sources(prov.get('text_sources') or {})}",
             f"- crossgap_jax {prov.get('version')}"]
    caveat = _subset_line(prov)
    if caveat:
        lines += ["", caveat]
    return "\n".join(lines) + "\n\n"


def _counts(m: dict) -> str:
    """``evaluated/asked | skipped (no relevant) | missing`` cells ("-" where the protocol
    does not count them, e.g. revisitop)."""
    def cell(key: str) -> str:
        return str(int(m[key])) if key in m else "-"

    return (f"{cell('num_evaluated')}/{cell('num_queries')} | "
            f"{cell('num_skipped_no_relevant')} | {cell('num_query_items_missing')}")


def results_table(results: dict) -> str:
    """Markdown table: per dataset and average, baseline vs inverted mAP, with the paper's
    published averages only when the run's model and weights are the paper's (see
    :func:`~crossgap_jax.pipeline.published.published_for`). Query counts: evaluated /
    asked, skipped for having no relevant item, missing (unreadable)."""
    names = {"image": ("image->image", "OTI->image"), "text": ("text->text", "OVI->text")}
    lines = ["| dataset | mode | baseline mAP | inverted mAP | gain | queries evaluated | "
             "skipped (no relevant) | missing |", "|---|---|---|---|---|---|---|---|"]
    for ds, v in results["datasets"].items():
        b, i = _main_metric(v["baseline"]), _main_metric(v["inverted"])
        mode = " vs ".join(names[v["modality"]])
        lines.append(f"| {_dataset_label(ds, v['baseline'])} | {mode} | {b:.2f} | {i:.2f} | "
                     f"{i - b:+.2f} | {_counts(v['inverted'])} |")
    pub = results.get("published") or {}
    for modality, avg in results.get("average", {}).items():
        mode = " vs ".join(names[modality])
        b, i = avg["baseline"], avg["inverted"]
        n = avg['num_datasets']
        lines.append(f"| **average** ({n} dataset{'s' if n != 1 else ''}) | {mode} | {b:.2f} | "
                     f"{i:.2f} | {i - b:+.2f} | | | |")
        if modality in pub:
            pb, pi = pub[modality]
            lines.append(f"| *paper (avg. over its datasets)* | {mode} | {pb:.1f} | {pi:.1f} | "
                         f"{pi - pb:+.1f} | | | |")
    prov = results.get("provenance") or {"model": results.get("config", {}).get("model"),
                                         "preset": results.get("config", {}).get("preset")}
    head = provenance_header(prov, "Results: intra-modal baseline vs modality inversion")
    if pub:
        note = (f"mAP in percent. Paper rows: the published averages of "
                f"`{results.get('published_preset')}` over the paper's datasets (per-dataset "
                "numbers are not available here).")
    else:
        note = ("mAP in percent. No paper row: the paper published no numbers for this model "
                "and weights.")
    cfg = results.get("config", {})
    variant = results.get("metric_variant", cfg.get("metric_variant", "standard"))
    reduction = results.get("loss_reduction", cfg.get("loss_reduction", "per_example"))
    note += (" ROxford5k / RParis6k: Medium protocol mAP.\n\n"
             f"Metric variant: `{variant}`; OTI/OVI loss reduction: `{reduction}` "
             "(see docs/fidelity.md).")
    lines += _text_source_lines(results["datasets"])
    return head + note + "\n\n" + "\n".join(lines) + "\n"


def _dataset_label(ds: str, m: dict) -> str:
    """Table label of a dataset: revisitop rows name the protocol and the gallery."""
    if "mAP_medium" not in m:
        return ds
    size = int(m.get("gallery_size", 0))
    extra = int(m.get("num_distractors", 0))
    what = f"+1M distractors, gallery {size:,}" if extra else f"gallery {size:,}"
    return f"{ds} (Medium; {what})"


def retrieval_table(run: Run, dataset: str, m: dict) -> str:
    """Markdown table of one ``retrieve`` result, headed by the run's provenance."""
    keys = [k for k in ("mAP", "mAP@R", "P@R", "R@1", "R@5", "R@10") if k in m]
    keys += [k for k in sorted(m) if "/" in k and k.endswith("mAP")]
    lines = ["| dataset | query -> gallery | split | " + " | ".join(keys)
             + " | queries evaluated | skipped (no relevant) | missing | gallery |",
             "|" + "---|" * (len(keys) + 7)]
    lines.append(f"| {dataset} | {m['query_type']} -> {m['gallery_type']} | "
                 f"{m.get('query_split')}/{m.get('gallery_split')} | "
                 + " | ".join(f"{float(m[k]):.2f}" for k in keys)
                 + f" | {_counts(m)} | {m.get('num_gallery', '')} |")
    return (provenance_header(provenance(run), "Retrieval") + "Metrics in percent.\n\n"
            + "\n".join(lines) + "\n")


def classify_table(run: Run, dataset: str, m: dict) -> str:
    """Markdown table of one ``classify`` result, headed by the run's provenance."""
    lines = ["| dataset | split | variant | top-1 | top-5 | images |", "|---|---|---|---|---|---|"]
    for v, r in m.items():
        if isinstance(r, dict) and "top1" in r:
            lines.append(f"| {dataset} | {m.get('split')} | {v} | {float(r['top1']):.2f} | "
                         f"{float(r.get('top5', float('nan'))):.2f} | "
                         f"{int(r.get('num_samples', 0))} |")
    return (provenance_header(provenance(run), "Zero-shot classification")
            + "Accuracy in percent" + (f"; prompt `{m['prompt']}`" if m.get("prompt") else "")
            + ".\n\n" + "\n".join(lines)
            + "\n")


def pretrained_aliases() -> dict[str, str]:
    """Pretrained names that resolve to a shipped file: ``{"demo": <the demo checkpoint>}``
    (:data:`crossgap_jax.demo.DEMO_CHECKPOINT`, whatever model that file holds)."""
    from crossgap_jax import demo

    return {"demo": demo.DEMO_CHECKPOINT}



def resolve_source(cfg: dict, checkpoint: str | None = None
                   ) -> tuple[str | None, Any]:
    """The weights a run loads, and their architecture when the file states it.

    ``checkpoint`` (a path / hub id) wins over the preset's ``checkpoint`` / ``pretrained``;
    a pretrained alias (``"demo"``) becomes its file.

    Returns:
        ``(source, config)``: ``config`` is the architecture stored in a native file
        (:func:`~crossgap_jax.models.checkpoints.native_config`), else None.

    Raises:
        FileNotFoundError: an alias whose file is missing.
    """
    from crossgap_jax.models.checkpoints import native_config

    source = checkpoint or cfg.get("checkpoint") or cfg.get("pretrained")
    aliases = pretrained_aliases()
    if source in aliases and not os.path.exists(source):
        source = aliases[source]
        if not os.path.isfile(source):
            raise FileNotFoundError(f"the demo checkpoint {source} is missing; rebuild it "
                                    "with: python -m crossgap_jax.train.digits")
    if isinstance(source, str) and os.path.exists(os.path.expanduser(source)):
        return source, native_config(os.path.expanduser(source))
    return source, None


def _is_tag(source: str | None) -> bool:
    return (isinstance(source, str) and re.fullmatch(r"[a-z0-9_]+", source) is not None
            and not os.path.exists(source))


def default_run_dir(cfg: dict) -> str:
    """``results/<preset>`` when the preset's own model runs, else ``results/<model>``."""
    from crossgap_jax.pipeline.presets import PRESETS

    preset = cfg.get("preset")
    if preset in PRESETS and PRESETS[preset]["model"] == cfg.get("model"):
        return os.path.join("results", preset)
    return os.path.join("results", re.sub(r"[^A-Za-z0-9_.-]+", "_", str(cfg.get("model"))))


def make_run(run_dir: str | None, cfg: dict, *, data_root: str | None = None,
             progress: bool = True, on_error: str = "skip", record_steps: Sequence[int] = (),
             checkpoint: str | None = None, dtype: str = "float32",
             max_queries: int | None = None, max_gallery: int | None = None,
             shard_size: int = 256, tokenizer: str | None = None,
             model_explicit: bool = False, roots: dict[str, str] | None = None,
             authors_assets: str | None = None, metric_variant: str = "standard",
             loss_reduction: str = "per_example", revisitop1m: str = "auto") -> Run:
    """Load the model of ``cfg`` (``checkpoint`` overrides its pretrained source) and a run.

    A native file (:func:`~crossgap_jax.models.checkpoints.save_native`) carries its
    architecture: it is loaded as the file says, and ``cfg["model"]`` becomes that name.
    With ``model_explicit`` (the user named ``cfg["model"]``), a file holding another
    architecture is an error. ``"demo"`` as checkpoint or pretrained tag is the shipped demo
    model (:func:`pretrained_aliases`).

    ``tokenizer``: the tokenizer model file of families that need one (SigLIP).
    ``run_dir`` None: :func:`default_run_dir`. ``roots``: per-dataset data roots.
    ``authors_assets``: see :class:`Run` (checked to be a folder with the summaries first).
    ``metric_variant`` (``"standard"`` / ``"authors"``), ``loss_reduction``
    (``"per_example"`` / ``"mean"``) and ``revisitop1m`` (``"auto"`` / ``"none"`` / a folder)
    are the compatibility switches of docs/fidelity.md; they are recorded in the config.

    Raises:
        ValueError: an explicit model that the native file contradicts; checkpoint errors
            (:class:`~crossgap_jax.models.checkpoints.CheckpointError`).
    """
    from crossgap_jax.inversion.core import LOSS_REDUCTIONS
    from crossgap_jax.retrieval._common import check_metric_variant

    check_metric_variant(metric_variant)
    if loss_reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got "
                         f"{loss_reduction!r}")
    if authors_assets is not None:
        find_summaries_dir(authors_assets)  # a wrong folder fails before the model loads
        authors_assets = os.path.abspath(os.path.expanduser(authors_assets))
    source, native = resolve_source(cfg, checkpoint)
    if native is not None:
        if model_explicit and cfg["model"] != native.name:
            from crossgap_jax.models import get_config

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
               revisitop1m=revisitop1m)
    return Run(run_dir or default_run_dir(cfg), cfg, clip, data_root=data_root,
               progress=progress, on_error=on_error, record_steps=tuple(record_steps),
               max_queries=max_queries, max_gallery=max_gallery, shard_size=shard_size,
               roots=dict(roots or {}), authors_assets=authors_assets)


def _claimed_by_family(source: Any) -> bool:
    """Whether a non-CLIP family recognises ``source`` (``families.detect_family``)."""
    from crossgap_jax.models.families import detect_family

    return isinstance(source, str) and detect_family(source) != "clip"


def checkpoint_sha256(clip: CLIP) -> str | None:
    """sha256 of the checkpoint file a bundle was loaded from (verified / hub-cache value
    when the loader has it, else hashed once and kept in ``clip.info``); None for several
    files or none."""
    info = clip.info
    if info.get("checkpoint_sha256") is None:
        sha = info.get("sha256")
        path = info.get("path")
        if sha is None and isinstance(path, str) and os.path.isfile(path):
            from crossgap_jax.models.checkpoints import sha256_file

            sha = sha256_file(path)
        info["checkpoint_sha256"] = sha
    return info["checkpoint_sha256"]


_SETTING_KEYS = ("learning_rate", "weight_decay", "batch_size", "oti_steps", "ovi_steps",
                 "num_pseudo_tokens", "ovi_num_pseudo_tokens", "template_sentence", "seed",
                 "dtype", "authors_assets", "isoclip_k", "metric_variant", "loss_reduction",
                 "revisitop1m")


def provenance(run: Run) -> dict:
    """What produced a run's results: ``model``, ``checkpoint``, ``checkpoint_sha256``,
    ``pretrained`` (tag, or None for a file), ``preset``, ``settings`` (every preset key and
    the compute dtype), ``subset`` (``max_queries`` / ``max_gallery``, None = full),
    ``text_sources`` ({dataset: source} of replaced texts; empty: as read) and ``version``."""
    from crossgap_jax import __version__

    c = run.cfg
    settings = {k: c[k] for k in _SETTING_KEYS if k in c}
    settings.update(on_error=run.on_error, record_steps=list(run.record_steps))
    return {"model": c.get("model"), "checkpoint": c.get("checkpoint"),
            "checkpoint_sha256": c.get("checkpoint_sha256") or checkpoint_sha256(run.clip),
            "pretrained": c.get("pretrained"), "preset": c.get("preset"),
            "settings": settings,
            "subset": {"max_queries": run.max_queries, "max_gallery": run.max_gallery},
            "text_sources": dict(run.text_sources), "version": __version__}


def write_record(run: Run, command: str, results: dict, *, key: dict | None = None,
                 argv: Sequence[str] | None = None, table: str | None = None,
                 also_to: str | None = None) -> str:
    """Write ``<run_dir>/records/<command>-<key>.json``: the results with their provenance.

    The key hashes the command, ``key`` (its arguments: dataset, feature types, ...) and the
    provenance, so a command with other settings writes another record, and a rerun with
    the same settings rewrites only its own. ``also_to``: a second path for the same
    record (the CLI's ``--output``). Returns the path (written by process 0 only).
    """
    prov = provenance(run)
    k = meta_key({"command": command, "key": key or {}, "provenance": prov})
    path = os.path.join(run.run_dir, "records", f"{command}-{k}.json")
    record = {"command": command, "argv": list(argv or []), "arguments": key or {},
              "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "provenance": prov, "results": results}
    if table is not None:
        record["table"] = table
    if is_writer():
        atomic_write_json(path, record)
        if also_to:
            atomic_write_json(also_to, record)
    return path


def default_classify_split(dataset: str, root: str | None) -> str:
    """``test`` when the dataset has it, else its query split (image folders: their
    ``test`` sub-folder, else ``all``)."""
    from crossgap_jax.data import dataset_info
    from crossgap_jax.data.tfds_backend import PREFIX, TFDS_DEFAULTS

    if dataset.startswith(PREFIX):
        d = TFDS_DEFAULTS.get(dataset[len(PREFIX):])
        return d.query_split if d else "test"
    info = dataset_info(dataset)
    if info.name == "imagefolder" and root is not None:
        from crossgap_jax.data import images as im

        splits = im.imagefolder_splits(os.fspath(root))
        return "test" if "test" in splits else splits[0]
    return "test" if "test" in info.splits else info.query_split


__all__ = ["Run", "DatasetFailure", "evaluate_task", "evaluate_task_per_query", "make_run",
           "paper_modes", "provenance", "reproduce", "resolve_source", "results_table",
           "summarize", "write_record", "DEFAULT_CLASS_TEMPLATE"]
