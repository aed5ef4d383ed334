"""Multi-host runs: which process writes run-level files, and where all processes wait.

Every process of a multi-host run computes its share (inversions are claimed per shard);
process 0 writes the run-level results (records, ``metrics.json``, tables), and the others
wait for it at a :func:`barrier` before they read what it wrote. On one host both are
trivial (always the writer; no waiting).
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils


def is_writer() -> bool:
    """Whether this process writes run-level results (process 0 of a multi-host run)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of a multi-host run reaches the barrier ``name`` (a string
    unique to the point in the run, e.g. ``"reproduce:<run_dir>"``); no-op on one host."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
