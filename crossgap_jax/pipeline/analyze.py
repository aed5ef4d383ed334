"""The paper's analyses: mAP vs optimisation step (Figure 2), loss curves, similarity
distributions and modality-gap statistics, as JSON plus PNG plots."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax import retrieval
from crossgap_jax.fileio import atomic_write_json, ensure_dir, jsonable, save_figure
from crossgap_jax.pipeline.measure import evaluate_task
from crossgap_jax.pipeline.prompts import class_prompt
from crossgap_jax.pipeline.run import Run
from crossgap_jax.pipeline.tasks import classnames_split, labels_for


def default_record_steps(steps: int, points: int = 12) -> tuple[int, ...]:
    """Roughly log-spaced step counts in ``1..steps`` (always including ``steps``)."""
    grid = np.unique(np.round(np.geomspace(1, steps, points)).astype(int))
    return tuple(int(s) for s in grid)


def analyze(run: Run, dataset: str, num_tokens: Sequence[int] = (1, 4),
            record_steps: Sequence[int] | None = None, out_dir: str | None = None) -> dict:
    """Figure-2-style analysis on an image dataset, plus similarity / gap statistics.

    For each R in ``num_tokens``, one OTI run of the queries records features at
    ``record_steps`` (plus the final step, always); each snapshot is evaluated against the
    gallery image features with :func:`~crossgap_jax.pipeline.measure.evaluate_task`, the
    metric of every retrieval number.

    Returns:
        The dict written to ``<out_dir>/analysis.json`` (plots beside it), plus ``files``:
        the paths written.
    """
    out_dir = out_dir or os.path.join(run.run_dir, "analysis", dataset.replace(":", "_"))
    ensure_dir(out_dir)
    task = run.task(dataset)
    if task.query.modality != "image":
        raise ValueError("analyze runs OTI on an image dataset's queries")
    steps = run.preset.oti_steps
    # The curve always ends at the run's final step (the headline number), even when
    # ``record_steps`` leaves it out.
    rec = tuple(sorted({int(s) for s in (record_steps or default_record_steps(steps))}
                       | {steps}))
    qf = run.features(task.query)
    gf = run.features(task.gallery)
    baseline = evaluate_task(task, qf, gf)["mAP"]
    curves: dict[str, Any] = {}
    losses: dict[str, list[float]] = {}
    last_inv = None
    for r in num_tokens:
        sub = run.with_settings(preset=dataclasses.replace(run.preset,
                                                           num_pseudo_tokens=int(r)),
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
    labels = labels_for(task.query, qf.items)
    prompts = run.features(classnames_split(dataset, task.query.classnames),
                           template=class_prompt(dataset))
    paired_text = prompts.features[labels]
    dists = retrieval.similarity_distributions(qf.features, paired_text, last_inv.features)
    gap = {"image-text": retrieval.modality_gap(qf.features, paired_text),
           "image-oti": retrieval.modality_gap(qf.features, last_inv.features),
           "text-oti": retrieval.modality_gap(paired_text, last_inv.features)}
    result = {"dataset": dataset, "model": run.preset.model, "baseline_mAP": baseline,
              "curves": curves,
              "mean_loss": losses, "modality_gap": gap, "distributions": jsonable(dists)}
    atomic_write_json(os.path.join(out_dir, "analysis.json"), result)
    plots = plot_analysis(result, out_dir)
    return dict(result, files=[os.path.join(out_dir, "analysis.json"), *plots])


# The similarity curves drawn, with what is paired: (distribution key, part, label).
SIMILARITY_CURVES: tuple[tuple[str, str, str], ...] = (
    ("image-image", "unpaired", "image-image, unpaired (two different query images)"),
    ("text-image", "unpaired", "text-image, unpaired (an image, another image's class prompt)"),
    ("text-image", "paired", "text-image, paired (an image and its class prompt)"),
    ("inverted-image", "paired", "OTI-image, paired (an image and its own OTI feature)"),
)


def draw_map_curves(ax: Any, result: dict) -> None:
    """mAP after each recorded OTI step, one curve per R, and the image->image baseline
    (the paper's Fig. 2a)."""
    for name, c in result["curves"].items():
        ax.plot(c["steps"], c["mAP"], marker="o", label=f"OTI->image, {name}")
    ax.axhline(result["baseline_mAP"], color="k", ls="--", label="image->image (no inversion)")
    ax.set_xscale("log")
    ax.set_xlabel("OTI step")
    ax.set_ylabel("mAP (%)")
    ax.set_title("retrieval vs OTI step")
    ax.legend(fontsize=7)


def draw_loss_curves(ax: Any, result: dict) -> None:
    """Mean OTI loss (1 - cos(text feature of the pseudo-token prompt, image feature)) per
    step, one curve per R (the paper's Fig. 2b)."""
    for name, curve in result["mean_loss"].items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f"OTI, {name}")
    ax.set_xscale("log")
    ax.set_xlabel("OTI step")
    ax.set_ylabel("mean loss (1 - cos)")
    ax.set_title("OTI loss vs step")
    ax.legend(fontsize=7)


def draw_similarities(ax: Any, result: dict) -> None:
    """Histograms of cosine similarities (the paper's Fig. 2c), each curve labelled with
    whether its pairs belong together (paired) or not (unpaired)."""
    dists = result["distributions"]
    for key, part, label in SIMILARITY_CURVES:
        d = dists.get(key) or {}
        p = d.get(part)
        if not p or "histogram" not in p:
            continue
        h = np.asarray(p["histogram"], float)
        edges = np.asarray(d["bin_edges"], float)
        ax.plot(0.5 * (edges[1:] + edges[:-1]), h / max(h.sum(), 1), label=label)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("fraction of pairs")
    ax.set_title("similarity distributions (paired vs unpaired)")
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=6)
    else:  # nothing was recorded: say so on the panel instead of an empty legend
        ax.text(0.5, 0.5, "no similarity distributions recorded", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)


def draw_gap(ax: Any, result: dict) -> None:
    """The modality gaps ``||mean(a) - mean(b)||`` of the normalised features."""
    gap = result["modality_gap"]
    names = list(gap)
    ax.bar(range(len(names)), [gap[n] for n in names], color=["C0", "C1", "C2"][:len(names)])
    ax.set_xticks(range(len(names)), [n.replace("oti", "OTI") for n in names], fontsize=8)
    ax.set_ylabel("||mean(a) - mean(b)||")
    ax.set_title("modality gap")


def figure_title(result: dict) -> str:
    """``"<model> on <dataset>"``: what every analysis figure is of."""
    return f"{result.get('model') or 'unknown model'} on {result['dataset']}"


def plot_analysis(result: dict, out_dir: str) -> list[str]:
    """Write ``map_vs_steps.png``, ``loss.png`` and ``similarities.png``, each titled with
    the model and the dataset (:func:`figure_title`); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, draw, size in (("map_vs_steps.png", draw_map_curves, (5, 3.5)),
                             ("loss.png", draw_loss_curves, (5, 3.5)),
                             ("similarities.png", draw_similarities, (6, 4))):
        fig, ax = plt.subplots(figsize=size)
        draw(ax, result)
        fig.suptitle(figure_title(result), fontsize=9)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, name))
        save_figure(fig, paths[-1], dpi=120)
        plt.close(fig)
    return paths


def analysis_figure(result: dict, *, title: str = "", caption: str = "") -> Any:
    """One figure with the four panels (mAP and loss vs OTI step, similarity distributions,
    modality gap), a title and a caption saying what to look at; returns the matplotlib
    ``Figure`` (the caller saves or shows it)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    draw_map_curves(axes[0, 0], result)
    draw_loss_curves(axes[0, 1], result)
    draw_similarities(axes[1, 0], result)
    draw_gap(axes[1, 1], result)
    if title:
        fig.suptitle(title, fontsize=11)
    if caption:
        fig.text(0.01, 0.005, textwrap.fill(caption, 170), fontsize=7.5, va="bottom")
        fig.tight_layout(rect=(0, 0.035 + 0.012 * caption.count(". "), 1, 0.97))
    else:
        fig.tight_layout()
    return fig
