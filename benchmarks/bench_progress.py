"""What the step-level progress bar costs OTI/OVI: the program, the callback, the wall time.

With a bar, steps of the one compiled loop end with a conditional host callback
(``inversion.progress.emit``: every step in a call's first batch, then about every 0.5 s);
without, the same program has no callback. Three measurements, in one process (ViT-B/32
with random weights, batch 8, the defaults: R = P = 1, truncation + prefix cache for OTI,
last block at CLS only for OVI):

1. ``program``: the optimised HLO of ``oti_fn`` / ``ovi_fn`` with and without a progress
   handle: whether every operation on an array (> 2 elements) is the same, and what the bar
   adds (opcode counts; it removes nothing).
2. ``callback``: a loop of 2000 trivial steps without the callback, with a report every
   step, and with the conditional but no report: the cost per step in microseconds without
   a model's noise.
3. ``pairs``: the real programs with a report **every** step (the first batch's worst case)
   timed in ABBA order (off-on, on-off, ...), so that a drift of the machine's load affects
   both alike: ms per step (min, median) and the median of the per-pair ratios on / off;
   ``report_share_pct`` is the measured per-report cost over the step time.

Usage: python benchmarks/bench_progress.py [--pairs 8] [--oti-steps 40] [--ovi-steps 6]
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
from common import write_results  # noqa: E402

from crossgap_jax.bench.compare import format_table  # noqa: E402
from crossgap_jax.bench.hlo import array_ops, opcodes  # noqa: E402
from crossgap_jax.inversion import HParams, oti_fn, ovi_fn, prepare_template, progress  # noqa: E402
from crossgap_jax.models import family_of  # noqa: E402
from crossgap_jax.models.bundle import create_clip  # noqa: E402


def _programs(batch: int, oti_steps: int, ovi_steps: int):
    """``{method: (fn(channel) -> RawInversion, steps, lower(channel))}`` at B/32 size."""
    clip = create_clip("ViT-B/32", 0)
    cfg, rng = clip.config, np.random.default_rng(0)
    t = rng.standard_normal((batch, cfg.embed_dim)).astype(np.float32)
    t = jnp.asarray(t / np.linalg.norm(t, axis=1, keepdims=True))
    h = HParams().as_arrays()
    tpl = prepare_template("a photo of {}", 1, clip.tokenizer)
    base = family_of(cfg).embed_tokens(clip.params, jnp.asarray(tpl.ids[:tpl.eot_index + 1]),
                                       config=cfg)
    xt = jnp.asarray(0.02 * rng.standard_normal((batch, 1, cfg.text.width)), jnp.float32)
    xv = jnp.asarray(0.02 * rng.standard_normal((batch, 1, cfg.vision.width)), jnp.float32)
    oti_kw = dict(config=cfg, placeholder_index=tpl.placeholder_index,
                  eot_index=tpl.eot_index, steps=oti_steps, cache_prefix=True)
    ovi_kw = dict(config=cfg, steps=ovi_steps, pooled_only=True)
    oti_args = (clip.params, t, xt, base, h, None)
    ovi_args = (clip.params, t, xv, h, None)
    return {
        "oti": (lambda ch: oti_fn(*oti_args, ch, **oti_kw), oti_steps,
                lambda ch: oti_fn.lower(*oti_args, ch, **oti_kw)),
        "ovi": (lambda ch: ovi_fn(*ovi_args, ch, **ovi_kw), ovi_steps,
                lambda ch: ovi_fn.lower(*ovi_args, ch, **ovi_kw)),
    }


def _call(fn, every: int | None) -> None:
    """One call without a bar (``every=None``) or reporting every ``every`` steps."""
    if every is None:
        jax.block_until_ready(fn(None))
        return
    with progress.channel(lambda k: None, every) as ch:
        jax.block_until_ready(fn(ch.handle))


def callback_cost(steps: int = 2000, rounds: int = 7) -> dict:
    """Microseconds per step of a loop of trivial steps: without the callback, reporting
    every step, and with the conditional but no report (``every`` beyond the loop)."""
    x = jnp.ones((64,), jnp.float32)

    @jax.jit
    def loop(x, handle):
        def body(c, _):
            y, done = c
            done = done + 1
            if handle is not None:
                progress.emit(handle, done, steps + 1)  # never the last: only `every` counts
            return (y * 0.999 + 1.0, done), None
        return jax.lax.scan(body, (x, jnp.int32(0)), None, length=steps)[0]

    variants = {"without": None, "every step": 1, "no report": 2**31 - 1}
    times: dict[str, list[float]] = {k: [] for k in variants}
    fns = {k: (lambda e=e: _call(lambda h: loop(x, h), e)) for k, e in variants.items()}
    for f in fns.values():
        f()  # compile
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    us = {k: 1e6 * min(v) / steps for k, v in times.items()}
    return {"us_per_step": us,
            "report_us": us["every step"] - us["without"],
            "condition_us": us["no report"] - us["without"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--oti-steps", type=int, default=40)
    ap.add_argument("--ovi-steps", type=int, default=6)
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    programs = _programs(a.batch, a.oti_steps, a.ovi_steps)

    program_rows = []
    for name, (_, _, lower) in programs.items():
        q_hlo = lower(None).compile().as_text()
        s_hlo = lower(np.asarray([1, 1], np.int32)).compile().as_text()
        quiet, shown = opcodes(q_hlo), opcodes(s_hlo)
        program_rows.append({
            "method": name, "hlo_ops_without": sum(quiet.values()),
            "array_ops_without": sum(array_ops(q_hlo).values()),
            "array_ops_identical": array_ops(q_hlo) == array_ops(s_hlo),
            "added_ops": dict(shown - quiet), "removed_ops": dict(quiet - shown)})
    print(format_table(program_rows, ["method", "hlo_ops_without", "array_ops_without",
                                      "array_ops_identical", "added_ops", "removed_ops"]))

    cb = callback_cost()
    print(f"trivial loop, us per step: {cb['us_per_step']}; one report costs "
          f"{cb['report_us']:.1f} us, the condition alone {cb['condition_us']:.1f} us")

    pair_rows = []
    for name, (fn, steps, _) in programs.items():
        _call(fn, None)  # compile both programs
        _call(fn, 1)
        times: dict[int | None, list[float]] = {None: [], 1: []}
        for p in range(a.pairs):
            for w in ((None, 1) if p % 2 == 0 else (1, None)):
                t0 = time.perf_counter()
                _call(fn, w)
                times[w].append(1e3 * (time.perf_counter() - t0) / steps)
        off, on = times[None], times[1]
        ratios = [b / x for x, b in zip(off, on, strict=True)]
        pair_rows.append({
            "method": name, "steps": steps, "pairs": a.pairs,
            "off_ms_min": min(off), "on_ms_min": min(on),
            "off_ms_median": statistics.median(off), "on_ms_median": statistics.median(on),
            "min_vs_min_pct": 100 * (min(on) / min(off) - 1),
            "median_pair_pct": 100 * (statistics.median(ratios) - 1),
            "report_share_pct": 100 * cb["report_us"] / (1e3 * min(off)),
            "off_ms": [round(x, 1) for x in off], "on_ms": [round(x, 1) for x in on]})
    print(format_table(pair_rows, ["method", "steps", "pairs", "off_ms_min", "on_ms_min",
                                   "off_ms_median", "on_ms_median", "min_vs_min_pct",
                                   "median_pair_pct", "report_share_pct"]))
    out = {"program": program_rows, "callback": cb, "pairs": pair_rows}
    path = write_results("bench_progress", pair_rows,
                         {"args": vars(a), "program": program_rows, "callback": cb},
                         out_dir=a.out_dir)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
