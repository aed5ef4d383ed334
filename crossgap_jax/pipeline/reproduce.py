"""``reproduce``: the paper's intra-modal baseline vs inverted retrieval over datasets,
with ``metrics.json`` and ``table.md`` in the run folder."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from crossgap_jax.data import check_authors_assets
from crossgap_jax.fileio import atomic_write_bytes, atomic_write_json
from crossgap_jax.pipeline.compare import DEFAULT_BOOTSTRAP, Bootstrap
from crossgap_jax.pipeline.distributed import barrier, is_writer
from crossgap_jax.pipeline.measure import measure
from crossgap_jax.pipeline.records import provenance
from crossgap_jax.pipeline.report import results_table, summarize
from crossgap_jax.pipeline.run import Run
from crossgap_jax.pipeline.tasks import canonical_name


class DatasetFailure(RuntimeError):
    """A dataset of :func:`reproduce` failed after others finished; ``results`` holds what
    finished and ``table`` its table (already written to ``metrics.json`` / ``table.md``;
    None when nothing finished)."""

    def __init__(self, dataset: str, error: BaseException, results: dict,
                 table: str | None = None):
        super().__init__(f"dataset {dataset!r} failed: {type(error).__name__}: {error} "
                         f"(the table holds the {len(results.get('datasets', {}))} dataset(s) "
                         f"that finished)")
        self.dataset, self.error, self.results, self.table = dataset, error, results, table


def reproduce(run: Run, datasets: Sequence[str], roots: dict[str, str] | None = None, *,
              bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP) -> tuple[dict, str | None]:
    """Intra-modal baseline vs inverted retrieval on each dataset; writes metrics + table.

    Each dataset is one :func:`~crossgap_jax.pipeline.measure.measure` (``"retrieval"``):
    its entry holds ``modality``, ``baseline`` / ``inverted`` metrics, ``difference``
    (points of the main metric) and ``ci95`` (paired bootstrap over the queries; None for
    revisitop tasks or ``bootstrap=None``).

    Args:
        run: the run (model, settings, folder).
        datasets: dataset names, in order.
        roots: per-dataset data roots (default: ``run.roots``, then ``run.data_root``).
        bootstrap: interval settings (default: 2000 resamples, seed 0); None: no interval.

    The provenance (:func:`~crossgap_jax.pipeline.records.provenance`) and the table
    (:func:`~crossgap_jax.pipeline.report.results_table`) are built once, when every
    dataset is done; ``metrics.json`` written after each dataset holds
    ``"provenance": None`` until then. The caller passes both on to its record
    (:func:`~crossgap_jax.pipeline.records.write_record`).

    Returns:
        ``(results, table)``: the metrics dict written to ``<run_dir>/metrics.json`` and
        the Markdown table written to ``<run_dir>/table.md`` (None when no dataset
        finished).

    Raises:
        DatasetFailure: a dataset failed; the datasets before it are in its ``results``,
            and their table was written.
    """
    if roots:
        run = dataclasses.replace(run, roots={**run.roots, **roots})
    s = run.settings
    results: dict[str, Any] = {"provenance": None, "config": run.config,  # provenance: below
                               "datasets": {}, "metric_variant": s.metric_variant,
                               "loss_reduction": s.loss_reduction}
    check_authors_assets([canonical_name(ds) for ds in datasets], s.authors_assets)
    failure = None
    for ds in datasets:
        try:
            m = measure(run, ds, "retrieval", bootstrap=bootstrap)
            entry = {"modality": m["modality"], "baseline": m["baseline"],
                     "inverted": m["inverted"], "difference": m["difference"],
                     "ci95": m["ci95"], "text_source": m["text_source"]}  # None: as read
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - reported after the finished ones are written
            failure = (ds, e)
            break
        results["datasets"][ds] = entry
        if is_writer():
            atomic_write_json(os.path.join(run.run_dir, "metrics.json"), results)
    results["provenance"] = provenance(run)  # with the text sources and data the tasks used
    summarize(results)
    table = results_table(results) if results["datasets"] else None
    if is_writer() and table is not None:
        atomic_write_json(os.path.join(run.run_dir, "metrics.json"), results)
        atomic_write_bytes(os.path.join(run.run_dir, "table.md"), table.encode())
    barrier(f"reproduce:{run.run_dir}")  # every process may read the written table
    if failure is not None:
        raise DatasetFailure(failure[0], failure[1], results, table) from failure[1]
    return results, table
