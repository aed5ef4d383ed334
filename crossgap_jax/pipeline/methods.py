"""``compare``: one backbone, several datasets, one table of methods x datasets.

Every number comes from the pipeline's existing measurements on the run's cached features:
retrieval metrics from :func:`crossgap_jax.pipeline.measure.retrieve` (the dataset's task
and main metric, as ``reproduce`` reports it), few-shot NCM accuracy from ``classify
--variants fewshot`` (:func:`crossgap_jax.pipeline.baselines.few_shot`) and the
misalignment indicators from :func:`crossgap_jax.pipeline.baselines.indicators`. A method
that cannot apply to a dataset (no text side, a baseline whose preconditions fail) is a
cell ``{"skipped": why}``, never a number.

``--layout hw-fewshot`` measures Herzog & Wang's few-shot classifiers instead (rows =
classifier settings, columns = shots) with the ``fewshot`` command's code
(:func:`crossgap_jax.pipeline.fewshot_hw.hw_few_shot`, once per setting and dataset).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from crossgap_jax.baselines import read_span_classes
from crossgap_jax.fileio import atomic_write_bytes, atomic_write_json, ensure_dir
from crossgap_jax.pipeline.baselines import indicators
from crossgap_jax.pipeline.distributed import barrier, is_writer
from crossgap_jax.pipeline.feature_types import FEATURE_TYPES
from crossgap_jax.pipeline.fewshot_hw import (
    HW_ROWS,
    HWFewShotSettings,
    hw_few_shot,
    hw_row_settings,
)
from crossgap_jax.pipeline.layouts import (
    hw_average,
    hw_fewshot_table,
    isoclip_summary_rows,
    isoclip_table,
    summary_csv,
)
from crossgap_jax.pipeline.measure import classify, retrieve
from crossgap_jax.pipeline.records import provenance
from crossgap_jax.pipeline.report import provenance_header
from crossgap_jax.pipeline.settings import BaselineSettings

if TYPE_CHECKING:
    from crossgap_jax.pipeline.run import Run

# method -> (side, query feature type, gallery feature type); side: the dataset modality
# the method applies to ("both": either). "pca" becomes one row per --pca-k.
METHODS: dict[str, tuple[str, str, str]] = {
    "image": ("image", "image", "image"),
    "oti": ("image", "oti", "image"),
    "isoclip": ("both", "isoclip", "isoclip"),  # image or text task, both sides alike
    "pca": ("image", "pca", "pca"),
    "centered": ("image", "centered", "centered"),
    "text": ("text", "text", "text"),
    "ovi": ("text", "ovi", "text"),
    # Herzog & Wang's span projection; I0T's / GR-CLIP's post-hoc mean removal (both sides)
    "span": ("both", "span", "span"),
    "i0t": ("both", "i0t", "i0t"),
    "gr-clip": ("both", "gr-clip", "gr-clip"),
}
# the few-shot NCM feature type of each method that has one (text methods: no image
# support; i0t / gr-clip: none, their mean is fitted on the evaluated sets, see _NO_FEWSHOT)
_FEWSHOT_TYPE = {"image": "image", "oti": "oti", "isoclip": "isoclip", "pca": "pca",
                 "centered": "centered", "span": "span"}
_NO_FEWSHOT = {
    "i0t": "i0t has no few-shot NCM form: its mean is fitted on the evaluated embeddings "
           "(queries and gallery), not on a support set (centered is the support-fitted "
           "mean removal)",
    "gr-clip": "gr-clip has no few-shot NCM form: its mean is fitted on each evaluated set "
               "(queries, corpus), not on a support set (centered is the support-fitted "
               "mean removal)"}
# what a skipped cell may be caused by: bad preconditions, not bugs
_SKIPPABLE = (ValueError, FileNotFoundError, KeyError)


def known_methods() -> list[str]:
    """The method names ``compare`` takes: :data:`METHODS`, then every other feature type of
    :data:`~crossgap_jax.pipeline.feature_types.FEATURE_TYPES` (applied to both sides)."""
    return list(METHODS) + [t for t in FEATURE_TYPES if t not in METHODS]


def default_methods(layout: str = "default") -> list[str]:
    """The rows of ``compare`` without ``--methods``: every method of :data:`METHODS`
    (``default`` / ``isoclip``), or Herzog & Wang's eight classifier settings
    (:data:`~crossgap_jax.pipeline.fewshot_hw.HW_ROWS`, ``hw-fewshot``)."""
    return list(HW_ROWS) if layout == "hw-fewshot" else list(METHODS)


def method_spec(method: str) -> tuple[str, str, str]:
    """``(side, query feature type, gallery feature type)`` of a method: its
    :data:`METHODS` entry, else a feature type on both sides of either modality (a type that
    does not apply to a dataset becomes a skipped cell)."""
    return METHODS.get(method, ("both", method, method))


def check_methods(methods: Sequence[str], layout: str = "default") -> None:
    """Raise ValueError naming the first unknown method of ``layout`` (with a suggestion):
    ``hw-fewshot`` takes classifier settings (``gda+text+span``,
    :func:`~crossgap_jax.pipeline.fewshot_hw.hw_row_settings`), the others
    :func:`known_methods`."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    if layout == "hw-fewshot":
        for m in methods:
            hw_row_settings(m)
        return
    known = known_methods()
    for m in methods:
        if m not in known:
            close = difflib.get_close_matches(m, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown method {m!r}{hint} (known: {', '.join(known)})")


def _why(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _rows(methods: Sequence[str], settings: BaselineSettings) -> list[tuple[str, str, int]]:
    """``(row name, method, pca k or 0)``: ``pca`` expands to ``pca-<k>`` per --pca-k."""
    rows = []
    for m in methods:
        if m == "pca" and settings.pca_k:
            rows += [(f"pca-{k}", m, int(k)) for k in settings.pca_k]
        else:
            rows.append((m, m, 0))
    return rows


def _with_baselines(run: Run, **changes: Any) -> Run:
    return run.with_settings(baselines=dataclasses.replace(run.baselines, **changes))


def _retrieval_cells(run: Run, dataset: str, rows: list[tuple[str, str, int]]) -> dict:
    task = run.task(dataset)
    modality = task.query.modality
    metric = "mAP_medium" if task.relevance == "revisitop" else "mAP"
    cells: dict[str, Any] = {}
    for name, method, k in rows:
        side, qt, gt = method_spec(method)
        if side not in (modality, "both"):
            article = "an" if modality[0] in "aeiou" else "a"
            cells[name] = {"skipped": f"{side}-side method; {dataset} is {article} "
                                      f"{modality} retrieval task"}
            continue
        if method == "pca" and not k:
            cells[name] = {"skipped": "pca needs --pca-k K[,K...]"}
            continue
        r = _with_baselines(run, pca_k=(k,)) if k else run
        try:
            m = retrieve(r, dataset, qt, gt)
        except _SKIPPABLE as e:
            cells[name] = {"skipped": _why(e)}
            continue
        cells[name] = {"value": float(m[metric]), "metric": metric, "query_type": qt,
                       "gallery_type": gt, "metrics": m}
    return {"modality": modality, "metric": metric, "num_queries": len(task.query),
            "num_gallery": len(task.gallery), "cells": cells}


def _fewshot_cells(run: Run, dataset: str, modality: str, rows: list[tuple[str, str, int]]
                   ) -> dict:
    settings = run.baselines
    types, no_text = [], {}
    for _, method, _k in rows:
        t = _FEWSHOT_TYPE.get(method)
        if t and t not in types and (t != "pca" or settings.pca_k):
            try:  # an image-only backbone: the types needing text are cells that say so
                run.require_text_tower(t)  # raises only NoTextTowerError (a ValueError)
            except ValueError as e:
                no_text[t] = _why(e)
                continue
            types.append(t)
    if modality != "image":
        return {"skipped": f"{dataset} is a {modality} dataset; few-shot NCM classifies "
                           "labelled images"}
    if not types:
        return {"skipped": "no image-side method selected" if not no_text else
                "; ".join(dict.fromkeys(no_text.values()))}
    try:
        res = classify(_with_baselines(run, fewshot_types=types), dataset,
                       variants=("fewshot",))["fewshot"]
    except _SKIPPABLE as e:
        return {"skipped": _why(e)}
    cells: dict[str, Any] = {}
    for name, method, _k in rows:
        t = _FEWSHOT_TYPE.get(method)
        if method in _NO_FEWSHOT:
            cells[name] = {"skipped": _NO_FEWSHOT[method]}
        elif t in no_text:
            cells[name] = {"skipped": no_text[t]}
        elif t is None and method_spec(method)[0] == "both":
            cells[name] = {"skipped": f"{method} is not a few-shot NCM feature type"}
        elif t is None:
            cells[name] = {"skipped": "text-side method; few-shot NCM classifies images"}
        elif method == "pca" and not settings.pca_k:
            cells[name] = {"skipped": "pca needs --pca-k K[,K...]"}
        else:
            cells[name] = res["types"][name]
    return {"result": {k: v for k, v in res.items() if k != "types"}, "cells": cells}


def _indicators(run: Run, dataset: str, modality: str) -> dict:
    if modality != "image":
        return {"skipped": f"{dataset} is a {modality} dataset; the indicators need a "
                           "labelled image split"}
    try:
        res = indicators(run, dataset)
    except _SKIPPABLE as e:
        return {"skipped": _why(e)}
    return {"split": res["split"], "summary": res["summary"], "figure": res["figure"]}


def compare_methods(run: Run, datasets: Sequence[str], roots: dict[str, str] | None = None, *,
            methods: Sequence[str] | None = None, layout: str = "default"
            ) -> tuple[dict, str]:
    """Methods x datasets on one backbone; writes ``<run_dir>/compare/metrics.json`` and
    ``table.md`` and returns ``(results, table)`` (each built once).

    Per dataset: ``retrieval`` (the dataset's task; each method's main metric, ``mAP`` or
    ``mAP_medium``, in percent, with its full metrics dict), ``fewshot`` (image datasets
    with a ``train`` split: the k-shot NCM sweep of :class:`BaselineSettings`, one cell per
    image-side method) and ``indicators`` (their summary). Cells that cannot apply hold
    ``{"skipped": reason}``.

    ``layout="hw-fewshot"``: Herzog & Wang's few-shot classifiers instead (no retrieval,
    NCM or indicators): per dataset ``cells`` (one per classifier setting, the
    :func:`~crossgap_jax.pipeline.fewshot_hw.hw_few_shot` result of the ``fewshot``
    command) and ``support`` (the drawn training images, the same for every row), and
    ``average`` (:func:`~crossgap_jax.pipeline.layouts.hw_average`). Shots, seeds, span
    class list and reduce: the run's :class:`BaselineSettings`; eval preprocessing for the
    supports.

    Args:
        run: the run (model, settings, cache; ``max_queries`` / ``max_gallery`` apply).
        datasets: dataset names, in order.
        roots: per-dataset data roots (as :func:`~crossgap_jax.pipeline.reproduce.reproduce`).
        methods: method names (:func:`known_methods`; ``hw-fewshot``: classifier settings
            such as ``gda+text+span``), in row order; None: :func:`default_methods`.
        layout: the table: ``"default"`` (:func:`compare_table`), ``"isoclip"``
            (:func:`~crossgap_jax.pipeline.layouts.isoclip_table`; also writes
            ``compare/summary.csv`` in IsoCLIP's columns, one row per dataset and method)
            or ``"hw-fewshot"`` (:func:`~crossgap_jax.pipeline.layouts.hw_fewshot_table`).

    Raises:
        ValueError: an unknown method or layout.
    """
    methods = default_methods(layout) if methods is None else list(methods)
    check_methods(methods, layout)
    if roots:
        run = dataclasses.replace(run, roots={**run.roots, **roots})
    if layout == "hw-fewshot":
        out = _hw_fewshot(run, datasets, methods)
    else:
        rows = _rows(methods, run.baselines)
        out = {"provenance": None, "config": run.config,  # provenance: below
               "methods": list(methods), "rows": [r[0] for r in rows], "datasets": {}}
        for ds in datasets:
            entry = _retrieval_cells(run, ds, rows)
            entry["fewshot"] = _fewshot_cells(run, ds, entry["modality"], rows)
            entry["indicators"] = _indicators(run, ds, entry["modality"])
            out["datasets"][ds] = entry
    out["provenance"] = provenance(run)  # once, with the text sources the tasks used
    out["layout"] = layout
    table = LAYOUTS[layout](out)
    if is_writer():
        d = ensure_dir(os.path.join(run.run_dir, "compare"))
        atomic_write_json(os.path.join(d, "metrics.json"), out)
        atomic_write_bytes(os.path.join(d, "table.md"), table.encode())
        if layout == "isoclip":
            prov = out["provenance"]
            rows = isoclip_summary_rows(
                out, dataroot=run.root_for, model=prov["model"], pretrained=prov["pretrained"],
                folder=os.path.abspath(d), timestamp=time.strftime("%Y%m%d_%H%M%S"))
            atomic_write_bytes(os.path.join(d, "summary.csv"), summary_csv(rows).encode())
    barrier(f"compare:{run.run_dir}")
    return out, table


def _hw_fewshot(run: Run, datasets: Sequence[str], rows: Sequence[str]) -> dict[str, Any]:
    """The ``hw-fewshot`` layout's measurements (see :func:`compare_methods`)."""
    s = run.baselines
    base = HWFewShotSettings(shots=tuple(s.shots), seeds=tuple(s.seeds),
                             span_reduce=s.span_reduce)
    names = None if s.span_classes is None else read_span_classes(s.span_classes)
    out: dict[str, Any] = {"provenance": None, "config": run.config, "methods": list(rows),
                           "rows": list(rows), "shots": list(base.shots),
                           "seeds": list(base.seeds), "datasets": {}}
    settings = {row: hw_row_settings(row, base) for row in rows}
    for ds in datasets:
        cells: dict[str, Any] = {}
        support = None  # the same draws for every row: kept once per dataset
        for row, st in settings.items():
            try:
                res = hw_few_shot(run, ds, st, span_classnames=names)
            except _SKIPPABLE as e:  # no train split, no ImageNet names, no text tower
                cells[row] = {"skipped": _why(e)}
                continue
            support = support or res["support"]
            cells[row] = {k: v for k, v in res.items() if k != "support"}
        out["datasets"][ds] = {"support": support, "cells": cells}
    out["average"] = hw_average(out)
    return out


def _cell(c: dict) -> str:
    if "skipped" in c:
        return f"n/a ({c['skipped']})"
    return f"{c['value']:.2f}"


def _shot_cell(c: dict, k: str) -> str:
    if "skipped" in c and isinstance(c["skipped"], str):
        return f"n/a ({c['skipped']})"
    if k in c.get("shots", {}):
        s = c["shots"][k]
        return f"{s['mean']:.2f} +- {s['std']:.2f}"
    return f"n/a ({c.get('skipped', {}).get(k, 'not run')})"


def compare_table(res: dict) -> str:
    """Markdown of a :func:`compare` result: rows = methods, columns = each dataset's
    retrieval metric and its few-shot NCM top-1 per k (mean +- std over the seeds), then the
    indicators per dataset."""
    dss = list(res["datasets"])
    head = ["method"]
    for ds in dss:
        e = res["datasets"][ds]
        head.append(f"{ds} {e['metric']}")
        fs = e["fewshot"]
        if "cells" in fs:
            head += [f"{ds} {k}-shot NCM top-1" for k in fs["result"]["shots"]]
    lines = [provenance_header(res["provenance"], "compare: methods x datasets"), "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in res["rows"]:
        cells = [row]
        for ds in dss:
            e = res["datasets"][ds]
            cells.append(_cell(e["cells"][row]))
            fs = e["fewshot"]
            if "cells" in fs:
                cells += [_shot_cell(fs["cells"][row], str(k)) for k in fs["result"]["shots"]]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{ds}` few-shot: n/a ({e['fewshot']['skipped']})"
             for ds, e in res["datasets"].items() if "skipped" in e["fewshot"]]
    if notes:
        lines += ["", *notes]
    lines += ["", "Misalignment indicators (overlap / AUROC of same- vs different-class "
                  "similarities; fraction of images closer to another class):", "",
              "| dataset | image-image | text-image | oti-image | closer to other class |",
              "|---|---|---|---|---|"]
    for ds, e in res["datasets"].items():
        ind = e["indicators"]
        if "skipped" in ind:
            lines.append(f"| {ds} | n/a ({ind['skipped']}) | | | |")
            continue
        s = ind["summary"]
        pair = [f"{s[p]['overlap']:.3f} / {s[p]['auroc']:.3f}" if p in s else "n/a"
                for p in ("image-image", "text-image", "oti-image")]
        lines.append(f"| {ds} | " + " | ".join(pair)
                     + f" | {s['closer_to_other_class']:.3f} |")
    return "\n".join(lines) + "\n"


def _isoclip_layout(res: dict) -> str:
    return isoclip_table(res, provenance_header(res["provenance"],
                                                "compare: methods x datasets (IsoCLIP's layout)"))


def _hw_fewshot_layout(res: dict) -> str:
    return hw_fewshot_table(res, provenance_header(
        res["provenance"], "compare: Herzog & Wang's few-shot classifiers x shots"))


# compare's table layouts: name -> (result -> markdown)
LAYOUTS = {"default": compare_table, "isoclip": _isoclip_layout,
           "hw-fewshot": _hw_fewshot_layout}
