"""ViT-B/32 encoding throughput on this machine: jitted JAX vs transformers' PyTorch CLIPModel.

Random weights at the real ViT-B/32 shapes (throughput does not depend on the values).
Batch 64: images 224x224, texts the real COCO captions when the shared data is present
(else synthetic captions) padded to 77 tokens. Reported per backend: compile / first-call
time (JAX) and steady-state images/s and texts/s (median of ``--repeats`` timed batches
after one warm-up). An extra JAX row runs the text tower on the first EOT+1 positions
only (exact for CLIP's causal text tower; the shortcut OTI uses).

The row ``text input check (host)`` times what ``CLIP.encode_text`` adds before the
compiled call: :func:`~crossgap_jax.models.inputs.check_text_inputs` (shape, vocabulary
range, EOT positions) over the same batch, once per call; ``check_ratio`` is its time over
the compiled text call's. ``--arch tiny`` gives a quick run (the ratio is then an upper
bound: the tiny model's call is far cheaper than ViT-B/32's).

Usage: python benchmarks/bench_encode.py [--repeats 5] [--batch 64] [--bf16] [--no-torch]
       [--arch ViT-B/32]
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, time_call, write_results  # noqa: E402

from crossgap_jax.bench.compare import format_table  # noqa: E402


def _captions(n: int) -> list[str]:
    root = os.environ.get("CROSSGAP_SHARED_DATA") or str(
        pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
    path = pathlib.Path(root) / "coco_karpathy" / "test5k_captions.txt"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [lines[i % len(lines)] for i in range(n)]
    return [f"a photo of a {w} on a table next to a window" for w in range(n)]





def bench_jax(pixels, ids, eot, repeats: int, dtype: str, arch: str = "ViT-B/32") -> list[dict]:
    import jax
    import jax.numpy as jnp

    from crossgap_jax.models.bundle import resolve_dtype
    from crossgap_jax.models.clip import model as clip_lib
    from crossgap_jax.models.configs import get_config
    from crossgap_jax.models.inputs import check_text_inputs

    config = get_config(arch)
    dt = resolve_dtype(dtype)
    params = jax.device_put(clip_lib.init_params(config, 0))
    enc_img = jax.jit(functools.partial(clip_lib.encode_image, config=config, dtype=dt))
    enc_txt = jax.jit(functools.partial(clip_lib.encode_text, config=config, dtype=dt))
    x = jnp.asarray(pixels.transpose(0, 2, 3, 1))  # NHWC
    t, e = jnp.asarray(ids), jnp.asarray(eot)
    length = int(eot.max()) + 1
    t_short = jnp.asarray(ids[:, :length])
    rows = []
    for what, fn, lower in (
        ("image", lambda: enc_img(params, x).block_until_ready(),
         lambda: enc_img.lower(params, x).compile()),
        ("text", lambda: enc_txt(params, t, e).block_until_ready(),
         lambda: enc_txt.lower(params, t, e).compile()),
        (f"text EOT+1 ({length} pos)", lambda: enc_txt(params, t_short, e).block_until_ready(),
         lambda: enc_txt.lower(params, t_short, e).compile()),
    ):
        t0 = time.perf_counter()
        lower()
        compile_s = time.perf_counter() - t0
        _, steady = time_call(fn, repeats)
        rows.append({"backend": f"jax {dtype}", "input": what, "batch": len(ids),
                     "compile_s": compile_s, "batch_s": steady, "per_s": len(ids) / steady})
    # The host-side input check CLIP.encode_text runs once per call, before the compiled code.
    ids_host = np.asarray(ids)
    _, check_s = time_call(lambda: check_text_inputs(ids_host, None, config), max(repeats, 20))
    text_s = next(r["batch_s"] for r in rows if r["input"] == "text")
    rows.append({"backend": f"jax {dtype}", "input": "text input check (host)",
                 "batch": len(ids), "compile_s": None, "batch_s": check_s,
                 "per_s": len(ids) / check_s, "check_ratio": check_s / text_s})
    return rows


def bench_torch(pixels, ids, repeats: int, attn: str) -> list[dict]:
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"eos_token_id": 49407, "bos_token_id": 49406},
                        vision_config={}, projection_dim=512)
    config._attn_implementation = attn  # "sdpa" (transformers' default) or "eager"
    model = CLIPModel(config).eval()
    x, t = torch.from_numpy(pixels), torch.from_numpy(ids.astype(np.int64))
    rows = []
    with torch.inference_mode():
        for what, fn in (("image", lambda: model.get_image_features(pixel_values=x)),
                         ("text", lambda: model.get_text_features(input_ids=t))):
            first, steady = time_call(fn, repeats)
            rows.append({"backend": f"torch {attn}", "input": what, "batch": len(ids),
                         "compile_s": None, "first_call_s": first, "batch_s": steady,
                         "per_s": len(ids) / steady})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="also time bfloat16 compute")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--arch", default="ViT-B/32",
                    help="CLIP architecture of the JAX rows (torch rows are ViT-B/32)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)

    from crossgap_jax.models.clip.tokenizer import eot_indices, get_tokenizer
    from crossgap_jax.models.configs import get_config

    size = get_config(args.arch).vision.image_size
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((args.batch, 3, size, size)).astype(np.float32)  # NCHW
    ids = get_tokenizer()(_captions(args.batch))
    eot = eot_indices(ids)

    rows = bench_jax(pixels, ids, eot, args.repeats, "float32", args.arch)
    if args.bf16:
        rows += bench_jax(pixels, ids, eot, args.repeats, "bfloat16", args.arch)
    if not args.no_torch and args.arch != "ViT-B/32":
        print(f"torch rows skipped: they time ViT-B/32, not {args.arch}")
    elif not args.no_torch:
        rows += bench_torch(pixels, ids, args.repeats, "sdpa")
        rows += bench_torch(pixels, ids, args.repeats, "eager")
    cols = ["backend", "input", "batch", "compile_s", "batch_s", "per_s", "check_ratio"]
    env = environment()
    print(", ".join(f"{k}={env[k]}" for k in ("jax", "jax_backend", "torch", "torch_threads",
                                              "cpu_count") if k in env))
    print(format_table(rows, cols))
    path = write_results("bench_encode", rows, {"model": f"{args.arch} (random weights)",
                                                "repeats": args.repeats},
                         out_dir=args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
