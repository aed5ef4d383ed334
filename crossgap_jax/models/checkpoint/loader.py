"""One loading pipeline for every model family: :func:`load`.

Every load runs the same five steps; only step 2 and the conversion in step 4 belong to
a family::

    1. resolve   name / alias / config + checkpoint (or pretrained=) -> Request
                 (a native file short-cuts to step 4: it carries its config)
    2. read      hook.read(request) -> Read       (fetch + read files; declared config)
    3. configure requested vs declared architecture (hook.architecture_diff), one message
    4. convert   hook.convert_tensors(read, config) -> Converted; fit.check_fit (the one
                 fit check)
    5. finish    float32 device arrays, content fingerprint (fingerprint.params_fingerprint),
                 the info dict

Family hooks (the interface a new family implements; its module path is the ``loader`` of
its :class:`~crossgap_jax.models.families.Family` entry; the types it exchanges live in
:mod:`~crossgap_jax.models.checkpoint.hooks`, so a hook module never imports the loader).
A hook module defines:

``claims(source: str) -> bool``
    Whether a local path is this family's checkpoint (used when no architecture is named).
``read(request: Request) -> Read``
    Resolve the request's pretrained tag / hub id / path, fetch and read the files.
    ``Read.declared`` is the architecture the files state (None when they state none and
    the request names one); ``Read.extra`` holds info entries (``origin``, ``url``,
    ``sha256``, ``tokenizer_file``, ...).
``convert_tensors(read: Read, config) -> Converted``
    Map the file's tensors to Flax paths (no shape checks: :func:`load` runs
    :func:`~crossgap_jax.models.checkpoint.fit.check_fit`).
``architecture_diff(requested, declared) -> list[str]``
    ``"field: a vs b"`` lines for every shape / activation difference (empty: same).
``match_registered(config, prefer=None) -> str | None``
    The registered name of an identical architecture.
``adopt(requested, declared) -> config``
    The config to load with when both exist (e.g. the file's mean/std kept).
optional ``QUICK_GELU = True``
    The family honours ``quick_gelu=`` (CLIP, SLIP's text tower).

The family's model module (``families.py``) must give ``param_shapes(config)`` and
``CONFIG_CLASS``: the fit check and the native format use them. The model files
(``<family>/model.py``) import no reader or converter.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import jax
import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointLayoutError
from crossgap_jax.models.checkpoint.fingerprint import params_fingerprint
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.checkpoint.hooks import Read, Request
from crossgap_jax.models.checkpoint.hub import hub_sha256
from crossgap_jax.models.checkpoint.native import load_native, native_file
from crossgap_jax.models.configs import CLIPConfig, get_config
from crossgap_jax.models.families import FAMILIES

Params = Any

def loader_hooks(family: str) -> Any:
    """The hook module of ``family``.

    Raises:
        CheckpointError: no loader is registered for ``family`` (the message lists the
            registered ones and how to add one).
    """
    if family not in FAMILIES:
        raise CheckpointError(
            f"no checkpoint loader for model family {family!r}; registered: "
            f"{', '.join(sorted(FAMILIES))}. A family adds one with "
            f"crossgap_jax.models.register_family(Family({family!r}, model=..., loader=...)) "
            f"(hooks: claims, read, convert_tensors, architecture_diff, match_registered, adopt)")
    return importlib.import_module(FAMILIES[family].loader)


def detect_family(source: str) -> str:
    """The family whose ``claims(source)`` recognises a checkpoint path, else ``"clip"``."""
    for family in FAMILIES:
        if family != "clip" and loader_hooks(family).claims(source):
            return family
    return "clip"


def resolve_arch(name: Any) -> CLIPConfig:
    """A config, a registered name or an alias (``"ViT-B-16-SigLIP"``) -> config."""
    return get_config(name)


def _is_arch(name: Any) -> bool:
    if isinstance(name, CLIPConfig):
        return True
    try:
        get_config(name)
    except (KeyError, TypeError):
        return False
    return True


def load(model: str | CLIPConfig, checkpoint: str | None = None, *,
         pretrained: str | None = None, family: str | None = None,
         quick_gelu: bool | None = None, allow_pickle: bool = False,
         cache_dir: str | None = None, progress: bool = True, tokenizer: str | None = None,
         ) -> tuple[CLIPConfig, Params, dict[str, Any]]:
    """Load weights of any registered family as ``(config, params, info)``.

    Args:
        model: an architecture name (``"ViT-B/32"``, open_clip's ``"ViT-B-16-SigLIP"``),
            a config, or - with no checkpoint - the checkpoint itself (path / hub id), whose
            architecture comes from its files.
        checkpoint: a file, directory, hub id, ``"hf-hub:<repo>"`` or pretrained tag;
            None: the architecture's default release.
        pretrained: open_clip's name for ``checkpoint`` (give one of the two).
        family: force the family (default: the architecture's, else detected from the
            checkpoint's files with each family's ``claims`` hook).
        quick_gelu: force the activation (families that honour it).
        allow_pickle: allow ``torch.load(weights_only=False)`` (trusted files only).
        cache_dir: download cache (default ``hub.default_cache_dir()``).
        progress: show download progress.
        tokenizer: a tokenizer model file (SigLIP's ``spiece.model``).

    Returns:
        ``(config, params, info)``: params are float32 ``jax.Array`` leaves; ``info`` has
        ``source``, ``path``, ``format`` (detected from the bytes: ``openai-torchscript``,
        ``torch-state-dict``, ``safetensors``, ``sharded-safetensors``,
        ``sharded-torch-state-dict``, ``native``, ``big_vision-npz``; torch is imported for
        the torch formats only), ``layout``, ``origin`` (``local``, ``openai-url``,
        ``hf-hub``, ``open_clip-hub``, ``url``), ``sha256`` (file),
        ``params_sha256`` (content fingerprint of the params), ``checkpoint_dtype``,
        ``config_source``, ``activation_source``, ``architecture``, ``family`` and the
        family's extras.

    Raises:
        KeyError: an unknown architecture name with a checkpoint (names listed).
        CheckpointNotFoundError: the weights are not local and cannot be fetched (offline:
            ``HF_HUB_OFFLINE`` / ``CROSSGAP_JAX_OFFLINE`` set, or the hub unreachable); the
            message says what to fetch and where to put it.
        CheckpointError: unreadable files, a different declared architecture, tensors that
            do not fit (named), or an unknown family.
    """
    checkpoint = _one_of(checkpoint, pretrained)
    arch = resolve_arch(model) if (checkpoint is not None or _is_arch(model)) else None
    source = checkpoint if arch is not None else model
    req = Request(arch, source, source if arch is not None else model, allow_pickle,
                  cache_dir, progress, quick_gelu, tokenizer)

    native = native_file(os.path.expanduser(source)) if isinstance(source, str) else None
    if native is not None:
        config, params, info = _load_native(native, arch)
    else:
        fam = family or (getattr(arch, "family", "clip") if arch is not None
                         else detect_family(str(source)))
        try:
            config, params, info = _load_family(loader_hooks(fam), req)
        except CheckpointLayoutError as e:
            hint = _other_family_hint(source, fam)
            if hint is None:
                raise
            raise CheckpointError(f"{e}; {hint}") from None
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    info["params_sha256"] = params_fingerprint(params)  # once per load, on the host copy
    # device_put copies: jnp.asarray would alias the NumPy buffers on CPU, and those may be
    # memory maps of the checkpoint file (torch.load(mmap=True)).
    params = jax.tree.map(jax.device_put, params)
    return config, params, info


def _other_family_hint(source: Any, family: str) -> str | None:
    """Why a local ``source`` failed as ``family`` when another family recognises it: its
    own files (a PE-Core file named as a CLIP architecture), or - for a weights file - its
    folder (a transformers / open_clip model directory, whose reader needs the config
    beside the file). None when nothing else claims it."""
    path = os.path.expanduser(source) if isinstance(source, str) else None
    if path is None or not os.path.exists(path):
        return None
    other = detect_family(path)
    if other not in ("clip", family):
        return (f"it looks like a {other} checkpoint: load it without an architecture name "
                f"(--model), or with a {other} one")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isfile(path) and detect_family(folder) != "clip":
        return f"pass the folder ({folder}), not the weights file inside it"
    return None


def _one_of(checkpoint: str | None, pretrained: str | None) -> str | None:
    if pretrained is not None and checkpoint is not None and pretrained != checkpoint:
        raise ValueError(f"give checkpoint= or pretrained= (the same thing, open_clip's "
                         f"name), not both: {checkpoint!r} vs {pretrained!r}")
    return checkpoint if checkpoint is not None else pretrained


def _load_native(path: str, arch: CLIPConfig | None) -> tuple[CLIPConfig, Params, dict]:
    config, params, info = load_native(path)
    family = getattr(config, "family", "clip")
    if arch is not None:
        if getattr(arch, "family", "clip") != family:
            diffs = [f"family: {getattr(arch, 'family', 'clip')} vs {family}"]
        else:
            diffs = loader_hooks(family).architecture_diff(arch, config)
        if diffs:
            raise _mismatch(path, arch, diffs, "")
    info.update(origin="local", architecture=config.name, family=family,
                checkpoint_dtype="float32", config_source=path, activation_source=path)
    return config, params, info


def _mismatch(declared_by: Any, arch: CLIPConfig, diffs: list[str], hint: str
              ) -> CheckpointError:
    """The one requested-vs-declared architecture error."""
    return CheckpointError(
        f"{declared_by} declares a different architecture than {arch.name!r} (requested vs "
        f"file): {'; '.join(diffs)}. Load it without an architecture name to use the "
        f"file's{hint}.")


def _load_family(hooks: Any, req: Request) -> tuple[CLIPConfig, Params, dict]:
    read = hooks.read(req)
    arch = read.arch or req.arch
    config, config_source, activation_source = _configure(hooks, req, read, arch)
    conv = hooks.convert_tensors(read, config)
    params = check_fit(conv.flat, config, source=_source_name(read),
                       layout=read.layout, names=conv.names, unexpected=conv.unexpected)
    dtypes = sorted({str(v.dtype) for v in read.tensors.values()
                     if np.issubdtype(np.asarray(v).dtype, np.floating)})
    extra = dict(read.extra)
    sha = extra.pop("sha256", None)
    if sha is None and len(read.paths) == 1:
        sha = hub_sha256(read.paths[0])
    info = {
        "source": req.label if req.label is not None else "default",
        "path": read.paths[0] if len(read.paths) == 1 else list(read.paths),
        "format": read.fmt,
        "layout": read.layout,
        "origin": extra.pop("origin", "local"),
        "sha256": sha,
        "checkpoint_dtype": dtypes[0] if len(dtypes) == 1 else ",".join(dtypes),
        "config_source": config_source,
        "activation_source": activation_source,
        "architecture": config.name,
        "family": getattr(config, "family", "clip"),
        **conv.extra,
        **extra,
    }
    return config, params, info


def _source_name(read: Read) -> str:
    return read.paths[0] if len(read.paths) == 1 else f"{read.paths[0]} (+{len(read.paths) - 1})"


def _configure(hooks: Any, req: Request, read: Read, arch: CLIPConfig | None
               ) -> tuple[CLIPConfig, str, str]:
    """Step 3: the config to load with, where it came from, where its activation came from."""
    declared = read.declared
    activation_source = read.extra.pop("activation_source", None)
    honours_qg = getattr(hooks, "QUICK_GELU", False) and req.quick_gelu is not None
    if arch is not None:
        config, config_source = arch, f"architecture {arch.name!r}"
        if declared is not None:
            diffs = hooks.architecture_diff(arch, declared)
            if honours_qg:
                diffs = [d for d in diffs if not d.startswith("quick_gelu")]
            if diffs:
                raise _mismatch(read.declared_by, arch, diffs,
                                ", or pass quick_gelu= for an activation-only difference"
                                if any(d.startswith("quick_gelu") for d in diffs) else "")
            config = hooks.adopt(arch, declared)
        activation_source = activation_source or config_source
    elif declared is not None:
        # A registered twin wins (fields no file states, e.g. SLIP's heads, come from it).
        match = hooks.match_registered(declared)
        config = hooks.adopt(get_config(match), declared) if match else declared
        config_source = read.declared_by or "checkpoint"
        activation_source = activation_source or config_source
    else:
        raise CheckpointError(f"{req.label}: the reader found no architecture (name one)")
    if honours_qg:
        activation_source = "argument"
        if bool(req.quick_gelu) != config.quick_gelu:
            renamed = config.replace(quick_gelu=bool(req.quick_gelu))
            config = renamed.replace(name=hooks.match_registered(renamed, prefer=config.name)
                                     or f"{config.name}-quickgelu={bool(req.quick_gelu)}")
    return config, config_source, activation_source


__all__ = ["detect_family", "load", "loader_hooks"]
