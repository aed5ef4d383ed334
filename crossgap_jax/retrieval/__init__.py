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

The names load on first use (``lazy_loader``): importing a JAX-free module of this package
(:mod:`~crossgap_jax.retrieval.relevance`, :mod:`~crossgap_jax.retrieval.fewshot`) does not
import JAX, so the data layer (which builds a task's relevance) stays light.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_common": ["auto_chunk_size", "check_metric_variant", "features_numpy"],
        "engine": ["cosine_similarity", "evaluate", "evaluate_per_query"],
        "fewshot": ["DEFAULT_SEEDS", "DEFAULT_SHOTS", "FewShotSkip", "draw_support",
                    "few_shot_ncm_accuracy", "few_shot_sweep", "support_sets"],
        "fewshot_hw": ["DEGENERATE_GDA", "HW_CLASSIFIERS", "HW_TEXT_WEIGHT", "class_prototypes",
                       "gda_fit", "hw_scores", "top1_accuracy"],
        "gap": ["modality_gap", "paired_similarities", "similarity_distributions",
                "similarity_statistics"],
        "indicators": ["INDICATOR_FIELDS", "misalignment_indicators", "plot_indicators"],
        "metrics": ["JAX_BLOCK_ELEMENTS", "average_precision", "per_query_metrics", "summarize"],
        "ncm": ["class_means", "ncm_accuracy"],
        "normalize": ["l2_normalize", "l2_normalize_traceable"],
        "relevance": ["LabelRelevance", "MaskRelevance", "Relevance", "SparseRelevance",
                      "as_relevance", "qrels_relevance", "qrels_to_csr"],
        "revisitop": ["REVISITOP_PROTOCOLS", "load_revisitop_gnd", "revisitop_evaluate",
                      "revisitop_gnd_list", "revisitop_metrics"],
        "stats": ["VERDICTS", "paired_bootstrap_ci", "verdict"],
        "zeroshot": ["build_classifier", "class_ranks", "zero_shot_accuracy", "zero_shot_predict"],
    },
)
