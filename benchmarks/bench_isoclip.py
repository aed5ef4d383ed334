"""Latency per query: IsoCLIP (training-free) vs OTI / OVI (per-query optimisation).

Same model for all rows (random weights at the real shapes of ``--arch``, ViT-B/32 by
default; latency does not depend on the weight values). Queries are ``--queries`` random
images (OTI, IsoCLIP image side) and captions (OVI, IsoCLIP text side), processed as one
batch. Every path runs once to compile, then is timed (median of ``--repeats``):

- ``encode``: the plain jitted encoder (the intra-modal baseline's cost);
- ``isoclip``: pre-projection features + IsoCLIP's map ``U_k U_k^T P_i`` / ``V_k V_k^T P_t``
  (``--isoclip-k``, default the IsoCLIP authors' ViT-B/32 values; the one-off SVD of the
  projections is reported separately);
- ``oti``: ``--oti-steps`` optimisation steps (paper: 150), starting from the encoded
  image features (so the row includes the encoder);
- ``ovi``: the paper's 1000 steps are too slow for a CPU benchmark: ``--ovi-steps`` are
  timed and the per-query latency at 1000 steps is extrapolated linearly (flagged).

Usage: python benchmarks/bench_isoclip.py [--arch ViT-B/32] [--queries 16] [--repeats 3]
       [--isoclip-k 150,50 --isoclip-k-text 20,100]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, time_call, write_results  # noqa: E402

from crossgap_jax.bench.compare import format_table  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ViT-B/32")
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--oti-steps", type=int, default=150)
    ap.add_argument("--ovi-steps", type=int, default=20)
    ap.add_argument("--ovi-tokens", type=int, default=1)
    ap.add_argument("--tokenizer", default=None, help="spiece.model for SigLIP architectures")
    ap.add_argument("--isoclip-k", default="150,50", help="image side TOP,BOTTOM")
    ap.add_argument("--isoclip-k-text", default="20,100", help="text side TOP,BOTTOM")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)

    import dataclasses

    from crossgap_jax.baselines.isoclip import (
        inter_modal_svd,
        isoclip_image_features,
        isoclip_map,
        isoclip_text_features,
        projection_heads,
    )
    from crossgap_jax.inversion import oti, ovi
    from crossgap_jax.models import create_clip

    clip = create_clip(args.arch, seed=0)
    if args.tokenizer:
        clip = dataclasses.replace(clip, tokenizer_file=args.tokenizer)
    n, s = args.queries, clip.config.vision.image_size
    pixels = np.random.default_rng(0).uniform(-1, 1, (n, s, s, 3)).astype(np.float32)
    texts = [f"a photo of a {w} next to a wooden table at night" for w in range(n)]
    ids = clip.tokenize(texts)
    kw = dict(batch_size=n)

    # One-off per model: SVD of the projections (float64 NumPy; the first call also starts
    # the BLAS thread pool, so the steady time is reported), then one map per side.
    heads = projection_heads(clip)
    k_i = tuple(int(v) for v in args.isoclip_k.split(","))
    k_t = tuple(int(v) for v in args.isoclip_k_text.split(","))
    svd = inter_modal_svd(*(h.augmented() for h in heads))
    _, svd_s = time_call(lambda: inter_modal_svd(*(h.augmented() for h in heads)), 1)
    map_i = isoclip_map(*heads, "image", *k_i, svd=svd)
    map_t = isoclip_map(*heads, "text", *k_t, svd=svd)

    rows: list[dict] = []

    def add(method: str, side: str, steps: int | None, first: float, steady: float,
            note: str = "") -> None:
        rows.append({"method": method, "query side": side, "steps": steps,
                     "first_call_s": first, "batch_s": steady,
                     "ms_per_query": 1e3 * steady / n, "note": note})

    add("encode", "image", None, *time_call(lambda: clip.encode_image(pixels, **kw), args.repeats))
    add("encode", "text", None, *time_call(lambda: clip.encode_text(ids, **kw), args.repeats))
    add("isoclip", "image", None, *time_call(
        lambda: isoclip_image_features(clip, pixels, map_i, **kw), args.repeats),
        f"k={k_i}: {map_i.num_kept} of {map_i.rank} kept; SVD once {svd_s:.3f}s")
    add("isoclip", "text", None, *time_call(
        lambda: isoclip_text_features(clip, ids, map_t, **kw), args.repeats),
        f"k={k_t}: {map_t.num_kept} of {map_t.rank} kept")

    def run_oti():
        return oti(clip, clip.encode_image(pixels, **kw), steps=args.oti_steps, batch_size=n,
                   progress=False)

    add("oti", "image", args.oti_steps, *time_call(run_oti, args.repeats))

    def run_ovi():
        return ovi(clip, clip.encode_text(ids, **kw), steps=args.ovi_steps,
                   num_tokens=args.ovi_tokens, batch_size=n, progress=False)

    first, steady = time_call(run_ovi, args.repeats)
    add("ovi", "text", args.ovi_steps, first, steady)
    per_step = steady / args.ovi_steps
    rows.append({"method": "ovi", "query side": "text", "steps": 1000, "first_call_s": None,
                 "batch_s": per_step * 1000, "ms_per_query": 1e3 * per_step * 1000 / n,
                 "note": f"extrapolated from {args.ovi_steps} steps"})

    cols = ["method", "query side", "steps", "first_call_s", "batch_s", "ms_per_query", "note"]
    print(f"{args.arch}, {n} queries per batch, {environment().get('jax_backend')}")
    print(format_table(rows, cols))
    path = write_results("bench_isoclip", rows, extra={
        "arch": args.arch, "queries": n, "isoclip_image": map_i.info(),
        "isoclip_text": map_t.info(), "svd_seconds": svd_s,
        "args": vars(args)}, out_dir=args.out_dir)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
