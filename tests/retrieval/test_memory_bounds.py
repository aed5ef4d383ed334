"""Bounded host memory at scale: a 20k x 200k all-vs-all evaluation never holds Q x G.

The NumPy path scores queries in chunks of about ``_NUMPY_BLOCK_ELEMENTS`` (E) entries, one
chunk per worker thread at a time. Per entry a chunk holds the float32 score (4 bytes, sorted
in place) and the bool relevance (1 byte); per *relevant* entry (E / C of them with C
balanced classes) about ten int64/uint64 arrays (rows, columns, sort keys, ranks: <= 80
bytes). So the evaluation may add at most

    threads * E * (5 + 80 / C) bytes   (x 1.5 for allocator slack and temporaries)

to the resident set it had before, whatever Q and G are; the full score matrix would be
Q * G * 4 bytes (16 GB here). The child process measures its own peak RSS
(``resource.getrusage``) before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crossgap_jax.retrieval.metrics import _NUMPY_BLOCK_ELEMENTS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
Q, G, DIM, CLASSES, THREADS = 20_000, 200_000, 8, 100, 2

_CHILD = """
import json, resource, sys
import numpy as np
from crossgap_jax.retrieval import evaluate_per_query

q_n, g_n, dim, classes, threads = map(int, sys.argv[1:])
rng = np.random.default_rng(0)
g = rng.standard_normal((g_n, dim), dtype=np.float32)
gl = rng.integers(0, classes, g_n)
q, ql = g[:q_n].copy(), gl[:q_n].copy()
# warm-up on a small problem: imports, thread pool, first-call allocations
evaluate_per_query(q[:50], g[:500], (ql[:50], gl[:500]), backend="numpy", progress=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
per = evaluate_per_query(q, g, (ql, gl), backend="numpy", num_threads=threads,
                         recall_ks=(1,), progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps({"before": before, "after": after, "n": len(per["AP"])}))
"""


@pytest.mark.slow
def test_all_vs_all_20k_x_200k_host_memory_is_bounded_by_the_chunk():
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, *map(str, (Q, G, DIM, CLASSES,
                                                                     THREADS))],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.split("RESULT ")[-1].splitlines()[0])
    assert r["n"] == Q
    budget = 1.5 * THREADS * _NUMPY_BLOCK_ELEMENTS * (5 + 80 / CLASSES)
    grown = r["after"] - r["before"]
    print(f"\n[memory] {Q}x{G}: peak RSS {r['before'] / 2**20:.0f} -> {r['after'] / 2**20:.0f} "
          f"MiB (+{grown / 2**20:.0f}; budget {budget / 2**20:.0f} MiB)")
    assert grown <= budget, (
        f"evaluation grew the peak RSS by {grown / 2**20:.0f} MiB, over the chunk budget "
        f"{budget / 2**20:.0f} MiB (full matrix: {Q * G * 4 / 2**30:.0f} GiB)")
