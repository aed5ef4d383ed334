"""Run-level glue of the fitted training-free baselines (PCA, mean-centering), few-shot NCM
and the misalignment indicators; the maths is in :mod:`crossgap_jax.baselines` and
:mod:`crossgap_jax.retrieval.indicators` (pure functions), this module only picks features
from a :class:`~crossgap_jax.pipeline.run.Run` and applies them.

Settings: :class:`~crossgap_jax.pipeline.settings.BaselineSettings`, the run's
``settings.baselines`` (CLI ``--pca-k``, ``--pca-whiten``, ``--pca-fit``, ``--center-fit``,
``--shots``, ``--fewshot-seeds``, ``--fewshot-types``), so they are part of each record's
provenance.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from crossgap_jax.baselines import (
    center_features,
    fit_center,
    fit_pca,
    isoclip_features,
    max_pca_components,
    pca_features,
    projection_heads,
    span_project,
)
from crossgap_jax.data import get_dataset
from crossgap_jax.fileio import atomic_write_json, ensure_dir
from crossgap_jax.models import has_text_tower
from crossgap_jax.pipeline.presets import isoclip_k
from crossgap_jax.pipeline.prompts import class_prompt
from crossgap_jax.pipeline.settings import (
    DEFAULT_FEWSHOT_TYPES,
    BaselineSettings,
)
from crossgap_jax.pipeline.tasks import (
    classnames_split,
    default_classify_split,
    labels_for,
    per_class_sample,
)
from crossgap_jax.retrieval import (
    FewShotSkip,
    class_means,
    few_shot_sweep,
    misalignment_indicators,
    ncm_accuracy,
    plot_indicators,
    support_sets,
)

if TYPE_CHECKING:
    from crossgap_jax.pipeline.run import Run
    from crossgap_jax.pipeline.store import FeatureSet



def check_fitted_pair(query_type: str | None, gallery_type: str | None,
                      settings: BaselineSettings | None = None) -> None:
    """Before any work: ``pca`` must be on both sides or on neither (its coordinates only
    compare with themselves) and, with ``settings``, have exactly one ``--pca-k``; raise
    ValueError otherwise."""
    if (query_type == "pca") != (gallery_type == "pca"):
        raise ValueError("feature type pca is fitted once and applied to both sides: pass "
                         "--query-type pca --gallery-type pca")
    if query_type == "pca" and settings is not None:
        settings.single_pca_k()


def _fit_set(settings: BaselineSettings, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return {"gallery": g, "query": q, "both": np.concatenate([q, g])}[settings.pca_fit]


def apply_fitted(s: BaselineSettings, q: FeatureSet, g: FeatureSet, query_type: str | None,
                 gallery_type: str | None, same_modality: bool
                 ) -> tuple[FeatureSet, FeatureSet]:
    """Replace the features of the sides whose type is fitted (``pca``, ``centered``) by the
    mapped ones (``q``, ``g`` hold the plain embeddings of those sides), with the settings
    ``s`` (a run's ``baselines``); the fit and its settings are added to each side's
    ``meta`` (``"pca"`` / ``"centered"``)."""

    out = {"q": q, "g": g}
    if query_type == "pca" and gallery_type == "pca":
        k = s.single_pca_k()
        m = fit_pca(_fit_set(s, q.features, g.features), k, whiten=s.pca_whiten,
                    normalize_input=s.normalize_input)
        info = dict(m.info(), fit=s.pca_fit)
        for side, fs in (("q", q), ("g", g)):
            out[side] = dataclasses.replace(fs, features=pca_features(fs.features, m),
                                            meta=dict(fs.meta, pca=info))
    for side, fs, t in (("q", q, query_type), ("g", g, gallery_type)):
        if t != "centered":
            continue
        own = fs.features if (s.center_fit == "modality" and not same_modality) else g.features
        m = fit_center(own, normalize_input=s.normalize_input)
        fit = "gallery" if own is g.features else "own set"
        out[side] = dataclasses.replace(fs, features=center_features(fs.features, m),
                                        meta=dict(fs.meta, centered=dict(
                                            m.info(), fit=fit, center_fit=s.center_fit)))
    for side, fs, t in (("q", q, query_type), ("g", g, gallery_type)):
        if t not in POSTHOC_GAP_TYPES:
            continue
        fit_x, fit = _posthoc_fit_set(t, fs, q, g, same_modality)
        m = fit_center(fit_x, normalize_input=True)  # both methods normalise first
        key = POSTHOC_GAP_TYPES[t]
        out[side] = dataclasses.replace(fs, features=center_features(fs.features, m),
                                        meta=dict(fs.meta, **{key: dict(
                                            m.info(), fit=fit, normalize="before and after",
                                            source=POSTHOC_GAP_SOURCES[t])}))
    return out["q"], out["g"]


# The post-hoc gap closers: feature type -> meta key. Both compute
# normalize(normalize(x) - mu) with mu the mean of the normalised embeddings of the feature's
# own modality (docs/baselines.md); they differ in what mu is fitted on.
POSTHOC_GAP_TYPES = {"i0t": "i0t", "gr-clip": "gr_clip"}
POSTHOC_GAP_SOURCES = {
    "i0t": "I0T post-hoc (xfactlab/I0T src/features.py remove_artifact_features)",
    "gr-clip": "GR-CLIP (yuhui-zh15/MixedModalitySearch src/retrieval_mixbench.py)"}


def _posthoc_fit_set(t: str, fs: FeatureSet, q: FeatureSet, g: FeatureSet,
                     same_modality: bool) -> tuple[np.ndarray, str]:
    """What the mean of ``i0t`` / ``gr-clip`` on side ``fs`` is fitted on, and its name.

    ``gr-clip``: the side's own set (GR-CLIP keeps one mean per role: queries, corpus texts,
    corpus images). ``i0t``: every evaluated embedding of the side's modality (I0T_post
    uses the test set's per-modality mean): queries and gallery together when both share a
    modality (the gallery alone when the queries are the gallery), else the side's own set.
    """
    if t == "gr-clip" or not same_modality:
        return fs.features, ("queries" if fs is q else "gallery")
    if list(q.items) == list(g.items):  # all-vs-all: the queries are the gallery
        return g.features, "gallery (= queries)"
    return np.concatenate([q.features, g.features]), "queries and gallery"


def labelled_images(run: Run, dataset: str, split: str | None = None) -> Any:
    """The labelled image split ``classify`` evaluates: ``split`` (default ``test`` when the
    dataset has one, else its query split), a seeded subset of ``settings.max_queries`` images.

    Raises:
        ValueError: the split is not a labelled image split with class names.
    """

    split = split or default_classify_split(dataset, run.root_for(dataset))
    images = get_dataset(dataset, run.root_for(dataset), split)
    cap = run.settings.max_queries
    if cap and cap < len(images):
        rng = np.random.default_rng(run.preset.seed)
        images = images.subset(np.sort(rng.choice(len(images), cap, False)))
    if images.modality != "image" or not images.classnames or images.labels is None:
        raise ValueError(f"{dataset}/{split}: zero-shot needs a labelled image split "
                         "with class names")
    return images


def load_train_split(run: Run, dataset: str, images: Any, train_split: str) -> Any:
    """The labelled ``train_split`` of ``dataset`` (the NCM / few-shot support pool); its
    class names must equal those of ``images`` (the evaluated split).

    Raises:
        ValueError: the dataset has no such split, or its classes differ from ``images``'.
    """
    try:
        train = get_dataset(dataset, run.root_for(dataset), train_split)
    except (KeyError, ValueError, FileNotFoundError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise ValueError(f"NCM / few-shot prototypes come from the {train_split!r} split of "
                         f"{dataset}, which it lacks: {msg}") from None
    if list(train.classnames or []) != list(images.classnames):
        raise ValueError(f"{dataset}: the class names of the {train_split!r} split differ "
                         f"from those of {images.split!r}; NCM needs the same classes")
    return train


# classify variants: full-train NCM with the fitted baselines (as ncm / isoclip-ncm)
FITTED_NCM_VARIANTS = ("pca-ncm", "centered-ncm", "span-ncm")


def fitted_ncm(run: Run, dataset: str, images: Any, variants: Sequence[str],
               train_split: str = "train") -> dict[str, Any]:
    """Nearest class mean over the whole ``train_split`` (as ``classify --variants ncm``)
    with PCA (``pca-ncm``, one ``--pca-k``), mean-centering (``centered-ncm``) or Herzog &
    Wang's span projection (``span-ncm``: ``U^T U x``, not fitted on the images) of the
    embeddings, fitted on the training images (the gallery analogue; ``--pca-fit query`` /
    ``both``: the queries / both). Prototypes: class means of the mapped training features;
    cosine; top-1/top-5 in percent. With ``max_gallery`` (smoke runs) the training split is
    cut to ``max(1, max_gallery // C)`` seeded images per class, as ``ncm``.
    """

    s = run.baselines
    train = load_train_split(run, dataset, images, train_split)
    num_classes = len(images.classnames)
    if run.settings.max_gallery:
        train = per_class_sample(train, max(1, run.settings.max_gallery // num_classes),
                                  seed=run.preset.seed)
    ftr, fte = run.features(train), run.features(images)
    ytr, yte = labels_for(train, ftr.items), labels_for(images, fte.items)
    out: dict[str, Any] = {"fitted_ncm_train": {"split": train_split, "num_images": len(ftr)}}
    if "pca-ncm" in variants:
        m = fit_pca(_fit_set(s, fte.features, ftr.features), s.single_pca_k(),
                    whiten=s.pca_whiten, normalize_input=s.normalize_input)
        ztr, zte = pca_features(ftr.features, m), pca_features(fte.features, m)
        out["pca-ncm"] = dict(ncm_accuracy(zte, yte, class_means(ztr, ytr, num_classes)),
                              pca=dict(m.info(), fit=s.pca_fit))
    if "centered-ncm" in variants:
        m = fit_center(ftr.features, normalize_input=s.normalize_input)
        ztr, zte = center_features(ftr.features, m), center_features(fte.features, m)
        out["centered-ncm"] = dict(ncm_accuracy(zte, yte, class_means(ztr, ytr, num_classes)),
                                   centered=dict(m.info(), fit=train_split))
    if "span-ncm" in variants:
        basis, info = run.span_map()
        ztr, zte = span_project(ftr.features, basis), span_project(fte.features, basis)
        out["span-ncm"] = dict(ncm_accuracy(zte, yte, class_means(ztr, ytr, num_classes)),
                               span=info)
    return out


# ---------------------------------------------------------------------------------------
# few-shot NCM
# ---------------------------------------------------------------------------------------
def fewshot_settings(run: Run) -> BaselineSettings:
    """The few-shot settings of ``run`` (image-only backbones with the default types: those
    needing a text tower left out), checked before any work.

    Raises:
        ValueError: an explicit type needing a text tower the backbone lacks, ``pca``
            without ``--pca-k``, ``isoclip`` without a published or given
            ``(k_top, k_bottom)``.
    """
    s = run.baselines
    if not has_text_tower(run.clip.config) and s.fewshot_types == DEFAULT_FEWSHOT_TYPES:
        # image-only backbone (DINOv2) with the default types: those needing text left out
        s = dataclasses.replace(s, fewshot_types=tuple(
            t for t in s.fewshot_types if t not in ("oti", "isoclip")))
    run.require_text_tower(*s.fewshot_types)  # an explicit oti / isoclip: refused here
    if "pca" in s.fewshot_types and not s.pca_k:
        raise ValueError("few-shot feature type pca needs --pca-k K[,K...] (or leave pca out "
                         "of --fewshot-types)")
    if "isoclip" in s.fewshot_types:
        try:
            isoclip_k(run.preset, "image")
        except ValueError as e:
            raise ValueError(f"few-shot feature type isoclip: {e} (or leave isoclip out of "
                             "--fewshot-types)") from None
    return s


def few_shot(run: Run, dataset: str, images: Any, train_split: str = "train") -> dict:
    """Few-shot NCM accuracy of the labelled image split ``images`` (the queries, CoOp's
    ``test``) with ``k``-shot prototypes from ``train_split`` (CoOp's ``train``), for each
    feature type, ``k`` and seed of :class:`BaselineSettings`
    (:func:`crossgap_jax.retrieval.fewshot.few_shot_sweep`). Only the sampled training
    images are encoded (and, for ``oti``, inverted).

    Feature types (prototypes = class mean of the un-normalised features, cosine):
    ``image``: the image head ``x @ P_i (+ b_i)``; ``isoclip``: IsoCLIP's image map (the
    image-task ``(k_top, k_bottom)``); ``oti``: OTI features; ``pca-<k>``: PCA coordinates
    of the normalised embeddings, fitted per support; ``centered``: embeddings minus the
    support mean; ``span``: Herzog & Wang's span projection ``U^T U x`` of the embeddings
    (:meth:`Run.span_map`: fitted on the class-name texts, nothing of the support).

    Raises:
        ValueError: different class names in the two splits, a sampled training image that
            could not be encoded, ``pca`` without ``--pca-k``, IsoCLIP without a published
            or given ``(k_top, k_bottom)``.
    """

    s = fewshot_settings(run)
    train = load_train_split(run, dataset, images, train_split)
    num_classes = len(images.classnames)
    ytr_all = np.asarray(train.labels)
    # every training image any (k, seed) draws (Dassl's sampler, per seed the shots in turn)
    union: set[int] = set()
    for seed in s.seeds:
        for drawn in support_sets(ytr_all, s.shots, seed).values():
            union.update(drawn.tolist())
    idx = np.array(sorted(union), np.int64)
    sub = train.subset(idx)
    row_of = {int(i): r for r, i in enumerate(idx)}  # train index -> row of sub

    def on_sub(fs: FeatureSet) -> np.ndarray:
        rows, found = fs.align(list(sub.items))
        if not found.all():
            missing = [it for it, f in zip(sub.items, found, strict=True) if not f][:3]
            raise ValueError(f"{dataset}/{train_split}: sampled training image(s) could not "
                             f"be encoded: {missing}")
        return rows

    fi = run.features(images)
    yq = labels_for(images, fi.items)
    results: dict[str, Any] = {}
    pre_tr = pre_te = None
    if {"image", "isoclip"} & set(s.fewshot_types):
        pre_tr = on_sub(run.features(sub, project=False))
        pre_te = run.features(images, project=False)
        pre_te = pre_te.align(list(fi.items))[0]
    emb_tr = on_sub(run.features(sub))
    emb_te = fi.features

    def sweep(support: np.ndarray, query: np.ndarray, fit=None) -> dict:
        def features_for(support_idx: np.ndarray):
            sup = support[[row_of[int(i)] for i in support_idx]]
            return fit(sup, query) if fit else (sup, query)
        return few_shot_sweep(features_for, ytr_all, yq, num_classes, s.shots, s.seeds)

    for t in s.fewshot_types:
        if t == "image":
            head = projection_heads(run.clip)[0]
            results["image"] = sweep(np.asarray(head(pre_tr)), np.asarray(head(pre_te)))
        elif t == "isoclip":
            m, info = run.isoclip_map("image", "image")
            results["isoclip"] = dict(
                sweep(np.asarray(isoclip_features(pre_tr, m, normalize=False)),
                      np.asarray(isoclip_features(pre_te, m, normalize=False))), isoclip=info)
        elif t == "oti":
            oti_tr = on_sub(run.inverted(run.features(sub), "oti"))
            oti_te = run.inverted(fi, "oti").align(list(fi.items))[0]
            results["oti"] = sweep(oti_tr, oti_te)
        elif t == "span":
            basis, info = run.span_map()
            results["span"] = dict(sweep(span_project(emb_tr, basis),
                                         span_project(emb_te, basis)), span=info)
        elif t == "centered":
            def center(sup, qry, _s=s):  # one modality: the support (gallery) mean
                m = fit_center(sup, normalize_input=_s.normalize_input)
                return center_features(sup, m), center_features(qry, m)
            results["centered"] = dict(sweep(emb_tr, emb_te, center), fit="support")
        elif t == "pca":
            for k in s.pca_k:
                def pca(sup, qry, _k=int(k), _s=s):
                    fit_x = _fit_set(_s, qry, sup)
                    kmax = max_pca_components(*fit_x.shape)
                    if _k > kmax:
                        raise FewShotSkip(f"PCA k={_k} exceeds min(N - 1, D) = {kmax} of its "
                                          f"fit set ({fit_x.shape[0]} samples)")
                    m = fit_pca(fit_x, _k, whiten=_s.pca_whiten,
                                normalize_input=_s.normalize_input)
                    return pca_features(sup, m), pca_features(qry, m)
                results[f"pca-{k}"] = dict(sweep(emb_tr, emb_te, pca), k=int(k),
                                           whiten=s.pca_whiten,
                                           fit="support" if s.pca_fit == "gallery"
                                           else s.pca_fit)
    return {"split": images.split, "train_split": train_split, "num_queries": len(fi.items),
            "num_classes": num_classes, "shots": list(s.shots), "seeds": list(s.seeds),
            "sampling": "Dassl's few-shot sampler as Herzog & Wang run it: random.seed(seed), "
                        "the shots in turn, per class random.sample (random.choices when a "
                        "class has fewer than k images) from the train split "
                        "(docs/baselines.md)",
            "num_train_images_encoded": len(idx), "types": results}


# ---------------------------------------------------------------------------------------
# misalignment indicators
# ---------------------------------------------------------------------------------------
INDICATOR_PAIRS = ("image-image", "text-image", "oti-image")
MAX_INDICATOR_IMAGES = 20000  # the pairwise matrices are N x N float64


def indicators(run: Run, dataset: str, split: str | None = None,
               pairs: Sequence[str] = INDICATOR_PAIRS) -> dict[str, Any]:
    """Misalignment indicators of a labelled image split
    (:func:`crossgap_jax.retrieval.indicators.misalignment_indicators`) from the run's
    (cached) features: image embeddings, the class-prompt text embeddings (CoOp's prompt,
    one row per class) and the images' OTI features; writes
    ``<run_dir>/indicators/<dataset>-<split>.json`` and ``.png``.

    ``split``: as ``classify`` (default ``test``); ``max_queries`` subsets the images as
    ``classify`` does.

    Raises:
        ValueError: an unknown pair type, an unlabelled split, or more than
            :data:`MAX_INDICATOR_IMAGES` images (pass ``--max-queries``).
    """

    bad = [p for p in pairs if p not in INDICATOR_PAIRS]
    if bad:
        raise ValueError(f"unknown indicator pair type(s) {bad}; known: "
                         f"{', '.join(INDICATOR_PAIRS)}")

    if not has_text_tower(run.clip.config) and tuple(pairs) == INDICATOR_PAIRS:
        pairs = ("image-image",)  # image-only backbone (DINOv2), default pairs
    run.require_text_tower(*(("text",) if "text-image" in pairs else ()),
                           *(("oti",) if "oti-image" in pairs else ()))
    images = labelled_images(run, dataset, split)
    if len(images) > MAX_INDICATOR_IMAGES:
        raise ValueError(f"{dataset}/{images.split}: {len(images)} images; the indicators "
                         f"build N x N similarity matrices, at most {MAX_INDICATOR_IMAGES}: "
                         "pass --max-queries N")
    fi = run.features(images)
    labels = labels_for(images, fi.items)
    kw: dict[str, Any] = {}
    if "text-image" in pairs:
        prompt = class_prompt(dataset)
        ft = run.features(classnames_split(dataset, images.classnames), template=prompt)
        kw.update(text=ft.features, text_labels=np.arange(len(images.classnames)))
    if "oti-image" in pairs:
        kw["inverted"] = run.inverted(fi, "oti").align(list(fi.items))[0]
    res = misalignment_indicators(fi.features, labels, **kw)
    if "inverted-image" in res:  # name it by what it is here
        res["oti-image"] = res.pop("inverted-image")
        if "modality_gap" in res and "inverted-image" in res["modality_gap"]:
            res["modality_gap"]["oti-image"] = res["modality_gap"].pop("inverted-image")
    out_dir = ensure_dir(os.path.join(run.run_dir, "indicators"))
    stem = f"{dataset.replace(':', '_').replace('/', '_')}-{images.split}"
    figure = plot_indicators(res, os.path.join(out_dir, f"{stem}.png"),
                             title=f"{run.preset.model} on {dataset} ({images.split})")
    summary = {p: {"overlap": res[p]["overlap"], "auroc": res[p]["auroc"]}
               for p in INDICATOR_PAIRS if p in res}
    summary["closer_to_other_class"] = res["closer_to_other_class"]["fraction"]
    if "modality_gap" in res:
        summary["modality_gap"] = res["modality_gap"]
    out = {"dataset": dataset, "split": images.split, "pairs": list(pairs),
           "num_classes": len(images.classnames), "indicators": res, "summary": summary,
           "figure": figure}
    atomic_write_json(os.path.join(out_dir, f"{stem}.json"), out)
    return out


def few_shot_table(dataset: str, res: dict) -> str:
    """Markdown table of a :func:`few_shot` result: mean +- std top-1 over the seeds, one
    row per feature type, one column per ``k`` (``skipped`` where it could not run)."""
    shots = [str(k) for k in res["shots"]]
    lines = [f"\nFew-shot NCM ({dataset}, {res['split']} queries: {res['num_queries']}; "
             f"prototypes from {res['train_split']}; seeds {res['seeds']}): top-1 % "
             "(mean +- std over seeds).\n",
             "| feature type | " + " | ".join(f"{k}-shot" for k in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for name, r in res["types"].items():
        cells = [f"{r['shots'][k]['mean']:.2f} +- {r['shots'][k]['std']:.2f}"
                 if k in r["shots"] else "skipped" for k in shots]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    skipped = [f"- {name} {k}-shot: {why}" for name, r in res["types"].items()
               for k, why in r["skipped"].items()]
    return "\n".join(lines + ([""] + skipped if skipped else [])) + "\n"
