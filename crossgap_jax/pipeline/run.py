"""End-to-end runs: features -> inversion -> retrieval / zero-shot -> metrics and tables.

Every artefact lives under one run folder::

    <run_dir>/config.json                         resolved configuration
    <run_dir>/features/<dataset>/<split>-<modality>-<key>.npz
    <run_dir>/inversions/<oti|ovi>/<dataset>/<split>-<key>/   resumable shards
    <run_dir>/metrics.json, <run_dir>/table.md     results

Keys hash everything an artefact depends on (model weights, preprocessing, template,
hyper-parameters), so a restarted run reuses finished work and a changed setting never
silently reuses stale work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
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
from crossgap_jax.pipeline.features import cached_split_features
from crossgap_jax.pipeline.prompts import (
    DEFAULT_CLASS_TEMPLATE,
    OVI_CLASS_TEMPLATE,
    class_prompt,
    clean_classname,
)
from crossgap_jax.pipeline.published import published_row
from crossgap_jax.pipeline.store import FeatureSet, meta_key

log = logging.getLogger(__name__)

FEATURE_TYPES = ("image", "text", "oti", "ovi", "isoclip", "isotropic-window")
# classify variants: zero-shot (inter-modal, OTI, OVI) and nearest-class-mean (plain projected
# image features, IsoCLIP-mapped features).
CLASSIFY_VARIANTS = ("inter", "oti", "ovi", "ncm", "isoclip-ncm")


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
    authors_assets: str | None = None
    text_sources: dict = dataclasses.field(default_factory=dict)
    _baseline_cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        ensure_dir(self.run_dir)
        atomic_write_json(os.path.join(self.run_dir, "config.json"), self.cfg)

    # --- features ---------------------------------------------------------------------
    def features(self, split, template: str = "{}", project: bool = True) -> FeatureSet:
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
    def task(self, dataset: str) -> RetrievalTask:
        task, source = apply_authors_assets(get_task(dataset, self.data_root),
                                            self.authors_assets)
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
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature type must be one of {FEATURE_TYPES}, got {feature_type!r}")
        if feature_type == "isoclip":
            return self.isoclip(split, task)
        if feature_type == "isotropic-window":
            return self.isotropic_window(split)
        base = self.features(split)
        if feature_type in ("image", "text"):
            if split.modality != feature_type:
                raise ValueError(f"{split.name}/{split.split} is a {split.modality} split; "
                                 f"feature type {feature_type!r} does not apply")
            return base
        needed = "image" if feature_type == "oti" else "text"
        if split.modality != needed:
            raise ValueError(f"{feature_type.upper()} inverts {needed} features, but "
                             f"{split.name}/{split.split} is a {split.modality} split")
        return self.inverted(base, feature_type)

    def retrieve(self, dataset: str, query_type: str | None = None,
                 gallery_type: str | None = None) -> dict:
        """Retrieval metrics for one dataset (defaults: the modality of each side)."""
        task = self.task(dataset)
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
        if task.name in self.text_sources:
            metrics["text_source"] = self.text_sources[task.name]
        return metrics

    def split(self, dataset: str, split: str | None = None):
        """One split of ``dataset``, with the authors' texts when :attr:`authors_assets` is set
        (the gallery summaries, the 20NG queries)."""
        data = get_dataset(dataset, self.data_root, split)
        if isinstance(data, TextSplit):
            name = dataset_info(dataset).name if not dataset.startswith("tfds:") else dataset
            data, _ = apply_authors_assets_to_split(data, name, self.authors_assets)
        return data

    def classify(self, dataset: str, variants: Sequence[str] = ("inter", "oti", "ovi"),
                 split: str = "test", per_item: bool = False) -> dict:
        """Zero-shot accuracy: standard (inter-modal) and the intra-modal OTI/OVI variants.

        - ``inter``: image features vs the text classifier of CoOp's class prompts.
        - ``oti``: OTI features of the images vs that text classifier.
        - ``ovi``: image features vs a classifier of OVI-inverted ``"a photo of {}"`` class
          prompts (the authors' OVI template, not the CoOp prompt).
        - ``ncm`` / ``isoclip-ncm``: nearest class mean (IsoCLIP's classification task,
          :meth:`ncm`), with plain projected or IsoCLIP-mapped image features.

        Class names have ``_`` replaced by a space in every prompt (as the authors do).
        ``per_item``: also return ``"top1_correct"``: ``{variant: (N,) bool}`` per image
        (in the order of ``"items"``) for ``inter``/``oti``/``ovi``, e.g. for a paired
        bootstrap interval.
        """
        unknown = [v for v in variants if v not in CLASSIFY_VARIANTS]
        if unknown:
            raise ValueError(f"unknown classify variant(s) {unknown}; known: "
                             f"{', '.join(CLASSIFY_VARIANTS)}")
        images = get_dataset(dataset, self.data_root, split)
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
        ft = self.features(classes, template=prompt)
        classifier = retrieval.build_classifier(ft.features)
        out: dict[str, Any] = {"prompt": prompt, "num_classes": len(images.classnames),
                               "num_images": len(fi.items)}
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

        train = get_dataset(dataset, self.data_root, train_split)
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

    Metrics on a limited task are not comparable with the paper's; the run's config
    records the limits.
    """
    if task.relevance == "revisitop":
        raise ValueError("revisitop tasks cannot be subset (the ground truth indexes the "
                         "full gallery)")
    rng = np.random.default_rng(seed)
    q = task.query
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


def reproduce(run: Run, datasets: Sequence[str]) -> dict:
    """Intra-modal baseline vs inverted retrieval on each dataset; writes metrics + table.

    Returns:
        The metrics dict written to ``<run_dir>/metrics.json``.
    """
    results: dict[str, Any] = {"config": run.cfg, "datasets": {},
                               "metric_variant": run.metric_variant,
                               "loss_reduction": run.cfg.get("loss_reduction", "per_example")}
    check_authors_assets([_canonical_name(ds) for ds in datasets], run.authors_assets)
    for ds in datasets:
        task = run.task(ds)
        base_mode, inv_mode = paper_modes(task.query.modality)
        entry = {"modality": task.query.modality,
                 "baseline": run.retrieve(ds, *base_mode),
                 "inverted": run.retrieve(ds, *inv_mode)}
        if task.name in run.text_sources:
            entry["text_source"] = run.text_sources[task.name]
        results["datasets"][ds] = entry
        if is_writer():
            atomic_write_json(os.path.join(run.run_dir, "metrics.json"), results)
    results["average"] = _averages(results["datasets"])
    results["published"] = published_row(run.cfg.get("preset"))
    if is_writer():
        atomic_write_json(os.path.join(run.run_dir, "metrics.json"), results)
        atomic_write_bytes(os.path.join(run.run_dir, "table.md"),
                           results_table(results).encode())
    _barrier(f"reproduce:{run.run_dir}")  # every process may read the written table
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


def results_table(results: dict) -> str:
    """Markdown table: per dataset and average, baseline vs inverted mAP, with the paper's."""
    names = {"image": ("image->image", "OTI->image"), "text": ("text->text", "OVI->text")}
    lines = ["| dataset | mode | baseline mAP | inverted mAP | gain |", "|---|---|---|---|---|"]
    for ds, v in results["datasets"].items():
        b, i = _main_metric(v["baseline"]), _main_metric(v["inverted"])
        mode = " vs ".join(names[v["modality"]])
        lines.append(f"| {_dataset_label(ds, v['baseline'])} | {mode} | {b:.2f} | {i:.2f} | "
                     f"{i - b:+.2f} |")
    pub = results.get("published") or {}
    for modality, avg in results.get("average", {}).items():
        mode = " vs ".join(names[modality])
        b, i = avg["baseline"], avg["inverted"]
        lines.append(f"| **average** ({avg['num_datasets']} datasets) | {mode} | {b:.2f} | "
                     f"{i:.2f} | {i - b:+.2f} |")
        if modality in pub:
            pb, pi = pub[modality]
            lines.append(f"| *paper (avg. over its datasets)* | {mode} | {pb:.1f} | {pi:.1f} | "
                         f"{pi - pb:+.1f} |")
    cfg = results.get("config", {})
    variant = results.get("metric_variant", cfg.get("metric_variant", "standard"))
    reduction = results.get("loss_reduction", cfg.get("loss_reduction", "per_example"))
    head = (f"# Results: preset `{cfg.get('preset')}`, model `{cfg.get('model')}`\n\n"
            "mAP in percent. Paper rows are the poster averages over the paper's datasets "
            "(per-dataset numbers are not available here). ROxford5k / RParis6k: Medium "
            "protocol mAP.\n\n"
            f"Metric variant: `{variant}`; OTI/OVI loss reduction: `{reduction}` "
            "(see docs/fidelity.md).\n\n")
    lines += _text_source_lines(results["datasets"])
    return head + "\n".join(lines) + "\n"


def _dataset_label(ds: str, m: dict) -> str:
    """Table label of a dataset: revisitop rows name the protocol and the gallery."""
    if "mAP_medium" not in m:
        return ds
    size = int(m.get("gallery_size", 0))
    extra = int(m.get("num_distractors", 0))
    what = f"+1M distractors, gallery {size:,}" if extra else f"gallery {size:,}"
    return f"{ds} (Medium; {what})"


def make_run(run_dir: str, cfg: dict, *, data_root: str | None = None, progress: bool = True,
             on_error: str = "skip", record_steps: Sequence[int] = (),
             checkpoint: str | None = None, dtype: str = "float32",
             max_queries: int | None = None, max_gallery: int | None = None,
             shard_size: int = 256, tokenizer: str | None = None,
             authors_assets: str | None = None, metric_variant: str = "standard",
             loss_reduction: str = "per_example", revisitop1m: str = "auto") -> Run:
    """Load the model of ``cfg`` (``checkpoint`` overrides its pretrained source) and a run.

    ``tokenizer``: the tokenizer model file of families that need one (SigLIP).
    ``authors_assets``: see :class:`Run` (checked to be a folder with the summaries first).
    ``metric_variant`` (``"standard"`` / ``"authors"``), ``loss_reduction``
    (``"per_example"`` / ``"mean"``) and ``revisitop1m`` (``"auto"`` / ``"none"`` / a folder)
    are the compatibility switches of docs/fidelity.md; they are recorded in the config.
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
    source = checkpoint or cfg.get("checkpoint") or cfg.get("pretrained")
    clip = load_clip(cfg["model"], source, dtype=dtype, tokenizer=tokenizer)
    cfg = dict(cfg, checkpoint=source, dtype=dtype, max_queries=max_queries,
               max_gallery=max_gallery, authors_assets=authors_assets,
               metric_variant=metric_variant, loss_reduction=loss_reduction,
               revisitop1m=revisitop1m)
    return Run(run_dir, cfg, clip, data_root=data_root, progress=progress, on_error=on_error,
               record_steps=tuple(record_steps), max_queries=max_queries,
               max_gallery=max_gallery, shard_size=shard_size, authors_assets=authors_assets)


__all__ = ["Run", "evaluate_task", "evaluate_task_per_query", "make_run", "paper_modes",
           "reproduce", "results_table", "DEFAULT_CLASS_TEMPLATE"]
