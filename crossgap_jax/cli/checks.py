"""Checks of a parsed command line before any work (:func:`validate`), and library errors
phrased as CLI options (:func:`cli_words`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Sequence

from crossgap_jax.baselines import read_span_classes
from crossgap_jax.cli.options import (
    DEFAULT_PRESET,
    CLIError,
    did_you_mean,
)
from crossgap_jax.data import (
    ENV_VAR,
    PREFIX,
    check_authors_assets,
    check_options,
    dataset_info,
    find_summaries_dir,
    imagefolder_splits,
    import_tfds,
    list_datasets,
    parse_dataset_name,
    resolve_root,
)
from crossgap_jax.models import HUB_ID as _HUB_ID
from crossgap_jax.models import get_config, list_architectures
from crossgap_jax.models import resolve_clip_tag as _resolve_named
from crossgap_jax.pipeline import (
    DEMO_CHECKPOINT,
    PRESETS,
    BaselineSettings,
    Preset,
    canonical_name,
    check_methods,
    default_methods,
    preset,
    pretrained_aliases,
    resolve_source,
)

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


def one_line(e: BaseException) -> str:
    """``e``'s message on one line in the CLI's words (a KeyError without its quotes)."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return cli_words(msg)


# ---------------------------------------------------------------------------------------
# Validation before any computation
# ---------------------------------------------------------------------------------------
def default_preset(args) -> str:
    """The preset a command uses without ``--preset``: ``demo`` for the shipped demo model
    (``--pretrained demo``, or ``--checkpoint`` naming its file), else
    :data:`DEFAULT_PRESET` (OpenAI ViT-B/32's settings)."""
    if getattr(args, "pretrained", None) == "demo":
        return "demo"
    ckpt = getattr(args, "checkpoint", None)
    if ckpt and os.path.isfile(ckpt) and os.path.samefile(ckpt, DEMO_CHECKPOINT):
        return "demo"
    return DEFAULT_PRESET


def source_option(args) -> str:
    """The option that named the weights (``--checkpoint X`` / ``--pretrained X`` / ...), for
    messages."""
    if getattr(args, "checkpoint", None):
        return f"--checkpoint {args.checkpoint}"
    if getattr(args, "pretrained", None):
        return f"--pretrained {args.pretrained}"
    return f"--preset {args.preset or default_preset(args)}"


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


def check_root(root: str | None, option: str) -> str:
    """The resolved data root of ``option`` (or the environment); a CLIError naming it when it
    does not exist."""
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

    if name.startswith(PREFIX):
        try:
            import_tfds()
        except ImportError:
            raise CLIError(f"{option} {name} needs tensorflow-datasets: "
                           "pip install 'crossgap-jax[tfds]'") from None
        return
    try:
        info = dataset_info(name)
    except KeyError as e:
        hint = did_you_mean(name, [d.name for d in list_datasets(None)])
        raise CLIError(f"{option} {name}: {one_line(e)}{hint}") from None
    try:
        check_options(info, parse_dataset_name(name)[1])
    except ValueError as e:
        raise CLIError(f"{option} {name}: {one_line(e)}") from None
    if info.packaged:  # shipped inside the package: no data root involved
        if split is not None and split not in info.splits and split not in ("query", "gallery"):
            raise CLIError(f"{split_option} {split}: {info.name} has no such split; valid: "
                           f"{', '.join(info.splits)}")
        return
    r = check_root(root, "--data-root")
    if info.generic:
        splits = (imagefolder_splits(r) if info.name == "imagefolder" and os.path.isdir(r)
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
            raise CLIError(f"{option} {name}: {one_line(e)}") from None
    if split is not None and split not in splits and split not in ("query", "gallery"):
        raise CLIError(f"{split_option} {split}: {info.name} has no such split; valid: "
                       f"{', '.join(splits)}")


def _looks_like_path(source: str) -> bool:
    """A local path rather than a hub id (``org/name``) or a pretrained tag."""

    if source.startswith(("/", ".", "~")) or source.endswith(
            (".pt", ".pth", ".bin", ".safetensors", ".npz", ".json")):
        return True
    return os.sep in source and not _HUB_ID.match(source)


def _check_tag(args, model: str, source: str | None) -> None:
    """A CLIP architecture name and pretrained tag that resolve (no download here)."""

    try:
        config = get_config(model)
    except KeyError as e:
        opt = (f"--model {model}" if args.model
               else f"--preset {args.preset or default_preset(args)}")
        raise CLIError(f"{opt}: {one_line(e)}{did_you_mean(model, list_architectures())}"
                       ) from None
    if getattr(config, "family", "clip") != "clip" or (source and not re.fullmatch(
            r"[a-z0-9_]+", source)) or (source and os.path.exists(source)):
        return  # other families resolve their own tags; paths / hub ids are read as is
    try:
        _resolve_named(config.name, source)
    except ValueError as e:
        names = ", ".join(pretrained_aliases())
        raise CLIError(f"{source_option(args)}: {one_line(e)}; packaged models (any "
                       f"architecture): {names}") from None


def _check_source(args, cfg: dict) -> None:
    """The checkpoint / pretrained source exists (local paths) and fits an explicit model."""

    try:
        source, native = resolve_source(cfg.get("pretrained"), args.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(f"{source_option(args)}: {one_line(e)}") from None
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
        try:
            same = get_config(want) == native.replace(name=want)
        except (KeyError, TypeError):
            same = False
        if not same:
            opt = f"--model {want}" if args.model else f"--preset {args.preset} (model {want})"
            raise CLIError(f"{source_option(args)} holds architecture {native.name!r}, but "
                           f"{opt} asks for another; drop "
                           f"{'--model' if args.model else '--preset'} to use the file's")


def process_ids(args) -> tuple[int | None, int | None]:
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


def baseline_settings(args) -> BaselineSettings:
    """The fitted baselines' settings from ``--pca-k`` etc. (the defaults when none is
    given), checked by :class:`~crossgap_jax.pipeline.BaselineSettings`."""

    names = {"pca_k": "pca_k", "pca_whiten": "pca_whiten", "pca_fit": "pca_fit",
             "center_fit": "center_fit", "shots": "shots", "fewshot_seeds": "seeds",
             "fewshot_types": "fewshot_types", "span_classes": "span_classes",
             "span_reduce": "span_reduce"}
    d = {key: getattr(args, attr) for attr, key in names.items()
         if getattr(args, attr, None) is not None}
    variants = getattr(args, "variants", None) or ()
    try:
        s = BaselineSettings(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                                for k, v in d.items()})
        if "pca-ncm" in variants or (args.command == "retrieve" and "pca" in (
                getattr(args, "query_type", None), getattr(args, "gallery_type", None))):
            s.single_pca_k()
        if s.span_classes is not None:  # read now: a bad file fails before any work
            s = dataclasses.replace(s, span_classes=read_span_classes(s.span_classes).source)
        if "fewshot" in variants and "pca" in s.fewshot_types and not s.pca_k:
            raise ValueError("few-shot feature type pca needs --pca-k K[,K...] (or leave pca "
                             "out of --fewshot-types)")
    except (ValueError, FileNotFoundError) as e:
        msg = one_line(e)
        if "span class list" in msg:
            msg = f"--span-classes: {msg}"
        raise CLIError(msg) from None
    return s


def _check_output(target: str | None) -> None:
    """``--output FILE`` must name a file whose nearest existing parent is a folder (so the
    results are not computed and then lost)."""
    if not target:
        return
    if os.path.isdir(target):
        raise CLIError(f"--output {target}: is a folder; give a file name "
                       "(e.g. <folder>/results.json)")
    parent = os.path.dirname(os.path.abspath(target))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CLIError(f"--output {target}: {parent} is a file, not a folder; choose "
                       "another output path")


def validate(args) -> list[tuple[str, dict]]:
    """Check every preset, dataset, data root, split and checkpoint of a run command before
    anything is loaded or computed.

    Returns:
        ``[(preset name, typed settings), ...]``: one frozen
        :class:`~crossgap_jax.pipeline.presets.Preset` per preset, the options applied.

    Raises:
        CLIError: the first problem, naming the option.
    """
    if getattr(args, "distributed", False):
        try:
            process_ids(args)
        except ValueError as e:
            raise CLIError(str(e)) from None
    if getattr(args, "authors_assets", None):
        try:
            find_summaries_dir(args.authors_assets)  # its messages name --authors-assets
        except (ValueError, OSError) as e:
            raise CLIError(one_line(e)) from None
    baseline_settings(args)  # checked before any work
    _check_output(getattr(args, "output", None))
    presets = (args.presets if getattr(args, "presets", None)
               else [args.preset or default_preset(args)])
    # Parsed once: the typed options become one frozen Preset per preset name.
    overrides = {k: getattr(args, k, None) for k in Preset.fields() if k != "name"}
    out = []
    for name in presets:
        try:
            typed = preset(name, **overrides)
        except KeyError as e:
            opt = "--presets" if getattr(args, "presets", None) else "--preset"
            hint = did_you_mean(name, list(PRESETS)) if name not in PRESETS else ""
            raise CLIError(f"{opt} {name}: {one_line(e)}{hint}") from None
        except (TypeError, ValueError) as e:
            raise CLIError(one_line(e)) from None
        _check_source(args, typed.as_dict())
        out.append((name, typed))
    if args.command == "compare":
        try:
            check_methods(args.methods or default_methods(args.layout), args.layout)
        except ValueError as e:
            raise CLIError(f"--methods: {one_line(e)}") from None
    if args.command in ("reproduce", "compare"):
        default, per = data_roots(args.data_root, args.datasets)
        for ds in args.datasets:
            _check_dataset(ds, per.get(ds, default), "--datasets")
        if getattr(args, "authors_assets", None):
            try:
                check_authors_assets([canonical_name(ds) for ds in args.datasets],
                                     args.authors_assets)
            except (ValueError, OSError) as e:
                raise CLIError(one_line(e)) from None
    else:
        split = getattr(args, "split", None)
        if args.command in ("oti", "ovi") and split in ("query", "gallery"):
            split = None
        if args.command == "retrieve" and split is not None:
            with contextlib.suppress(KeyError):  # an unknown name is reported below
                if not args.dataset.startswith("tfds:") and dataset_info(
                        args.dataset).protocol not in ("label", "captions"):
                    raise CLIError(f"--split {split}: {args.dataset} has fixed query and "
                                   "gallery splits; drop --split")
        _check_dataset(args.dataset, args.data_root, "--dataset", split)
    return out
