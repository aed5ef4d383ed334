"""Table layouts of a ``compare`` result (pure: a result dict in, text out).

``compare --layout isoclip`` lays the retrieval cells out as IsoCLIP's tables do (methods x
datasets on one backbone; per dataset mAP, mAP@R, P@R, R@1, then their average over the
datasets) and writes one row per (dataset, method) in the columns of IsoCLIP's
``summary.csv`` (``simomagi/IsoCLIP``, ``src/retrieval.py``: ``main`` writes the script's
arguments in parser order, then its metric keys, then ``folder_path`` and ``timestamp``).
Rows are generic over the methods (feature types) of the result: nothing here names one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# (our key, IsoCLIP's summary.csv key, table header)
ISOCLIP_METRICS: tuple[tuple[str, str, str], ...] = (
    ("mAP", "mAP", "mAP"), ("mAP@R", "mAP_at_R", "mAP@R"), ("P@R", "precision_at_R", "P@R"),
    ("R@1", "recall_at_1", "R@1"))
_REVISITOP_KEYS = tuple(["mAP_easy", "mAP_medium", "mAP_hard"] + [
    f"mP@{k}_{p}" for k in (1, 5, 10) for p in ("easy", "medium", "hard")])
# IsoCLIP's summary.csv header: its retrieval.py arguments in parser order, its metric keys
# (same-modality runs), the run folder and timestamp; then ours: the compare row name.
ISOCLIP_SUMMARY_COLUMNS: tuple[str, ...] = (
    "dataroot", "dataset_name", "clip_model_name", "query_eval_type", "gallery_eval_type",
    "no_iso", "iso_ktop", "iso_kbottom", "query_split", "gallery_split", "use_open_clip",
    "open_clip_pretrained", "out_path",
    *(m[1] for m in ISOCLIP_METRICS), *_REVISITOP_KEYS,
    "folder_path", "timestamp", "method")


def isoclip_values(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """A retrieval cell's metrics under IsoCLIP's four summary keys (``mAP``, ``mAP_at_R``,
    ``precision_at_R``, ``recall_at_1``; percent). ROxford5k / RParis6k: ``mAP`` is the Easy
    mAP and the other three are None, as IsoCLIP's ``main`` writes them."""
    if "mAP_easy" in metrics:
        return {"mAP": float(metrics["mAP_easy"]), "mAP_at_R": None, "precision_at_R": None,
                "recall_at_1": None}
    return {k: (float(metrics[ours]) if ours in metrics else None)
            for ours, k, _ in ISOCLIP_METRICS}


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def isoclip_table(res: dict, header: str = "") -> str:
    """Markdown of a ``compare`` result in IsoCLIP's layout.

    Rows: the result's rows that have a retrieval value on at least one dataset (the others
    are named below the table). Columns: per dataset ``mAP | mAP@R | P@R | R@1`` (IsoCLIP's
    summary keys, :func:`isoclip_values`), then ``average``: per metric, the mean over the
    datasets that report it; ``n/a`` when the row lacks a dataset that reports it (an
    average over fewer datasets would not be comparable).
    """
    dss = list(res["datasets"])
    values: dict[str, dict[str, dict[str, float | None] | None]] = {}
    for row in res["rows"]:
        values[row] = {}
        for ds in dss:
            c = res["datasets"][ds]["cells"][row]
            values[row][ds] = isoclip_values(c["metrics"]) if "value" in c else None
    shown = [r for r in res["rows"] if any(v is not None for v in values[r].values())]
    # which datasets report each metric (any shown row has it)
    reports = {k: [ds for ds in dss if any(values[r][ds] is not None
                                           and values[r][ds][k] is not None for r in shown)]
               for _, k, _ in ISOCLIP_METRICS}
    head = ["method"] + [f"{ds} {h}" for ds in dss for _, _, h in ISOCLIP_METRICS] + [
        f"average {h}" for _, _, h in ISOCLIP_METRICS]
    lines = ([header, ""] if header else []) + [
        "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in shown:
        cells = [row]
        for ds in dss:
            v = values[row][ds]
            cells += (["n/a"] * 4 if v is None else [_fmt(v[k]) for _, k, _ in ISOCLIP_METRICS])
        for _, k, _ in ISOCLIP_METRICS:
            vals = [values[row][ds][k] for ds in reports[k] if values[row][ds] is not None]
            ok = len(vals) == len(reports[k]) and vals and all(x is not None for x in vals)
            cells.append(f"{sum(vals) / len(vals):.2f}" if ok else "n/a")  # type: ignore[arg-type]
        lines.append("| " + " | ".join(cells) + " |")
    hidden = [r for r in res["rows"] if r not in shown]
    lines += ["", f"Averages over {len(dss)} dataset(s); percent. ROxford5k / RParis6k: mAP "
              "is the Easy mAP (IsoCLIP's summary.csv) and mAP@R, P@R, R@1 are not reported."]
    if hidden:
        lines.append("Rows without a value on any dataset (left out):")
        for r in hidden:  # why, in the cells' own words (each distinct reason once)
            why = dict.fromkeys(str(res["datasets"][ds]["cells"][r].get("skipped", "no value"))
                                for ds in dss)
            lines.append(f"- {r}: {' / '.join(why)}")
    return "\n".join(lines) + "\n"


def isoclip_summary_rows(res: dict, *, dataroot: Callable[[str], str | None], model: str,
                         pretrained: str | None, folder: str, timestamp: str
                         ) -> list[dict[str, Any]]:
    """One ``summary.csv`` row (IsoCLIP's columns, :data:`ISOCLIP_SUMMARY_COLUMNS`) per
    dataset and row of a ``compare`` result that has a retrieval value.

    ``query_eval_type`` / ``gallery_eval_type`` are the row's feature types (IsoCLIP's own
    runs only know ``image`` / ``text``); ``no_iso`` is False and ``iso_ktop`` /
    ``iso_kbottom`` the values used on IsoCLIP rows, True and -1 elsewhere (as IsoCLIP's
    ``--no_iso`` runs); ``use_open_clip`` is False for OpenAI weights; ``out_path`` is empty
    (IsoCLIP: its launcher script's name); ``method``: the compare row (ours).

    Args:
        res: a ``compare`` result.
        dataroot: the data root of a dataset.
        model, pretrained: the backbone (architecture name, pretrained tag or None).
        folder, timestamp: the run's compare folder and ``%Y%m%d_%H%M%S`` time.
    """
    out = []
    for ds, entry in res["datasets"].items():
        for row in res["rows"]:
            c = entry["cells"][row]
            if "value" not in c:
                continue
            m = c["metrics"]
            iso = m.get("query_isoclip")
            rec: dict[str, Any] = {
                "dataroot": dataroot(ds), "dataset_name": ds, "clip_model_name": model,
                "query_eval_type": c["query_type"], "gallery_eval_type": c["gallery_type"],
                "no_iso": iso is None, "iso_ktop": iso["k_top"] if iso else -1,
                "iso_kbottom": iso["k_bottom"] if iso else -1,
                "query_split": m.get("query_split"), "gallery_split": m.get("gallery_split"),
                "use_open_clip": pretrained != "openai", "open_clip_pretrained": pretrained,
                "out_path": None, **isoclip_values(m),
                **{k: (float(m[k]) if k in m else None) for k in _REVISITOP_KEYS},
                "folder_path": folder, "timestamp": timestamp, "method": row}
            out.append(rec)
    return out


def summary_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as CSV text under :data:`ISOCLIP_SUMMARY_COLUMNS` (None -> an empty field, as
    IsoCLIP's ``csv.DictWriter`` writes its missing metrics)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ISOCLIP_SUMMARY_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in ISOCLIP_SUMMARY_COLUMNS})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Herzog & Wang's few-shot table (compare --layout hw-fewshot; the fewshot command's table)
# ---------------------------------------------------------------------------------------
def _degenerate_at(cell: Mapping[str, Any], k: int) -> list[str]:
    """The reasons a cell is degenerate at ``k`` shots (``cell["degenerate"]``: per seed, or
    per dataset for an average, ``{"<k>": why}``)."""
    return [d[str(k)] for d in cell.get("degenerate", {}).values() if str(k) in d]


def hw_fewshot_block(title: str, shots: Sequence[int], cells: Mapping[str, Mapping[str, Any]]
                     ) -> str:
    """One block of Herzog & Wang's table: rows = settings, columns = shots, each cell the
    mean over the seeds (``cell["mean"]``, percent); a cell where a seed's classifier
    degenerated (1-shot ``gda``) reads ``<value> (degenerate)`` and the reason is written
    under the table, as the ``fewshot`` command writes it; a ``{"skipped": why}`` row reads
    ``n/a (why)``."""
    lines = [title, "", "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |",
             "|---|" + "---|" * len(shots)]
    notes: dict[str, list[str]] = {}
    for row, c in cells.items():
        if "skipped" in c:
            lines.append(f"| {row} | n/a ({c['skipped']}) |" + " |" * (len(shots) - 1))
            continue
        vals = []
        for k, v in zip(shots, c["mean"], strict=True):
            why = _degenerate_at(c, k)
            vals.append(f"{v:.2f}" + (" (degenerate)" if why else ""))
            for w in why:
                notes.setdefault(w, [])
                if f"{k}-shot" not in notes[w]:
                    notes[w].append(f"{k}-shot")
        lines.append(f"| {row} | " + " | ".join(vals) + " |")
    for why, where in notes.items():
        lines += ["", f"Degenerate ({', '.join(where)}): {why}"]
    return "\n".join(lines)


def hw_average(res: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per row of an ``hw-fewshot`` compare result, the mean over its datasets of each
    shot's mean over seeds (percent, float64): ``{"mean": [...], "datasets": [...],
    "degenerate": {"<dataset>": {"<k>": why}}}``, or ``{"skipped": why}`` when a dataset
    lacks the row (an average over fewer datasets would not be comparable)."""
    out: dict[str, dict[str, Any]] = {}
    dss = list(res["datasets"])
    for row in res["rows"]:
        cells = {ds: res["datasets"][ds]["cells"][row] for ds in dss}
        missing = [ds for ds, c in cells.items() if "mean" not in c]
        if missing or not dss:
            out[row] = {"skipped": f"no value on {', '.join(missing) or 'any dataset'}"}
            continue
        means = [[float(v) for v in c["mean"]] for c in cells.values()]
        out[row] = {"mean": [sum(col) / len(col) for col in zip(*means, strict=True)],
                    "datasets": dss,
                    "degenerate": {ds: {k: w for d in c["degenerate"].values()
                                        for k, w in d.items()}
                                   for ds, c in cells.items() if c["degenerate"]}}
    return out


def hw_fewshot_table(res: Mapping[str, Any], header: str = "") -> str:
    """Markdown of an ``hw-fewshot`` compare result in Herzog & Wang's layout: one block per
    dataset (rows = classifier settings, columns = shots, top-1 % as the mean over the
    seeds), then the average over the datasets (``res["average"]``, :func:`hw_average`)."""
    shots, blocks = res["shots"], [header.rstrip()] if header else []
    for ds, entry in res["datasets"].items():
        first = next((c for c in entry["cells"].values() if "mean" in c), None)
        where = (f"{first['test_split']}: {first['num_test']} images, {first['num_classes']} "
                 f"classes; supports from {first['train_split']}") if first else "no row ran"
        blocks.append(hw_fewshot_block(f"### {ds} ({where})", shots, entry["cells"]))
    blocks.append(hw_fewshot_block(f"### average over {len(res['datasets'])} dataset(s)",
                                   shots, res["average"]))
    blocks.append(f"Top-1 % on each dataset's test split, mean over seeds {res['seeds']}; "
                  "average: the mean of those over the datasets. +text: 0.5 / 0.5 blend with "
                  "the zero-shot classifier; +span: Herzog & Wang's span projection of "
                  "support and test (their few-shot script's: the ImageNet zero-shot "
                  "classifier's span; +span(names): the raw names').")
    return "\n\n".join(blocks) + "\n"
