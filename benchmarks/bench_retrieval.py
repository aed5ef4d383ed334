"""Benchmark of crossgap_jax.retrieval.evaluate against the authors' evaluation approach.

Cases (full run):

* ``2000x20000``: 2,000 queries x 20,000 gallery items, 512-d, 100 classes, the full metric set
  (mAP, mAP@R, P@R, R@1). Ours (``evaluate``, NumPy backend, 1 and all threads) against the
  authors' approach rewritten here: the full similarity matrix and the full Q x G ground
  truth in torch, then a Python loop over queries calling torchmetrics'
  ``retrieval_average_precision``, a top-k AP@R and ``retrieval_r_precision`` per query. The
  loop is timed on a subset of the queries and extrapolated linearly to all of them (said so
  in the output). The per-query values of both are compared on that subset.
* ``10000x100000``: 10,000 x 100,000, ours only, run in a fresh process to report its peak RSS
  (``resource.getrusage``); the baseline loop is timed on a subset and extrapolated, and the
  memory its full matrices would need is computed, not measured.

Synthetic features: a shared direction (so cosines are positive, as CLIP's are), a class
centre and noise. ``--quick`` runs small sizes. Results: a table on stdout and
``benchmarks/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, write_results  # noqa: E402

from crossgap_jax.bench.compare import format_table  # noqa: E402

DIM = 512
NUM_CLASSES = 100


def make_data(num_q: int, num_g: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(DIM).astype(np.float32)
    shared /= np.linalg.norm(shared)
    centres = (rng.standard_normal((NUM_CLASSES, DIM)) / np.sqrt(DIM)).astype(np.float32)
    ql = rng.integers(0, NUM_CLASSES, num_q)
    gl = rng.integers(0, NUM_CLASSES, num_g)

    def feats(labels):
        out = np.empty((labels.size, DIM), np.float32)
        for s in range(0, labels.size, 8192):  # in blocks: keep temporaries small
            lab = labels[s : s + 8192]
            noise = rng.standard_normal((lab.size, DIM), dtype=np.float32)
            noise *= np.float32(1 / np.sqrt(DIM))
            out[s : s + 8192] = shared + np.float32(0.45) * centres[lab] + noise
        return out

    return feats(ql), feats(gl), ql, gl


# ------------------------------------------------------------------------------------------
# The authors' approach (re-written): torch similarity matrix + per-query torchmetrics loop
# ------------------------------------------------------------------------------------------


def baseline_prepare(q, g, ql, gl):
    import torch
    import torch.nn.functional as F

    qt = F.normalize(torch.from_numpy(q))
    gt = F.normalize(torch.from_numpy(g))
    sims = torch.vstack([b @ gt.T for b in qt.split(32)])
    truth = torch.from_numpy(ql)[:, None] == torch.from_numpy(gl)[None, :]
    return sims, truth


def baseline_loop(sims, truth, queries):
    import torch
    from torchmetrics.functional.retrieval import (
        retrieval_average_precision,
        retrieval_r_precision,
    )

    out = {"AP": [], "AP@R": [], "P@R": [], "R@1": []}
    for i in queries:
        s, t = sims[i], truth[i]
        n = int(t.sum())
        out["AP"].append(retrieval_average_precision(s, t).item())
        top = t[torch.topk(s, k=n).indices]
        prec = torch.cumsum(top, 0) * top / torch.arange(1, n + 1)
        out["AP@R"].append((prec.sum() / n).item())
        out["P@R"].append(retrieval_r_precision(s, t).item())
        out["R@1"].append(float(t[torch.topk(s, 5).indices[0]]))
    return {k: np.array(v) for k, v in out.items()}


def time_baseline(q, g, ql, gl, subset: int):
    """Seconds for all queries: matrix build (measured) + loop (measured on ``subset``)."""
    t0 = time.perf_counter()
    sims, truth = baseline_prepare(q, g, ql, gl)
    t_prepare = time.perf_counter() - t0
    queries = np.linspace(0, len(q) - 1, subset).astype(int)
    t0 = time.perf_counter()
    values = baseline_loop(sims, truth, queries)
    t_loop = time.perf_counter() - t0
    total = t_prepare + t_loop * len(q) / subset
    return total, t_prepare, t_loop, queries, values


def time_baseline_subset_only(q, g, ql, gl, subset: int):
    """For galleries too big to hold Q x G: similarities of the subset only."""
    queries = np.linspace(0, len(q) - 1, subset).astype(int)
    sims, truth = baseline_prepare(q[queries], g, ql[queries], gl)
    t0 = time.perf_counter()
    baseline_loop(sims, truth, range(subset))
    t_loop = time.perf_counter() - t0
    return t_loop * len(q) / subset, t_loop


# ------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------


def time_ours(q, g, ql, gl, **kwargs):
    from crossgap_jax.retrieval import evaluate_per_query

    t0 = time.perf_counter()
    per = evaluate_per_query(q, g, (ql, gl), recall_ks=(1,), **kwargs)
    return time.perf_counter() - t0, per


def _vm_hwm_gib() -> float | None:
    """Peak RSS of this process image from /proc (Linux), as a cross-check of getrusage."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _reset_vm_hwm() -> bool:
    """Reset the /proc peak-RSS counter (Linux >= 4.0), so VmHWM covers what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _large_child(num_q, num_g, queue):
    import crossgap_jax.retrieval  # noqa: F401 - imported before the peak-RSS window

    q, g, ql, gl = make_data(num_q, num_g, seed=1)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    reset = _reset_vm_hwm()
    seconds, per = time_ours(q, g, ql, gl, backend="numpy", progress=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put({"seconds": seconds, "peak_rss_gib": rss, "rss_before_evaluate_gib": rss_data,
               "vm_hwm_during_evaluate_gib": _vm_hwm_gib() if reset else None,
               "mAP": float(per["AP"].mean() * 100)})


def run_large(num_q, num_g):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_large_child, args=(num_q, num_g, queue))
    proc.start()
    res = queue.get()
    proc.join()
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--subset", type=int, default=None,
                        help="queries timed in the baseline loop (default 200, quick 50)")
    parser.add_argument("--jax", action="store_true",
                        help="also time the JAX backend on the first case (slow on CPU)")
    parser.add_argument("--no-large", action="store_true", help="skip the large case")
    args = parser.parse_args(argv)

    if args.quick:
        (nq, ng), (lq, lg), subset = (500, 5000), (2000, 20000), args.subset or 50
    else:
        (nq, ng), (lq, lg), subset = (2000, 20000), (10000, 100000), args.subset or 200
    rows = []
    extra = {"notes": []}
    # The large case runs first, in a fresh process, while this parent is still small: Linux
    # carries ru_maxrss over fork + exec, so a child of a big parent would report its peak.
    large = None if args.no_large else run_large(lq, lg)

    import torch  # noqa: F401 - imported before timing anything
    import torchmetrics  # noqa: F401

    q, g, ql, gl = make_data(nq, ng)
    case = f"{nq}x{ng}"
    time_ours(q[:64], g, ql[:64], gl, backend="numpy")  # warm-up (imports, BLAS threads)
    threads = os.cpu_count()
    t_ours, per = time_ours(q, g, ql, gl, backend="numpy", progress=False)
    t_ours1, _ = time_ours(q, g, ql, gl, backend="numpy", num_threads=1, progress=False)
    sims, truth = baseline_prepare(q[:8], g, ql[:8], gl)  # warm-up of the baseline
    baseline_loop(sims, truth, range(8))
    t_base, t_prep, t_loop, queries, base = time_baseline(q, g, ql, gl, subset)
    diffs = {k: float(np.abs(per[k][queries] - base[k]).max()) for k in base}
    # Same metric on the baseline's own float32 scores (torch's matmul rounds differently from
    # NumPy's in the last bit, which can reorder near-equal scores).
    from crossgap_jax.retrieval import per_query_metrics

    sims, truth = baseline_prepare(q[queries], g, ql[queries], gl)
    same = per_query_metrics(sims.numpy(), truth.numpy(), recall_ks=(1,))
    diffs_same_scores = {k: float(np.abs(same[k] - base[k]).max()) for k in base}
    # float32 scores do tie exactly; torchmetrics orders ties as torch.topk happens to, so its
    # AP must lie between our pessimistic and optimistic rules
    upper = per_query_metrics(sims.numpy(), truth.numpy(), recall_ks=(1,), ties="optimistic")
    within_tie_bounds = bool(((same["AP"] <= base["AP"] + 1e-6)
                              & (base["AP"] <= upper["AP"] + 1e-6)).all())
    exact_ties_per_row = float(np.mean([s.numel() - s.unique().numel() for s in sims]))
    del sims, truth
    rows.append({"case": case, "method": f"ours numpy ({threads} threads)", "seconds": t_ours,
                 "speedup_vs_baseline": t_base / t_ours, "mAP": per["AP"].mean() * 100})
    rows.append({"case": case, "method": "ours numpy (1 thread)", "seconds": t_ours1,
                 "speedup_vs_baseline": t_base / t_ours1, "mAP": per["AP"].mean() * 100})
    if args.jax:
        time_ours(q[:64], g, ql[:64], gl, backend="jax", chunk_size=256)  # compile
        t_jax, per_jax = time_ours(q, g, ql, gl, backend="jax", chunk_size=256)
        rows.append({"case": case, "method": "ours jax backend (CPU)", "seconds": t_jax,
                     "speedup_vs_baseline": t_base / t_jax, "mAP": per_jax["AP"].mean() * 100})
    rows.append({"case": case, "method": "authors-style torch loop (extrapolated)",
                 "seconds": t_base, "speedup_vs_baseline": 1.0,
                 "mAP": float(base["AP"].mean() * 100)})
    extra["notes"].append(
        f"{case}: baseline = torch similarity matrix + Q x G ground truth ({t_prep:.2f} s, "
        f"measured) + per-query torchmetrics loop timed on {subset} of {nq} queries "
        f"({t_loop:.2f} s) and extrapolated linearly; its mAP is over those {subset} queries."
    )
    extra["max_abs_diff_per_query_vs_baseline"] = diffs
    extra["max_abs_diff_per_query_vs_baseline_same_scores"] = diffs_same_scores
    extra["baseline_ap_within_tie_bounds"] = within_tie_bounds
    extra["mean_exact_score_ties_per_row"] = exact_ties_per_row

    if large is not None:
        res = large
        lq_case = f"{lq}x{lg}"
        t_base_l, t_loop_l = time_baseline_subset_only(*make_data(lq, lg, seed=1),
                                                       subset=max(10, subset // 4))
        rows.append({"case": lq_case, "method": f"ours numpy ({threads} threads)",
                     "seconds": res["seconds"], "speedup_vs_baseline": t_base_l / res["seconds"],
                     "mAP": res["mAP"], "peak_rss_gib": res["peak_rss_gib"]})
        rows.append({"case": lq_case, "method": "authors-style torch loop (loop only, "
                     "extrapolated)", "seconds": t_base_l, "speedup_vs_baseline": 1.0})
        need = lq * lg * (4 + 1) / 2**30
        extra["notes"].append(
            f"{lq_case}: ours in a fresh process: peak RSS of the whole process "
            f"{res['peak_rss_gib']:.2f} GiB (getrusage), {res['rss_before_evaluate_gib']:.2f} "
            f"GiB before evaluate (imports + features), peak during evaluate "
            f"{res['vm_hwm_during_evaluate_gib']} GiB (/proc VmHWM after a reset). "
            f"Baseline loop timed on {max(10, subset // 4)} queries and extrapolated, without "
            f"the matrix build; its full float32 similarity + bool ground-truth matrices would "
            f"need {need:.1f} GiB (computed, not measured)."
        )
        extra["large_case"] = res

    print(format_table(rows, ["case", "method", "seconds", "speedup_vs_baseline", "mAP",
                              "peak_rss_gib"]))
    for note in extra["notes"]:
        print("-", note)
    print("- max |ours - baseline| per query on the timed subset:", json.dumps(diffs))
    print("- the same, ours fed the baseline's own scores:", json.dumps(diffs_same_scores))
    print(f"- exact float32 score ties per query row: {exact_ties_per_row:.1f} on average; "
          f"baseline AP within our [pessimistic, optimistic] tie bounds: {within_tie_bounds}")
    name = "retrieval_quick" if args.quick else "retrieval"
    path = write_results(name, rows, extra)
    print("wrote", path)
    print(json.dumps(environment()))


if __name__ == "__main__":
    main()
