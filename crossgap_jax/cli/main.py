"""The parser (:func:`build_parser`) and :func:`main`: quiet mode, Ctrl-C, errors as one line.

The parser needs neither JAX nor the models: a malformed command line is refused before
:mod:`~crossgap_jax.cli.checks` and :mod:`~crossgap_jax.cli.commands` (which load them) are
imported.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from tqdm import std

from crossgap_jax import __version__
from crossgap_jax.cli.options import (
    OPTIONS,
    PROG,
    RUN_COMMANDS,
    CLIError,
    add_options,
    add_quiet,
    did_you_mean,
)
from crossgap_jax.fileio import OutputWriteError

DESCRIPTION = ("``crossgap-jax``: a thin command line over the library (all work is in "
               "importable functions).")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage block, and the closest valid word for an
    unknown subcommand or choice; a missing required option is reported together with any
    unknown option on the command line (often its misspelling)."""

    argv: list[str] = []  # the command line being parsed (set by main)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        if message.startswith("the following arguments are required"):
            known = sorted(self._option_string_actions)
            unknown = [a.split("=")[0] for a in self.argv
                       if a.startswith("--") and a.split("=")[0] not in known]
            message += "".join(f"; {u} is not an option of this command"
                               + did_you_mean(u, known) for u in unknown)
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [
                c.strip() for c in m.group(2).split(",")]
            message = (message[:m.start()] + f"invalid choice: {m.group(1)!r}"
                       + did_you_mean(m.group(1), choices) + f" (choose from {m.group(2)})")
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=DESCRIPTION)
    add_quiet(p, False)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def parser(name: str, help: str, fn: str, **defaults: Any) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        add_quiet(s, argparse.SUPPRESS)  # after the command name too
        add_options(s, name)
        s.set_defaults(fn=fn, **defaults)  # the name of its function in cli.commands
        return s

    s = parser("demo", "the offline demo on the embedded model and data", "cmd_demo")
    s.add_argument("--out", default="results/demo")
    s.add_argument("--quick", action="store_true", help="fewer items and steps")

    s = parser("bench", "JAX vs the authors' PyTorch on this device (docs/performance.md)",
               "cmd_bench")
    s.add_argument("--smoke", action="store_true", help="tiny sizes (CI, any CPU, < 1 min)")
    s.add_argument("--out-dir", default=os.path.join("benchmarks", "results"),
                   help="where bench-<backend>[-smoke].json goes")

    s = parser("list", "presets, architectures, pretrained names, datasets found", "cmd_list")
    s.add_argument("--data-root", default=None)

    s = parser("convert", "any supported checkpoint -> the native format", "cmd_convert")
    s.add_argument("source")
    s.add_argument("out")
    s.add_argument("--arch", help="architecture name (default: inferred)")
    s.add_argument("--allow-pickle", action="store_true",
                   help="torch.load with weights_only=False (trusted files only)")

    parser("encode", "features of a dataset split (cached)", "cmd_encode")
    for method in ("oti", "ovi"):
        parser(method, f"{method.upper()} of a split (resumable)", "cmd_invert", method=method)
    parser("retrieve", "retrieval metrics with chosen feature types (a table)", "cmd_retrieve")
    parser("classify", "zero-shot: inter-modal vs OTI / OVI variants", "cmd_classify")
    parser("reproduce", "baseline vs inverted retrieval, tables and JSON", "cmd_reproduce")
    parser("analyze", "mAP vs OTI step, loss curves, similarity plots, gap", "cmd_analyze")
    parser("indicators", "misalignment indicators of a labelled image split (JSON + figure)",
           "cmd_indicators")
    parser("compare", "one backbone: methods x datasets (retrieval, few-shot NCM, indicators)",
           "cmd_compare")
    parser("fewshot", "Herzog & Wang's few-shot classifiers: accuracy per seed and shot",
           "cmd_fewshot")
    return p


@contextlib.contextmanager
def quiet_progress(enabled: bool) -> Iterator[None]:
    """While active (``enabled``), every tqdm bar is created disabled, wherever it is."""
    if not enabled:
        yield
        return

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
    _Parser.argv = argv
    args, extra = parser.parse_known_args(argv)
    if extra:
        unknown = [a for a in extra if a.startswith("-")] or extra
        taken = [f for o in OPTIONS if args.command in o.commands for f in o.flags]
        hint = did_you_mean(unknown[0].split("=")[0], taken) if unknown[0].startswith(
            "-") else ""
        parser.exit(2, f"{PROG} {args.command}: error: {args.command} does not take "
                       f"{' '.join(unknown)}{hint} (see `{PROG} {args.command} --help`)\n")
    # The parser above needs neither JAX nor the models: an argument error came back at once.
    # lazy: checks and commands load JAX and the models
    from crossgap_jax.cli import checks, commands

    commands._ARGV.argv = argv
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing is not news
    try:
        with quiet_progress(args.quiet):
            if args.command in RUN_COMMANDS:
                args.runs = checks.validate(args)
            return int(getattr(commands, args.fn)(args) or 0)
    except CLIError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"\n{PROG} {args.command}: interrupted; {_saved_summary(args)}; resume with: "
              f"{PROG} {shlex.join(argv)}", file=sys.stderr)
        if getattr(e, "device_busy", False):  # a second Ctrl-C: don't wait for the device
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"{PROG} {args.command}: error: {checks.one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:

        if not isinstance(e, OutputWriteError):
            raise
        print(f"crossgap-jax {args.command}: error: {e}", file=sys.stderr)  # names path, cause
        return 1

