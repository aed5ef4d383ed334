"""Retrieval and evaluation metrics as pure functions on feature / score arrays.

Main entry points (see docs/retrieval.md):

* :func:`evaluate` / :func:`evaluate_per_query`: mAP, mAP@R, R-precision, Recall@k of
  queries against a gallery, chunked over queries (relevance as a task's
  :class:`crossgap_jax.retrieval.Relevance`, a bool matrix, label vectors or qrels;
  ``exclude_self`` for all-vs-all splits).
* :func:`average_precision` / :func:`per_query_metrics`: the same metrics from a score matrix.
* :func:`revisitop_evaluate` / :func:`revisitop_metrics` / :func:`load_revisitop_gnd`:
  ROxford5k / RParis6k Easy, Medium, Hard.
* :func:`build_classifier` / :func:`zero_shot_accuracy`: zero-shot classification.
* :func:`modality_gap` / :func:`similarity_statistics` / :func:`similarity_distributions`:
  modality-gap statistics.
* :mod:`crossgap_jax.retrieval.indicators`: misalignment indicators (same- vs
  different-class similarity overlap and AUROC, closer-to-another-class fraction).
* :func:`paired_bootstrap_ci` / :func:`verdict`: the interval of a paired difference and
  the holds / does not hold / inconclusive verdict it supports.
"""

from crossgap_jax.retrieval._common import auto_chunk_size, check_metric_variant, features_numpy
from crossgap_jax.retrieval.engine import cosine_similarity, evaluate, evaluate_per_query
from crossgap_jax.retrieval.fewshot import (
    DEFAULT_SEEDS,
    DEFAULT_SHOTS,
    FewShotSkip,
    draw_support,
    few_shot_ncm_accuracy,
    few_shot_sweep,
    support_sets,
)
from crossgap_jax.retrieval.fewshot_hw import (
    DEGENERATE_GDA,
    HW_CLASSIFIERS,
    HW_TEXT_WEIGHT,
    class_prototypes,
    gda_fit,
    hw_scores,
    top1_accuracy,
)
from crossgap_jax.retrieval.gap import (
    modality_gap,
    paired_similarities,
    similarity_distributions,
    similarity_statistics,
)
from crossgap_jax.retrieval.indicators import (
    INDICATOR_FIELDS,
    misalignment_indicators,
    plot_indicators,
)
from crossgap_jax.retrieval.metrics import (
    JAX_BLOCK_ELEMENTS,
    average_precision,
    per_query_metrics,
    summarize,
)
from crossgap_jax.retrieval.ncm import class_means, ncm_accuracy
from crossgap_jax.retrieval.normalize import l2_normalize, l2_normalize_traceable
from crossgap_jax.retrieval.relevance import (
    LabelRelevance,
    MaskRelevance,
    Relevance,
    SparseRelevance,
    as_relevance,
    qrels_relevance,
    qrels_to_csr,
)
from crossgap_jax.retrieval.revisitop import (
    REVISITOP_PROTOCOLS,
    load_revisitop_gnd,
    revisitop_evaluate,
    revisitop_gnd_list,
    revisitop_metrics,
)
from crossgap_jax.retrieval.stats import VERDICTS, paired_bootstrap_ci, verdict
from crossgap_jax.retrieval.zeroshot import (
    build_classifier,
    class_ranks,
    zero_shot_accuracy,
    zero_shot_predict,
)

__all__ = [
    "features_numpy",
    "LabelRelevance", "MaskRelevance", "Relevance", "SparseRelevance", "as_relevance",
    "qrels_relevance", "qrels_to_csr", "class_means", "l2_normalize", "l2_normalize_traceable",
    "DEFAULT_SEEDS", "DEFAULT_SHOTS", "INDICATOR_FIELDS", "misalignment_indicators",
    "plot_indicators",
    "JAX_BLOCK_ELEMENTS", "auto_chunk_size", "check_metric_variant",
    "FewShotSkip", "draw_support", "few_shot_ncm_accuracy", "few_shot_sweep", "support_sets",
    "ncm_accuracy",
    "DEGENERATE_GDA", "HW_CLASSIFIERS", "HW_TEXT_WEIGHT", "class_prototypes", "gda_fit",
    "hw_scores", "top1_accuracy",
    "REVISITOP_PROTOCOLS",
    "VERDICTS",
    "average_precision",
    "build_classifier",
    "class_ranks",
    "cosine_similarity",
    "evaluate",
    "evaluate_per_query",
    "load_revisitop_gnd",
    "modality_gap",
    "paired_similarities",
    "paired_bootstrap_ci",
    "per_query_metrics",
    "revisitop_evaluate",
    "revisitop_gnd_list",
    "revisitop_metrics",
    "similarity_distributions",
    "similarity_statistics",
    "summarize",
    "verdict",
    "zero_shot_accuracy",
    "zero_shot_predict",
]
