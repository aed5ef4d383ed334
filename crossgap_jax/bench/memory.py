"""Peak memory of a large inversion through the resumable path, at two dataset sizes.

:func:`~crossgap_jax.inversion.resumable.invert_dataset` (what ``oti`` / ``ovi`` /
``reproduce`` run) inverts one shard of items at a time and writes it atomically before the
next, so its memory should not grow with the number of items N beyond the ``(N, D)`` input
features themselves. This module measures that: each N runs in a fresh process (peak RSS
is a per-process high-water mark), which reports

- ``host_rss_before_mib``: resident memory after the model and the random ``(N, D)``
  features exist, before the inversion starts;
- ``host_peak_rss_mib``: the process's peak resident memory (``ru_maxrss``) at the end;
- ``host_growth_mib``: their difference, what the inversion itself added;
- ``device_peak_mib``: ``memory_stats()["peak_bytes_in_use"]`` of device 0 (None where the
  backend reports no memory stats, e.g. CPU);
- ``features_mib``: the size of the input features, the only part that scales with N.

Imports jax and numpy only (plus the package), like the rest of ``crossgap_jax.bench``.
Run one size by hand: ``python -m crossgap_jax.bench.memory --items 50000``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax.bench.models import peak_memory, random_clip
from crossgap_jax.inversion import (
    SHARD_GLOB,
    ExecutionSettings,
    OTISettings,
    OVISettings,
    invert_dataset,
)


def _rss_now_mib() -> float:
    """Current resident set size of this process in MiB (Linux ``/proc``; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_inversion_memory(items: int, *, arch: str = "tiny", method: str = "oti",
                             steps: int = 1, batch_size: int = 1024, shard_size: int = 4096,
                             out_dir: str | None = None) -> dict[str, Any]:
    """Invert ``items`` random normalised features with ``invert_dataset`` in this process.

    Args:
        items: N, the number of items.
        arch: registered architecture (random weights; memory does not depend on values).
        method: ``"oti"`` (image features in) or ``"ovi"`` (text features in).
        steps: optimisation steps per item (memory does not depend on them).
        batch_size: items per compiled batch; shard_size: items per written shard.
        out_dir: where the shards go (default: a temporary folder, removed after).

    Returns:
        One row: ``items``, ``arch``, ``method``, ``steps``, ``batch_size``, ``shard_size``,
        ``shards``, ``features_mib``, ``host_rss_before_mib``, ``host_peak_rss_mib``,
        ``host_growth_mib``, ``device_peak_mib``, ``wall_s``. Meaningful only as the first
        large allocation of a fresh process (``ru_maxrss`` never decreases): use
        :func:`bench_inversion_memory`, which starts one process per size.
    """

    clip = random_clip(arch)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((items, clip.config.embed_dim), dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    names = [f"item-{i:07d}" for i in range(items)]
    before = _rss_now_mib()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crossgap_mem_") as tmp:
        where = out_dir or tmp
        settings = (OTISettings if method == "oti" else OVISettings)(steps=steps)
        s = invert_dataset(clip, names, feats, where, settings,
                           ExecutionSettings(batch_size=batch_size, progress=False),
                           shard_size=shard_size)
        shards = len(glob.glob(os.path.join(where, SHARD_GLOB)))
    wall = time.perf_counter() - t0
    if s.inverted != items:
        raise RuntimeError(f"inverted {s.inverted} of {items} items")
    peak = peak_memory()
    return {"items": items, "arch": arch, "method": method, "steps": steps,
            "batch_size": batch_size, "shard_size": shard_size, "shards": shards,
            "features_mib": feats.nbytes / 2**20, "host_rss_before_mib": before,
            "host_peak_rss_mib": peak["host_peak_rss_mib"],
            "host_growth_mib": peak["host_peak_rss_mib"] - before,
            "device_peak_mib": peak["device_peak_mib"], "wall_s": wall}


def bench_inversion_memory(sizes: Sequence[int], *, arch: str = "tiny", method: str = "oti",
                           steps: int = 1, batch_size: int = 1024, shard_size: int = 4096,
                           timeout_s: float = 600) -> list[dict[str, Any]]:
    """:func:`measure_inversion_memory` for each N in ``sizes``, each in a fresh process.

    A size whose process fails gets ``status`` with the error's last line (the others
    still run); a size that fails for lack of time gets ``status: "timeout"``.
    """
    rows = []
    for n in sizes:
        cmd = [sys.executable, "-m", "crossgap_jax.bench.memory", "--items", str(n),
               "--arch", arch, "--method", method, "--steps", str(steps),
               "--batch-size", str(batch_size), "--shard-size", str(shard_size)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rows.append({"items": n, "arch": arch, "method": method, "status": "timeout"})
            continue
        lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not lines:
            err = (p.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"items": n, "arch": arch, "method": method, "status": err[:200]})
            continue
        rows.append({**json.loads(lines[-1][len("RESULT "):]), "status": "ok"})
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--arch", default="tiny")
    ap.add_argument("--method", default="oti", choices=("oti", "ovi"))
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=4096)
    a = ap.parse_args(argv)
    row = measure_inversion_memory(a.items, arch=a.arch, method=a.method, steps=a.steps,
                                   batch_size=a.batch_size, shard_size=a.shard_size)
    print("RESULT " + json.dumps(row))


if __name__ == "__main__":
    main()
