"""How long the main job takes: the demo itself, and a fresh clone to its printed result.

Rows (each a separate process, as a user runs it):

- ``demo (cold)``: ``crossgap-jax demo`` into a new output folder: imports, compilation,
  encoding, inversions, analysis, figure (the number the README promises: under 60 s on
  2 CPU cores);
- ``demo (cached)``: the same command again into the same folder (features and inversions
  reused from the run folder);
- ``demo --quick (cold)``: the smoke-test settings;
- with ``--phases``: the demo once more, in-process in a child, with its time split by
  phase (model load, encode, OTI, OVI, metrics, figure, other): wall and CPU seconds
  (``time.process_time``, all threads), the main thread's CPU seconds
  (``time.thread_time``: Python and dispatch), CPU seconds per thread name (Linux
  ``/proc/self/task``: which of XLA's threads, compiling or running programs, did the
  work), the wall seconds JAX reported compiling (``jax.monitoring`` events; inflated by
  the machine's load) and the number of compilations;
- with ``--fresh``: ``git clone`` of this repository into a temporary folder, then
  ``make demo`` there (creates ``.venv``, ``pip install -e .`` without the test extras,
  runs the demo): the README's first command on a fresh machine. Needs the package index
  (or a pip cache) for the dependencies.

Wall seconds, the CPU seconds of the child (user + system) and the machine's load average
at the start are reported: on a shared machine the wall time depends on the other jobs.

Usage: python benchmarks/bench_demo.py [--fresh] [--phases] [--skip-full] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, write_results  # noqa: E402

from crossgap_jax.bench.compare import format_table  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd: list[str], cwd: str, env: dict | None = None) -> dict:
    """Run ``cmd``; wall seconds, child CPU seconds, exit code, the output's last line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    if p.returncode:
        tail = (p.stderr.strip().splitlines() or [""])[-1]
    return {"wall_s": wall, "cpu_s": cpu, "load_1m_at_start": load, "rc": p.returncode,
            "last_line": tail[:120]}


def thread_cpu() -> dict[int, tuple[str, float]]:
    """``{thread id: (name without trailing digits, CPU seconds)}`` of this process (Linux;
    empty elsewhere)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                name = re.sub(r"[-_/]?\d+$", "", f.read().strip())
            with open(f"/proc/self/task/{t}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            out[int(t)] = (name, (int(st[11]) + int(st[12])) / tick)
        except (OSError, IndexError, ValueError):
            continue
    return out


class PhaseTimer:
    """Wall, CPU and compile seconds per phase; nested phases count only for the innermost."""

    def __init__(self) -> None:
        self.stack: list[str] = ["other"]
        self.rows: dict[str, dict[str, float]] = {}
        self._mark = (time.perf_counter(), time.process_time(), time.thread_time())
        self._threads = thread_cpu()

    def _row(self, name: str) -> dict[str, float]:
        return self.rows.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "main_thread_cpu_s": 0.0,
                                           "compile_s": 0.0, "compiles": 0})

    def _flush(self) -> None:
        now = (time.perf_counter(), time.process_time(), time.thread_time())
        r = self._row(self.stack[-1])
        r["wall_s"] += now[0] - self._mark[0]
        r["cpu_s"] += now[1] - self._mark[1]
        r["main_thread_cpu_s"] += now[2] - self._mark[2]
        threads = thread_cpu()
        per = r.setdefault("thread_cpu_s", {})
        for tid, (name, cpu) in threads.items():
            d = cpu - self._threads.get(tid, (name, 0.0))[1]
            if d > 0:
                per[name] = per.get(name, 0.0) + d
        self._threads = threads
        self._mark = now

    def on_event(self, event: str, seconds: float, **_: object) -> None:
        if event.startswith("/jax/core/compile/"):
            r = self._row(self.stack[-1])
            r["compile_s"] += seconds
            if event == "/jax/core/compile/backend_compile_duration":
                r["compiles"] += 1

    def wrap(self, owner: object, attr: str, phase) -> None:
        """Replace ``owner.attr`` by a wrapper that times it as ``phase`` (a name, or a
        function of the call's arguments giving one)."""
        fn = getattr(owner, attr)

        def timed_call(*args, **kwargs):
            self._flush()
            self.stack.append(phase(*args, **kwargs) if callable(phase) else phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._flush()
                self.stack.pop()

        setattr(owner, attr, timed_call)

    def result(self) -> list[dict]:
        self._flush()
        return [{"phase": k, **v} for k, v in self.rows.items()]


def child_phases(out: str) -> None:
    """Run the demo in this process with :class:`PhaseTimer` wrapped around its phases."""
    import jax.monitoring

    timer = PhaseTimer()
    jax.monitoring.register_event_duration_secs_listener(timer.on_event)
    import crossgap_jax.demo as demo
    import crossgap_jax.pipeline.analyze as analyze
    import crossgap_jax.pipeline.measure as measure
    import crossgap_jax.pipeline.run as run
    import crossgap_jax.retrieval as retrieval

    # Wrapped where they are looked up (the module that calls them imported them by name).
    timer.wrap(demo, "load_demo_clip", "model load")
    timer.wrap(run, "cached_split_features", "encode")
    timer.wrap(run, "invert_dataset",
               lambda *a, **k: str(k.get("method", a[4] if len(a) > 4 else "?")).upper())
    for mod in (measure, analyze):
        timer.wrap(mod, "evaluate_task", "metrics")
    timer.wrap(measure, "evaluate_task_per_query", "metrics")
    timer.wrap(retrieval, "paired_bootstrap_ci", "metrics")
    timer.wrap(analyze, "plot_analysis", "figure")
    timer.wrap(analyze, "analysis_figure", "figure")
    timer.wrap(demo, "save_figure", "figure")
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    demo.run_demo(out, progress=False, verbose=False)
    rows = timer.result()
    total_threads: dict[str, float] = {}
    for r in rows:
        for k, v in r.get("thread_cpu_s", {}).items():
            total_threads[k] = total_threads.get(k, 0.0) + v
    rows.append({"phase": "total (in process)", "thread_cpu_s": total_threads,
                 "wall_s": time.perf_counter() - t0,
                 "cpu_s": time.process_time() - c0, "main_thread_cpu_s": time.thread_time() - m0,
                 "compile_s": sum(r["compile_s"] for r in rows),
                 "compiles": sum(r["compiles"] for r in rows)})
    print("RESULT " + json.dumps(rows))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", action="store_true",
                    help="also time git clone + make demo in a temporary folder")
    ap.add_argument("--phases", action="store_true",
                    help="also split one cold demo's time by phase (encode, OTI, OVI, ...)")
    ap.add_argument("--phases-only", action="store_true", help="only the phase split")
    ap.add_argument("--skip-full", action="store_true", help="only the --quick demo")
    ap.add_argument("--child-phases", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", default=None, help="JSON results folder")
    a = ap.parse_args(argv)
    if a.child_phases:
        child_phases(a.child_phases)
        return []

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    demo = [sys.executable, "-m", "crossgap_jax.cli", "demo"]
    rows: list[dict] = []
    phases: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        if a.phases or a.phases_only:
            load = os.getloadavg()[0]
            p = subprocess.run([sys.executable, __file__, "--child-phases",
                                os.path.join(tmp, "phases")], cwd=REPO, env=env,
                               capture_output=True, text=True)
            lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not lines:
                raise RuntimeError(f"phase child failed:\n{p.stderr[-3000:]}")
            phases = [dict(r, load_1m_at_start=load) for r in json.loads(lines[-1][7:])]
            for r in phases:
                top = sorted(r.get("thread_cpu_s", {}).items(), key=lambda kv: -kv[1])[:3]
                r["top_threads_cpu_s"] = ", ".join(f"{k} {v:.1f}" for k, v in top)
            print(format_table(phases, ["phase", "wall_s", "cpu_s", "main_thread_cpu_s",
                                        "compile_s", "compiles", "top_threads_cpu_s",
                                        "load_1m_at_start"]))
        if a.phases_only:
            pass
        elif not a.skip_full:
            out = os.path.join(tmp, "full")
            rows.append({"what": "demo (cold)", **timed(demo + ["--out", out], REPO, env)})
            rows.append({"what": "demo (cached)", **timed(demo + ["--out", out], REPO, env)})
        out = os.path.join(tmp, "quick")
        if not a.phases_only:
            rows.append({"what": "demo --quick (cold)",
                         **timed(demo + ["--out", out, "--quick"], REPO, env)})
        if a.fresh and not a.phases_only:
            clone = os.path.join(tmp, "clone")
            t0 = time.perf_counter()
            r = timed(["git", "clone", "-q", REPO, clone], tmp)
            rows.append({"what": "git clone", **r})
            if r["rc"] == 0:
                fenv = {k: v for k, v in os.environ.items()
                        if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
                r = timed(["make", "demo", f"PY={shutil.which('python3') or 'python3'}"],
                          clone, fenv)
                rows.append({"what": "make demo (fresh venv)", **r})
                rows.append({"what": "fresh clone -> printed result",
                             "wall_s": time.perf_counter() - t0, "rc": r["rc"]})
    cols = ["what", "wall_s", "cpu_s", "load_1m_at_start", "rc", "last_line"]
    print(format_table(rows, cols))
    path = write_results("bench_demo", rows, {"phases": phases} if phases else None,
                         out_dir=a.out_dir)
    print(f"wrote {path}")
    env_info = environment()
    print(f"cpu_count={env_info['cpu_count']}, load average now "
          f"{env_info['load_average_1m_5m_15m']}")
    return rows


if __name__ == "__main__":
    main()
