"""Input-pipeline speed: decode + CLIP preprocessing to 224x224, and encoder vs pipeline.

1. Caltech101 CoOp test split (2,465 real JPEGs, mostly ~300x200) through
   ``ImageBatchLoader``: images/s for exact and fast (``PIL.Image.draft``) decode and a
   few thread counts, plus the mean abs difference fast vs exact.
2. "Large photos": Caltech101 test images upscaled to a 1024-pixel short side and saved
   as JPEG (quality 90), where the reduced-size decode matters: exact vs fast with
   draft margins 2 (default) and 1, speed and mean abs difference vs exact.
3. Encoder vs pipeline: a randomly initialised CLIP ViT-B/32 image tower (jitted, float32)
   on its own, the pipeline on its own, and the pipeline feeding the encoder.

The page cache is warmed before timing (numbers are decode + preprocess, not disk).
``images_per_cpu_s`` (images per CPU-second of the whole process) is robust to other
jobs sharing the CPUs; with N free cores and N threads the wall rate approaches N times it.
Differences are in normalised units (CLIP std ~0.27: one grey level of 255 is ~0.0146).

Usage: python benchmarks/bench_data.py [--root DATA_ROOT] [--threads 1,2,4] [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, write_results  # noqa: E402

import crossgap_jax.data as cgd  # noqa: E402
from crossgap_jax.bench.compare import format_table  # noqa: E402

GREY_LEVEL = 1.0 / 255.0 / 0.27  # one grey level in normalised units (approximately)


def _default_root() -> str:
    env = os.environ.get(cgd.ENV_VAR)
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.normpath(os.path.join(repo, "..", "shared", "data"))


def _warm(split: cgd.ImageSplit) -> None:
    for p in split.paths or []:
        with open(p, "rb") as f:
            f.read()


def _time_loader(split: cgd.ImageSplit, batch_size: int, **kw) -> dict:
    """Wall time and CPU time (all threads) of one pass; CPU time is robust to contention."""
    loader = cgd.ImageBatchLoader(split, batch_size, **kw)
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for b in loader:
        n += int(b.mask.sum())
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"images": n, "seconds": secs, "images_per_s": n / secs,
            "images_per_cpu_s": n / cpu if cpu else float("nan")}


def _mad(split: cgd.ImageSplit, batch_size: int, threads: int, **fast_kw) -> tuple[float, float]:
    """Mean and max per-image mean abs difference, fast vs exact decode, over the split."""
    exact = cgd.ImageBatchLoader(split, batch_size, fast_decode=False, num_threads=threads)
    fast = cgd.ImageBatchLoader(split, batch_size, num_threads=threads, **fast_kw)
    per_image = []
    for a, b in zip(exact, fast):
        m = a.mask & b.mask
        if m.any():
            per_image.append(np.abs(a.images[m] - b.images[m]).mean(axis=(1, 2, 3)))
    d = np.concatenate(per_image)
    return float(d.mean()), float(d.max())


def _make_large(split: cgd.ImageSplit, n: int, short_side: int, folder: str) -> cgd.ImageSplit:
    paths, items = [], []
    step = max(1, len(split) // n)
    for k, i in enumerate(range(0, len(split), step)[:n]):
        im = split.open_image(i)
        w, h = im.size
        f = short_side / min(w, h)
        big = im.resize((round(w * f), round(h * f)), Image.BICUBIC)
        p = os.path.join(folder, f"large_{k:04d}.jpg")
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=90)
        with open(p, "wb") as fh:
            fh.write(buf.getvalue())
        paths.append(p)
        items.append(split.items[i])
    return cgd.ImageSplit("caltech101-large", "test", items=items, paths=paths)


def _encoder_part(split: cgd.ImageSplit, batch_size: int, threads: int, n_batches: int,
                  pipeline_ips: float) -> tuple[list[dict], dict]:
    try:
        import functools

        import jax

        from crossgap_jax.models import get_config
        from crossgap_jax.models.clip import model as clip
    except Exception as e:  # noqa: BLE001 - the model layer is optional here
        return [], {"encoder": f"TODO: no usable crossgap_jax.models.clip.model ({e!r})"}
    cfg = get_config("ViT-B/32")
    params = clip.init_params(cfg, 0)
    enc = jax.jit(functools.partial(clip.encode_image, config=cfg))
    x = np.zeros((batch_size, 224, 224, 3), np.float32)
    enc(params, x).block_until_ready()  # compile
    t0 = time.perf_counter()
    for _ in range(n_batches):
        enc(params, x).block_until_ready()
    enc_s = time.perf_counter() - t0
    enc_ips = n_batches * batch_size / enc_s
    sub = split.subset(np.arange(min(len(split), n_batches * batch_size)))
    loader = cgd.ImageBatchLoader(sub, batch_size, num_threads=threads, prefetch_batches=2)
    t0 = time.perf_counter()
    wait = 0.0
    n = 0
    it = iter(loader)
    while True:
        tw = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            break
        wait += time.perf_counter() - tw
        enc(params, b.images).block_until_ready()
        n += int(b.mask.sum())
    both_s = time.perf_counter() - t0
    both_ips = n / both_s
    bottleneck = "encoder" if enc_ips < pipeline_ips else "pipeline"
    rows = [
        {"case": "ViT-B/32 encoder alone", "mode": "jit f32", "threads": "-",
         "images": n_batches * batch_size, "seconds": enc_s, "images_per_s": enc_ips},
        {"case": "pipeline -> ViT-B/32", "mode": "fast", "threads": threads, "images": n,
         "seconds": both_s, "images_per_s": both_ips},
    ]
    info = {
        "encoder": "ViT-B/32 random init, float32, jax.jit, CPU",
        "encoder_images_per_s": enc_ips,
        "pipeline_images_per_s": pipeline_ips,
        "combined_images_per_s": both_ips,
        "consumer_wait_fraction": wait / both_s,
        "bottleneck": bottleneck,
    }
    return rows, info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=_default_root(), help="data root (with caltech101/)")
    ap.add_argument("--threads", default="1,2,4", help="decode thread counts to try")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--large", type=int, default=200, help="number of upscaled large JPEGs")
    ap.add_argument("--encoder-batches", type=int, default=3)
    ap.add_argument("--no-encoder", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer images, for a smoke run")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    load_start = os.getloadavg()  # the CPUs may be shared: report how busy they were
    split = cgd.get_dataset("caltech101", args.root, "test")
    if args.quick:
        split = split.subset(np.arange(256))
        args.large = min(args.large, 32)
    _warm(split)
    bs = args.batch_size
    rows: list[dict] = []
    best = (0.0, threads[0])
    for t in threads:
        for mode in ("exact", "fast"):
            r = _time_loader(split, bs, num_threads=t, fast_decode=(mode == "fast"))
            rows.append({"case": f"caltech101 test ({len(split)})", "mode": mode, "threads": t,
                         **r})
            if mode == "fast" and r["images_per_s"] > best[0]:
                best = (r["images_per_s"], t)
            print(format_table(rows[-1:]), flush=True)
    best_ips, best_t = best
    mad_c, max_c = _mad(split, bs, best_t)
    for r in rows:
        if r["mode"] == "fast":
            r["mad_vs_exact"] = mad_c
            r["max_image_mad"] = max_c

    with tempfile.TemporaryDirectory() as tmp:
        large = _make_large(split, args.large, 1024, tmp)
        _warm(large)
        for mode, kw in (("exact", {"fast_decode": False}), ("fast m=2", {"draft_margin": 2.0}),
                         ("fast m=1", {"draft_margin": 1.0})):
            r = _time_loader(large, bs, num_threads=best_t, **kw)
            row = {"case": f"large JPEGs 1024px ({len(large)})", "mode": mode, "threads": best_t,
                   **r}
            if mode != "exact":
                row["mad_vs_exact"], row["max_image_mad"] = _mad(large, bs, best_t, **kw)
            rows.append(row)
            print(format_table(rows[-1:]), flush=True)

    extra: dict = {"load_average_at_start": load_start, "load_average_at_end": None,
                   "goal_images_per_s": 250, "best_caltech_fast_images_per_s": best_ips,
                   "best_threads": best_t, "grey_level_in_normalised_units": GREY_LEVEL}
    if not args.no_encoder:
        enc_rows, info = _encoder_part(split, 64, best_t, args.encoder_batches, best_ips)
        rows += enc_rows
        extra.update(info)
    extra["load_average_at_end"] = os.getloadavg()
    cols = ["case", "mode", "threads", "images", "seconds", "images_per_s", "images_per_cpu_s",
            "mad_vs_exact", "max_image_mad"]
    print()
    print(format_table(rows, cols))
    for k, v in extra.items():
        print(f"{k}: {v}")
    env = environment()
    print(f"cpu_count: {env.get('cpu_count')}, jax: {env.get('jax', '-')}")
    path = write_results("bench_data", rows, extra)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
