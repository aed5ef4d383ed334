"""How long the main job takes: the demo itself, and a fresh clone to its printed result.

Rows (each a separate process, as a user runs it):

- ``demo (cold)``: ``crossgap-jax demo`` into a new output folder: imports, compilation,
  encoding, inversions, analysis, figure (the number the README promises: under 60 s on
  2 CPU cores);
- ``demo (cached)``: the same command again into the same folder (features and inversions
  reused from the run folder);
- ``demo --quick (cold)``: the smoke-test settings;
- with ``--fresh``: ``git clone`` of this repository into a temporary folder, then
  ``make demo`` there (creates ``.venv``, ``pip install -e .`` without the test extras,
  runs the demo): the README's first command on a fresh machine. Needs the package index
  (or a pip cache) for the dependencies.

Wall seconds, the CPU seconds of the child (user + system) and the machine's load average
at the start are reported: on a shared machine the wall time depends on the other jobs.

Usage: python benchmarks/bench_demo.py [--fresh] [--skip-full] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, format_table, write_results  # noqa: E402

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


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", action="store_true",
                    help="also time git clone + make demo in a temporary folder")
    ap.add_argument("--skip-full", action="store_true", help="only the --quick demo")
    ap.add_argument("--out-dir", default=None, help="JSON results folder")
    a = ap.parse_args(argv)

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    demo = [sys.executable, "-m", "crossgap_jax.cli", "demo"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        if not a.skip_full:
            out = os.path.join(tmp, "full")
            rows.append({"what": "demo (cold)", **timed(demo + ["--out", out], REPO, env)})
            rows.append({"what": "demo (cached)", **timed(demo + ["--out", out], REPO, env)})
        out = os.path.join(tmp, "quick")
        rows.append({"what": "demo --quick (cold)",
                     **timed(demo + ["--out", out, "--quick"], REPO, env)})
        if a.fresh:
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
    path = write_results("bench_demo", rows, out_dir=a.out_dir)
    print(f"wrote {path}")
    env_info = environment()
    print(f"cpu_count={env_info['cpu_count']}, load average now "
          f"{env_info['load_average_1m_5m_15m']}")
    return rows


if __name__ == "__main__":
    main()
