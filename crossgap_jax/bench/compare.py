"""``crossgap-jax bench``: what XLA compilation buys on the device JAX sees, in one run.

Phases (each under its own wall-time cap, so the whole run has a known bound; a phase that
would overrun stops early and says so in its rows):

1. ``matmul``: the device's dense matmul rate (float32 and bfloat16), the FLOP-floor unit.
2. ``inversion``: OTI / OVI through the public :func:`~crossgap_jax.inversion.oti` /
   :func:`~crossgap_jax.inversion.ovi` (all local devices), random weights at real size,
   per architecture, compute dtype and batch size (a sweep that stops at the first
   out-of-memory error or at the cap). Compile time = first call - second call.
3. ``torch``: the authors' way on the same device (eager, full 77-token context, batch 64,
   float16 autocast + GradScaler on CUDA, float32 elsewhere, batch-mean loss) and a fair
   PyTorch baseline (positions up to EOT, ``torch.compile`` where it works).
4. ``encode``: images/s and texts/s of the jitted encoders.
5. ``metrics``: mAP + mAP@R + R@1 of Q random normalised queries against G gallery items
   (chunked JAX path), timed on a sample of queries first and extrapolated when the full
   run would overrun; against the authors' per-query loop (torch similarities +
   torchmetrics per query, or the same computation in torch when torchmetrics is absent),
   timed on a few queries and extrapolated.
6. ``inversion_memory``: peak host RSS (and device memory where the backend reports it)
   of :func:`~crossgap_jax.inversion.resumable.invert_dataset` (the chunked, resumable
   path of ``oti`` / ``ovi`` / ``reproduce``) at two dataset sizes (10k and 50k items),
   each in a fresh process (:mod:`crossgap_jax.bench.memory`): bounded means the same
   peak at both sizes, apart from the ``(N, D)`` input features.
7. ``paper_jobs``: extrapolated wall time of OTI over ImageNet val (50k x 150 steps, B/32)
   and OVI over the COCO 5k captions (25k x 1000 steps, B/32), beside their FLOP floor at
   the matmul rate measured in phase 1.

Imports: jax, numpy, torch (optional: phases 3 and 5's baseline are skipped without it),
torchmetrics (optional). Nothing else (no sklearn, matplotlib, tfds, network).

(Over 450 lines on purpose: the phases share the settings, the deadline, the timing and
out-of-memory helpers and the one table the command prints; each phase is one function of
~30-60 lines, and a split by phase would scatter one command's bookkeeping over many files.)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossgap_jax.bench import flops
from crossgap_jax.bench.memory import bench_inversion_memory
from crossgap_jax.bench.models import peak_memory, random_clip
from crossgap_jax.fileio import atomic_write_json
from crossgap_jax.inversion import oti, ovi
from crossgap_jax.models import get_config
from crossgap_jax.retrieval import JAX_BLOCK_ELEMENTS, auto_chunk_size, evaluate_per_query

PAPER_JOBS = (("oti", "ImageNet val", 50_000, 150), ("ovi", "COCO 5k captions", 25_000, 1000))


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """What one ``bench`` run measures. :func:`full_settings` / :func:`smoke_settings`.

    ``sweeps``: ``(arch, method, timed steps, batch sizes)``; each runs in every dtype.
    ``memory``: ``(arch, steps, batch size, shard size, item counts)`` of the
    ``inversion_memory`` phase.
    ``caps``: wall seconds per phase (``matmul``, ``inversion``, ``torch``, ``encode``,
    ``metrics``, ``inversion_memory``).
    """

    archs: tuple[str, ...] = ("ViT-B/32", "ViT-L/14")
    dtypes: tuple[str, ...] = ("bfloat16", "float32")
    sweeps: tuple[tuple[str, str, int, tuple[int, ...]], ...] = ()
    matmul_size: int = 8192
    torch_archs: tuple[str, ...] = ("ViT-B/32", "ViT-L/14")
    torch_compile_archs: tuple[str, ...] = ("ViT-B/32",)
    torch_compile_backend: str = "inductor"
    torch_batch: int = 64
    torch_steps: int = 5
    encode_batches: tuple[int, int] = (256, 1024)
    metrics_size: tuple[int, int, int, int] = (50_000, 1_281_167, 512, 1000)
    metrics_sample: int = 2048
    metrics_torch_sample: int = 8
    job_arch: str = "ViT-B/32"
    memory: tuple[str, int, int, int, tuple[int, ...]] = ("ViT-B/32", 1, 4096, 8192,
                                                          (10_000, 50_000))
    caps: tuple[tuple[str, float], ...] = (("matmul", 15), ("inversion", 200), ("torch", 100),
                                           ("encode", 40), ("metrics", 80),
                                           ("inversion_memory", 45))
    smoke: bool = False

    def cap(self, phase: str) -> float:
        return dict(self.caps)[phase]


def full_settings() -> BenchSettings:
    """Real sizes, sized to finish in about 8 minutes on one H200-class GPU (the caps)."""
    return BenchSettings(sweeps=(
        ("ViT-B/32", "oti", 20, (512, 4096, 32768)),
        ("ViT-B/32", "ovi", 10, (128, 512, 2048)),
        ("ViT-L/14", "oti", 20, (512, 4096, 16384)),
        ("ViT-L/14", "ovi", 3, (32, 128, 512)),
    ))


def smoke_settings() -> BenchSettings:
    """Tiny sizes for CI on a CPU (well under a minute): every code path, no real numbers."""
    return BenchSettings(
        archs=("tiny",), dtypes=("float32",),
        sweeps=(("tiny", "oti", 3, (2, 4)), ("tiny", "ovi", 3, (2,))),
        matmul_size=256, torch_archs=("tiny",), torch_compile_archs=("tiny",),
        torch_compile_backend="aot_eager", torch_batch=4, torch_steps=2, encode_batches=(4, 8),
        metrics_size=(300, 3000, 16, 10), metrics_sample=100, metrics_torch_sample=4,
        job_arch="tiny", memory=("tiny", 1, 256, 512, (500, 2000)),
        caps=(("matmul", 10), ("inversion", 90), ("torch", 60), ("encode", 30), ("metrics", 30),
              ("inversion_memory", 150)),  # two fresh processes; an idle CPU needs ~15 s
        smoke=True)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Versions and hardware the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S",
                                                               time.gmtime()),
        "load_average_1m_5m_15m": list(os.getloadavg()),
        "jax": jax.__version__, "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "process_count": jax.process_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Markdown table of ``rows`` (floats with 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    body = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(x.ljust(w) for x, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), sep, *(line(b) for b in body)])


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is a device (or host) out-of-memory error of XLA or torch."""
    text = f"{type(error).__name__}: {error}".lower()
    return isinstance(error, MemoryError) or any(
        s in text for s in ("resource_exhausted", "out of memory", "outofmemory"))


@functools.lru_cache(maxsize=2)
def _cached_clip(arch: str) -> Any:
    """One random float32 parameter set per architecture (dtypes share it)."""
    return random_clip(arch)


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(first call seconds, fastest of ``repeats`` further calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    rest = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        rest.append(time.perf_counter() - t0)
    return first, min(rest)


class _Deadline:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


# ---------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------
def bench_matmul(n: int, dtypes: Sequence[str] = ("float32", "bfloat16")
                 ) -> list[dict[str, Any]]:
    """Dense ``(n, n) @ (n, n)`` rate per dtype, TFLOP/s (fastest of 5)."""
    rows = []
    for dt in dtypes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dt))
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.dtype(dt))
        f = jax.jit(jnp.matmul)
        _, s = _time(functools.partial(f, a, b), 5)
        rows.append({"dtype": dt, "n": n, "seconds": s, "tflops": 2 * n**3 / s / 1e12})
    return rows


def _inversion_call(clip: Any, method: str, batch: int, steps: int) -> Callable[[], Any]:

    rng = np.random.default_rng(0)
    targets = rng.standard_normal((batch, clip.config.embed_dim)).astype(np.float32)
    fn = oti if method == "oti" else ovi
    return lambda: fn(clip, targets, steps=steps, batch_size=batch, progress=False).features


def _est_max_batch(prev: tuple[int, float | None] | None, batch: int,
                   mem: dict[str, float | None]) -> int | None:
    """Largest batch the device memory would hold, extrapolated linearly from the growth
    of the device's peak between two batch sizes (None without ``memory_stats`` or growth)."""
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    peak = mem["device_peak_mib"]
    if prev is None or prev[1] is None or peak is None or not limit or peak <= prev[1]:
        return None
    per_example = (peak - prev[1]) / (batch - prev[0])
    return int(batch + (limit / 2**20 - peak) / per_example)


# A first guess of the achieved fraction of the matmul rate, used only to refuse work that
# could not finish within a phase's cap (e.g. the L/14 rows on a CPU).
_PESSIMISTIC_EFFICIENCY = 0.1


def _predicted_s(total_flops: float, rate_tflops: float | None) -> float:
    return 0.0 if not rate_tflops else total_flops / (_PESSIMISTIC_EFFICIENCY * rate_tflops
                                                      * 1e12)


def bench_inversion(settings: BenchSettings, deadline: _Deadline,
                    rate_tflops: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The JAX sweep: one row per (arch, dtype, method, batch) run or refused."""
    rows: list[dict[str, Any]] = []
    rate_tflops = rate_tflops or {}
    groups = [(s, dt) for s in settings.sweeps for dt in settings.dtypes]
    for gi, ((arch, method, steps, batches), dt) in enumerate(groups):
        # each group gets an equal share of what is left of the phase
        group_end = time.perf_counter() + max(deadline.left(), 0.0) / (len(groups) - gi)
        clip = _cached_clip(arch).with_dtype(dt)
        last, prev = None, None  # (batch, compile_s, call_s) of the last row run
        for batch in batches:
            base = {"arch": arch, "dtype": dt, "method": method, "batch": batch,
                    "timed_steps": steps}
            step_flops = (flops.oti_step_flops(clip.config) if method == "oti"
                          else flops.ovi_step_flops(clip.config))
            guess = _predicted_s(batch * steps * 2 * step_flops, rate_tflops.get(dt))
            if last is not None:  # a new shape compiles again, and the calls grow with it
                guess = max(guess, last[1] + 2 * last[2] * batch / last[0])
            if time.perf_counter() + guess > group_end:
                rows.append({**base, "status": "skipped (phase time cap)"})
                break
            try:
                first, steady = _time(_inversion_call(clip, method, batch, steps), 1)
            except Exception as e:  # noqa: BLE001 - OOM ends the sweep, others are reported
                rows.append({**base, "status": "OOM" if is_oom(e) else f"error: {e}"[:200]})
                break
            mem = peak_memory()
            rows.append({**base, "status": "ok", "compile_s": max(first - steady, 0.0),
                         "call_s": steady, "ex_steps_per_s": batch * steps / steady,
                         "achieved_tflops": batch * steps * step_flops / steady / 1e12,
                         **mem, "est_max_batch": _est_max_batch(prev, batch, mem)})
            prev = (batch, mem["device_peak_mib"])
            last = (batch, max(first - steady, 0.0), steady)
    return rows


def bench_torch(settings: BenchSettings, deadline: _Deadline,
                rate_tflops: float | None = None) -> list[dict[str, Any]]:
    """Authors' eager loop and the fair compiled baseline on the same device."""
    try:
        import torch

        # lazy: torch_reference imports torch (optional) at its top
        from crossgap_jax.bench import torch_reference as ref
    except ImportError as e:
        return [{"status": f"skipped: {e}"}]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    b, rows = settings.torch_batch, []
    # the cheap eager rows first, then the compiled ones (a compile can take a minute)
    jobs = [(arch, method, "authors (eager, 77 tokens)", None, False)
            for arch in settings.torch_archs for method in ("oti", "ovi")]
    jobs += [(arch, method, "fair (torch.compile; OTI to EOT)", flops.TEMPLATE_POSITIONS, True)
             for arch in settings.torch_compile_archs for method in ("oti", "ovi")]
    for arch, method, name, context, compiled in jobs:
        config = get_config(arch)
        context = context or config.text.context_length
        base = {"arch": arch, "method": method, "variant": name, "batch": b,
                "device": device, "amp_fp16": device == "cuda",
                "compile_backend": settings.torch_compile_backend if compiled else None}
        step_flops = (flops.oti_step_flops(config, "full" if not compiled else "truncation")
                      if method == "oti" else flops.ovi_step_flops(config, pooled_only=False))
        guess = _predicted_s(b * (2 + settings.torch_steps) * step_flops, rate_tflops)
        if deadline.left() <= guess:
            rows.append({**base, "status": "skipped (phase time cap)"})
            continue
        if method == "oti":
            fn = ref.oti_feature_fn(config, flops.TEMPLATE_POSITIONS,
                                    flops.PLACEHOLDER_INDEX, context, device)
            width = config.text.width
        else:
            fn, width = ref.ovi_feature_fn(config, device), config.vision.width
        g = torch.Generator().manual_seed(0)
        targets = torch.randn(b, config.embed_dim, generator=g).to(device)
        init = (0.02 * torch.randn(b, 1, width, generator=g)).to(device)
        times: list[float] = []
        try:
            ref.invert(fn, targets, init, 2 + settings.torch_steps,
                       compile_backend=settings.torch_compile_backend if compiled
                       else None, step_times=times)
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            rows.append({**base, "status": "OOM" if is_oom(e) else f"error: {e}"[:200]})
            continue
        steady = statistics.median(times[2:])
        rows.append({**base, "status": "ok", "step_s": steady,
                     "ex_steps_per_s": b / steady,
                     "compile_s": max(times[0] - steady, 0.0) if compiled else None})
    return rows


def bench_encode(settings: BenchSettings, deadline: _Deadline) -> list[dict[str, Any]]:
    """Images/s and texts/s of ``encode_image`` / ``encode_text`` (host arrays in and out)."""
    rows = []
    ib, tb = settings.encode_batches
    for arch in settings.archs:
        for dt in settings.dtypes:
            if deadline.left() <= 0:
                rows.append({"arch": arch, "dtype": dt, "status": "skipped (phase time cap)"})
                continue
            clip = _cached_clip(arch).with_dtype(dt)
            s = clip.config.vision.image_size
            pixels = np.random.default_rng(0).standard_normal((ib, s, s, 3), np.float32)
            ids = clip.tokenize(["a photo of a dog"] * tb)
            fi, si = _time(functools.partial(clip.encode_image, pixels, batch_size=ib,
                                             progress=False), 2)
            ft, st = _time(functools.partial(clip.encode_text, ids, batch_size=tb), 2)
            rows.append({"arch": arch, "dtype": dt, "status": "ok", "images_per_s": ib / si,
                         "texts_per_s": tb / st, "compile_s": (fi - si) + (ft - st)})
    return rows


def _torch_per_query(q: np.ndarray, g: Any, ql: np.ndarray, gl: Any) -> dict[str, np.ndarray]:
    """The authors' evaluation: one query at a time, torchmetrics' AP (or the same in torch)."""
    import torch

    try:
        from torchmetrics.functional.retrieval import retrieval_average_precision as ap_fn
    except ImportError:
        def ap_fn(s, t):
            hits = t[torch.argsort(s, descending=True)].float()
            prec = torch.cumsum(hits, 0) / torch.arange(1, len(hits) + 1, device=s.device)
            return (prec * hits).sum() / hits.sum()
    out: dict[str, list[float]] = {"AP": [], "AP@R": [], "R@1": []}
    for qi, lab in zip(torch.tensor(q).to(g.device), ql):
        s = g @ qi
        t = gl == int(lab)
        n = int(t.sum())
        out["AP"].append(float(ap_fn(s, t)))
        top = t[torch.topk(s, n).indices].float()
        prec = torch.cumsum(top, 0) * top / torch.arange(1, n + 1, device=s.device)
        out["AP@R"].append(float(prec.sum() / n))
        out["R@1"].append(float(t[torch.argmax(s)]))
    return {k: np.asarray(v) for k, v in out.items()}


def bench_metrics(settings: BenchSettings, deadline: _Deadline) -> list[dict[str, Any]]:
    """Chunked JAX metrics at Q x G vs the authors' per-query loop (both extrapolated from
    timed samples where the full run would not fit the cap)."""

    nq, ng, dim, classes = settings.metrics_size
    key_q, key_g = jax.random.split(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    ql = rng.integers(0, classes, nq).astype(np.int32)
    gl = rng.integers(0, classes, ng).astype(np.int32)
    shared = jnp.ones((dim,), jnp.float32) / np.sqrt(dim)

    def features(key: jax.Array, n: int) -> jax.Array:
        # a shared direction plus noise: positive cosines (~0.5), as CLIP's are, which the
        # authors' torchmetrics AP needs (it mishandles negative scores)
        x = shared + jax.random.normal(key, (n, dim), jnp.float32) / np.sqrt(dim)
        return x / jnp.linalg.norm(x, axis=1, keepdims=True)

    g, q = features(key_g, ng), features(key_q, nq)
    chunk = auto_chunk_size(nq, ng, JAX_BLOCK_ELEMENTS)
    sample = max(chunk, min(settings.metrics_sample, nq) // chunk * chunk)
    run = lambda n: evaluate_per_query(q[:n], g, (ql[:n], gl), recall_ks=(1,), backend="jax",
                                       chunk_size=chunk, progress=False)
    first, steady = _time(lambda: run(sample), 1)
    row: dict[str, Any] = {"queries": nq, "gallery": ng, "dim": dim, "chunk": chunk,
                           "sample": sample,
                           "compile_s": max(first - steady, 0.0)}
    predicted = steady * nq / sample
    if predicted * 1.2 < deadline.left():
        t0 = time.perf_counter()
        ours = run(nq)
        row.update(ours_s=time.perf_counter() - t0, ours_measured="full run")
    else:
        ours = run(sample)
        row.update(ours_s=predicted, ours_measured=f"extrapolated from {sample} queries")
    row.update(peak_memory())
    try:
        import torch
    except ImportError:
        return [{**row, "authors_s": None, "authors_measured": "skipped: no torch"}]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    k = min(settings.metrics_torch_sample, nq)
    tg = torch.from_numpy(np.array(g)).to(device)
    tgl = torch.from_numpy(gl).to(device)
    qs = np.asarray(q[:k])
    _torch_per_query(qs[:1], tg, ql[:1], tgl)  # warm-up
    t0 = time.perf_counter()
    ref = _torch_per_query(qs, tg, ql[:k], tgl)
    if device == "cuda":
        torch.cuda.synchronize()
    per_query = (time.perf_counter() - t0) / k
    diff = max(float(np.abs(ref[m] - ours[m][:k]).max()) for m in ("AP", "AP@R", "R@1"))
    row.update(authors_s=per_query * nq, authors_measured=f"extrapolated from {k} queries",
               authors_device=device, max_abs_diff_on_sample=diff,
               speedup=per_query * nq / row["ours_s"])
    return [row]


def bench_memory(settings: BenchSettings, deadline: _Deadline) -> list[dict[str, Any]]:
    """Peak memory of the resumable inversion at each item count of ``settings.memory``
    (:func:`crossgap_jax.bench.memory.bench_inversion_memory`; one process per size, each
    given what is left of the phase's cap)."""
    arch, steps, batch, shard, sizes = settings.memory
    rows: list[dict[str, Any]] = []
    for n in sizes:
        if deadline.left() <= 0:
            rows.append({"items": n, "arch": arch, "status": "skipped (phase time cap)"})
            continue
        rows += bench_inversion_memory((n,), arch=arch, steps=steps, batch_size=batch,
                                       shard_size=shard, timeout_s=max(deadline.left(), 1))
    return rows


def paper_jobs(settings: BenchSettings, inversion: Sequence[dict[str, Any]],
               matmul: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Extrapolated wall time of the paper's two jobs at the best measured throughput,
    beside the FLOP floor at the measured matmul rate of the same dtype."""

    config = get_config(settings.job_arch)
    rate = {m["dtype"]: m["tflops"] for m in matmul}
    rows = []
    for method, what, n, steps in PAPER_JOBS:
        step_flops = (flops.oti_step_flops(config) if method == "oti"
                      else flops.ovi_step_flops(config))
        for dt in settings.dtypes:
            ok = [r for r in inversion if r.get("status") == "ok" and r["method"] == method
                  and r["arch"] == settings.job_arch and r["dtype"] == dt]
            if not ok:
                continue
            best = max(ok, key=lambda r: r["ex_steps_per_s"])
            floor = n * steps * step_flops / (rate[dt] * 1e12) if dt in rate else None
            wall = n * steps / best["ex_steps_per_s"] + best["compile_s"]
            rows.append({"job": f"{method.upper()} {what}", "arch": settings.job_arch,
                         "dtype": dt, "items": n, "steps": steps, "batch": best["batch"],
                         "extrapolated_s": wall, "flop_floor_s": floor,
                         "x_floor": wall / floor if floor else None})
    return rows


def _speedups(inversion: Sequence[dict], torch_rows: Sequence[dict]) -> list[dict[str, Any]]:
    """Best JAX ex·steps/s over the authors' eager and the fair compiled torch, per arch."""
    rows = []
    for t in torch_rows:
        if t.get("status") != "ok":
            continue
        ok = [r for r in inversion if r.get("status") == "ok" and r["arch"] == t["arch"]
              and r["method"] == t["method"]]
        if ok:
            best = max(ok, key=lambda r: r["ex_steps_per_s"])
            rows.append({"arch": t["arch"], "method": t["method"], "vs": t["variant"],
                         "jax_dtype": best["dtype"], "jax_batch": best["batch"],
                         "speedup": best["ex_steps_per_s"] / t["ex_steps_per_s"]})
    return rows


def run_bench(settings: BenchSettings, out_dir: str = os.path.join("benchmarks", "results"),
              printer: Callable[[str], None] = print) -> tuple[dict[str, Any], str]:
    """Run every phase, print the tables, write ``<out_dir>/bench-<backend>[-smoke].json``.

    Returns:
        ``(results, json_path)``; ``results`` holds ``environment``, ``settings``, one list
        of rows per phase, ``paper_jobs``, ``speedups`` and the run's ``wall_s``.
    """

    t0 = time.perf_counter()
    env = environment()
    printer(f"bench on {env['jax_backend']} ({env['device_kind']}, "
            f"{len(env['jax_devices'])} device(s)); jax {env['jax']}, torch {env.get('torch')}")
    res: dict[str, Any] = {"environment": env, "settings": dataclasses.asdict(settings)}
    rate = lambda: {m["dtype"]: m["tflops"] for m in res["matmul"]}
    phases = (("matmul", lambda d: bench_matmul(settings.matmul_size)),
              ("inversion", lambda d: bench_inversion(settings, d, rate())),
              ("torch", lambda d: bench_torch(settings, d, rate()["float32"])),
              ("encode", lambda d: bench_encode(settings, d)),
              ("metrics", lambda d: bench_metrics(settings, d)),
              ("inversion_memory", lambda d: bench_memory(settings, d)))
    for name, fn in phases:
        p0 = time.perf_counter()
        res[name] = fn(_Deadline(settings.cap(name)))
        res[f"{name}_wall_s"] = time.perf_counter() - p0
        printer(f"\n## {name} ({res[f'{name}_wall_s']:.1f} s, cap {settings.cap(name):.0f} s)")
        printer(format_table(res[name]))
    res["paper_jobs"] = paper_jobs(settings, res["inversion"], res["matmul"])
    res["speedups"] = _speedups(res["inversion"], res["torch"])
    for name in ("paper_jobs", "speedups"):
        printer(f"\n## {name}\n" + format_table(res[name]))
    res["wall_s"] = time.perf_counter() - t0
    res["peak_memory"] = peak_memory()
    tag = env["jax_backend"] + ("-smoke" if settings.smoke else "")
    path = os.path.join(out_dir, f"bench-{tag}.json")
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(path, res)
    printer(f"\ntotal {res['wall_s']:.1f} s; wrote {path}")
    return res, path
