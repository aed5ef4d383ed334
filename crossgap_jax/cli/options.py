"""The CLI's options: typed argument parsers and the table :data:`OPTIONS` (one line per
option names the commands that take it)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from collections.abc import Sequence
from typing import Any

from crossgap_jax.pipeline import CLASSIFY_VARIANTS  # a JAX-free name of the lazy face

PROG = "crossgap-jax"
DEFAULT_PRESET = "clip_vitb32"

# classify's default --variants (every accepted value: pipeline.measure.CLASSIFY_VARIANTS).
DEFAULT_VARIANTS = ("inter", "oti", "ovi")


def isoclip_k_pair(s: str) -> tuple[int, int]:
    """``--isoclip-k TOP,BOTTOM``: two non-negative integers."""
    parts = [p.strip() for p in s.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected TOP,BOTTOM (two non-negative integers, e.g. 150,50), got {s!r}")
    return int(parts[0]), int(parts[1])


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (difflib), else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


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


def non_negative_int_list(s: str) -> tuple[int, ...]:
    """Comma-separated integers >= 0, e.g. ``0,1,2`` (at least one)."""
    try:
        out = tuple(int(p) for p in s.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated non-negative integers, got {s!r}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated non-negative integers, got {s!r}")
    return out


def name_list(s: str) -> list[str]:
    """Comma-separated names (at least one)."""
    out = [x.strip() for x in s.split(",") if x.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"must be one or more comma-separated names, got {s!r}")
    return out


def variant_list(s: str) -> list[str]:
    """Comma-separated classify variants out of
    :data:`crossgap_jax.pipeline.measure.CLASSIFY_VARIANTS`."""

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
RUN_COMMANDS = ("encode", "oti", "ovi", "retrieve", "classify", "reproduce", "analyze",
                "indicators", "compare", "fewshot")
_INVERT = ("oti", "ovi", "retrieve", "classify", "reproduce", "analyze",
           "indicators", "compare")  # run an inversion
_USES_OTI = ("oti", "retrieve", "classify", "reproduce", "analyze", "indicators", "compare")
_USES_OVI = ("ovi", "retrieve", "classify", "reproduce", "compare")
_TASK = ("oti", "ovi", "retrieve", "reproduce", "analyze", "compare")  # a retrieval task
_OUTPUT = ("retrieve", "classify", "reproduce", "analyze", "indicators", "compare", "fewshot")


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
_BL = "training-free baselines (docs/baselines.md)"
_BASELINE_CMDS = ("retrieve", "classify", "compare")
_BASELINE_OPTIONS = [
    _opt("--pca-k", _BASELINE_CMDS, _BL, type=positive_int_list, default=None,
         metavar="K[,K...]", help="PCA: principal directions kept (classify fewshot: a sweep)"),
    _opt("--pca-whiten", _BASELINE_CMDS, _BL, action="store_true", default=None,
         help="PCA: unit variance per direction on the fit set"),
    _opt("--pca-fit", _BASELINE_CMDS, _BL, choices=["gallery", "query", "both"],
         default=None, help="PCA fitted on the gallery (default; few-shot: the support), the "
                            "queries, or both"),
    _opt("--center-fit", ("retrieve", "compare"), _BL, choices=["modality", "gallery"],
         default=None,
         help="centered: each modality on its own mean (default) or both on the gallery's"),
    _opt("--shots", ("classify", "compare", "fewshot"), _BL, type=positive_int_list, default=None,
         help="fewshot: shots per class (default 1,2,4,8,16)"),
    _opt("--fewshot-seeds", ("classify", "compare"), _BL, type=non_negative_int_list, default=None,
         help="fewshot: sampling seeds (default 1,2,3, as Herzog & Wang)"),
    _opt("--fewshot-types", ("classify",), _BL, type=name_list, default=None,
         help="fewshot feature types (default image,oti,isoclip,pca,centered; also span)"),
    _opt("--span-classes", (*_BASELINE_CMDS, "fewshot"), _BL, default=None, metavar="FILE",
         help="span: class names whose text features span the projection, one per line "
              "(default: the shipped pytorch/hub ImageNet list, Herzog & Wang's; fewshot "
              "--span-source zeroshot: CoOp's imagenet/classnames.txt under the data root)"),
    _opt("--span-reduce", (*_BASELINE_CMDS, "fewshot"), _BL, type=positive_int, default=None,
         metavar="N",
         help="span: keep d // N text directions (default 2, Herzog & Wang's)"),
]
OPTIONS: list[Option] = [
    _opt("--preset", RUN_COMMANDS, default=None,
         help=f"settings preset (default {DEFAULT_PRESET}; demo for the shipped demo model; "
              f"`{PROG} list` names them all)"),
    _opt("--checkpoint", RUN_COMMANDS,
         help="checkpoint file / folder / hub id (overrides the preset's weights); a native "
              "file carries its architecture, so it needs no --model"),
    _opt("--tokenizer", RUN_COMMANDS, default=None,
         help="tokenizer model for families that need one (SigLIP's spiece.model)"),
    _opt("--dtype", RUN_COMMANDS, default="float32", choices=["float32", "bfloat16"]),
    _opt("--run-dir", RUN_COMMANDS, default=None,
         help="output folder (default results/<preset>, or results/<model> for another model)"),
    _opt("--data-root", tuple(c for c in RUN_COMMANDS if c not in ("reproduce", "compare")),
         default=None,
         help="dataset root (default $CROSSGAP_SHARED_DATA)"),
    _opt("--data-root", ("reproduce", "compare"), default=None, action="append",
         metavar="[NAME=]PATH",
         help="dataset root (default $CROSSGAP_SHARED_DATA); repeat NAME=PATH for a "
              "dataset's own root"),
    _opt("--on-error", RUN_COMMANDS, default="skip", choices=["skip", "raise"],
         help="corrupt images: skip and count, or stop"),
    _opt("--verify-data", RUN_COMMANDS, action="store_true",
         help="key cached features by the sha256 of each image file (reads every file) "
              "instead of its path, size and mtime"),
    _opt("--max-queries", _TASK + ("classify", "indicators", "fewshot"), type=positive_int,
         default=None,
         help="smoke runs: a seeded random subset of the queries (classify: of the images)"),
    _opt("--max-gallery", _TASK + ("classify",), type=positive_int, default=None,
         help="smoke runs: gallery capped (one positive of each chosen query first); on "
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
    _opt("--metric-variant", ("retrieve", "reproduce", "analyze", "compare"),
         "compatibility switches",
         default="standard", choices=["standard", "authors"],
         help="standard: the metric definitions; authors: the authors' code (mAP@R on "
              "all-vs-all splits counts R before removing the query; queries without a "
              "relevant item count as 0)"),
    _opt("--loss-reduction", _INVERT, "compatibility switches", default="per_example",
         choices=["per_example", "mean"],
         help="OTI/OVI objective: per_example (default) or mean (the authors' batch mean "
              "over consecutive batches of --batch-size items)"),
    _opt("--qrels-missing", _TASK, "compatibility switches", default="drop",
         choices=["drop", "count"],
         help="qrels pointing at documents absent from the corpus: drop (the authors', "
              "left out of R) or count (in R, never retrieved, as BEIR's pytrec_eval); "
              "either way they are counted in the table and the record"),
    _opt("--exif-transpose", RUN_COMMANDS, "compatibility switches", action="store_true",
         default=False,
         help="turn images upright as their EXIF orientation says (the reference ignores "
              "it; such images are counted either way)"),
    _opt("--revisitop1m", _TASK, "compatibility switches", default="auto",
         metavar="DIR|auto|none",
         help="ROxford/RParis +1M distractors: auto (use <data root>/revisitop1m/jpg when it "
              "exists, as the authors do), none, or the folder"),
    _opt("--ovi-text", _USES_OVI, "compatibility switches", default="authors",
         choices=["authors", "raw"],
         help="OVI's target texts: authors (default: '_' replaced by a space in every text "
              "OVI inverts, as the authors do; the text->text baseline keeps the raw text) "
              "or raw (the texts as read)"),
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
    _opt("--dataset", ("encode", "oti", "ovi", "retrieve", "classify", "analyze", "indicators",
                       "fewshot"),
         "command",
         required=True, help="dataset name (see `crossgap-jax list`) or tfds:NAME"),
    _opt("--datasets", ("reproduce", "compare"), "command", required=True, type=name_list,
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
    _opt("--split", ("classify", "indicators"), "command", default=None,
         help="labelled image split (default: test, or what the dataset has)"),
    _opt("--template", ("encode",), "command", type=template, default="{}",
         help="text template for text splits"),
    _opt("--record-steps", ("oti", "ovi", "analyze"), "command", type=positive_int_list,
         default=(), help="steps to snapshot, e.g. 17,50,150"),
    _opt("--query-type", ("retrieve",), "command",
         choices=["image", "text", "oti", "ovi", "isoclip", "isotropic-window", "pca",
                  "centered", "span", "i0t", "gr-clip"], default=None),
    _opt("--gallery-type", ("retrieve",), "command",
         choices=["image", "text", "isoclip", "isotropic-window", "pca", "centered", "span",
                  "i0t", "gr-clip"],
         default=None,
         help="isoclip on both sides: the training-free IsoCLIP baseline; isotropic-window: "
              "our own heuristic (not IsoCLIP); pca (both sides, --pca-k) / centered: fitted "
              "on the gallery; span: Herzog & Wang's span projection (--span-classes, "
              "--span-reduce); i0t / gr-clip: I0T's / GR-CLIP's post-hoc mean removal "
              "(docs/baselines.md)"),
    _opt("--variants", ("classify",), "command", type=variant_list,
         default=list(DEFAULT_VARIANTS),
         help="comma separated: inter, oti, ovi (zero-shot; the default), ncm, isoclip-ncm, "
              "pca-ncm, centered-ncm, span-ncm (nearest class mean over the train split), "
              "fewshot "
              "(k-shot NCM, --shots, --fewshot-seeds, --fewshot-types)"),
    *_BASELINE_OPTIONS,
    # fewshot: Herzog & Wang's few-shot classifiers (docs/baselines.md)
    _opt("--classifier", ("fewshot",), "command", choices=["prototype", "gda"], default="gda",
         help="prototype: normalised class means; gda: their ICLR24 linear discriminant "
              "(their default)"),
    _opt("--use-text", ("fewshot",), "command", action="store_true",
         help="blend 0.5 / 0.5 with the dataset's zero-shot classifier (CoOp prompt)"),
    _opt("--project", ("fewshot",), "command", choices=["span"], default=None,
         help="span: Herzog & Wang's span projection of support and test features"),
    _opt("--span-source", ("fewshot",), "command", choices=["zeroshot", "names"],
         default=None,
         help="zeroshot: the span of the ImageNet zero-shot classifier (their few-shot script, "
              "default); names: of the raw class names (their retrieval script)"),
    _opt("--seeds", ("fewshot",), "command", type=non_negative_int_list, default=(1, 2, 3),
         help="Python random seeds, each drawing the shots in turn (default 1,2,3)"),
    _opt("--augment-seed", ("fewshot",), "command", type=non_negative_int, default=None,
         help="support features from one augmented view per image (their RandomResizedCrop "
              "0.5-1 + flip), seeded; default: the eval preprocessing"),
    _opt("--isoclip-k", _BASELINE_CMDS, "command", type=isoclip_k_pair, default=None,
         metavar="TOP,BOTTOM",
         help="IsoCLIP: drop the TOP largest and BOTTOM smallest singular directions "
              "(default: the IsoCLIP authors' value for the backbone; an error when they "
              "published none)"),
    _opt("--indicator-pairs", ("indicators",), "command", type=name_list,
         default=["image-image", "text-image", "oti-image"],
         help="pair types: image-image (always), text-image (class prompts), oti-image"),
    _opt("--methods", ("compare",), "command", type=name_list, default=None,
         help="rows, comma separated (default: all): image, oti, isoclip, pca (one row per "
              "--pca-k), centered (image datasets); text, ovi, isoclip (text datasets); span, "
              "i0t, gr-clip (either). --layout hw-fewshot: classifier settings "
              "<prototype|gda>[+text][+span|+span(names)] (default: both classifiers with "
              "and without text and span)"),
    _opt("--layout", ("compare",), "command", choices=["default", "isoclip", "hw-fewshot"],
         default="default",
         help="table layout: default, isoclip (IsoCLIP's: mAP, mAP@R, P@R, R@1 per dataset "
              "and their average; also writes compare/summary.csv in its columns), or "
              "hw-fewshot (Herzog & Wang's few-shot classifiers: rows = settings, columns = "
              "--shots, one block per dataset and their average)"),
    _opt("--num-tokens", ("analyze",), "command", type=positive_int_list, default=(1, 4),
         help="OTI R values, e.g. 1,4"),
]


def add_options(p: argparse.ArgumentParser, command: str) -> None:
    """Add every :data:`OPTIONS` entry of ``command`` to its parser, grouped."""
    groups: dict[str, Any] = {}
    for o in OPTIONS:
        if command not in o.commands:
            continue
        if o.group not in groups:
            groups[o.group] = p.add_argument_group(o.group)
        groups[o.group].add_argument(*o.flags, **o.kwargs)


def add_quiet(p: argparse.ArgumentParser, default: Any) -> None:
    """``--quiet`` / ``-q`` (before or after the command name)."""
    p.add_argument("--quiet", "-q", action="store_true", default=default,
                   help="no progress bars, warnings only")
