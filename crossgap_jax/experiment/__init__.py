"""The controlled experiment (docs/experiments.md): CLIPs trained here on Caltech101 that
differ in one factor, each measured with the pipeline's
:func:`crossgap_jax.pipeline.measure_claims` (the demo's and ``reproduce``'s protocol).

    python -m crossgap_jax.experiment --data-root ../shared/data --out docs/experiments.md

An application beside the CLI and the demo: :mod:`crossgap_jax.train` trains,
:mod:`crossgap_jax.pipeline` measures, this package runs both and writes the report.
"""

from crossgap_jax.experiment.report import NAMES, plot_variants, write_report
from crossgap_jax.experiment.run import (
    FULL,
    QUICK,
    ExperimentSettings,
    main,
    measure_variant,
    run_experiment,
    train_variant,
)

__all__ = ["FULL", "NAMES", "QUICK", "ExperimentSettings", "main", "measure_variant",
           "plot_variants", "run_experiment", "train_variant", "write_report"]
