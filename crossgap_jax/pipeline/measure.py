"""The measurements of a run: retrieval metrics of a task, zero-shot / NCM accuracy, the
paper's baseline-vs-inverted comparisons with paired bootstrap intervals.

Every number the CLI (``retrieve``, ``classify``, ``reproduce``, ``analyze``), the demo and
the controlled experiment report comes from the functions here: :func:`measure` is the one
entry point of the paper's comparisons, built on :func:`retrieve` / :func:`classify`
(the metrics of one setting) and :func:`evaluate_task` (the metric of one feature pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from crossgap_jax import retrieval
from crossgap_jax.baselines import isoclip_features, projection_heads, read_span_classes
from crossgap_jax.data import RetrievalTask
from crossgap_jax.models import has_text_tower
from crossgap_jax.pipeline.baselines import (
    FITTED_NCM_VARIANTS,
    apply_fitted,
    check_fitted_pair,
    few_shot,
    fewshot_settings,
    fitted_ncm,
    labelled_images,
    load_train_split,
)
from crossgap_jax.pipeline.compare import (
    COMPARISONS,
    Bootstrap,
    compare_retrieval,
    compare_zero_shot,
)
from crossgap_jax.pipeline.feature_types import (
    CLASSIFY_VARIANTS,
    check_feature_type,
)
from crossgap_jax.pipeline.presets import isoclip_k
from crossgap_jax.pipeline.prompts import OVI_CLASS_TEMPLATE, class_prompt
from crossgap_jax.pipeline.store import FeatureSet
from crossgap_jax.pipeline.tasks import (
    classnames_split,
    labels_for,
    per_class_sample,
)
from crossgap_jax.retrieval import class_means, ncm_accuracy

if TYPE_CHECKING:
    from crossgap_jax.pipeline.run import Run

def retrieve(run: Run, dataset: str, query_type: str | None = None,
             gallery_type: str | None = None, split: str | None = None) -> dict:
    """Retrieval metrics (percent) of ``dataset``'s task with the given feature types
    (defaults: the modality of each side; ``split``: see :meth:`Run.task`), with the
    feature types, splits, gallery size and text source of the task.

    Raises:
        ValueError: a feature type that does not apply to its side (before any work).
    """
    return _retrieval(run, dataset, query_type, gallery_type, split)[3]


def _retrieval(run: Run, dataset: str, query_type: str | None, gallery_type: str | None,
               split: str | None, metrics: dict | None = None
               ) -> tuple[RetrievalTask, FeatureSet, FeatureSet, dict]:
    """``(task, query features, gallery features, metrics)`` of :func:`retrieve`
    (``metrics={}``: features only, nothing evaluated)."""
    task = run.task(dataset, split)
    query_type = query_type or task.query.modality
    gallery_type = gallery_type or task.gallery.modality
    check_feature_type(task.query, query_type)  # before any work
    check_feature_type(task.gallery, gallery_type)
    run.require_text_tower(query_type, gallery_type)
    check_fitted_pair(query_type, gallery_type, run.baselines)
    kind = task.query.modality  # IsoCLIP: image or text retrieval, both sides alike
    if "isoclip" in (query_type, gallery_type):
        isoclip_k(run.preset, kind)  # published or given, before either side is encoded
    q = run.side_features(task.query, query_type, kind)
    g = run.side_features(task.gallery, gallery_type, kind)
    q, g = apply_fitted(run.baselines, q, g, query_type, gallery_type,
                        task.query.modality == task.gallery.modality)
    if metrics is None:
        metrics = _describe(run, task, q, g, query_type, gallery_type, evaluate_task(
            task, q, g, metric_variant=run.settings.metric_variant))
    return task, q, g, metrics


def _describe(run: Run, task: RetrievalTask, q: FeatureSet, g: FeatureSet, query_type: str,
              gallery_type: str, metrics: dict) -> dict:
    """``metrics`` with what produced them: feature types, splits, gallery size, text
    source, the baselines' maps, the metric variant."""
    metrics = dict(metrics, metric_variant=run.settings.metric_variant)
    if task.relevance == "revisitop":
        metrics["gallery_size"] = len(task.gallery)
        metrics["num_distractors"] = int(task.gallery.extra.get("num_distractors", 0))
    for side, fs in (("query", q), ("gallery", g)):
        for key in ("isoclip", "isotropic_window", "pca", "centered", "span", "i0t", "gr_clip"):
            if key in fs.meta:
                metrics[f"{side}_{key}"] = fs.meta[key]
    metrics["query_type"] = query_type
    metrics["gallery_type"] = gallery_type
    metrics["query_split"] = task.query.split
    metrics["gallery_split"] = task.gallery.split
    # The gallery actually ranked: items that could not be read are left out (and counted
    # in ``num_gallery_items_missing``).
    metrics["num_gallery"] = len(task.gallery) - int(metrics.get("num_gallery_items_missing", 0))
    if task.name in run.text_sources:
        metrics["text_source"] = run.text_sources[task.name]
    return {**metrics, **_qrels_fields(task)}


def classify(run: Run, dataset: str, variants: Sequence[str] = ("inter", "oti", "ovi"),
             split: str | None = None, per_item: bool = False,
             bootstrap: Bootstrap | None = None) -> dict:
    """Zero-shot accuracy: standard (inter-modal) and the intra-modal OTI/OVI variants.

    - ``inter``: image features vs the text classifier of CoOp's class prompts.
    - ``oti``: OTI features of the images vs that text classifier.
    - ``ovi``: image features vs a classifier of OVI-inverted ``"a photo of {}"`` class
      prompts (the authors' OVI template, not the CoOp prompt).
    - ``ncm`` / ``isoclip-ncm``: nearest class mean (IsoCLIP's classification task,
      :func:`ncm`), with plain projected or IsoCLIP-mapped image features.

    Class names have ``_`` replaced by a space in every prompt (as the authors do).

    ``split``: default ``test`` when the dataset has one, else its query split (an
    image folder without split sub-folders: ``all``).
    ``per_item``: also return ``"top1_correct"``: ``{variant: (N,) bool}`` per image
    (in the order of ``"items"``) for ``inter``/``oti``/``ovi``, e.g. for a paired
    bootstrap interval.
    With ``inter`` and ``oti``, ``"comparison"`` holds :func:`compare_zero_shot` of the
    two (the paper's claim; ``bootstrap``: its interval, None: none), which also gives
    their accuracies.
    """
    unknown = [v for v in variants if v not in CLASSIFY_VARIANTS]
    if unknown:
        raise ValueError(f"unknown classify variant(s) {unknown}; known: "
                         f"{', '.join(CLASSIFY_VARIANTS)}")
    run.require_text_tower(*variants)
    images = labelled_images(run, dataset, split)
    _check_classify(run, dataset, images, variants)  # every option / name, before any work
    split = images.split
    fi = run.features(images)
    labels = labels_for(images, fi.items)
    prompt = class_prompt(dataset)
    classes = classnames_split(dataset, images.classnames)
    classifier = None  # image-only backbone: only NCM variants get here (checked above)
    if has_text_tower(run.clip.config):
        ft = run.features(classes, template=prompt)
        classifier = retrieval.build_classifier(ft.features)
    out: dict[str, Any] = {"prompt": prompt if classifier is not None else None,
                           "num_classes": len(images.classnames),
                           "split": split, "num_images": len(fi.items)}
    pairs = {}  # variant -> (features, classifier)
    if "inter" in variants:
        pairs["inter"] = (fi.features, classifier)
    if "oti" in variants:
        pairs["oti"] = (run.inverted(fi, "oti").features, classifier)
    if "ovi" in variants:
        fo = run.features(classes, template=OVI_CLASS_TEMPLATE)
        inv_c = run.inverted(fo, "ovi")
        pairs["ovi"] = (fi.features, retrieval.build_classifier(inv_c.features))
        out["ovi_prompt"] = OVI_CLASS_TEMPLATE
    if "inter" in pairs and "oti" in pairs:
        c = compare_zero_shot(*pairs["inter"], *pairs["oti"], labels, bootstrap=bootstrap)
        out["inter"], out["oti"] = c["baseline"], c["inverted"]
        out["comparison"] = {k: c[k] for k in ("difference", "ci95")}
    for name, (x, w) in pairs.items():
        if name not in out:
            out[name] = retrieval.zero_shot_accuracy(x, w, labels)
    if per_item:
        out["items"] = list(fi.items)
        out["top1_correct"] = {name: retrieval.class_ranks(x, w, labels) == 1
                               for name, (x, w) in pairs.items()}
    ncm_variants = [v for v in variants if v in ("ncm", "isoclip-ncm")]
    if ncm_variants:
        out.update(ncm(run, dataset, images, ncm_variants))
    if set(FITTED_NCM_VARIANTS) & set(variants):
        out.update(fitted_ncm(run, dataset, images, variants))
    if "fewshot" in variants:
        out["fewshot"] = few_shot(run, dataset, images)
    return out


def _check_classify(run: Run, dataset: str, images: Any, variants: Sequence[str]) -> None:
    """What the variants need beyond the labelled split, checked before any image is
    encoded: IsoCLIP's ``(k_top, k_bottom)`` (``isoclip-ncm``), the few-shot settings
    (``fewshot``), a train split with the same classes (the NCM variants).

    Raises:
        ValueError: naming the variant and the fix.
    """
    if "isoclip-ncm" in variants:
        try:
            isoclip_k(run.preset, "image")
        except ValueError as e:
            raise ValueError(f"classify variant isoclip-ncm: {e}") from None
    if "fewshot" in variants:
        fewshot_settings(run)
    if "span-ncm" in variants:
        read_span_classes(run.baselines.span_classes)  # a bad --span-classes file: now
    if {"ncm", "isoclip-ncm", "fewshot", *FITTED_NCM_VARIANTS} & set(variants):
        load_train_split(run, dataset, images, "train")


def ncm(run: Run, dataset: str, images, variants: Sequence[str] = ("ncm", "isoclip-ncm"),
        train_split: str = "train") -> dict:
    """Nearest-class-mean accuracy of the labelled image split ``images``.

    Prototypes: the mean pre-projection image feature of each class over ``train_split``
    (CoOp's ``train``), mapped like the queries: ``ncm`` by the plain image head
    (``x @ P_i (+ b_i)``), ``isoclip-ncm`` by IsoCLIP's image map with the image-task
    ``(k_top, k_bottom)``. Cosine to the prototypes, top-k accuracy in percent
    (:mod:`crossgap_jax.retrieval.ncm`). With ``max_gallery`` (smoke runs) the training
    split is cut to ``max(1, max_gallery // C)`` seeded random images per class.
    """

    train = load_train_split(run, dataset, images, train_split)
    num_classes = len(images.classnames)
    if run.settings.max_gallery:
        train = per_class_sample(train, max(1, run.settings.max_gallery // num_classes),
                                  seed=run.preset.seed)
    xtr = run.features(train, project=False)
    xte = run.features(images, project=False)
    means = class_means(xtr.features, labels_for(train, xtr.items), num_classes)
    yte = labels_for(images, xte.items)
    out: dict[str, Any] = {"ncm_train": {"split": train_split, "num_images": len(xtr)}}
    if "ncm" in variants:
        head = projection_heads(run.clip)[0]
        out["ncm"] = ncm_accuracy(head(xte.features), yte, head(means))
    if "isoclip-ncm" in variants:
        m, info = run.isoclip_map("image", "image")
        out["isoclip-ncm"] = dict(
            ncm_accuracy(isoclip_features(xte.features, m), yte,
                         isoclip_features(means, m)), isoclip=info)
    return out


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
    res = retrieval.evaluate(qf, gf, task.relevant(q_split, g_split),
                             metric_variant=metric_variant)
    return {**res, **missing, **_qrels_fields(task)}


def _qrels_fields(task: RetrievalTask) -> dict:
    """A qrels task's ``qrels_missing`` rule and ``qrels_audit`` (judged pairs outside the
    corpus, zero scores, duplicates), reported with every result of it; ``{}`` otherwise."""
    if task.qrels_audit is None:
        return {}
    return {"qrels_missing": task.qrels_missing, "qrels_audit": task.qrels_audit.as_record()}


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
    return list(q_split.items), retrieval.evaluate_per_query(
        qf, gf, task.relevant(q_split, g_split))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, np.floating, np.integer)):
            out[f"{prefix}{k}"] = float(v)
    return out


def paper_modes(modality: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """(baseline, inverted) (query type, gallery type) pairs for a dataset modality."""
    if modality == "image":
        return ("image", "image"), ("oti", "image")
    return ("text", "text"), ("ovi", "text")


def measure(run: Run, dataset: str, comparison: str = "retrieval", *,
            bootstrap: Bootstrap | None = None, split: str | None = None) -> dict:
    """One of the paper's comparisons on ``dataset``: a baseline against its inverted
    counterpart, with the paired bootstrap interval of the difference.

    - ``"retrieval"``: intra-modal retrieval (the paper's Tables 1-2) with
      :func:`paper_modes`: image datasets image->image vs OTI->image, text datasets
      text->text vs OVI->text; the metric is ``mAP`` (revisitop: ``mAP_medium``); the
      interval resamples the queries' average precision (none for revisitop tasks).
    - ``"zero_shot"``: standard (inter-modal) vs intra-modal OTI zero-shot top-1 accuracy
      (:func:`classify` variants ``inter`` and ``oti``, the paper's Table 3); the interval
      resamples the images' 0/1 correctness.

    ``reproduce``, ``classify``, the demo and the controlled experiment take their numbers
    from here (or from :func:`retrieve` / :func:`classify`, which this calls), so one
    protocol produces every reported number.

    Args:
        run: the run (model, settings, cache).
        dataset: a registered dataset name.
        comparison: ``"retrieval"`` or ``"zero_shot"``.
        bootstrap: interval settings; ``None``: no interval (``ci95`` is None).
        split: retrieval: the query split (see :meth:`Run.task`); zero-shot: the labelled
            image split (default :func:`default_classify_split`).

    Returns:
        ``{"comparison", "dataset", "modality", "metric", "baseline": metrics dict,
        "inverted": metrics dict, "baseline_value", "inverted_value", "difference"
        (inverted - baseline, points), "ci95": [low, high] or None, "num_items"}``; for
        retrieval also ``"text_source"`` (None: texts as read).

    Raises:
        ValueError: an unknown comparison, or a dataset the comparison does not apply to.
    """
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {COMPARISONS}, got {comparison!r}")
    if comparison == "zero_shot":
        zs = classify(run, dataset, variants=("inter", "oti"), split=split,
                      bootstrap=bootstrap)
        c = zs["comparison"]
        out = {"comparison": comparison, "dataset": dataset, "modality": "image",
               "metric": "top1", "baseline": zs["inter"], "inverted": zs["oti"],
               "prompt": zs["prompt"], "split": zs["split"], "num_items": zs["num_images"],
               "difference": c["difference"], "ci95": c["ci95"]}
    else:
        task = run.task(dataset, split)
        (bq, bg), (iq, ig) = paper_modes(task.query.modality)
        if task.relevance == "revisitop":  # its own protocol; no per-query interval
            base = _retrieval(run, dataset, bq, bg, split)[3]
            inv = _retrieval(run, dataset, iq, ig, split)[3]
            c = {"difference": float(inv["mAP_medium"]) - float(base["mAP_medium"]),
                 "ci95": None}
        else:
            _, q_base, g, _ = _retrieval(run, dataset, bq, bg, split, metrics={})
            _, q_inv, g_inv, _ = _retrieval(run, dataset, iq, ig, split, metrics={})
            c = _compare_task(task, q_base, q_inv, g, g_inv, bootstrap,
                              run.settings.metric_variant)
            base = _describe(run, task, q_base, g, bq, bg, c["baseline"])
            inv = _describe(run, task, q_inv, g_inv, iq, ig, c["inverted"])
        out = {"comparison": comparison, "dataset": dataset, "modality": task.query.modality,
               "metric": "mAP_medium" if task.relevance == "revisitop" else "mAP",
               "baseline": base, "inverted": inv, "difference": c["difference"],
               "ci95": c["ci95"], "num_items": len(task.query),
               "num_gallery": int(base.get("num_gallery", len(task.gallery))),
               "text_source": run.text_sources.get(task.name)}
    out["baseline_value"] = float(out["baseline"][out["metric"]])
    out["inverted_value"] = float(out["inverted"][out["metric"]])
    return out


def _compare_task(task: RetrievalTask, q_base: FeatureSet, q_inv: FeatureSet, g: FeatureSet,
                  g_inv: FeatureSet, bootstrap: Bootstrap | None, metric_variant: str) -> dict:
    """:func:`compare_retrieval` on a (label / group / qrels) task's features: items
    without features are left out and counted, as in :func:`evaluate_task`."""
    qs, qb = _aligned(task.query, q_base)
    qs_i, qi = _aligned(task.query, q_inv)
    gs, gb = _aligned(task.gallery, g)
    gs_i, gi = _aligned(task.gallery, g_inv)
    if qs.items != qs_i.items or gs.items != gs_i.items:
        raise ValueError(f"{task.name}: the baseline and inverted features cover different "
                         "items; a paired comparison needs the same queries and gallery")
    c = compare_retrieval(qb, qi, gb, task.relevant(qs, gs), gallery_inverted=gi,
                          bootstrap=bootstrap, metric_variant=metric_variant)
    missing = {"num_query_items_missing": len(task.query) - len(qs),
               "num_gallery_items_missing": len(task.gallery) - len(gs)}
    c["baseline"] = {**c["baseline"], **missing}
    c["inverted"] = {**c["inverted"], **missing}
    return c
