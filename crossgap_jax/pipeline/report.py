"""Markdown tables of a run's results, rendered from the in-memory results (never read
back from disk), each headed by the provenance of what produced them."""

from __future__ import annotations

import numpy as np

from crossgap_jax.pipeline.baselines import few_shot_table
from crossgap_jax.pipeline.published import published_for
from crossgap_jax.retrieval import INDICATOR_FIELDS


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


def _data_lines(data: dict, exif_transpose: bool = False) -> list[str]:
    """One line per split: its data root and fingerprint (mode, first 16 hex digits), and
    how many of its images carry an EXIF orientation (rotated or mirrored photos)."""
    def images(n: int) -> str:
        return f"{n} image{'s' if n != 1 else ''}"

    def notes(d: dict) -> str:
        out = ""
        if d.get("exif_oriented"):
            out += (f"; {images(d['exif_oriented'])} with an EXIF orientation, "
                    + ("turned upright (--exif-transpose)" if exif_transpose else
                       "encoded as stored (the authors' default; --exif-transpose turns them)"))
        if d.get("from_subfolders"):
            out += f"; {images(d['from_subfolders'])} from sub-folders of class folders"
        if d.get("empty_classes_skipped"):
            skipped = d["empty_classes_skipped"]
            out += (f"; empty class folders left out: "
                    f"{', '.join(skipped) if isinstance(skipped, list) else skipped}")
        return out

    return [f"- data `{name}`: root `{d.get('root') or 'none (texts made here)'}`, "
            f"fingerprint `{d.get('mode')}:"
            f"{str(d.get('digest'))[:16]}` ({d.get('num_items')} items){notes(d)}"
            for name, d in data.items()]


def _jax_line(jx: dict | None) -> list[str]:
    """The JAX settings the numbers could depend on (:func:`crossgap_jax.inversion.
    jax_numerics`): x64, default matmul precision, backend and device, JAX version."""
    if not jx:
        return []
    prec = jx.get("jax_default_matmul_precision") or "default"
    return [f"- JAX {jx.get('jax_version')}: backend `{jx.get('backend')}` "
            f"({jx.get('device_kind')}), x64 {'on' if jx.get('jax_enable_x64') else 'off'}, "
            f"matmul precision {prec}"]


def provenance_header(prov: dict, title: str) -> str:
    """Markdown lines naming what produced a table: model, checkpoint sha256, preset, every
    setting, subset caveat, text sources, each split's data root and fingerprint and the
    package version."""
    s = prov.get("settings", {})
    lines = [f"# {title}", "",
             f"- model: `{prov.get('model')}`; weights: `{prov.get('checkpoint')}`"
             + (f" (pretrained `{prov['pretrained']}`)" if prov.get("pretrained") else ""),
             f"- checkpoint sha256: `{prov.get('checkpoint_sha256') or 'not available'}`",
             f"- preset (settings): `{prov.get('preset')}`; "
             + ", ".join(f"{k}={s[k]!r}" if isinstance(s[k], str) else f"{k}={s[k]}"
                         for k in sorted(s)),
             f"- text sources: {_format_text_sources(prov.get('text_sources') or {})}",
             *_data_lines(prov.get("data") or {}, bool(s.get("exif_transpose"))),
             *_jax_line(prov.get("jax")),
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


def _interval(ci: list | None) -> str:
    """``[low, high]`` in points (two decimals, signed), or ``-`` without an interval."""
    if not ci:
        return "-"
    return f"[{float(ci[0]):+.2f}, {float(ci[1]):+.2f}]"


def results_table(results: dict) -> str:
    """Markdown table: per dataset and average, baseline vs inverted mAP, with the paper's
    published averages only when the run's model and weights are the paper's (see
    :func:`~crossgap_jax.pipeline.published.published_for`). Query counts: evaluated /
    asked, skipped for having no relevant item, missing (unreadable)."""
    names = {"image": ("image->image", "OTI->image"), "text": ("text->text", "OVI->text")}
    lines = ["| dataset | mode | baseline mAP | inverted mAP | gain | gain 95% interval | "
             "queries evaluated | skipped (no relevant) | missing |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ds, v in results["datasets"].items():
        b, i = _main_metric(v["baseline"]), _main_metric(v["inverted"])
        mode = " vs ".join(names[v["modality"]])
        lines.append(f"| {_dataset_label(ds, v['baseline'])} | {mode} | {b:.2f} | {i:.2f} | "
                     f"{i - b:+.2f} | {_interval(v.get('ci95'))} | {_counts(v['inverted'])} |")
    pub = results.get("published") or {}
    for modality, avg in results.get("average", {}).items():
        mode = " vs ".join(names[modality])
        b, i = avg["baseline"], avg["inverted"]
        n = avg['num_datasets']
        lines.append(f"| **average** ({n} dataset{'s' if n != 1 else ''}) | {mode} | {b:.2f} | "
                     f"{i:.2f} | {i - b:+.2f} | | | | |")
        if modality in pub:
            pb, pi = pub[modality]
            lines.append(f"| *paper (avg. over its datasets)* | {mode} | {pb:.1f} | {pi:.1f} | "
                         f"{pi - pb:+.1f} | | | | |")
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
    note += (" Gain: inverted - baseline, in points; its 95% interval: paired bootstrap over "
             "the queries (as in metrics.json's `ci95`; none for ROxford5k / RParis6k or "
             "without a bootstrap)."
             " ROxford5k / RParis6k: Medium protocol mAP.\n\n"
             f"Metric variant: `{variant}`; OTI/OVI loss reduction: `{reduction}` "
             "(see docs/fidelity.md).")
    lines += _text_source_lines(results["datasets"])
    qrels = [f"- `{ds}`: {qrels_note(v['inverted'])}".rstrip() for ds, v in
             results["datasets"].items() if qrels_note(v.get("inverted", {}))]
    lines += ["", *qrels] if qrels else []
    return head + note + "\n\n" + "\n".join(lines) + "\n"


def _dataset_label(ds: str, m: dict) -> str:
    """Table label of a dataset: revisitop rows name the protocol and the gallery."""
    if "mAP_medium" not in m:
        return ds
    size = int(m.get("gallery_size", 0))
    extra = int(m.get("num_distractors", 0))
    what = f"+1M distractors, gallery {size:,}" if extra else f"gallery {size:,}"
    return f"{ds} (Medium; {what})"


def _gallery_cell(m: dict) -> str:
    """The gallery ranked, and how many of its items could not be read (left out)."""
    missing = int(m.get("num_gallery_items_missing", 0))
    return f"{m.get('num_gallery', '')}" + (f" ({missing} unreadable, left out)" if missing
                                            else "")


def qrels_note(m: dict) -> str:
    """A line on judged pairs outside the corpus, score-0 and duplicate judgements of a
    qrels task (``m["qrels_audit"]``, see :class:`crossgap_jax.data.QrelsAudit`); ``""``
    for other tasks."""
    a = m.get("qrels_audit")
    if not a:
        return ""
    ex = f" (e.g. {', '.join(a['outside_examples'][:3])})" if a["outside_examples"] else ""
    rule = ("counted in R" if m.get("qrels_missing") == "count" else
            "left out of R as the authors do; `--qrels-missing count` counts them")
    return (f"Qrels: {a['outside_pairs']} of {a['judged_pairs']} judged pairs point outside "
            f"the corpus{ex}: {rule}; {a['zero_score_pairs']} score-0 judgements (not "
            f"relevant); {a['duplicate_pairs']} duplicate lines (last score kept).\n")


def retrieval_table(prov: dict, dataset: str, m: dict) -> str:
    """Markdown table of one ``retrieve`` result, headed by the run's provenance ``prov``
    (:func:`~crossgap_jax.pipeline.records.provenance`)."""
    keys = [k for k in ("mAP", "mAP@R", "P@R", "R@1", "R@5", "R@10") if k in m]
    keys += [k for k in sorted(m) if "/" in k and k.endswith("mAP")]
    lines = ["| dataset | query -> gallery | split | " + " | ".join(keys)
             + " | queries evaluated | skipped (no relevant) | missing | gallery |",
             "|" + "---|" * (len(keys) + 7)]
    lines.append(f"| {dataset} | {m['query_type']} -> {m['gallery_type']} | "
                 f"{m.get('query_split')}/{m.get('gallery_split')} | "
                 + " | ".join(f"{float(m[k]):.2f}" for k in keys)
                 + f" | {_counts(m)} | {_gallery_cell(m)} |")
    return (provenance_header(prov, "Retrieval") + "Metrics in percent.\n\n"
            + "\n".join(lines) + "\n" + ("\n" + qrels_note(m) if qrels_note(m) else ""))


def classify_table(prov: dict, dataset: str, m: dict) -> str:
    """Markdown table of one ``classify`` result, headed by the run's provenance ``prov``."""
    lines = ["| dataset | split | variant | top-1 | top-5 | images |", "|---|---|---|---|---|---|"]
    for v, r in m.items():
        if isinstance(r, dict) and "top1" in r:
            lines.append(f"| {dataset} | {m.get('split')} | {v} | {float(r['top1']):.2f} | "
                         f"{float(r.get('top5', float('nan'))):.2f} | "
                         f"{int(r.get('num_samples', 0))} |")
    return (provenance_header(prov, "Zero-shot classification")
            + "Accuracy in percent" + (f"; prompt `{m['prompt']}`" if m.get("prompt") else "")
            + ".\n\n" + "\n".join(lines)
            + "\n" + (few_shot_table(dataset, m["fewshot"]) if "fewshot" in m else ""))


def indicators_table(prov: dict, res: dict) -> str:
    """Markdown table of one ``indicators`` result (:func:`~crossgap_jax.pipeline.baselines.
    indicators`), headed by the run's provenance ``prov``: one row per pair type and indicator, with
    what each indicator means (:data:`~crossgap_jax.retrieval.indicators.INDICATOR_FIELDS`)."""
    ind = res["indicators"]
    lines = ["| pair type | indicator | value | meaning |", "|---|---|---|---|"]
    for pair in [p for p in ("image-image", "text-image", "oti-image") if p in ind]:
        r = ind[pair]
        lines += [f"| {pair} | overlap | {r['overlap']:.4f} | {INDICATOR_FIELDS['overlap']} |",
                  f"| {pair} | AUROC | {r['auroc']:.4f} | {INDICATOR_FIELDS['auroc']} |"]
        for side in ("same", "different"):
            d = r[side]
            lines.append(f"| {pair} | {side}-class pairs | {d['count']} (cosine "
                         f"{d['mean']:.4f} +- {d['std']:.4f}) | {INDICATOR_FIELDS[side]} |")
    for pair, g in (ind.get("modality_gap") or {}).items():
        lines.append(f"| {pair} | modality gap | {g:.4f} | {INDICATOR_FIELDS['modality_gap']} |")
    c = ind["closer_to_other_class"]
    lines.append(f"| image-image | closer to another class | {c['fraction']:.4f} "
                 f"({c['num_counted']} images counted, {c['num_singletons']} alone in their "
                 f"class) | {INDICATOR_FIELDS['closer_to_other_class']} |")
    return (provenance_header(prov, "Misalignment indicators")
            + f"{res['dataset']} / {res['split']}: {ind['num_images']} images, "
            f"{res['num_classes']} classes; histograms: {ind['bins']} bins over "
            f"{ind['value_range']}. Figure: {res['figure']}\n\n" + "\n".join(lines) + "\n")


def analysis_summary(prov: dict, result: dict) -> str:
    """A short plain-text header of an ``analyze`` result: model, checkpoint sha256, preset
    and settings, the curves' end points and the gaps, and the files written."""
    s = prov.get("settings", {})
    keys = ("oti_steps", "learning_rate", "weight_decay", "template_sentence", "seed",
            "batch_size")
    lines = [f"analyze {result['dataset']}: model {prov.get('model')}, preset "
             f"{prov.get('preset')}",
             f"  checkpoint sha256: {prov.get('checkpoint_sha256') or 'not available'}",
             "  settings: " + ", ".join(f"{k}={s[k]!r}" if isinstance(s[k], str)
                                         else f"{k}={s[k]}" for k in keys if k in s)]
    caveat = _subset_line(prov)
    if caveat:
        lines.append("  " + caveat.lstrip("> ").replace("**", ""))
    lines.append(f"  image->image mAP (no inversion): {result['baseline_mAP']:.2f}")
    for name, c in result["curves"].items():
        lines.append(f"  OTI->image mAP, {name}: " + ", ".join(
            f"{m:.2f}@{st}" for st, m in zip(c["steps"], c["mAP"])))
    lines.append("  modality gap: " + ", ".join(f"{k} {v:.3f}"
                                                for k, v in result["modality_gap"].items()))
    if result.get("files"):
        lines.append("  wrote: " + ", ".join(result["files"]))
    return "\n".join(lines)
