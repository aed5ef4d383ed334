"""``crossgap-jax``: a thin command line over the library (all work is in importable functions).

Examples::

    crossgap-jax demo
    crossgap-jax list
    crossgap-jax convert ViT-B-32.pt vitb32.safetensors
    crossgap-jax reproduce --preset clip_vitb32 --datasets caltech101,coco_text \\
        --data-root /data --run-dir results/b32
    crossgap-jax retrieve --pretrained demo --dataset caltech101 --max-queries 20
    crossgap-jax analyze --preset clip_vitb32 --dataset caltech101 --num-tokens 1,4

Every option is typed and range-checked by the parser, each command accepts only the
options it uses (:data:`OPTIONS`), and every dataset, preset, data root and checkpoint is
checked before any computation (:func:`validate`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from crossgap_jax.pipeline.presets import get_preset, list_presets

PROG = "crossgap-jax"
DEFAULT_PRESET = "clip_vitb32"

# Preset keys that the CLI overrides (the authors' names).
_OVERRIDES = ("learning_rate", "weight_decay", "batch_size", "oti_steps", "ovi_steps",
              "num_pseudo_tokens", "ovi_num_pseudo_tokens", "template_sentence", "seed", "model",
              "pretrained")

# classify's default --variants (every accepted value: pipeline.run.CLASSIFY_VARIANTS).
DEFAULT_VARIANTS = ("inter", "oti", "ovi")


def isoclip_k_pair(s: str) -> tuple[int, int]:
    """``--isoclip-k TOP,BOTTOM``: two non-negative integers."""
    parts = [p.strip() for p in s.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected TOP,BOTTOM (two non-negative integers, e.g. 150,50), got {s!r}")
    return int(parts[0]), int(parts[1])


class CLIError(Exception):
    """A bad command line found after parsing: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------
# Argument types: each raises ArgumentTypeError, which argparse prints as
# "argument --name: <message>" (exit status 2).
# ---------------------------------------------------------------------------------------
def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {s!r}") from None


def positive_int(s: str) -> int:
    """An integer >= 1."""
    v = _int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def non_negative_int(s: str) -> int:
    """An integer >= 0."""
    v = _int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {s}")
    return v


def _float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {s}")
    return v


def positive_float(s: str) -> float:
    """A finite number > 0."""
    v = _float(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s}")
    return v


def non_negative_float(s: str) -> float:
    """A finite number >= 0."""
    v = _float(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {s}")
    return v


def positive_int_list(s: str) -> tuple[int, ...]:
    """Comma-separated positive integers, e.g. ``17,50,150`` (empty string: none)."""
    out = []
    for part in s.split(","):
        if not part.strip():
            continue
        try:
            v = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated positive integers, got {s!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated positive integers, got {v} in {s!r}")
        out.append(v)
    return tuple(out)


def name_list(s: str) -> list[str]:
    """Comma-separated names (at least one)."""
    out = [x.strip() for x in s.split(",") if x.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"must be one or more comma-separated names, got {s!r}")
    return out


def variant_list(s: str) -> list[str]:
    """Comma-separated classify variants out of
    :data:`crossgap_jax.pipeline.run.CLASSIFY_VARIANTS`."""
    from crossgap_jax.pipeline.run import CLASSIFY_VARIANTS

    out = name_list(s)
    bad = [v for v in out if v not in CLASSIFY_VARIANTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(bad)}; choose from "
                                         f"{', '.join(CLASSIFY_VARIANTS)}")
    return out


def template(s: str) -> str:
    """A text template with one ``{}`` where the word / class name goes."""
    if s.count("{}") != 1:
        raise argparse.ArgumentTypeError(f"must contain exactly one '{{}}', got {s!r}")
    return s


# ---------------------------------------------------------------------------------------
# Which command takes which option: adding an option to some commands is one line here.
# ---------------------------------------------------------------------------------------
RUN_COMMANDS = ("encode", "oti", "ovi", "retrieve", "classify", "reproduce", "analyze")
_INVERT = ("oti", "ovi", "retrieve", "classify", "reproduce", "analyze")  # run an inversion
_USES_OTI = ("oti", "retrieve", "classify", "reproduce", "analyze")
_USES_OVI = ("ovi", "retrieve", "classify", "reproduce")
_TASK = ("oti", "ovi", "retrieve", "reproduce", "analyze")  # build a retrieval task
_OUTPUT = ("retrieve", "classify", "reproduce", "analyze")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its flags, the commands that take it, ``add_argument`` keywords, group."""

    flags: tuple[str, ...]
    commands: tuple[str, ...]
    kwargs: dict
    group: str = "model and run"


def _opt(flags: str | tuple[str, ...], commands: Sequence[str], group: str = "model and run",
         **kwargs: Any) -> Option:
    return Option((flags,) if isinstance(flags, str) else tuple(flags), tuple(commands), kwargs,
                  group)


_OV = "preset overrides (the authors' keys)"
OPTIONS: list[Option] = [
    _opt("--preset", RUN_COMMANDS, default=None,
         help=f"settings preset (default {DEFAULT_PRESET}): {', '.join(list_presets())}"),
    _opt("--checkpoint", RUN_COMMANDS,
         help="checkpoint file / folder / hub id (overrides the preset's weights); a native "
              "file carries its architecture, so it needs no --model"),
    _opt("--tokenizer", RUN_COMMANDS, default=None,
         help="tokenizer model for families that need one (SigLIP's spiece.model)"),
    _opt("--dtype", RUN_COMMANDS, default="float32", choices=["float32", "bfloat16"]),
    _opt("--run-dir", RUN_COMMANDS, default=None,
         help="output folder (default results/<preset>, or results/<model> for another model)"),
    _opt("--data-root", tuple(c for c in RUN_COMMANDS if c != "reproduce"), default=None,
         help="dataset root (default $CROSSGAP_SHARED_DATA)"),
    _opt("--data-root", ("reproduce",), default=None, action="append", metavar="[NAME=]PATH",
         help="dataset root (default $CROSSGAP_SHARED_DATA); repeat NAME=PATH for a "
              "dataset's own root"),
    _opt("--on-error", RUN_COMMANDS, default="skip", choices=["skip", "raise"],
         help="corrupt images: skip and count, or stop"),
    _opt("--max-queries", _TASK + ("classify",), type=positive_int, default=None,
         help="smoke runs: a seeded random subset of the queries (classify: of the images)"),
    _opt("--max-gallery", _TASK + ("classify",), type=positive_int, default=None,
         help="smoke runs: gallery capped (positives of the chosen queries first); on "
              "all-vs-all datasets the queries are the gallery, capped by both limits; "
              "classify: NCM's train split cut to max-gallery // classes images per class"),
    _opt("--shard-size", _INVERT, type=positive_int, default=256,
         help="items per atomic inversion result file (resumable unit)"),
    _opt("--authors-assets", ("encode", "oti", "ovi", "retrieve", "reproduce"), default=None,
         metavar="DIR",
         help="checkout of the paper authors' repository (or its data/summarized_texts): use "
              "their LLM summaries as gallery texts (IMDB, 20 Newsgroups, NanoBEIR) and their "
              "20 Newsgroups queries"),
    _opt("--distributed", RUN_COMMANDS, action="store_true",
         help="call jax.distributed.initialize() (multi-host runs)"),
    _opt("--output", _OUTPUT, default=None, metavar="FILE",
         help="also write the results JSON to FILE"),
    _opt("--coordinator-address", RUN_COMMANDS, default=None,
         help="host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)"),
    _opt("--num-processes", RUN_COMMANDS, type=positive_int, default=None,
         help="processes in the run (default $CROSSGAP_NUM_PROCESSES)"),
    _opt("--process-id", RUN_COMMANDS, type=non_negative_int, default=None,
         help="this process, 0..num-processes-1 (default $CROSSGAP_PROCESS_ID)"),
    # Compatibility switches (docs/fidelity.md).
    _opt("--metric-variant", ("retrieve", "reproduce", "analyze"), "compatibility switches",
         default="standard", choices=["standard", "authors"],
         help="standard: the metric definitions; authors: the authors' code (mAP@R on "
              "all-vs-all splits counts R before removing the query; queries without a "
              "relevant item count as 0)"),
    _opt("--loss-reduction", _INVERT, "compatibility switches", default="per_example",
         choices=["per_example", "mean"],
         help="OTI/OVI objective: per_example (default) or mean (the authors' batch mean "
              "over consecutive batches of --batch-size items)"),
    _opt("--revisitop1m", _TASK, "compatibility switches", default="auto",
         metavar="DIR|auto|none",
         help="ROxford/RParis +1M distractors: auto (use <data root>/revisitop1m/jpg when it "
              "exists, as the authors do), none, or the folder"),
    # Preset overrides.
    _opt("--model", RUN_COMMANDS, _OV, default=None,
         help="architecture name (default: the checkpoint's own for native files, else the "
              "preset's)"),
    _opt("--pretrained", RUN_COMMANDS, _OV, default=None,
         help="pretrained tag (openai, datacomp_xl_s13b_b90k, ...) or 'demo' (the shipped "
              "demo model)"),
    _opt("--batch-size", RUN_COMMANDS, _OV, type=positive_int, default=None),
    _opt("--learning-rate", _INVERT, _OV, type=positive_float, default=None),
    _opt("--weight-decay", _INVERT, _OV, type=non_negative_float, default=None),
    _opt("--seed", _INVERT + ("classify",), _OV, type=non_negative_int, default=None),
    _opt("--oti-steps", _USES_OTI, _OV, type=positive_int, default=None),
    _opt("--num-pseudo-tokens", tuple(c for c in _USES_OTI if c != "analyze"), _OV,
         type=positive_int, default=None),
    _opt("--template-sentence", _USES_OTI, _OV, type=template, default=None),
    _opt("--ovi-steps", _USES_OVI, _OV, type=positive_int, default=None),
    _opt("--ovi-num-pseudo-tokens", _USES_OVI, _OV, type=positive_int, default=None),
    # Command-specific.
    _opt("--dataset", ("encode", "oti", "ovi", "retrieve", "classify", "analyze"), "command",
         required=True, help="dataset name (see `crossgap-jax list`) or tfds:NAME"),
    _opt("--datasets", ("reproduce",), "command", required=True, type=name_list,
         help="comma-separated dataset names"),
    _opt("--presets", ("reproduce",), "command", type=name_list, default=None,
         help="several presets, comma separated (one run folder each)"),
    _opt("--split", ("encode",), "command", default=None,
         help="split name (default: the dataset's gallery split)"),
    _opt("--split", ("oti", "ovi"), "command", default=None,
         help="query (default), gallery, or a split name"),
    _opt("--split", ("retrieve",), "command", default=None,
         help="query split (caption datasets: the split whose captions are used, e.g. "
              "flickr30k_text test); default: the paper's"),
    _opt("--split", ("classify",), "command", default=None,
         help="labelled image split (default: test, or what the dataset has)"),
    _opt("--template", ("encode",), "command", type=template, default="{}",
         help="text template for text splits"),
    _opt("--record-steps", ("oti", "ovi", "analyze"), "command", type=positive_int_list,
         default=(), help="steps to snapshot, e.g. 17,50,150"),
    _opt("--query-type", ("retrieve",), "command",
         choices=["image", "text", "oti", "ovi", "isoclip", "isotropic-window"], default=None),
    _opt("--gallery-type", ("retrieve",), "command",
         choices=["image", "text", "isoclip", "isotropic-window"], default=None,
         help="isoclip on both sides: the training-free IsoCLIP baseline; isotropic-window: "
              "our own heuristic (not IsoCLIP)"),
    _opt("--variants", ("classify",), "command", type=variant_list,
         default=list(DEFAULT_VARIANTS),
         help="comma separated: inter, oti, ovi (zero-shot; the default), ncm, isoclip-ncm "
              "(nearest class mean over the train split)"),
    _opt("--isoclip-k", ("retrieve", "classify"), "command", type=isoclip_k_pair, default=None,
         metavar="TOP,BOTTOM",
         help="IsoCLIP: drop the TOP largest and BOTTOM smallest singular directions "
              "(default: the IsoCLIP authors' value for the backbone; an error when they "
              "published none)"),
    _opt("--num-tokens", ("analyze",), "command", type=positive_int_list, default=(1, 4),
         help="OTI R values, e.g. 1,4"),
]


def _add_options(p: argparse.ArgumentParser, command: str) -> None:
    groups: dict[str, Any] = {}
    for o in OPTIONS:
        if command not in o.commands:
            continue
        if o.group not in groups:
            groups[o.group] = p.add_argument_group(o.group)
        groups[o.group].add_argument(*o.flags, **o.kwargs)


def _add_quiet(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--quiet", "-q", action="store_true", default=default,
                   help="no progress bars, warnings only")


# ---------------------------------------------------------------------------------------
# Errors in CLI words
# ---------------------------------------------------------------------------------------
_CLI_WORDS = (
    ("pass checkpoint=PATH to a copy of it", "pass --checkpoint PATH (a copy of it)"),
    ("pass checkpoint=DIR", "pass --checkpoint DIR"),
    ("pass checkpoint=<that directory>", "pass --checkpoint <that directory>"),
    ("pass checkpoint= a", "pass --checkpoint a"),
    ("pass checkpoint=", "pass --checkpoint"),
    ("pass allow_pickle=True", "convert it once with `crossgap-jax convert --allow-pickle "
                               "SRC OUT.safetensors`"),
    ("pass root=...", "pass --data-root"),
    ("(use create_clip for random weights)", ""),
)


def cli_words(message: str) -> str:
    """A library message with its keyword-argument advice phrased as CLI options."""
    for lib, cli in _CLI_WORDS:
        message = message.replace(lib, cli)
    return message


def _one_line(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return cli_words(msg)


# ---------------------------------------------------------------------------------------
# Validation before any computation
# ---------------------------------------------------------------------------------------
def _source_option(args) -> str:
    if getattr(args, "checkpoint", None):
        return f"--checkpoint {args.checkpoint}"
    if getattr(args, "pretrained", None):
        return f"--pretrained {args.pretrained}"
    return f"--preset {args.preset or DEFAULT_PRESET}"


def data_roots(values: Sequence[str] | str | None, datasets: Sequence[str] = ()
               ) -> tuple[str | None, dict[str, str]]:
    """``(default root, {dataset: root})`` from ``--data-root`` values (``PATH`` or
    ``NAME=PATH``; ``NAME`` must be one of ``datasets``)."""
    if values is None:
        return None, {}
    if isinstance(values, str):
        values = [values]
    default, per = None, {}
    for v in values:
        name, sep, path = v.partition("=")
        if sep and (name in datasets or name.startswith("tfds:")):
            if name not in datasets:
                raise CLIError(f"--data-root {v}: {name!r} is not one of --datasets "
                               f"({', '.join(datasets)})")
            per[name] = path
        elif sep and not os.path.exists(v) and "/" not in name:
            raise CLIError(f"--data-root {v}: {name!r} is not one of --datasets "
                           f"({', '.join(datasets)})")
        else:
            if default is not None:
                raise CLIError(f"--data-root given twice without NAME= ({default}, {v})")
            default = v
    return default, per


def _check_root(root: str | None, option: str) -> str:
    from crossgap_jax.data._fs import ENV_VAR, resolve_root

    try:
        r = resolve_root(root)
    except ValueError:
        raise CLIError(f"no data root: pass --data-root or set ${ENV_VAR}") from None
    if not os.path.isdir(r) and not os.path.isfile(r):
        where = f"{option} {root}" if root is not None else f"${ENV_VAR}={r}"
        raise CLIError(f"{where}: no such file or directory")
    return r


def _check_dataset(name: str, root: str | None, option: str, split: str | None = None,
                   split_option: str = "--split") -> None:
    """Known name, tfds importable, root present, the dataset found there, split known."""
    from crossgap_jax.data import dataset_info
    from crossgap_jax.data.tfds_backend import PREFIX

    if name.startswith(PREFIX):
        from crossgap_jax.data.tfds_backend import _import_tfds

        try:
            _import_tfds()
        except ImportError:
            raise CLIError(f"{option} {name} needs tensorflow-datasets: "
                           "pip install 'crossgap-jax[tfds]'") from None
        return
    try:
        info = dataset_info(name)
    except KeyError as e:
        raise CLIError(f"{option} {name}: {_one_line(e)}") from None
    if info.packaged:  # shipped inside the package: no data root involved
        if split is not None and split not in info.splits and split not in ("query", "gallery"):
            raise CLIError(f"{split_option} {split}: {info.name} has no such split; valid: "
                           f"{', '.join(info.splits)}")
        return
    r = _check_root(root, "--data-root")
    if info.generic:
        from crossgap_jax.data import images as im

        splits = (im.imagefolder_splits(r) if info.name == "imagefolder" and os.path.isdir(r)
                  else list(info.splits))
    else:
        splits = list(info.splits) + (["val"] if info.name == "imagenet" else [])
    try:
        found = info.locate(r)
    except OSError:
        found = None
    if not found:
        try:  # the reader's own message lists what it looked for
            info.load(r, info.query_split if info.query_split in splits else splits[0])
        except (FileNotFoundError, ValueError) as e:
            raise CLIError(f"{option} {name}: {_one_line(e)}") from None
    if split is not None and split not in splits and split not in ("query", "gallery"):
        raise CLIError(f"{split_option} {split}: {info.name} has no such split; valid: "
                       f"{', '.join(splits)}")


def _looks_like_path(source: str) -> bool:
    """A local path rather than a hub id (``org/name``) or a pretrained tag."""
    from crossgap_jax.models import HUB_ID as _HUB_ID

    if source.startswith(("/", ".", "~")) or source.endswith(
            (".pt", ".pth", ".bin", ".safetensors", ".npz", ".json")):
        return True
    return os.sep in source and not _HUB_ID.match(source)


def _check_tag(args, model: str, source: str | None) -> None:
    """A CLIP architecture name and pretrained tag that resolve (no download here)."""
    from crossgap_jax.models import get_config
    from crossgap_jax.models import resolve_clip_tag as _resolve_named

    try:
        config = get_config(model)
    except KeyError as e:
        opt = f"--model {model}" if args.model else f"--preset {args.preset or DEFAULT_PRESET}"
        raise CLIError(f"{opt}: {_one_line(e)}") from None
    if getattr(config, "family", "clip") != "clip" or (source and not re.fullmatch(
            r"[a-z0-9_]+", source)) or (source and os.path.exists(source)):
        return  # other families resolve their own tags; paths / hub ids are read as is
    try:
        _resolve_named(config.name, source)
    except ValueError as e:
        from crossgap_jax.pipeline.run import pretrained_aliases

        names = ", ".join(pretrained_aliases())
        raise CLIError(f"{_source_option(args)}: {_one_line(e)}; packaged models (any "
                       f"architecture): {names}") from None


def _check_source(args, cfg: dict) -> None:
    """The checkpoint / pretrained source exists (local paths) and fits an explicit model."""
    from crossgap_jax.pipeline.run import resolve_source

    try:
        source, native = resolve_source(cfg, args.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(f"{_source_option(args)}: {_one_line(e)}") from None
    if args.tokenizer and not os.path.exists(args.tokenizer):
        raise CLIError(f"--tokenizer {args.tokenizer}: no such file")
    if native is None:
        if args.checkpoint and _looks_like_path(args.checkpoint) and not os.path.exists(
                os.path.expanduser(args.checkpoint)):
            raise CLIError(f"--checkpoint {args.checkpoint}: no such file or directory")
        _check_tag(args, cfg["model"], source)
        return
    want = args.model
    if want is None and args.preset is not None:
        want = cfg["model"]  # the preset's model, given explicitly
    if want is not None and want != native.name:
        from crossgap_jax.models import get_config

        try:
            same = get_config(want) == native.replace(name=want)
        except (KeyError, TypeError):
            same = False
        if not same:
            opt = f"--model {want}" if args.model else f"--preset {args.preset} (model {want})"
            raise CLIError(f"{_source_option(args)} holds architecture {native.name!r}, but "
                           f"{opt} asks for another; drop "
                           f"{'--model' if args.model else '--preset'} to use the file's")


def validate(args) -> list[tuple[str, dict]]:
    """Check every preset, dataset, data root, split and checkpoint of a run command before
    anything is loaded or computed.

    Returns:
        ``[(preset name, resolved preset config), ...]``.

    Raises:
        CLIError: the first problem, naming the option.
    """
    if getattr(args, "distributed", False):
        try:
            _process_ids(args)
        except ValueError as e:
            raise CLIError(str(e)) from None
    if getattr(args, "authors_assets", None):
        from crossgap_jax.data.authors_assets import find_summaries_dir

        try:
            find_summaries_dir(args.authors_assets)  # its messages name --authors-assets
        except (ValueError, OSError) as e:
            raise CLIError(_one_line(e)) from None
    presets = args.presets if getattr(args, "presets", None) else [args.preset or DEFAULT_PRESET]
    overrides = {k: getattr(args, k, None) for k in _OVERRIDES}
    overrides["isoclip_k"] = getattr(args, "isoclip_k", None)
    out = []
    for name in presets:
        try:
            cfg = get_preset(name, **overrides)
        except KeyError as e:
            opt = "--presets" if getattr(args, "presets", None) else "--preset"
            raise CLIError(f"{opt} {name}: {_one_line(e)}") from None
        _check_source(args, cfg)
        out.append((name, cfg))
    if args.command == "reproduce":
        default, per = data_roots(args.data_root, args.datasets)
        for ds in args.datasets:
            _check_dataset(ds, per.get(ds, default), "--datasets")
        if getattr(args, "authors_assets", None):
            from crossgap_jax.data.authors_assets import check_authors_assets
            from crossgap_jax.pipeline.run import _canonical_name

            try:
                check_authors_assets([_canonical_name(ds) for ds in args.datasets],
                                     args.authors_assets)
            except (ValueError, OSError) as e:
                raise CLIError(_one_line(e)) from None
    else:
        split = getattr(args, "split", None)
        if args.command in ("oti", "ovi") and split in ("query", "gallery"):
            split = None
        if args.command == "retrieve" and split is not None:
            from crossgap_jax.data import dataset_info

            with contextlib.suppress(KeyError):  # an unknown name is reported below
                if not args.dataset.startswith("tfds:") and dataset_info(
                        args.dataset).protocol not in ("label", "captions"):
                    raise CLIError(f"--split {split}: {args.dataset} has fixed query and "
                                   "gallery splits; drop --split")
        _check_dataset(args.dataset, args.data_root, "--dataset", split)
    return out


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------
def _process_ids(args) -> tuple[int | None, int | None]:
    """``(--num-processes, --process-id)``, else the environment; checked together."""
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
    return num, pid


def _init_distributed(args) -> None:
    """``jax.distributed.initialize`` from the options, else the environment, else JAX's
    cluster detection (TPU pods, SLURM, Open MPI)."""
    import jax

    num, pid = _process_ids(args)
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=num, process_id=pid)


def _make_run(args, cfg: dict | None = None, record_steps: Sequence[int] = (),
              data_root: str | None = None):
    from crossgap_jax.pipeline.run import make_run

    if args.distributed:
        _init_distributed(args)
    if cfg is None:
        cfg = args.runs[0][1] if getattr(args, "runs", None) else validate(args)[0][1]
    if data_root is None and isinstance(args.data_root, str):
        data_root = args.data_root
    try:
        run = make_run(args.run_dir, cfg, data_root=data_root, progress=not args.quiet,
                       on_error=args.on_error, record_steps=record_steps,
                       checkpoint=args.checkpoint, dtype=args.dtype,
                       max_queries=getattr(args, "max_queries", None),
                       max_gallery=getattr(args, "max_gallery", None),
                       shard_size=getattr(args, "shard_size", 256), tokenizer=args.tokenizer,
                       model_explicit=args.model is not None,
                       authors_assets=getattr(args, "authors_assets", None),
                       metric_variant=getattr(args, "metric_variant", "standard"),
                       loss_reduction=getattr(args, "loss_reduction", "per_example"),
                       revisitop1m=getattr(args, "revisitop1m", "auto"))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CLIError(f"{_source_option(args)}: {_one_line(e)}") from None
    args.run_dir_resolved = run.run_dir
    return run


def _write_outputs(run, args, results: dict, key: dict, table: str | None = None) -> str:
    """The command's own record under ``<run_dir>/records/`` and ``--output``."""
    from crossgap_jax.pipeline.run import write_record

    return write_record(run, args.command, results, key=key, argv=_ARGV.get(), table=table,
                        also_to=getattr(args, "output", None))


def cmd_list(args) -> int:
    from crossgap_jax.data import list_datasets
    from crossgap_jax.models import list_architectures
    from crossgap_jax.pipeline.run import pretrained_aliases

    if args.data_root is not None:
        _check_root(args.data_root, "--data-root")
    print("presets:", ", ".join(list_presets()))
    print("architectures:", ", ".join(list_architectures()))
    print("pretrained names (--pretrained NAME):")
    from crossgap_jax.models.checkpoints import native_config

    for name, path in pretrained_aliases().items():
        arch = native_config(path)
        print(f"  {name:18s} {arch.name if arch else '(missing)'}  {path}")
    print("datasets (found under the data root):")
    for e in list_datasets(args.data_root):
        print(f"  {e.name:18s} {e.modality:5s} query={e.query_split:8s} "
              f"gallery={e.gallery_split:8s} {e.found or '-'}")
    return 0


def cmd_convert(args) -> int:
    from crossgap_jax.models import load_clip
    from crossgap_jax.models.checkpoints import save_native

    try:
        if args.arch:
            clip = load_clip(args.arch, args.source, allow_pickle=args.allow_pickle)
        else:
            clip = load_clip(args.source, allow_pickle=args.allow_pickle)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CLIError(f"{args.source}: {_one_line(e)}".replace(
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
    from crossgap_jax.pipeline.run import retrieval_table

    run = _make_run(args)
    m = run.retrieve(args.dataset, args.query_type, args.gallery_type, split=args.split)
    table = retrieval_table(run, args.dataset, m)
    path = _write_outputs(run, args, m, key={"dataset": args.dataset, "split": args.split,
                                             "query_type": m["query_type"],
                                             "gallery_type": m["gallery_type"]}, table=table)
    print(table)
    print(f"record: {path}")
    return 0


def cmd_classify(args) -> int:
    from crossgap_jax.pipeline.run import classify_table

    run = _make_run(args)
    m = run.classify(args.dataset, args.variants, split=args.split)
    table = classify_table(run, args.dataset, m)
    path = _write_outputs(run, args, m, key={"dataset": args.dataset, "split": m["split"],
                                             "variants": list(args.variants)}, table=table)
    print(table)
    print(f"record: {path}")
    return 0


def cmd_reproduce(args) -> int:
    from crossgap_jax.pipeline.run import DatasetFailure, reproduce

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
            res = reproduce(run, args.datasets, roots=per)
        except DatasetFailure as e:
            res = e.results
            failures.append(e)
        table = open(os.path.join(run.run_dir, "table.md")).read() if res.get(
            "datasets") else None
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
    from crossgap_jax.pipeline.analyze import analyze

    run = _make_run(args)
    res = analyze(run, args.dataset, num_tokens=args.num_tokens,
                  record_steps=args.record_steps or None)
    out = {"curves": res["curves"], "modality_gap": res["modality_gap"]}
    path = _write_outputs(run, args, out, key={"dataset": args.dataset,
                                               "num_tokens": list(args.num_tokens),
                                               "record_steps": list(args.record_steps)})
    import json

    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    print(f"record: {path}")
    return 0


def cmd_demo(args) -> int:
    from crossgap_jax.demo import run_demo

    run_demo(out_dir=args.out, quick=args.quick, progress=not args.quiet)
    return 0


def cmd_bench(args) -> int:
    from crossgap_jax.bench import full_settings, run_bench, smoke_settings

    run_bench(smoke_settings() if args.smoke else full_settings(), out_dir=args.out_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from crossgap_jax import __version__

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    _add_quiet(p, False)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def parser(name: str, help: str, fn: Callable, **defaults: Any) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        _add_quiet(s, argparse.SUPPRESS)  # after the command name too
        _add_options(s, name)
        s.set_defaults(fn=fn, **defaults)
        return s

    s = parser("demo", "the offline demo on the embedded model and data", cmd_demo)
    s.add_argument("--out", default="results/demo")
    s.add_argument("--quick", action="store_true", help="fewer items and steps")

    s = parser("bench", "JAX vs the authors' PyTorch on this device (docs/performance.md)",
               cmd_bench)
    s.add_argument("--smoke", action="store_true", help="tiny sizes (CI, any CPU, < 1 min)")
    s.add_argument("--out-dir", default=os.path.join("benchmarks", "results"),
                   help="where bench-<backend>[-smoke].json goes")

    s = parser("list", "presets, architectures, pretrained names, datasets found", cmd_list)
    s.add_argument("--data-root", default=None)

    s = parser("convert", "any supported checkpoint -> the native format", cmd_convert)
    s.add_argument("source")
    s.add_argument("out")
    s.add_argument("--arch", help="architecture name (default: inferred)")
    s.add_argument("--allow-pickle", action="store_true",
                   help="torch.load with weights_only=False (trusted files only)")

    parser("encode", "features of a dataset split (cached)", cmd_encode)
    for method in ("oti", "ovi"):
        parser(method, f"{method.upper()} of a split (resumable)", cmd_invert, method=method)
    parser("retrieve", "retrieval metrics with chosen feature types (a table)", cmd_retrieve)
    parser("classify", "zero-shot: inter-modal vs OTI / OVI variants", cmd_classify)
    parser("reproduce", "baseline vs inverted retrieval, tables and JSON", cmd_reproduce)
    parser("analyze", "mAP vs OTI step, loss curves, similarity plots, gap", cmd_analyze)
    return p


# ---------------------------------------------------------------------------------------
# main: quiet mode, Ctrl-C, errors as one line
# ---------------------------------------------------------------------------------------
class _ArgvHolder:
    def __init__(self) -> None:
        self.argv: list[str] = []

    def get(self) -> list[str]:
        return list(self.argv)


_ARGV = _ArgvHolder()


@contextlib.contextmanager
def quiet_progress(enabled: bool) -> Iterator[None]:
    """While active (``enabled``), every tqdm bar is created disabled, wherever it is."""
    if not enabled:
        yield
        return
    from tqdm import std

    orig = std.tqdm.__init__

    def init(self, *a: Any, **kw: Any) -> None:
        kw["disable"] = True
        orig(self, *a, **kw)

    std.tqdm.__init__ = init
    try:
        yield
    finally:
        std.tqdm.__init__ = orig


def _saved_summary(args) -> str:
    """What an interrupted run left on disk (finished inversion shards, cached features)."""
    run_dir = getattr(args, "run_dir_resolved", None) or getattr(args, "run_dir", None)
    if not run_dir or not os.path.isdir(run_dir):
        return "nothing was saved"
    shards = feats = 0
    for dirpath, _, files in os.walk(run_dir):
        shards += sum(f.startswith("shard-") and f.endswith(".npz") for f in files)
        if os.sep + "features" in dirpath:
            feats += sum(f.endswith(".npz") for f in files)
    return (f"kept {shards} finished inversion shard(s) and {feats} cached feature file(s) "
            f"in {run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        unknown = [a for a in extra if a.startswith("-")] or extra
        parser.exit(2, f"{PROG} {args.command}: error: {args.command} does not take "
                       f"{' '.join(unknown)} (see `{PROG} {args.command} --help`)\n")
    _ARGV.argv = argv
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing is not news
    try:
        with quiet_progress(args.quiet):
            if args.command in RUN_COMMANDS:
                args.runs = validate(args)
            return int(args.fn(args) or 0)
    except CLIError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted; {_saved_summary(args)}; resume with: "
              f"{PROG} {shlex.join(argv)}", file=sys.stderr)
        return 130
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"{PROG} {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        from crossgap_jax.fileio import OutputWriteError

        if not isinstance(e, OutputWriteError):
            raise
        print(f"crossgap-jax {args.command}: error: {e}", file=sys.stderr)  # names path, cause
        return 1


if __name__ == "__main__":
    sys.exit(main())
