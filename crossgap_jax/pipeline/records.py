"""What a run writes: the provenance of its results and one record per command.

Each command writes its own record (``<run_dir>/records/<command>-<key>.json``) explicitly;
nothing is written when a run is made, so no command rewrites another's files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from crossgap_jax import __version__
from crossgap_jax.fileio import atomic_write_json
from crossgap_jax.inversion import jax_numerics
from crossgap_jax.pipeline.distributed import is_writer
from crossgap_jax.pipeline.store import meta_key

if TYPE_CHECKING:
    from crossgap_jax.pipeline.run import Run


_SETTING_KEYS = ("learning_rate", "weight_decay", "batch_size", "oti_steps", "ovi_steps",
                 "num_pseudo_tokens", "ovi_num_pseudo_tokens", "template_sentence", "seed",
                 "dtype", "authors_assets", "isoclip_k", "metric_variant", "loss_reduction",
                 "revisitop1m", "baselines", "ovi_text", "qrels_missing", "exif_transpose")


def provenance(run: Run) -> dict:
    """What produced a run's results: ``model``, ``checkpoint``, ``checkpoint_sha256``,
    ``pretrained`` (tag, or None for a file), ``preset``, ``settings`` (every preset key and
    the compute dtype), ``subset`` (``max_queries`` / ``max_gallery``, None = full),
    ``text_sources`` ({dataset: source} of replaced texts; empty: as read), ``data``
    ({"<dataset>/<split>": root, fingerprint mode and digest, item count} of every split whose
    features the run used so far: :attr:`Run.data_fingerprints`), ``version`` and ``jax``
    (x64, default matmul precision, backend, device kind, JAX version:
    :func:`~crossgap_jax.inversion.jax_numerics`)."""

    c, s = run.config, run.settings
    settings = {k: c[k] for k in _SETTING_KEYS if k in c}
    settings.update(on_error=s.on_error, record_steps=list(s.record_steps),
                    verify_data=s.verify_data)
    return {"model": c["model"], "checkpoint": c["checkpoint"],
            "checkpoint_sha256": c["checkpoint_sha256"],
            "pretrained": c["pretrained"], "preset": c["preset"],
            "settings": settings,
            "subset": {"max_queries": s.max_queries, "max_gallery": s.max_gallery},
            "text_sources": dict(run.text_sources),
            "data": {k: dict(v) for k, v in run.data_fingerprints.items()},
            "version": __version__, "jax": jax_numerics()}


def write_record(run: Run, command: str, results: dict, *, key: dict | None = None,
                 argv: Sequence[str] | None = None, table: str | None = None,
                 also_to: str | None = None, prov: dict | None = None) -> str:
    """Write ``<run_dir>/records/<command>-<key>.json``: the results with their provenance.

    The key hashes the command, ``key`` (its arguments: dataset, feature types, ...) and the
    provenance, so a command with other settings writes another record, and a rerun with
    the same settings rewrites only its own. ``also_to``: a second path for the same
    record (the CLI's ``--output``). ``prov``: the command's :func:`provenance`, when it
    already built it for its results (built here otherwise). Returns the path (written by
    process 0 only).
    """
    if prov is None:
        prov = provenance(run)
    k = meta_key({"command": command, "key": key or {}, "provenance": prov})
    path = os.path.join(run.run_dir, "records", f"{command}-{k}.json")
    record = {"command": command, "argv": list(argv or []), "arguments": key or {},
              "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "provenance": prov, "results": results}
    if table is not None:
        record["table"] = table
    if is_writer():
        atomic_write_json(path, record)
        if also_to:
            atomic_write_json(also_to, record)
    return path
