"""OTI / OVI step throughput at ViT-B/32 size: eager PyTorch reference vs the JAX paths.

Random weights at the real ViT-B/32 shapes (speed does not depend on the values). Each
variant runs in its own subprocess, so that its peak resident memory (``ru_maxrss``) is its
own and one variant's threads or caches do not slow the next. Per variant: steady-state
milliseconds per optimisation step (the minimum over the timed repeats), examples/s, compile
time (separately), achieved GFLOP/s (FLOPs counted analytically for the positions each
variant actually computes, checked against XLA's ``cost_analysis`` of one jitted step) and
that rate as a fraction of a float32 matmul measured in the same run.

Variants (OTI, text side; OVI, image side):

- ``torch eager``: the paper's loop in eager PyTorch over OpenAI's CLIP architecture (OTI
  with the full 77-token context), ``crossgap_jax/bench/torch_reference.py``; with 1 and 2 threads
  (on a shared 2-core machine, OpenMP's barriers make 2 threads slower than 1 whenever
  other processes compete for the cores). Speed-ups are against the faster of the two.
- ``jax op-by-op``: the same step without ``jit`` (every primitive dispatched alone).
- ``jax jit step``: one jitted step, driven by a Python loop (full context).
- ``jax scan``: :func:`oti_fn` / :func:`ovi_fn`, all steps in one program (``lax.scan``,
  vmapped per-example AdamW), full context.
- ``+ truncation``: text positions up to EOT only (exact).
- ``+ prefix cache``: positions before the placeholder computed once per call, and the
  last block at the EOT position only (exact); with truncation this is what :func:`oti`
  runs by default.
- ``+ last block at CLS only`` (OVI): the last block computes the query, attention output
  and MLP of the class token only (exact); what :func:`ovi` runs by default.
- ``api, progress off`` / ``api, progress on``: the public :func:`oti` / :func:`ovi` (their
  default exact shortcuts), one batch, without and with the step-level progress bar (with
  it, each step of the one compiled loop ends with a host callback that advances the bar;
  ``benchmarks/bench_progress.py`` isolates that cost). ms/step = steady call time /
  steps (the final forward pass and the init are included in both rows alike). The
  ``progress on`` child also times progress-off calls interleaved with its own
  (``bar_overhead_pct``: min on / min off - 1), the fairer comparison on a busy machine,
  and the cost of one report in a trivial loop (``bar_report_share_pct``: that cost over
  the step time, the bar's cost when it reports every step, as in a call's first batch).

Usage: python benchmarks/bench_inversion.py [--quick] [--batches 64 8] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from common import environment, write_results  # noqa: E402

from crossgap_jax.bench import flops  # noqa: E402
from crossgap_jax.bench.compare import format_table  # noqa: E402
from crossgap_jax.models import get_config  # noqa: E402

TEXT_W, TEXT_L, TEXT_LAYERS, CONTEXT = 512, 12, 12, 77
VIS_W, VIS_LAYERS, VIS_TOKENS = 768, 12, 50
EMBED = 512
TEMPLATE_POS = 6  # "a photo of  £ " -> SOT a photo of £ EOT
PLACEHOLDER = 4
PAPER_STEPS = {"oti": 150, "ovi": 1000}
MATMUL_SHAPE = (64 * VIS_TOKENS, VIS_W, 4 * VIS_W)  # the OVI MLP matmul at batch 64


# ---------------------------------------------------------------------------------------
# FLOPs (multiply-add = 2), per example and optimisation step: crossgap_jax.bench.flops
# ---------------------------------------------------------------------------------------
def oti_flops(variant: str) -> float:
    kind = ("prefix cache" if variant.endswith("prefix cache")
            else "truncation" if "truncation" in variant else "full")
    return flops.oti_step_flops(get_config("ViT-B/32"), kind)


def ovi_flops(variant: str) -> float:
    return flops.ovi_step_flops(get_config("ViT-B/32"), pooled_only=variant.endswith("CLS only"))


# ---------------------------------------------------------------------------------------
# Children: one variant each
# ---------------------------------------------------------------------------------------
def _problem(batch: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(batch, EMBED)).astype(np.float32)
    init = (0.02 * rng.normal(size=(batch, 1, width))).astype(np.float32)
    return targets, init


def _jax_clip():
    """ViT-B/32 params drawn with NumPy (fast; no init compile): N(0, 0.02), LN identity."""
    from crossgap_jax.bench.models import random_clip

    return random_clip("ViT-B/32")


def _timed_loop(step, n_warm: int, n_timed: int) -> list[float]:
    for _ in range(n_warm):
        step()
    times = []
    for _ in range(n_timed):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def child_torch(method: str, batch: int, n_timed: int, threads: int) -> dict[str, Any]:
    """The authors' eager loop (full 77-token context), crossgap_jax.bench.torch_reference."""
    import torch

    from crossgap_jax.bench import torch_reference as ref

    if threads:
        torch.set_num_threads(threads)
    config = get_config("ViT-B/32")
    if method == "oti":
        fn = ref.oti_feature_fn(config, TEMPLATE_POS, PLACEHOLDER, CONTEXT, "cpu")
        width = TEXT_W
    else:
        fn, width = ref.ovi_feature_fn(config, "cpu"), VIS_W
    targets, init = _problem(batch, width)
    times: list[float] = []
    ref.invert(fn, torch.from_numpy(targets), torch.from_numpy(init), 1 + n_timed,
               step_times=times)
    return {"step_times": times[1:], "compile_s": None,
            "threads": torch.get_num_threads()}


def child_jax(method: str, variant: str, batch: int, steps: int, repeats: int
              ) -> dict[str, Any]:
    import functools

    import jax
    import jax.numpy as jnp

    from crossgap_jax.inversion import core, inverters, prepare_template
    from crossgap_jax.models.clip import model as clip_lib

    clip = _jax_clip()
    config = clip.config
    h = core.HParams().as_arrays()
    width = TEXT_W if method == "oti" else VIS_W
    targets, init = _problem(batch, width)
    t, x0 = jnp.asarray(targets), jnp.asarray(init)
    if method == "oti":
        tpl = prepare_template("a photo of {}", 1, clip.tokenizer)
        length = tpl.eot_index + 1 if "truncation" in variant else CONTEXT
        base = clip.params["token_embedding"]["embedding"][jnp.asarray(tpl.ids[:length])]
        cache = variant.endswith("prefix cache")
        kw = dict(config=config, placeholder_index=tpl.placeholder_index,
                  eot_index=tpl.eot_index)
        feats = functools.partial(inverters.oti_features, base_embeddings=base, **kw)

        def scan_program(s):
            return inverters.oti_fn.lower(clip.params, t, x0, base, h, steps=s,
                                          cache_prefix=cache, **kw).compile()

        if cache:
            def forward(params, tok):  # the model's prefix cache and pooled-only options
                prefix = clip_lib.text_prefix(params, base[None, :tpl.placeholder_index],
                                              config=config)
                return inverters.oti_features(params, tok, base, prefix=prefix,
                                              pooled_only=True, **kw)
        else:
            forward = feats
    else:
        pooled = variant.endswith("CLS only")
        feats = functools.partial(inverters.ovi_features, config=config, pooled_only=pooled)
        forward = feats

        def scan_program(s):
            return inverters.ovi_fn.lower(clip.params, t, x0, h, config=config, steps=s,
                                          pooled_only=pooled).compile()

    out: dict[str, Any] = {}
    if variant.startswith("api"):
        from crossgap_jax.inversion import oti, ovi

        fn = oti if method == "oti" else ovi
        on = "progress on" in variant
        kw = dict(steps=steps, batch_size=batch, progress=on)
        t0 = time.perf_counter()
        fn(clip, targets, **kw)  # compiles
        out["compile_s"] = time.perf_counter() - t0
        if on:  # interleave with progress-off calls: an A/B that a busy machine affects alike
            fn(clip, targets, **dict(kw, progress=False))

            def timed(bar: bool) -> float:
                return _timed_loop(lambda: fn(clip, targets, **dict(kw, progress=bar)), 0, 1)[0]

            pairs = []
            for i in range(repeats):  # ABBA order: on-off, off-on, ... (no order bias)
                if i % 2 == 0:
                    a = timed(True)
                    pairs.append((a, timed(False)))
                else:
                    b = timed(False)
                    pairs.append((timed(True), b))
            calls = [a for a, _ in pairs]
            out["paired_off_step_times"] = [b / steps for _, b in pairs]
            # What one report of the bar costs, without the model's noise (a trivial loop).
            from bench_progress import callback_cost

            out["report_us"] = callback_cost(steps=1000, rounds=5)["report_us"]
        else:
            calls = _timed_loop(lambda: fn(clip, targets, **kw), 0, repeats)
        out["call_times"] = calls
        out["step_times"] = [c / steps for c in calls]
        return out
    if variant.startswith("jax scan"):
        t0 = time.perf_counter()
        program = scan_program(steps)
        out["compile_s"] = time.perf_counter() - t0
        # One forward pass (the final features) is part of a call: time it alone and
        # subtract it, so that ms/step is the steady-state cost of one step.
        fwd = jax.jit(forward)
        jax.block_until_ready(fwd(clip.params, x0))
        fwd_times = _timed_loop(lambda: jax.block_until_ready(fwd(clip.params, x0)), 0, 3)
        calls = _timed_loop(lambda: jax.block_until_ready(program(clip.params, t, x0, *(
            (base, h) if method == "oti" else (h,)))), 0, repeats)
        out["call_times"] = calls
        out["forward_s"] = min(fwd_times)
        out["step_times"] = [(c - min(fwd_times)) / steps for c in calls]
        return out

    tx = core.make_optimizer(h)

    def loss(tok, params):
        return jnp.sum(core.cosine_loss(feats(params, tok), t))

    def step(params, tok, opt_state):
        value, grads = jax.value_and_grad(loss)(tok, params)
        updates, opt_state = jax.vmap(tx.update)(grads, opt_state, tok)
        return tok + updates, opt_state, value

    state = [x0, jax.vmap(tx.init)(x0)]
    if variant == "jax jit step":
        jstep = jax.jit(step)
        t0 = time.perf_counter()
        compiled = jstep.lower(clip.params, *state).compile()
        out["compile_s"] = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out["xla_flops_per_step"] = float(cost.get("flops", float("nan"))) if cost else None
        run = compiled
    else:  # op-by-op: no jit anywhere
        out["compile_s"] = None
        run = step

    def one():
        tok, opt, value = run(clip.params, *state)
        jax.block_until_ready((tok, opt, value))
        state[0], state[1] = tok, opt

    out["step_times"] = _timed_loop(one, 1, steps)
    return out


def compile_record_steps(method: str = "oti", records: tuple[int, ...] = (0, 11),
                         batch: int = 8, repeats: int = 3) -> list[dict[str, Any]]:
    """Compile time of :func:`oti_fn` / :func:`ovi_fn` (ViT-B/32, paper step count) with 0
    and with 11 record steps (what ``analyze`` records): the loop is one ``lax.scan``
    whatever the number of record steps, so the two should be within ~1.2x. Per count:
    the minimum over ``repeats`` compilations (caches cleared before each), the number
    of ``while`` loops in the lowered StableHLO and its size in characters."""
    import re

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_compilation_cache", False)  # no persistent-cache hits

    from crossgap_jax.inversion import core, inverters, prepare_template

    clip = _jax_clip()
    config, h = clip.config, core.HParams().as_arrays()
    steps = PAPER_STEPS[method]
    targets, init = _problem(batch, TEXT_W if method == "oti" else VIS_W)
    t, x0 = jnp.asarray(targets), jnp.asarray(init)
    tpl = prepare_template("a photo of {}", 1, clip.tokenizer)
    base = clip.params["token_embedding"]["embedding"][jnp.asarray(tpl.ids[:tpl.eot_index + 1])]
    rows = []
    for k in records:
        rec = tuple(int(v) for v in np.linspace(1, steps, k).round()) if k else ()
        if method == "oti":
            lower = lambda r=rec: inverters.oti_fn.lower(
                clip.params, t, x0, base, h, config=config, steps=steps, record_steps=r,
                placeholder_index=tpl.placeholder_index, eot_index=tpl.eot_index)
        else:
            lower = lambda r=rec: inverters.ovi_fn.lower(clip.params, t, x0, h, config=config,
                                                         steps=steps, record_steps=r)
        text = lower().as_text()
        times = []
        for _ in range(repeats):
            jax.clear_caches()  # a real compilation each time, not an in-memory cache hit
            low = lower()
            t0 = time.perf_counter()
            low.compile()
            times.append(time.perf_counter() - t0)
        rows.append({"method": method, "record_steps": k, "compile_s": min(times),
                     "hlo_loops": len(re.findall(r"stablehlo\.while", text)),
                     "hlo_chars": len(text)})
    base_s = rows[0]["compile_s"]
    for r in rows:
        r["ratio_vs_none"] = r["compile_s"] / base_s
    return rows


def child_matmul(repeats: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    m, k, n = MATMUL_SHAPE
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), np.float32))
    b = jnp.asarray(rng.standard_normal((k, n), np.float32))
    f = jax.jit(lambda a, b: a @ b)
    times = _timed_loop(lambda: f(a, b).block_until_ready(), 2, repeats)
    out = {"jax_gflops": 2 * m * k * n / min(times) / 1e9}
    try:
        import torch

        ta, tb = torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))
        tt = _timed_loop(lambda: ta @ tb, 2, repeats)
        out["torch_gflops"] = 2 * m * k * n / min(tt) / 1e9
    except ImportError:
        pass
    return out


def child_main(args: argparse.Namespace) -> None:
    load0 = os.getloadavg()[0]
    if args.child == "matmul":
        out = child_matmul(args.repeats)
    elif args.child.startswith("torch"):
        out = child_torch(args.method, args.batch, args.steps, args.threads)
    else:
        out = child_jax(args.method, args.child, args.batch, args.steps, args.repeats)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_1m"] = [load0, os.getloadavg()[0]]
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------
def run_child(child: str, method: str = "", batch: int = 0, steps: int = 0, repeats: int = 1,
              xla_flags: str | None = None) -> dict[str, Any]:
    threads = 1 if child.endswith("1 thread") else (2 if child.endswith("2 threads") else 0)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", child, "--method", method,
           "--batch", str(batch), "--steps", str(steps), "--repeats", str(repeats),
           "--threads", str(threads)]
    env = dict(os.environ)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{child} {method} b{batch} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_s"] = time.perf_counter() - t0
    return out


def plan(batch: int, quick: bool) -> list[tuple[str, str, int, int]]:
    """(method, variant, timed steps, repeats) per batch size, sized for ~10 minutes."""
    big = batch >= 32
    p = [
        ("oti", "torch eager 1 thread", 1 if (quick or big) else 2, 1),
        ("oti", "torch eager 2 threads", 1 if quick else 2, 1),
        ("oti", "jax op-by-op", 1 if (quick or big) else 2, 1),
        ("oti", "jax jit step", 2 if quick else 3, 1),
        ("oti", "jax scan", 2 if big else 4, 1),
        ("oti", "jax scan + truncation", 10 if big else 30, 2),
        ("oti", "jax scan + truncation + prefix cache", 20 if big else 60, 2),
        ("ovi", "torch eager 1 thread", 1 if (quick or big) else 2, 1),
        ("ovi", "torch eager 2 threads", 1 if quick else 2, 1),
        ("ovi", "jax scan", 3 if big else 8, 1),
        ("ovi", "jax scan + last block at CLS only", 3 if big else 8, 2 if not quick else 1),
        ("oti", "api, progress off: truncation + prefix cache", 20 if big else 40, 3),
        ("oti", "api, progress on: truncation + prefix cache", 20 if big else 40, 5),
        ("ovi", "api, progress off: last block at CLS only", 3 if big else 6, 2),
        ("ovi", "api, progress on: last block at CLS only", 3 if big else 6, 2),
    ]
    if quick:
        p = [x for x in p if x[1] != "jax op-by-op"]
    return p


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="batch 8 only, fewer steps, no op-by-op row (a couple of minutes)")
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--only", nargs="+", default=None,
                    help="run only variants whose 'method variant' contains one of these")
    ap.add_argument("--xla-flags", default=None, help="XLA_FLAGS for the JAX children")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--name", default="bench_inversion")
    ap.add_argument("--pairs", type=int, default=None,
                    help="interleaved on/off pairs of the 'api, progress on' rows (the bar's "
                         "cost; default 5 for OTI, 2 for OVI)")
    ap.add_argument("--progress-steps", type=int, default=None,
                    help="steps per call of the 'api, progress' rows (long calls show the "
                         "bar's cost per step; short ones its fixed cost per call)")
    ap.add_argument("--compile-records", action="store_true",
                    help="only time the compilation with 0 vs 11 record steps (OTI and OVI)")
    # child mode (internal)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default="", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.compile_records:
        rows = [r for m in ("oti", "ovi") for r in compile_record_steps(m)]
        print(format_table(rows, ["method", "record_steps", "compile_s", "ratio_vs_none",
                                  "hlo_loops", "hlo_chars"]))
        return
    if args.child:
        child_main(args)
        return

    batches = args.batches or ([8] if args.quick else [64, 8])
    env = environment()
    print(", ".join(f"{k}={env[k]}" for k in ("jax", "torch", "torch_threads", "cpu_count",
                                              "load_average_1m_5m_15m") if k in env),
          flush=True)
    matmul = [run_child("matmul", repeats=10, xla_flags=args.xla_flags)]
    print(f"matmul {MATMUL_SHAPE}: {matmul[0]['jax_gflops']:.1f} GFLOP/s (jax), "
          f"{matmul[0].get('torch_gflops', float('nan')):.1f} (torch)", flush=True)
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    for batch in batches:
        for method, variant, steps, repeats in plan(batch, args.quick):
            if args.only and not any(o in f"{method} {variant}" for o in args.only):
                continue
            flags = None if variant.startswith("torch") else args.xla_flags
            if args.pairs and "progress on" in variant:
                repeats = args.pairs
            if args.progress_steps and "progress" in variant:
                steps = args.progress_steps
            r = run_child(variant, method, batch, steps, repeats, flags)
            raw.append({"method": method, "variant": variant, "batch": batch, **r})
            s = min(r["step_times"])
            flops = batch * (oti_flops(variant) if method == "oti" else ovi_flops(variant))
            row = {"method": method, "variant": variant, "batch": batch,
                   "ms_per_step": 1e3 * s,
                   "ex_steps_per_s": batch / s,
                   "inversions_per_s": batch / (s * PAPER_STEPS[method]),
                   "compile_s": r.get("compile_s"),
                   "gflops": flops / s / 1e9,
                   "peak_rss_mb": r["peak_rss_mb"],
                   "timed": len(r["step_times"]),
                   "load_1m": max(r["load_1m"])}
            if r.get("paired_off_step_times"):  # the bar's cost, same process, interleaved
                row["bar_overhead_pct"] = 100 * (s / min(r["paired_off_step_times"]) - 1)
                # Each pair ran back to back: the median of the per-pair ratios is robust to
                # load changes between pairs.
                ratios = [a / b for a, b in zip(r["step_times"], r["paired_off_step_times"])]
                row["bar_overhead_median_pct"] = 100 * (statistics.median(ratios) - 1)
                row["pairs"] = len(ratios)
                # Upper bound of the bar's cost from its parts: one report per step (the
                # first batch's interval) over the step time.
                row["bar_report_share_pct"] = 100 * r["report_us"] * 1e-6 / s
            if r.get("xla_flops_per_step"):
                row["xla_vs_counted_flops"] = r["xla_flops_per_step"] / flops
            rows.append(row)
            print(f"  {method} {variant:<40} b{batch:<3} {row['ms_per_step']:10.1f} ms/step  "
                  f"(median {1e3 * statistics.median(r['step_times']):.1f}, "
                  f"load {row['load_1m']:.1f}, child {r['wall_s']:.0f} s)", flush=True)
    matmul.append(run_child("matmul", repeats=10, xla_flags=args.xla_flags))
    mm = max(m["jax_gflops"] for m in matmul)
    for row in rows:
        row["pct_of_matmul"] = 100 * row["gflops"] / mm
        ref = [r["ms_per_step"] for r in rows if r["method"] == row["method"]
               and r["batch"] == row["batch"] and r["variant"].startswith("torch eager")]
        row["speedup_vs_torch"] = min(ref) / row["ms_per_step"] if ref else None
    cols = ["method", "variant", "batch", "ms_per_step", "speedup_vs_torch", "ex_steps_per_s",
            "inversions_per_s", "compile_s", "gflops", "pct_of_matmul", "peak_rss_mb",
            "load_1m", "bar_overhead_pct", "bar_overhead_median_pct", "pairs",
            "bar_report_share_pct"]
    print(f"matmul rate (max of start/end): {mm:.1f} GFLOP/s; "
          f"load average at end: {os.getloadavg()}")
    print(format_table(rows, cols))
    path = write_results(args.name, rows, {
        "model": "ViT-B/32 (random weights)", "quick": args.quick,
        "matmul_shape": MATMUL_SHAPE, "matmul": matmul, "xla_flags": args.xla_flags,
        "raw": raw, "flop_counts": {"oti_full": oti_flops("jax scan"),
                                    "oti_truncated": oti_flops("truncation"),
                                    "oti_prefix_cache": oti_flops("prefix cache"),
                                    "ovi": ovi_flops("jax scan"),
                                    "ovi_cls_only": ovi_flops("CLS only")}}, out_dir=args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
