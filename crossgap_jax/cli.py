"""``crossgap-jax``: a thin command line over the library (all work is in importable functions).

Examples::

    crossgap-jax demo
    crossgap-jax list
    crossgap-jax convert ViT-B-32.pt vitb32.safetensors
    crossgap-jax reproduce --preset clip_vitb32 --datasets caltech101,coco_text \\
        --data-root /data --run-dir results/b32
    crossgap-jax retrieve --preset clip_vitb32 --dataset caltech101 --query-type oti
    crossgap-jax analyze --preset clip_vitb32 --dataset caltech101 --num-tokens 1,4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from crossgap_jax.pipeline.presets import get_preset, list_presets

_OVERRIDES = ("learning_rate", "weight_decay", "batch_size", "oti_steps", "ovi_steps",
              "num_pseudo_tokens", "ovi_num_pseudo_tokens", "template_sentence", "seed", "model",
              "pretrained")


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def _isoclip_k_arg(s: str) -> tuple[int, int]:
    """``--isoclip-k TOP,BOTTOM``: two non-negative integers."""
    parts = [p.strip() for p in s.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected TOP,BOTTOM (two non-negative integers, e.g. 150,50), got {s!r}")
    return int(parts[0]), int(parts[1])


def _add_isoclip_k(p: argparse.ArgumentParser) -> None:
    p.add_argument("--isoclip-k", type=_isoclip_k_arg, default=None, metavar="TOP,BOTTOM",
                   help="IsoCLIP: drop the TOP largest and BOTTOM smallest singular directions "
                        "(default: the IsoCLIP authors' value for the backbone; an error when "
                        "they published none)")


def _names(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and run")
    g.add_argument("--preset", default="clip_vitb32", help=f"one of: {', '.join(list_presets())}")
    g.add_argument("--checkpoint", help="checkpoint path / hub id (overrides the preset's source)")
    g.add_argument("--tokenizer", default=None,
                   help="tokenizer model for families that need one (SigLIP's spiece.model)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    g.add_argument("--run-dir", default=None, help="output folder (default results/<preset>)")
    g.add_argument("--data-root", default=None,
                   help="dataset root (default $CROSSGAP_SHARED_DATA)")
    g.add_argument("--on-error", default="skip", choices=["skip", "raise"],
                   help="corrupt images: skip and count, or stop")
    g.add_argument("--max-queries", type=int, default=None,
                   help="smoke runs: a seeded random subset of the queries")
    g.add_argument("--max-gallery", type=int, default=None,
                   help="smoke runs: gallery capped (positives of the chosen queries first)")
    g.add_argument("--shard-size", type=int, default=256,
                   help="items per atomic inversion result file (resumable unit)")
    g.add_argument("--authors-assets", default=None, metavar="DIR",
                   help="checkout of the paper authors' repository (or its "
                        "data/summarized_texts): use their LLM summaries as gallery texts "
                        "(IMDB, 20 Newsgroups, NanoBEIR) and their 20 Newsgroups queries")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (multi-host runs; on TPU pods and "
                        "SLURM/Open MPI clusters the three options below are detected)")
    g.add_argument("--coordinator-address", default=None,
                   help="host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, default=None,
                   help="processes in the run (default $CROSSGAP_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None,
                   help="this process, 0..num-processes-1 (default $CROSSGAP_PROCESS_ID)")
    c = p.add_argument_group("compatibility switches (docs/fidelity.md)")
    c.add_argument("--metric-variant", default="standard", choices=["standard", "authors"],
                   help="standard: the metric definitions; authors: the authors' code (mAP@R "
                        "on all-vs-all splits counts R before removing the query; queries "
                        "without a relevant item count as 0)")
    c.add_argument("--loss-reduction", default="per_example", choices=["per_example", "mean"],
                   help="OTI/OVI objective: per_example (default) or mean (the authors' batch "
                        "mean over consecutive batches of --batch-size items)")
    c.add_argument("--revisitop1m", default="auto", metavar="DIR|auto|none",
                   help="ROxford/RParis +1M distractors: auto (use <data root>/revisitop1m/jpg "
                        "when it exists, as the authors do), none, or the folder")
    o = p.add_argument_group("preset overrides (the authors' keys)")
    for key in _OVERRIDES:
        o.add_argument("--" + key.replace("_", "-"), dest=key, default=None)


def _init_distributed(args) -> None:
    """``jax.distributed.initialize`` from the options, else the environment, else JAX's
    cluster detection (TPU pods, SLURM, Open MPI)."""
    import jax

    def env_int(name: str) -> int | None:
        v = os.environ.get(name)
        if v is None or v.strip() == "":
            return None
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"${name} must be an integer, got {v!r}") from None

    num = args.num_processes if args.num_processes is not None else env_int(
        "CROSSGAP_NUM_PROCESSES")
    pid = args.process_id if args.process_id is not None else env_int("CROSSGAP_PROCESS_ID")
    if num is not None and pid is not None and not 0 <= pid < num:
        raise ValueError(f"--process-id must be in 0..{num - 1} (--num-processes {num}), "
                         f"got {pid}")
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=num, process_id=pid)


def _make_run(args, record_steps: Sequence[int] = ()):
    from crossgap_jax.pipeline.run import make_run

    if args.distributed:
        _init_distributed(args)
    cfg = get_preset(args.preset, **{k: getattr(args, k) for k in _OVERRIDES},
                     isoclip_k=getattr(args, "isoclip_k", None))
    run_dir = args.run_dir or os.path.join("results", args.preset)
    return make_run(run_dir, cfg, data_root=args.data_root, progress=not args.quiet,
                    on_error=args.on_error, record_steps=record_steps,
                    checkpoint=args.checkpoint, dtype=args.dtype,
                    max_queries=args.max_queries, max_gallery=args.max_gallery,
                    shard_size=args.shard_size, tokenizer=args.tokenizer,
                    authors_assets=args.authors_assets,
                    metric_variant=args.metric_variant, loss_reduction=args.loss_reduction,
                    revisitop1m=args.revisitop1m)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def cmd_list(args) -> int:
    from crossgap_jax.data import list_datasets
    from crossgap_jax.models import list_architectures

    print("presets:", ", ".join(list_presets()))
    print("architectures:", ", ".join(list_architectures()))
    print("datasets (found under the data root):")
    for e in list_datasets(args.data_root):
        print(f"  {e.name:18s} {e.modality:5s} query={e.query_split:8s} "
              f"gallery={e.gallery_split:8s} {e.found or '-'}")
    return 0


def cmd_convert(args) -> int:
    from crossgap_jax.models import load_clip
    from crossgap_jax.models.checkpoints import save_native

    if args.arch:
        clip = load_clip(args.arch, args.source, allow_pickle=args.allow_pickle)
    else:
        clip = load_clip(args.source, allow_pickle=args.allow_pickle)
    save_native(args.out, clip.config, clip.params, metadata={"converted_from": args.source})
    print(f"wrote {args.out} ({clip.config.name})")
    return 0


def cmd_encode(args) -> int:
    run = _make_run(args)
    split = run.split(args.dataset, args.split)
    fs = run.features(split, template=args.template)
    print(f"{len(fs)} features {fs.features.shape} for {split!r}; skipped {len(fs.skipped)}"
          + (f"; {len(fs.rescaled)} 16-bit/float images scaled to 8 bits" if fs.rescaled else ""))
    return 0


def cmd_invert(args) -> int:
    run = _make_run(args, record_steps=_ints(args.record_steps))
    task = run.task(args.dataset)
    split = task.query if args.split in (None, "query") else (
        task.gallery if args.split == "gallery" else None)
    if split is None:
        from crossgap_jax.data import get_dataset

        split = get_dataset(args.dataset, run.data_root, args.split)
    inv = run.side_features(split, args.method)
    print(f"{args.method.upper()}: {len(inv)} items -> {inv.meta['inversion_dir']}")
    return 0


def cmd_retrieve(args) -> int:
    from crossgap_jax.fileio import atomic_write_json

    run = _make_run(args)
    m = run.retrieve(args.dataset, args.query_type, args.gallery_type)
    path = os.path.join(run.run_dir, f"retrieve-{args.dataset.replace(':', '_')}-"
                                     f"{m['query_type']}-{m['gallery_type']}.json")
    atomic_write_json(path, m)
    _print_json(m)
    return 0


def cmd_classify(args) -> int:
    from crossgap_jax.fileio import atomic_write_json

    run = _make_run(args)
    m = run.classify(args.dataset, _names(args.variants), split=args.split)
    atomic_write_json(os.path.join(run.run_dir, f"classify-{args.dataset}.json"), m)
    _print_json(m)
    return 0


def cmd_reproduce(args) -> int:
    from crossgap_jax.pipeline.run import reproduce

    presets = _names(args.presets) if args.presets else [args.preset]
    base = args.run_dir or "results"
    for preset in presets:
        args.preset = preset
        args.run_dir = os.path.join(base, preset) if (len(presets) > 1 or not
                                                      args.run_dir) else base
        run = _make_run(args)
        res = reproduce(run, _names(args.datasets))
        print(open(os.path.join(run.run_dir, "table.md")).read())
        del res
    return 0


def cmd_analyze(args) -> int:
    from crossgap_jax.pipeline.analyze import analyze

    run = _make_run(args)
    res = analyze(run, args.dataset, num_tokens=_ints(args.num_tokens),
                  record_steps=_ints(args.record_steps) or None)
    _print_json({"curves": res["curves"], "modality_gap": res["modality_gap"]})
    return 0


def cmd_demo(args) -> int:
    from crossgap_jax.demo import run_demo

    run_demo(out_dir=args.out, quick=args.quick)
    return 0


def cmd_bench(args) -> int:
    from crossgap_jax.bench import full_settings, run_bench, smoke_settings

    run_bench(smoke_settings() if args.smoke else full_settings(), out_dir=args.out_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossgap-jax", description=__doc__.split("\n")[0])
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="the offline demo on the embedded model and data")
    s.add_argument("--out", default="results/demo")
    s.add_argument("--quick", action="store_true", help="fewer items and steps")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("bench", help="JAX vs the authors' PyTorch on this device "
                                     "(docs/performance.md)")
    s.add_argument("--smoke", action="store_true", help="tiny sizes (CI, any CPU, < 1 min)")
    s.add_argument("--out-dir", default=os.path.join("benchmarks", "results"),
                   help="where bench-<backend>[-smoke].json goes")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("list", help="presets, architectures, datasets found")
    s.add_argument("--data-root", default=None)
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("convert", help="any supported checkpoint -> the native format")
    s.add_argument("source")
    s.add_argument("out")
    s.add_argument("--arch", help="architecture name (default: inferred)")
    s.add_argument("--allow-pickle", action="store_true",
                   help="torch.load with weights_only=False (trusted files only)")
    s.set_defaults(fn=cmd_convert)

    s = sub.add_parser("encode", help="features of a dataset split (cached)")
    _add_run_args(s)
    s.add_argument("--dataset", required=True)
    s.add_argument("--split", default=None)
    s.add_argument("--template", default="{}")
    s.set_defaults(fn=cmd_encode)

    for method in ("oti", "ovi"):
        s = sub.add_parser(method, help=f"{method.upper()} of a split (resumable)")
        _add_run_args(s)
        s.add_argument("--dataset", required=True)
        s.add_argument("--split", default=None, help="query (default), gallery, or a split name")
        s.add_argument("--record-steps", default="", help="e.g. 17,50,150")
        s.set_defaults(fn=cmd_invert, method=method)

    s = sub.add_parser("retrieve", help="retrieval metrics with chosen feature types")
    _add_run_args(s)
    s.add_argument("--dataset", required=True)
    s.add_argument("--query-type", default=None,
                   choices=["image", "text", "oti", "ovi", "isoclip", "isotropic-window"])
    s.add_argument("--gallery-type", choices=["image", "text", "isoclip", "isotropic-window"],
                   default=None,
                   help="isoclip on both sides: the training-free IsoCLIP baseline; "
                        "isotropic-window: our own heuristic (not IsoCLIP)")
    _add_isoclip_k(s)
    s.set_defaults(fn=cmd_retrieve)

    s = sub.add_parser("classify", help="zero-shot: inter-modal vs OTI / OVI variants")
    _add_run_args(s)
    s.add_argument("--dataset", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--variants", default="inter,oti,ovi",
                   help="comma separated: inter, oti, ovi (zero-shot), ncm, isoclip-ncm "
                        "(nearest class mean over the train split)")
    _add_isoclip_k(s)
    s.set_defaults(fn=cmd_classify)

    s = sub.add_parser("reproduce", help="baseline vs inverted retrieval, tables and JSON")
    _add_run_args(s)
    s.add_argument("--datasets", required=True)
    s.add_argument("--presets", default=None, help="several presets, comma separated")
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("analyze", help="mAP vs OTI step, loss curves, similarity plots, gap")
    _add_run_args(s)
    s.add_argument("--dataset", required=True)
    s.add_argument("--num-tokens", default="1,4")
    s.add_argument("--record-steps", default="")
    s.set_defaults(fn=cmd_analyze)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing is not news
    if not hasattr(args, "quiet"):
        args.quiet = False
    try:
        return int(args.fn(args) or 0)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"crossgap-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from crossgap_jax.fileio import OutputWriteError

        if not isinstance(e, OutputWriteError):
            raise
        print(f"crossgap-jax {args.command}: error: {e}", file=sys.stderr)  # names path, cause
        return 1


if __name__ == "__main__":
    sys.exit(main())
