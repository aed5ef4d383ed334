"""The measurement pipeline: presets, a run's cached features and inversions, the paper's
measurements, records and reports (see docs/architecture.md for the path of a run).

- :mod:`~crossgap_jax.pipeline.presets`: the typed :class:`Preset` per paper table;
  :mod:`~crossgap_jax.pipeline.settings`: :class:`RunSettings` (a run's every setting,
  built once) and :class:`BaselineSettings`.
- :mod:`~crossgap_jax.pipeline.run`: :func:`make_run` (model, tasks, caches of one run);
  :mod:`~crossgap_jax.pipeline.weights`: which weights it loads.
- :mod:`~crossgap_jax.pipeline.tasks` / :mod:`~crossgap_jax.pipeline.features` /
  :mod:`~crossgap_jax.pipeline.store`: tasks loaded once, encoded features cached on disk.
- :mod:`~crossgap_jax.pipeline.measure`: the one ``measure(...)`` of every claim, built on
  ``retrieve(run, ...)`` / ``classify(run, ...)`` (exported here); the feature types and
  classify variants they accept: :mod:`~crossgap_jax.pipeline.feature_types`;
  :mod:`~crossgap_jax.pipeline.compare`: paired comparisons with bootstrap intervals.
- :mod:`~crossgap_jax.pipeline.claims`: :func:`measure_claims`, the paper's three claims
  and its Fig. 2 analysis on one model (the demo and the controlled experiment).
- :mod:`~crossgap_jax.pipeline.reproduce` / :mod:`~crossgap_jax.pipeline.analyze`: the
  ``reproduce`` and ``analyze`` commands' cores.
- :mod:`~crossgap_jax.pipeline.distributed`: ``is_writer`` / ``barrier`` of multi-host runs.
- :mod:`~crossgap_jax.pipeline.records` / :mod:`~crossgap_jax.pipeline.report` /
  :mod:`~crossgap_jax.pipeline.published`: JSON records, Markdown tables, the paper's numbers.

The functions ``measure``, ``analyze`` and ``reproduce`` share their module's name, so they
are not re-exported here (the attribute would shadow the module): import them from
``crossgap_jax.pipeline.measure`` etc. ``methods.compare`` (the ``compare`` command's core)
is exported as :func:`compare_methods`, since ``compare`` is the module of paired
comparisons.
"""

from crossgap_jax.pipeline.analyze import analysis_figure
from crossgap_jax.pipeline.baselines import indicators
from crossgap_jax.pipeline.claims import (
    CLAIMS,
    VERDICT_MEANING,
    Claim,
    claim_result,
    measure_claims,
)
from crossgap_jax.pipeline.compare import (
    DEFAULT_BOOTSTRAP,
    Bootstrap,
    compare_retrieval,
    compare_zero_shot,
)
from crossgap_jax.pipeline.feature_types import CLASSIFY_VARIANTS, FEATURE_TYPES
from crossgap_jax.pipeline.measure import classify, retrieve
from crossgap_jax.pipeline.methods import check_methods, compare_table
from crossgap_jax.pipeline.methods import compare as compare_methods
from crossgap_jax.pipeline.presets import DEMO_CHECKPOINT, PRESETS, Preset, list_presets, preset
from crossgap_jax.pipeline.published import published_row
from crossgap_jax.pipeline.records import provenance, write_record
from crossgap_jax.pipeline.report import (
    analysis_summary,
    classify_table,
    indicators_table,
    results_table,
    retrieval_table,
)
from crossgap_jax.pipeline.reproduce import DatasetFailure
from crossgap_jax.pipeline.run import Run, make_run
from crossgap_jax.pipeline.settings import BaselineSettings, RunSettings
from crossgap_jax.pipeline.tasks import canonical_name
from crossgap_jax.pipeline.weights import pretrained_aliases, resolve_source

__all__ = [
    "CLAIMS", "VERDICT_MEANING", "Claim", "claim_result", "measure_claims",
    "canonical_name", "check_methods", "compare_methods", "compare_table",
    "BaselineSettings", "RunSettings", "indicators",
    "CLASSIFY_VARIANTS", "DEFAULT_BOOTSTRAP", "DEMO_CHECKPOINT", "PRESETS", "Bootstrap",
    "DatasetFailure", "Preset", "Run", "analysis_figure", "analysis_summary", "classify_table",
    "indicators_table",
    "compare_retrieval", "compare_zero_shot", "list_presets", "make_run", "preset",
    "pretrained_aliases", "provenance", "published_row", "resolve_source", "results_table",
    "retrieval_table", "write_record", "classify", "retrieve", "FEATURE_TYPES",
]
