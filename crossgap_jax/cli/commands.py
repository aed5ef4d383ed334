"""The subcommands: each a thin call of a library function (``cmd_<name>(args) -> status``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import jax

from crossgap_jax import demo
from crossgap_jax.baselines import DEFAULT_SPAN_REDUCE, read_span_classes
from crossgap_jax.bench import full_settings, run_bench, smoke_settings
from crossgap_jax.cli.checks import (
    baseline_settings,
    check_root,
    cli_words,
    data_roots,
    one_line,
    process_ids,
    source_option,
    validate,
)
from crossgap_jax.cli.options import (
    PROG,
    CLIError,
)
from crossgap_jax.data import ENV_VAR, list_datasets, resolve_root
from crossgap_jax.models import list_architectures, load_clip, native_config, save_native
from crossgap_jax.pipeline import (
    DatasetFailure,
    HWFewShotSettings,
    Preset,
    RunSettings,
    analysis_summary,
    classify,
    classify_table,
    compare_methods,
    hw_few_shot,
    hw_printout,
    hw_table,
    indicators,
    indicators_table,
    list_presets,
    make_run,
    pretrained_aliases,
    provenance,
    retrieval_table,
    retrieve,
    write_record,
)
from crossgap_jax.pipeline.analyze import analyze
from crossgap_jax.pipeline.reproduce import reproduce
from crossgap_jax.retrieval import DEFAULT_SHOTS


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------
def _init_distributed(args) -> None:
    """``jax.distributed.initialize`` from the options, else the environment, else JAX's
    cluster detection (TPU pods, SLURM, Open MPI)."""

    num, pid = process_ids(args)
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=num, process_id=pid)


def _make_run(args, cfg: Preset | None = None, record_steps: Sequence[int] = (),
              data_root: str | None = None):
    if args.distributed:
        _init_distributed(args)
    if cfg is None:
        cfg = args.runs[0][1] if getattr(args, "runs", None) else validate(args)[0][1]
    if data_root is None and isinstance(args.data_root, str):
        data_root = args.data_root
    try:
        settings = RunSettings(
            cfg, dtype=args.dtype, max_queries=getattr(args, "max_queries", None),
            max_gallery=getattr(args, "max_gallery", None),
            authors_assets=getattr(args, "authors_assets", None),
            metric_variant=getattr(args, "metric_variant", "standard"),
            loss_reduction=getattr(args, "loss_reduction", "per_example"),
            revisitop1m=getattr(args, "revisitop1m", "auto"),
            baselines=baseline_settings(args), ovi_text=getattr(args, "ovi_text", "authors"),
            qrels_missing=getattr(args, "qrels_missing", "drop"),
            exif_transpose=bool(getattr(args, "exif_transpose", False)),
            verify_data=getattr(args, "verify_data", False), on_error=args.on_error,
            record_steps=tuple(record_steps))
        run = make_run(args.run_dir, settings, checkpoint=args.checkpoint,
                       tokenizer=args.tokenizer, model_explicit=args.model is not None,
                       data_root=data_root, progress=not args.quiet,
                       shard_size=getattr(args, "shard_size", 256))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CLIError(f"{source_option(args)}: {one_line(e)}") from None
    args.run_dir_resolved = run.run_dir
    return run


def _write_outputs(run, args, results: dict, key: dict, table: str | None = None,
                   prov: dict | None = None) -> str:
    """The command's own record under ``<run_dir>/records/`` and ``--output``, with the
    provenance the command already built (``prov``, else the one ``results`` holds; built
    here only when neither has one: once per command)."""

    return write_record(run, args.command, results, key=key, argv=_ARGV.get(), table=table,
                        also_to=getattr(args, "output", None),
                        prov=prov if prov is not None else results.get("provenance"))


def cmd_list(args) -> int:
    if args.data_root is not None:
        check_root(args.data_root, "--data-root")
    print("presets:", ", ".join(list_presets()))
    print("architectures:", ", ".join(list_architectures()))
    print("pretrained names (--pretrained NAME):")

    for name, path in pretrained_aliases().items():
        arch = native_config(path)
        print(f"  {name:18s} {arch.name if arch else '(missing)'}  {path}")
    try:
        root = resolve_root(args.data_root)
        print(f"datasets (found under the data root {root}):")
    except ValueError:
        print(f"datasets (no data root set: pass --data-root or set ${ENV_VAR}; only the "
              "packaged ones are found):")
    for e in list_datasets(args.data_root):
        print(f"  {e.name:18s} {e.modality:5s} query={e.query_split:8s} "
              f"gallery={e.gallery_split:8s} {e.found or '-'}")
    return 0


def cmd_convert(args) -> int:
    try:
        if args.arch:
            clip = load_clip(args.arch, args.source, allow_pickle=args.allow_pickle)
        else:
            clip = load_clip(args.source, allow_pickle=args.allow_pickle)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CLIError(f"{args.source}: {one_line(e)}".replace(
            "convert it once with `crossgap-jax convert --allow-pickle SRC OUT.safetensors`",
            "pass --allow-pickle")) from None
    save_native(args.out, clip.config, clip.params, metadata={"converted_from": args.source})
    print(f"wrote {args.out} ({clip.config.name})")
    return 0


def cmd_encode(args) -> int:
    run = _make_run(args)
    split = run.split(args.dataset, args.split)
    fs = run.features(split, template=args.template)
    path = _write_outputs(run, args, {"num_features": len(fs), "shape": list(fs.features.shape),
                                      "num_skipped": len(fs.skipped),
                                      "num_rescaled": len(fs.rescaled), "split": split.split},
                          key={"dataset": args.dataset, "split": split.split,
                               "template": args.template})
    print(f"{len(fs)} features {fs.features.shape} for {split!r}; skipped {len(fs.skipped)}"
          + (f"; {len(fs.rescaled)} 16-bit/float images scaled to 8 bits" if fs.rescaled else ""))
    print(f"record: {path}")
    return 0


def cmd_invert(args) -> int:
    run = _make_run(args, record_steps=args.record_steps)
    task = run.task(args.dataset)
    split = task.query if args.split in (None, "query") else (
        task.gallery if args.split == "gallery" else None)
    if split is None:
        split = run.split(args.dataset, args.split)
    inv = run.side_features(split, args.method)
    path = _write_outputs(run, args, {"num_items": len(inv), "split": split.split,
                                      "inversion_dir": inv.meta["inversion_dir"]},
                          key={"dataset": args.dataset, "split": split.split,
                               "record_steps": list(args.record_steps)})
    print(f"{args.method.upper()}: {len(inv)} items -> {inv.meta['inversion_dir']}")
    print(f"record: {path}")
    return 0


def cmd_retrieve(args) -> int:
    run = _make_run(args)
    m = retrieve(run, args.dataset, args.query_type, args.gallery_type, split=args.split)
    prov = provenance(run)
    table = retrieval_table(prov, args.dataset, m)
    path = _write_outputs(run, args, m, key={"dataset": args.dataset, "split": args.split,
                                             "query_type": m["query_type"],
                                             "gallery_type": m["gallery_type"]}, table=table,
                          prov=prov)
    print(table)
    print(f"record: {path}")
    return 0


def cmd_classify(args) -> int:
    run = _make_run(args)
    m = classify(run, args.dataset, args.variants, split=args.split)
    prov = provenance(run)
    table = classify_table(prov, args.dataset, m)
    path = _write_outputs(run, args, m, key={"dataset": args.dataset, "split": m["split"],
                                             "variants": list(args.variants)}, table=table,
                          prov=prov)
    print(table)
    print(f"record: {path}")
    return 0


def cmd_reproduce(args) -> int:
    runs = args.runs
    default, per = data_roots(args.data_root, args.datasets)
    base = args.run_dir
    failures = []
    for preset, cfg in runs:
        args.preset = preset
        if len(runs) > 1:
            args.run_dir = os.path.join(base or "results", preset)
        run = _make_run(args, cfg, data_root=default)
        try:
            res, table = reproduce(run, args.datasets, roots=per)  # as written to table.md
        except DatasetFailure as e:
            res, table = e.results, e.table
            failures.append(e)
        path = _write_outputs(run, args, res, key={"datasets": list(args.datasets)}, table=table)
        if table:
            print(table)
        print(f"record: {path}")
    if failures:
        for e in failures:
            print(f"{PROG} reproduce: error: {cli_words(str(e))}", file=sys.stderr)
        # Bad input (a file, a layout, an asset) is status 2 as everywhere; others 1.
        bad_input = all(isinstance(e.error, (ValueError, FileNotFoundError, KeyError))
                        for e in failures)
        return 2 if bad_input else 1
    return 0


def cmd_analyze(args) -> int:
    run = _make_run(args)
    res = analyze(run, args.dataset, num_tokens=args.num_tokens,
                  record_steps=args.record_steps or None)
    out = {"curves": res["curves"], "modality_gap": res["modality_gap"],
           "baseline_mAP": res["baseline_mAP"], "files": res["files"]}
    prov = provenance(run)
    path = _write_outputs(run, args, out, key={"dataset": args.dataset,
                                               "num_tokens": list(args.num_tokens),
                                               "record_steps": list(args.record_steps)},
                          prov=prov)
    print(analysis_summary(prov, res))
    print(f"record: {path}")
    return 0


def cmd_indicators(args) -> int:
    run = _make_run(args)
    res = indicators(run, args.dataset, split=args.split, pairs=args.indicator_pairs)
    prov = provenance(run)
    table = indicators_table(prov, res)
    path = _write_outputs(run, args, res, key={"dataset": args.dataset, "split": res["split"],
                                               "pairs": list(args.indicator_pairs)}, table=table,
                          prov=prov)
    print(table)
    print(f"record: {path}")
    return 0


def cmd_compare(args) -> int:
    default, per = data_roots(args.data_root, args.datasets)
    run = _make_run(args, data_root=default)
    res, table = compare_methods(run, args.datasets, roots=per, methods=args.methods,
                                 layout=args.layout)
    key = {"datasets": list(args.datasets), "methods": list(res["methods"])}
    if args.layout != "default":
        key["layout"] = args.layout
    path = _write_outputs(run, args, res, key=key, table=table)
    print(table)
    print(f"record: {path}")
    return 0


def cmd_fewshot(args) -> int:
    unused = [o for o, v in (("--span-source", args.span_source), ("--span-classes",
              args.span_classes), ("--span-reduce", args.span_reduce)) if v is not None]
    if unused and args.project is None:
        raise CLIError(f"{', '.join(unused)} only apply with --project span: add "
                       "--project span or drop them")
    try:
        settings = HWFewShotSettings(
            classifier=args.classifier, use_text=args.use_text, project=args.project,
            span_source=args.span_source or "zeroshot",
            span_reduce=args.span_reduce or DEFAULT_SPAN_REDUCE,
            shots=tuple(args.shots or DEFAULT_SHOTS), seeds=tuple(args.seeds),
            augment_seed=args.augment_seed)
        names = None
        if args.span_classes is not None:
            names = read_span_classes(args.span_classes)
    except (ValueError, OSError) as e:
        raise CLIError(one_line(e)) from None
    run = _make_run(args)
    res = hw_few_shot(run, args.dataset, settings, span_classnames=names)
    prov = provenance(run)
    table = hw_table(res)
    path = _write_outputs(run, args, res, key={"dataset": args.dataset,
                                               "classifier": args.classifier,
                                               "use_text": args.use_text,
                                               "project": args.project}, table=table, prov=prov)
    print(hw_printout(res))
    print(table)
    print(f"record: {path}")
    return 0


def cmd_demo(args) -> int:
    demo.run_demo(out_dir=args.out, quick=args.quick, progress=not args.quiet)
    return 0


def cmd_bench(args) -> int:
    run_bench(smoke_settings() if args.smoke else full_settings(), out_dir=args.out_dir)
    return 0


# ---------------------------------------------------------------------------------------
# main: quiet mode, Ctrl-C, errors as one line
# ---------------------------------------------------------------------------------------
class _ArgvHolder:
    def __init__(self) -> None:
        self.argv: list[str] = []

    def get(self) -> list[str]:
        return list(self.argv)


_ARGV = _ArgvHolder()
