"""The paper's three claims on one model, each decided by a paired bootstrap interval.

:func:`measure_claims` is what the demo and the controlled experiment report: three calls of
:func:`crossgap_jax.pipeline.measure.measure` (the function ``reproduce`` and ``classify``
use) and one of :func:`crossgap_jax.pipeline.analyze.analyze` (the paper's Fig. 2 analysis),
on a registered image dataset (image->image vs OTI->image retrieval, zero-shot) and a
registered text dataset (text->text vs OVI->text). Every claim gets one verdict from the
interval of its difference (:func:`crossgap_jax.retrieval.verdict`: holds / does not hold /
inconclusive).

The claims (Mistretta et al., ICLR 2025, Tables 1-3):

1. OTI makes image->image retrieval better (mAP rises);
2. OVI makes text->text retrieval better (mAP rises);
3. intra-modal zero-shot classification (OTI features vs the class prompts) is worse than
   the standard inter-modal one (top-1 falls).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from crossgap_jax.pipeline.analyze import analyze
from crossgap_jax.pipeline.compare import Bootstrap
from crossgap_jax.pipeline.measure import measure
from crossgap_jax.pipeline.published import published_row
from crossgap_jax.pipeline.run import Run
from crossgap_jax.retrieval import verdict


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the paper's claims as measured here.

    Attributes:
        key: ``"image"``, ``"text"`` or ``"zero_shot"`` (the key of its published row in
            :data:`crossgap_jax.pipeline.published.PUBLISHED`).
        title: the claim in words.
        baseline, inverted: what the two numbers are, in words.
        direction: +1 the paper reports an increase, -1 a decrease.
        unit: ``"mAP"`` or ``"top-1 accuracy"`` (percent).
        comparison: the :func:`~crossgap_jax.pipeline.measure.measure` comparison.
    """

    key: str
    title: str
    baseline: str
    inverted: str
    direction: int
    unit: str
    comparison: str


CLAIMS = (
    Claim("image", "OTI makes image->image retrieval better",
          "image->image mAP: each query image's own feature ranks the gallery images",
          "OTI->image mAP: each query replaced by its OTI feature (a text feature optimised "
          "to match the image), same gallery", +1, "mAP", "retrieval"),
    Claim("text", "OVI makes text->text retrieval better",
          "text->text mAP: each query caption's own feature ranks the gallery captions",
          "OVI->text mAP: each query replaced by its OVI feature (an image feature optimised "
          "to match the caption), same gallery", +1, "mAP", "retrieval"),
    Claim("zero_shot", "intra-modal zero-shot (OTI) is worse than standard zero-shot",
          "standard zero-shot top-1: image features vs the text features of the class prompts",
          "intra-modal zero-shot top-1: the images' OTI features vs the same class prompts",
          -1, "top-1 accuracy", "zero_shot"),
)

VERDICT_MEANING = {
    "holds": "the 95% interval of the difference excludes 0 in the paper's direction",
    "does not hold": "the 95% interval of the difference excludes 0 in the opposite "
                     "direction",
    "inconclusive": "the 95% interval of the difference contains 0",
}


def claim_result(claim: Claim, baseline: float, inverted: float, ci: Sequence[float],
                 paper: Sequence[float] | None) -> dict:
    """One claim's numbers, interval and verdict (percent units).

    Returns:
        ``{"claim", "key", "unit", "baseline", "inverted", "difference" (inverted -
        baseline), "ci95": [low, high], "paper_direction", "verdict", "paper": [baseline,
        inverted] of the published row or None}``.
    """
    return {"claim": claim.title, "key": claim.key, "unit": claim.unit,
            "baseline": float(baseline), "inverted": float(inverted),
            "difference": float(inverted) - float(baseline), "ci95": [float(c) for c in ci],
            "paper_direction": claim.direction, "verdict": verdict(ci, claim.direction),
            "paper": list(paper) if paper else None}


def measure_claims(run: Run, image_dataset: str, text_dataset: str, *,
                   bootstrap: Bootstrap | None = None, num_tokens: Sequence[int] = (1, 4),
                   analysis_dir: str | None = None, paper_preset: str | None = None,
                   log: Any = None, concurrent: bool = False) -> dict:
    """The paper's three claims and its Fig. 2 analysis on ``run``'s model.

    The OTI run of the image claim records ``run.settings.record_steps`` (plus the final
    step) and is the R = 1 run of the analysis (one inversion, cached in the run); the OVI
    run records nothing.

    Args:
        run: the run (model, settings, caches); its preset's OTI/OVI settings apply.
        image_dataset: a registered image retrieval dataset (queries vs gallery, relevant =
            same class) whose query split is also labelled for zero-shot classification.
        text_dataset: a registered text retrieval dataset.
        bootstrap: interval settings (None: :class:`Bootstrap` defaults, 2,000 resamples).
        num_tokens: the R values of the analysis (paper: 1 and 4).
        analysis_dir: where the analysis JSON/plots go (None: inside the run folder).
        paper_preset: the preset whose published averages are set beside each claim
            (``"clip_vitb32"``), or None.
        log: a callable for one line per stage (None: silent).
        concurrent: measure the text claim (text encoding + OVI) in a second thread while
            this one measures the image claims and the analysis. The numbers are the same
            (the two sides share no computation; each writes its own cache files). On a CPU
            the two sides' compiled programs and compilations then share the cores (the
            demo on 2 cores: docs/performance.md); on one accelerator they mostly queue.
            ``stage_seconds`` then overlap. An interrupt waits for the running inversion.

    Returns:
        ``{"image": {...}, "text": {...}, "zero_shot": {...}, "claims": [claim_result per
        claim of CLAIMS], "measurements": {claim key: measure() dict}, "analysis":
        analyze() dict, "stage_seconds": {...}}``; ``image``/``text`` hold the retrieval
        metrics of the baseline and inverted queries and the set sizes, ``zero_shot`` the
        accuracies, prompt and image count.

    Raises:
        ValueError: a dataset of the wrong modality (from ``measure`` / ``analyze``).
    """
    say = log or (lambda *_: None)
    boot = bootstrap or Bootstrap()
    paper = published_row(paper_preset)
    steps = run.preset.oti_steps
    rec = tuple(sorted({int(s) for s in run.settings.record_steps if 1 <= s <= steps} | {steps}))
    image_run = run.with_settings(record_steps=rec)
    text_run = run.with_settings(record_steps=())
    datasets = {"image": image_dataset, "text": text_dataset, "zero_shot": image_dataset}

    def one(claim: Claim) -> tuple[dict, float]:
        t = time.perf_counter()
        m = measure(text_run if claim.key == "text" else image_run, datasets[claim.key],
                    claim.comparison, bootstrap=boot)
        return m, time.perf_counter() - t

    pool = ThreadPoolExecutor(1, thread_name_prefix="claims") if concurrent else None
    try:
        done, pending = {}, {}
        if pool is not None:
            text = next(c for c in CLAIMS if c.key == "text")
            say(f"measuring: {text.title} ({text_dataset}), in a second thread ...")
            pending[text.key] = pool.submit(one, text)
        for claim in CLAIMS:
            if claim.key not in pending:
                say(f"measuring: {claim.title} ({datasets[claim.key]}) ...")
                done[claim.key] = one(claim)
        for f in pending.values():  # a failed text side stops the run before the analysis
            if f.done() and f.exception() is not None:
                raise f.exception()
        t = time.perf_counter()
        say(f"analysis: OTI over steps for R = {', '.join(map(str, num_tokens))} ...")
        analysis = analyze(image_run, image_dataset, num_tokens=num_tokens, record_steps=rec,
                           out_dir=analysis_dir)
        analysis_seconds = time.perf_counter() - t
        done.update({k: f.result() for k, f in pending.items()})
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    out: dict[str, Any] = {}
    claims, measurements, seconds = [], {}, {}
    for claim in CLAIMS:
        m, seconds[claim.key] = done[claim.key]
        ds = datasets[claim.key]
        measurements[claim.key] = m
        if claim.comparison == "retrieval":
            out[claim.key] = {"dataset": ds, "baseline": m["baseline"],
                              "inverted": m["inverted"], "num_queries": m["num_items"],
                              "num_gallery": m["num_gallery"]}
        else:
            out[claim.key] = {"dataset": ds, "prompt": m["prompt"], "inter": m["baseline"],
                              "oti": m["inverted"], "num_images": m["num_items"]}
        claims.append(claim_result(claim, m["baseline_value"], m["inverted_value"],
                                   m["ci95"], paper.get(claim.key)))
    seconds["analysis"] = analysis_seconds
    out.update(analysis=analysis, claims=claims, measurements=measurements,
               stage_seconds=seconds)
    return out
