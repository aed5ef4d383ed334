"""Shared helpers for the benchmark scripts: environment info, a table printer, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def environment() -> dict[str, Any]:
    """Versions and hardware the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        # Other processes compete for the CPU on shared machines: keep the load with the numbers.
        "load_average_1m_5m_15m": list(os.getloadavg()),
    }
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception:  # noqa: BLE001 - benchmarks report what they can
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    return info


def write_results(name: str, rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None,
                  out_dir: str | None = None) -> str:
    """Write ``{"benchmark", "environment", "rows", ...extra}`` to ``<out_dir>/<name>.json``."""
    out_dir = out_dir or RESULTS_DIR
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    payload = {"benchmark": name, "environment": environment(), "rows": list(rows)}
    payload.update(extra or {})
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    return path


def time_call(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(first call seconds, median steady-state seconds over ``repeats`` more calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)
