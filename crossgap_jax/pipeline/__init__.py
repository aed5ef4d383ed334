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
``crossgap_jax.pipeline.measure`` etc. The ``compare`` command's core is
:func:`~crossgap_jax.pipeline.methods.compare_methods` (``compare`` is the module of paired
comparisons).

The names load on first use (``lazy_loader``): importing the face, or a JAX-free module of
it such as :mod:`~crossgap_jax.pipeline.feature_types`, does not import JAX, so the command
line can check option values against them at once.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "analyze": ["analysis_figure"],
        "baselines": ["indicators"],
        "claims": ["CLAIMS", "VERDICT_MEANING", "Claim", "claim_result", "measure_claims"],
        "compare": ["DEFAULT_BOOTSTRAP", "Bootstrap", "compare_retrieval", "compare_zero_shot"],
        "feature_types": ["CLASSIFY_VARIANTS", "FEATURE_TYPES"],
        "fewshot_hw": ["HWFewShotSettings", "hw_few_shot", "hw_printout",
                       "hw_table"],
        "measure": ["classify", "retrieve"],
        "methods": ["check_methods", "compare_methods", "compare_table", "default_methods"],
        "presets": ["DEMO_CHECKPOINT", "PRESETS", "Preset", "list_presets", "preset"],
        "published": ["published_row"],
        "records": ["provenance", "write_record"],
        "report": ["analysis_summary", "classify_table", "indicators_table", "results_table",
                   "retrieval_table"],
        "reproduce": ["DatasetFailure"],
        "run": ["Run", "make_run"],
        "settings": ["BaselineSettings", "RunSettings"],
        "tasks": ["canonical_name"],
        "weights": ["pretrained_aliases", "resolve_source"],
    },
)
