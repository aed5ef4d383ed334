"""Where the progress bar's cost comes from: OVI as one compiled loop vs the chunk program.

With a progress bar, an inversion runs as chunks of one compiled loop whose step count is
traced (``inversion.core.run_chunk``: one program for every chunk length, no
recompilation), with a host wait between chunks. This times, interleaved in one process
(rounds in alternating order, so that the machine's load affects every variant alike):

- ``single``: ``ovi_fn``, the whole optimisation as one program (static step count);
- ``one chunk``: the chunk program once over every step (traced count, no host wait);
- ``chunks of 2``: the chunk program every 2 steps (what the bar does when a step takes
  ~1 s), plus the init and finish programs.

ms per step (minimum and median over the rounds). ViT-B/32 with random weights, batch 8,
P = 1, pooled-only last block (the defaults).

Usage: python benchmarks/bench_chunks.py [--steps 12] [--rounds 4] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, write_results  # noqa: E402

from crossgap_jax.inversion import inverters as inv  # noqa: E402
from crossgap_jax.inversion.core import HParams  # noqa: E402
from crossgap_jax.inversion.driver import _init_state_jit  # noqa: E402
from crossgap_jax.models.bundle import create_clip  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    clip = create_clip("ViT-B/32", 0)
    rng = np.random.default_rng(0)
    t = rng.standard_normal((a.batch, clip.config.embed_dim)).astype(np.float32)
    t = jnp.asarray(t / np.linalg.norm(t, axis=1, keepdims=True))
    x0 = jnp.asarray(0.02 * rng.standard_normal((a.batch, 1, clip.config.vision.width)),
                     jnp.float32)
    h = HParams(2e-2, 0.01, 0.9, 0.999, 1e-8).as_arrays()
    static = dict(config=clip.config, record_steps=(), dtype=jnp.float32, pooled_only=True)

    def single():
        return jax.block_until_ready(
            inv.ovi_fn(clip.params, t, x0, h, None, steps=a.steps, **static).features)

    def chunked(k: int):
        st = _init_state_jit(x0, steps=a.steps, num_records=0)
        done = 0
        while done < a.steps:
            c = min(k, a.steps - done)
            st = inv._ovi_chunk(clip.params, t, st, np.int32(done), np.int32(c), h, None,
                                **static)
            jax.block_until_ready(st.tokens)
            done += c
        return jax.block_until_ready(
            inv._ovi_finish(clip.params, st, steps=a.steps, **static).features)

    variants = [("single", single), ("one chunk", lambda: chunked(a.steps)),
                ("chunks of 2", lambda: chunked(2))]
    ref = np.asarray(single())
    for _, f in variants:  # compile each, and check they agree
        np.testing.assert_allclose(np.asarray(f()), ref, rtol=0, atol=1e-5)
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for r in range(a.rounds):
        for name, f in (variants if r % 2 == 0 else variants[::-1]):
            t0 = time.perf_counter()
            f()
            times[name].append(1e3 * (time.perf_counter() - t0) / a.steps)
    base = min(times["single"])
    rows = [{"variant": name, "ms_per_step_min": min(v), "ms_per_step_median":
             statistics.median(v), "vs_single_min_pct": 100 * (min(v) / base - 1),
             "rounds": [round(x, 1) for x in v]} for name, v in times.items()]
    print(format_table(rows, ["variant", "ms_per_step_min", "ms_per_step_median",
                              "vs_single_min_pct", "rounds"]))
    print(f"wrote {write_results('bench_chunks', rows, vars(a), out_dir=a.out_dir)}")
    return rows


if __name__ == "__main__":
    main()
