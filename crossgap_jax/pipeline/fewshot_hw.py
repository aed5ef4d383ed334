"""``fewshot``: Herzog & Wang's few-shot classifiers on a run's cached features.

Their ``cvpr26-suppl/few_shot_classification/main_few_shots.py`` step by step (facts in
docs/baselines.md, "Herzog & Wang's few-shot classifiers"): for each seed, Python's
``random`` seeded once, then each shot count in turn draws a support from CoOp's ``train``
split with Dassl's sampler (:func:`crossgap_jax.retrieval.fewshot.support_sets`); the
classifier (:mod:`crossgap_jax.retrieval.fewshot_hw`) scores the whole ``test`` split;
top-1 in percent; the printed result is the mean over the seeds per shot.

Features: the run's cached image embeddings, L2-normalised (their pre-extraction). Their
support features come from one random, unseeded augmented view per training image; here the
eval preprocessing is the default and their augmentation is an option with a seed
(:func:`augmented_support_features`). ``--use-text``: the dataset's zero-shot classifier
(CoOp prompt, ``_`` -> space, prompt embeddings normalised, averaged, normalised; their
``preextract_text_features.py``). ``--project span``: Herzog & Wang's span projection of
the normalised support and test features, not re-normalised; the span from the ImageNet
zero-shot classifier (``span_source="zeroshot"``, their few-shot script) or from the raw
ImageNet class names' unnormalised text embeddings (``"names"``, their retrieval script).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from crossgap_jax import retrieval
from crossgap_jax.baselines import (
    DEFAULT_SPAN_REDUCE,
    SpanClasses,
    read_span_classes,
    span_basis,
    span_project,
)
from crossgap_jax.data import augmented_view, get_dataset
from crossgap_jax.pipeline.baselines import labelled_images, load_train_split
from crossgap_jax.pipeline.layouts import hw_fewshot_block
from crossgap_jax.pipeline.prompts import IMAGENET_TEMPLATES, class_prompt
from crossgap_jax.pipeline.tasks import classnames_split, labels_for
from crossgap_jax.retrieval import (
    DEFAULT_SEEDS,
    DEFAULT_SHOTS,
    HW_CLASSIFIERS,
    hw_scores,
    support_sets,
    top1_accuracy,
)

if TYPE_CHECKING:
    from crossgap_jax.pipeline.run import Run

SPAN_SOURCES = ("zeroshot", "names")
PROJECTIONS = (None, "span")


@dataclasses.dataclass(frozen=True)
class HWFewShotSettings:
    """One ``fewshot`` run.

    Attributes:
        classifier: ``"prototype"`` or ``"gda"`` (their default).
        use_text: blend with the dataset's zero-shot classifier (weights 0.5 / 0.5).
        project: None or ``"span"``.
        span_source: ``"zeroshot"`` (their few-shot script: the ImageNet zero-shot
            classifier, seven templates) or ``"names"`` (their retrieval script: raw names).
        span_reduce: keep ``d // span_reduce`` span directions (theirs: 2).
        shots: drawn in this order within each seed (order matters: see the sampler).
        seeds: Python ``random`` seeds.
        augment_seed: None: support features with the eval preprocessing (default); an
            integer: their training augmentation, one view per image, seeded.
    """

    classifier: str = "gda"
    use_text: bool = False
    project: str | None = None
    span_source: str = "zeroshot"
    span_reduce: int = DEFAULT_SPAN_REDUCE
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    augment_seed: int | None = None

    def __post_init__(self):
        if self.classifier not in HW_CLASSIFIERS:
            raise ValueError(f"classifier must be one of {HW_CLASSIFIERS}, got "
                             f"{self.classifier!r}")
        if self.project not in PROJECTIONS:
            raise ValueError(f"project must be 'span' or None, got {self.project!r}")
        if self.span_source not in SPAN_SOURCES:
            raise ValueError(f"span source must be one of {SPAN_SOURCES}, got "
                             f"{self.span_source!r}")
        if not self.shots or any(int(k) < 1 for k in self.shots):
            raise ValueError("shots must be one or more positive integers")
        if not self.seeds or any(int(s) < 0 for s in self.seeds):
            raise ValueError("seeds must be one or more non-negative integers")


def zeroshot_span_features(run: Run, names: Sequence[str]) -> np.ndarray:
    """The text features their few-shot script fits the span on: the ImageNet zero-shot
    classifier of their ``preextract_text_features`` (each name with ``_`` -> space in the
    seven :data:`IMAGENET_TEMPLATES`, each prompt embedding normalised, averaged,
    normalised): ``(C, d)`` unit rows. (The raw-names span of their retrieval script is
    :meth:`Run.span_map <crossgap_jax.pipeline.run.Run.span_map>`.)"""
    split = classnames_split("imagenet", list(names))
    per_template = [np.asarray(run.features(split, template=t).features)
                    for t in IMAGENET_TEMPLATES]
    return np.asarray(retrieval.build_classifier(np.stack(per_template, axis=1)), np.float64)


def imagenet_classnames(run: Run) -> list[str]:
    """The ImageNet class names of the run's data root (CoOp's ``classnames.txt``: CLIP's
    cleaned names, the list of their ``datasets/imagenet.py``).

    Raises:
        ValueError: ImageNet or its ``classnames.txt`` not found (pass ``--span-classes``).
    """
    try:
        names = list(get_dataset("imagenet", run.root_for("imagenet"), "test").classnames)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise ValueError("the few-shot span needs the ImageNet class names: pass "
                         "--span-classes FILE (one name per line) or a data root with "
                         f"CoOp's imagenet/classnames.txt ({' '.join(str(e).split())})"
                         ) from None
    if not names or all(n.startswith("n") and n[1:].isdigit() for n in names):
        raise ValueError("ImageNet was found without CoOp's classnames.txt (only WordNet ids): "
                         "pass --span-classes FILE")
    return names


def hw_few_shot(run: Run, dataset: str, settings: HWFewShotSettings,
                span_classnames: SpanClasses | Sequence[str] | None = None) -> dict[str, Any]:
    """Herzog & Wang's few-shot accuracy of ``dataset`` (CoOp ``test`` vs ``train``).

    Args:
        run: the run (model, caches, ``max_queries`` subsets the test images).
        dataset: a CoOp-format image dataset with ``train`` and ``test`` splits.
        settings: :class:`HWFewShotSettings`.
        span_classnames: the span's class names (``--span-classes``: a
            :class:`~crossgap_jax.baselines.SpanClasses`, whose file and sha256 the result
            names, or a list); None: the ImageNet class names of the data root
            (``"zeroshot"``) or the shipped ImageNet list (``"names"``).

    Returns:
        ``{"per_seed": {"<seed>": [acc per shot]}, "mean": [per shot], "shots", "seeds",
        "degenerate": {"<seed>": {"<k>": why}}, "support": {"<seed>": {"<k>": [train
        items]}}, "short_classes": {"<k>": [class names with fewer than k training
        images, whose support repeats images]}, ...}``; accuracies in percent as their
        float32 ``cls_acc``, the mean in float32 as their ``torch.tensor(...).mean(0)``.

    Raises:
        ValueError: an image-only backbone with ``use_text`` / ``project``, a dataset
            without ``train``, missing span class names.
    """
    s = settings
    if s.use_text:
        run.require_text_tower("text")
    if s.project:
        run.require_text_tower("text")
        if span_classnames is None and s.span_source == "names":
            span_classnames = read_span_classes()  # the retrieval script's raw names
        if span_classnames is not None and not isinstance(span_classnames, SpanClasses):
            given = list(span_classnames)
            span_classnames = SpanClasses(tuple(given), "given", hashlib.sha256(
                "\n".join(given).encode()).hexdigest())
        if span_classnames is not None:
            names, classes = list(span_classnames.names), span_classnames.info()
        else:
            names = imagenet_classnames(run)
            classes = {"classes": f"imagenet classnames under {run.root_for('imagenet')}"}
    images = labelled_images(run, dataset, "test")
    train = load_train_split(run, dataset, images, "train")
    num_classes = len(images.classnames)
    ytr = np.asarray(train.labels)
    draws = {seed: support_sets(ytr, s.shots, seed) for seed in s.seeds}
    counts = np.bincount(ytr, minlength=num_classes)
    short = {str(k): [images.classnames[c] for c in range(num_classes) if counts[c] < int(k)]
             for k in s.shots}
    union = np.array(sorted({int(i) for d in draws.values() for v in d.values() for i in v}),
                     np.int64)
    row_of = {int(i): r for r, i in enumerate(union)}
    sub = train.subset(union)
    if s.augment_seed is None:
        fs = run.features(sub)
        rows, found = fs.align(list(sub.items))
        if not found.all():
            missing = [it for it, f in zip(sub.items, found, strict=True) if not f][:3]
            raise ValueError(f"{dataset}/train: drawn training image(s) could not be encoded: "
                             f"{missing}")
    else:
        rows = augmented_support_features(run, sub, union, s.augment_seed)
    xtr = retrieval.l2_normalize(np.asarray(rows, np.float64), "support features")
    ft = run.features(images)
    xte = retrieval.l2_normalize(np.asarray(ft.features, np.float64), "test features")
    yte = labels_for(images, ft.items)
    out: dict[str, Any] = {"dataset": dataset, "classifier": s.classifier,
                           "use_text": s.use_text, "project": s.project,
                           "shots": [int(k) for k in s.shots], "seeds": [int(x) for x in s.seeds],
                           "num_classes": num_classes, "num_test": len(ft.items),
                           "test_split": images.split, "train_split": "train",
                           "num_train_images_encoded": len(union),
                           "short_classes": {k: v for k, v in short.items() if v},
                           "support_preprocessing": "eval" if s.augment_seed is None else
                           {"augment": "RandomResizedCrop(224, scale=(0.5, 1), bicubic) + "
                                       "horizontal flip p=0.5, one view per image",
                            "seed": int(s.augment_seed)}}
    text = None
    if s.use_text:
        prompt = class_prompt(dataset)
        fc = run.features(classnames_split(dataset, images.classnames), template=prompt)
        text = np.asarray(retrieval.build_classifier(fc.features), np.float64)
        out["prompt"] = prompt
    if s.project:
        if s.span_source == "names":
            basis = run.span_map(span_classnames, s.span_reduce)[0]
        else:
            basis = span_basis(zeroshot_span_features(run, names), s.span_reduce)
        xtr, xte = span_project(xtr, basis), span_project(xte, basis)
        out["span"] = {"source": s.span_source, **classes, "num_classes": len(names),
                       "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
                       "reduce": int(s.span_reduce), "dims": int(basis.shape[0]),
                       "templates": list(IMAGENET_TEMPLATES) if s.span_source == "zeroshot"
                       else None, "renormalised": False}
    per_seed: dict[str, list[float]] = {}
    degenerate: dict[str, dict[str, str]] = {}
    support: dict[str, dict[str, list[str]]] = {}
    for seed in s.seeds:
        accs = []
        for k in s.shots:
            idx = draws[seed][int(k)]
            rows_k = [row_of[int(i)] for i in idx]
            scores, info = hw_scores(s.classifier, xtr[rows_k], ytr[idx], xte, num_classes,
                                     text)
            accs.append(top1_accuracy(scores, yte))
            support.setdefault(str(seed), {})[str(k)] = [train.items[int(i)] for i in idx]
            if info["degenerate"]:
                degenerate.setdefault(str(seed), {})[str(k)] = info["degenerate"]
        per_seed[str(seed)] = accs
    table = np.asarray([per_seed[str(x)] for x in s.seeds], np.float32)
    out.update(per_seed=per_seed, mean=[float(v) for v in table.mean(axis=0)],
               degenerate=degenerate, support=support)
    return out


def augmented_support_features(run: Run, split: Any, indices: np.ndarray, seed: int
                               ) -> np.ndarray:
    """Image embeddings ``(len(split), d)`` of ``split`` (item ``j`` is training image
    ``indices[j]``) with Herzog & Wang's training augmentation, one view per image, the view
    of training image ``i`` drawn from ``numpy.random.default_rng([seed, i])`` (so a view does
    not depend on which draws use it); decoded through ``split.open_image`` (crop boxes,
    readers) and encoded in batches of the preset's batch size. Not cached.

    Raises:
        ValueError: an image that cannot be read.
    """
    batch = run.preset.batch_size
    out = []
    for start in tqdm(range(0, len(indices), batch), desc=f"augment {split.name}/train",
                      unit="batch", disable=not run.progress):
        views = [augmented_view(split.open_image(j), np.random.default_rng([int(seed), int(i)]),
                                **run.clip.preprocess_options)
                 for j, i in enumerate(indices[start:start + batch], start)]
        out.append(np.asarray(run.clip.encode_image(np.stack(views), batch_size=batch,
                                                    progress=False), np.float64))
    return np.concatenate(out)


def hw_printout(res: dict) -> str:
    """Their script's closing lines: ``seed=S, shot=K, acc=A`` per run, then per seed the
    list of accuracies and ``Average:  tensor([...])`` (4 decimals, as torch prints)."""
    lines = [f"seed={seed}, shot={k}, acc={a:.2f}"
             for seed in res["seeds"]
             for k, a in zip(res["shots"], res["per_seed"][str(seed)], strict=True)]
    lines += [f"Evaluate on seeds={res['seeds']}", f"Evaluate on shots={res['shots']}"]
    lines += [f"seed={seed} {res['per_seed'][str(seed)]}" for seed in res["seeds"]]
    cells = [f"{v:.4f}" for v in res["mean"]]
    width = max(len(c) for c in cells)
    lines.append("Average:  tensor([" + ", ".join(c.rjust(width) for c in cells) + "])")
    return "\n".join(lines)


def hw_table(res: dict, method: str | None = None) -> str:
    """Markdown of one ``fewshot`` result: one row (the method: classifier [+ text] [+ span]),
    one column per shot, the mean over the seeds, degenerate cells flagged and explained
    under the table (:func:`~crossgap_jax.pipeline.layouts.hw_fewshot_block`); then one
    line naming, per shot, the classes with fewer training images than shots (their
    support repeats images, as Dassl's sampler does)."""
    name = method or hw_method_name(res)
    title = (f"Herzog & Wang few-shot ({res['dataset']}, {res['test_split']}: "
             f"{res['num_test']} images; supports from {res['train_split']}; seeds "
             f"{res['seeds']}): top-1 % (mean over seeds).")
    block = hw_fewshot_block(title, res["shots"], {name: res})
    short = res.get("short_classes") or {}
    if short:
        block += ("\n\nFewer training images than shots (drawn with replacement): "
                  + "; ".join(f"{k}-shot: {_name_list(v)}" for k, v in short.items()))
    return "\n" + block + "\n"


def _name_list(names: Sequence[str], most: int = 10) -> str:
    """``a, b, c`` or, past ``most`` names, the first ``most`` and ``+N more``."""
    more = f" +{len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def hw_method_name(res: dict) -> str:
    """``prototype``, ``gda+text``, ``prototype+text+span`` ... (their log names' parts;
    ``+span(names)``: the raw-names span of their retrieval script). The inverse of
    :func:`hw_row_settings`."""
    name = res["classifier"] + ("+text" if res["use_text"] else "")
    if res["project"]:
        name += "+span" + ("" if res["span"]["source"] == "zeroshot" else "(names)")
    return name


# compare --layout hw-fewshot: its default rows, each classifier without and with the span
HW_ROWS = ("prototype", "prototype+span", "prototype+text", "prototype+text+span",
           "gda", "gda+span", "gda+text", "gda+text+span")


def hw_row_settings(row: str, base: HWFewShotSettings = HWFewShotSettings()
                    ) -> HWFewShotSettings:
    """The settings of a row name ``<classifier>[+text][+span|+span(names)]``
    (:func:`hw_method_name`'s spelling) on top of ``base`` (shots, seeds, span reduce).

    Raises:
        ValueError: a name not of that form (the known classifiers and parts named).
    """
    clf, *parts = row.split("+")
    use_text, span, known = "text" in parts, None, {"text", "span", "span(names)"}
    if "span" in parts or "span(names)" in parts:
        span = "zeroshot" if "span" in parts else "names"
    canonical = clf + ("+text" if use_text else "") + (
        "" if span is None else "+span" if span == "zeroshot" else "+span(names)")
    if clf not in HW_CLASSIFIERS or not set(parts) <= known or row != canonical:
        sound = clf in HW_CLASSIFIERS and set(parts) <= known and len(parts) == len(
            set(parts)) and not {"span", "span(names)"} <= set(parts)
        hint = f"; did you mean {canonical!r}?" if sound else ""
        raise ValueError(f"unknown few-shot setting {row!r}{hint} (write <classifier>[+text]"
                         f"[+span|+span(names)], classifier one of {', '.join(HW_CLASSIFIERS)};"
                         f" e.g. gda+text+span)")
    return dataclasses.replace(base, classifier=clf, use_text=use_text,
                               project="span" if span else None,
                               span_source=span or base.span_source)
