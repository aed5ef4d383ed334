"""The paper's analyses: mAP vs optimisation step (Figure 2), loss curves, similarity
distributions and modality-gap statistics, as JSON plus PNG plots."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax import retrieval
from crossgap_jax.fileio import atomic_write_json, ensure_dir, save_figure
from crossgap_jax.pipeline.prompts import class_prompt
from crossgap_jax.pipeline.run import Run, _classnames_split, _labels_for, evaluate_task


def default_record_steps(steps: int, points: int = 12) -> tuple[int, ...]:
    """Roughly log-spaced step counts in ``1..steps`` (always including ``steps``)."""
    grid = np.unique(np.round(np.geomspace(1, steps, points)).astype(int))
    return tuple(int(s) for s in grid)


def analyze(run: Run, dataset: str, num_tokens: Sequence[int] = (1, 4),
            record_steps: Sequence[int] | None = None, out_dir: str | None = None) -> dict:
    """Figure-2-style analysis on an image dataset, plus similarity / gap statistics.

    For each R in ``num_tokens``, one OTI run of the queries records features at
    ``record_steps``; each snapshot is evaluated against the gallery image features.

    Returns:
        The dict written to ``<out_dir>/analysis.json`` (plots beside it).
    """
    out_dir = out_dir or os.path.join(run.run_dir, "analysis", dataset.replace(":", "_"))
    ensure_dir(out_dir)
    task = run.task(dataset)
    if task.query.modality != "image":
        raise ValueError("analyze runs OTI on an image dataset's queries")
    steps = int(run.cfg["oti_steps"])
    rec = tuple(record_steps or default_record_steps(steps))
    qf = run.features(task.query)
    gf = run.features(task.gallery)
    baseline = evaluate_task(task, qf, gf)["mAP"]
    curves: dict[str, Any] = {}
    losses: dict[str, list[float]] = {}
    last_inv = None
    for r in num_tokens:
        sub = dataclasses.replace(run, cfg=dict(run.cfg, num_pseudo_tokens=int(r)),
                                  record_steps=rec)
        inv = sub.inverted(qf, "oti")
        maps = []
        for i in range(len(rec)):
            snap = dataclasses.replace(inv, features=inv.extra["recorded_features"][:, i])
            maps.append(evaluate_task(task, snap, gf)["mAP"])
        curves[f"R={r}"] = {"steps": list(rec), "mAP": maps}
        losses[f"R={r}"] = np.asarray(inv.extra["losses"]).mean(axis=0).tolist()  # (N, steps)
        if last_inv is None:
            last_inv = inv
    # Similarity distributions and the modality gap on the queries.
    labels = _labels_for(task.query, qf.items)
    prompts = run.features(_classnames_split(dataset, task.query.classnames),
                           template=class_prompt(dataset))
    paired_text = prompts.features[labels]
    dists = retrieval.similarity_distributions(qf.features, paired_text, last_inv.features)
    gap = {"image-text": retrieval.modality_gap(qf.features, paired_text),
           "image-oti": retrieval.modality_gap(qf.features, last_inv.features),
           "text-oti": retrieval.modality_gap(paired_text, last_inv.features)}
    result = {"dataset": dataset, "baseline_mAP": baseline, "curves": curves,
              "mean_loss": losses, "modality_gap": gap, "distributions": _jsonable(dists)}
    atomic_write_json(os.path.join(out_dir, "analysis.json"), result)
    plot_analysis(result, out_dir)
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def plot_analysis(result: dict, out_dir: str) -> list[str]:
    """Write ``map_vs_steps.png``, ``loss.png`` and ``similarities.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, c in result["curves"].items():
        ax.plot(c["steps"], c["mAP"], marker="o", label=f"OTI {name}")
    ax.axhline(result["baseline_mAP"], color="k", ls="--", label="image->image")
    ax.set_xscale("log")
    ax.set_xlabel("OTI step")
    ax.set_ylabel("mAP (%)")
    ax.set_title(f"{result['dataset']}: retrieval vs optimisation step")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "map_vs_steps.png"))
    save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in result["mean_loss"].items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("mean loss (1 - cos)")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "loss.png"))
    save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, d in result["distributions"].items():
        part = d.get("paired") or d.get("unpaired")
        if part and "histogram" in part:
            h = np.asarray(part["histogram"], float)
            edges = np.asarray(d["bin_edges"], float)
            ax.plot(0.5 * (edges[1:] + edges[:-1]), h / max(h.sum(), 1), label=name)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("fraction of pairs")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "similarities.png"))
    save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)
    return paths
