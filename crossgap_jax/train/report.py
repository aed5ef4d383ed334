"""Text tables and matplotlib figures of :func:`~crossgap_jax.train.evaluate.evaluate_claims`
results (one model, or several variants side by side)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crossgap_jax.fileio import save_figure
from crossgap_jax.train.evaluate import claim_verdicts


def _fmt(x: float) -> str:
    return f"{x:.1f}"


CEILING = 97.0  # percent: above this a baseline leaves little room to measure a gain


def claims_rows(res: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(measure, baseline, inverted (delta), verdict)`` rows for one model.

    The verdict is the paper's direction, strictly; a baseline at or above
    :data:`CEILING` percent is flagged, since there a "does not hold" says little.
    """
    rows = []
    for name, v in claim_verdicts(res).items():
        delta = v["inverted"] - v["baseline"]
        verdict = "holds" if v["holds"] else "does NOT hold"
        if v["ci95"] is not None:
            lo, hi = v["ci95"]
            verdict += f" [95% CI of diff {lo:+.1f}..{hi:+.1f}" + (
                "]" if v["significant"] else ", includes 0]")
        if v["baseline"] >= CEILING:
            verdict += f" (baseline >= {CEILING:.0f}%: ceiling)"
        rows.append((name, _fmt(v["baseline"]), f"{_fmt(v['inverted'])} ({delta:+.1f})",
                     verdict))
    return rows


def text_table(res: Mapping[str, Any]) -> str:
    """A fixed-width table for the terminal."""
    i, t, z, g = res["image"], res["text"], res["zero_shot"], res["gap"]
    oti_step, ovi_step = i["oti_curve"][-1]["step"], t["ovi_curve"][-1]["step"]

    def row(label: str, value: str) -> str:
        return f"{label:<46}{value:>10}"

    lines = [
        row("measure (held-out items)", "value"),
        "-" * 56,
        row("image->image mAP", _fmt(i["image->image"]["mAP"])),
        row(f"OTI->image mAP (OTI step {oti_step})", _fmt(i["OTI->image"]["mAP"])),
        row("text->text mAP (held-out captions)", _fmt(t["text->text"]["mAP"])),
        row(f"OVI->text mAP (OVI step {ovi_step})", _fmt(t["OVI->text"]["mAP"])),
    ]
    for k, v in z.items():
        lines.append(row("zero-shot top-1 " + k.split(" (")[0], _fmt(v)))
    lines += [
        row("modality gap ||mean img - mean txt||", f"{g['modality_gap']:.3f}"),
        row("temperature", f"{res['temperature']:.4f}"),
        "",
        "OTI->image mAP by OTI step: " + ", ".join(
            f"{c['step']}: {c['mAP']:.1f}" for c in i["oti_curve"]),
        "OVI->text mAP by OVI step:  " + ", ".join(
            f"{c['step']}: {c['mAP']:.1f}" for c in t["ovi_curve"]),
        "",
        "the paper's claims on this model:",
    ]
    for name, base, inv, verdict in claims_rows(res):
        lines.append(f"  {name:<40} {base:>6} -> {inv:<14} {verdict}")
    return "\n".join(lines)


def plot_claims(results: Mapping[str, Mapping[str, Any]], path: str, title: str = "") -> str:
    """Figure-2-style curves (mAP vs inversion steps, baselines dashed) and zero-shot bars.

    Args:
        results: label -> :func:`evaluate_claims` result (one or several models).
        path: PNG path.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, res) in enumerate(results.items()):
        c = colors[n % len(colors)]
        for ax, side, curve_key, base_key, inv in (
                (axes[0], "image", "oti_curve", "image->image", "OTI->image"),
                (axes[1], "text", "ovi_curve", "text->text", "OVI->text")):
            curve = res[side][curve_key]
            steps = [p["step"] for p in curve]
            ax.plot(steps, [p["mAP"] for p in curve], "o-", color=c, label=f"{label}: {inv}")
            ax.axhline(res[side][base_key]["mAP"], color=c, ls="--", lw=1,
                       label=f"{label}: {base_key}")
    axes[0].set(title="image side: OTI->image vs image->image", xlabel="OTI steps",
                ylabel="mAP (%)")
    axes[1].set(title="text side: OVI->text vs text->text", xlabel="OVI steps",
                ylabel="mAP (%)")
    for ax in axes[:2]:
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    keys = list(next(iter(results.values()))["zero_shot"])
    width = 0.8 / max(len(keys), 1)
    for k_i, k in enumerate(keys):
        xs = [j + (k_i - (len(keys) - 1) / 2) * width for j in range(len(results))]
        vals = [r["zero_shot"].get(k, float("nan")) for r in results.values()]
        bars = axes[2].bar(xs, vals, width, label=k.split(" (")[0])
        axes[2].bar_label(bars, fmt="%.1f", fontsize=7)
    axes[2].set_xticks(range(len(results)), list(results), fontsize=8)
    axes[2].set(title="zero-shot top-1: inter vs intra", ylabel="accuracy (%)", ylim=(0, 105))
    axes[2].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
