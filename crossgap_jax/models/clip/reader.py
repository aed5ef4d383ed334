"""The CLIP family's loader hooks (see :mod:`crossgap_jax.models.checkpoint.loader`).

Sources: a local file or directory; a Hugging Face hub id of a transformers ``CLIPModel``
repo (``"openai/clip-vit-base-patch32"``); ``"hf-hub:<repo>"`` (an open_clip repo:
``open_clip_config.json`` + ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``);
``"openai"`` (or no checkpoint) with an OpenAI architecture name (OpenAI's release URL,
sha256 checked); an open_clip pretrained tag (``"datacomp_xl_s13b_b90k"``).

Formats (detected from the contents): ``openai-torchscript``, ``torch-state-dict``,
``safetensors``, sharded HF checkpoints (``*.index.json``), read by
:mod:`crossgap_jax.models.checkpoint.formats`; layouts ``openai`` (also open_clip) and ``hf``,
converted by :mod:`crossgap_jax.models.clip.convert`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.formats import read_index, read_json, read_state_dict
from crossgap_jax.models.checkpoint.hooks import Converted, Read, Request, warn_assumed
from crossgap_jax.models.checkpoint.hub import HUB_ID, hub_fetch, hub_split
from crossgap_jax.models.checkpoint.pretrained import fetch_openai, openai_release, resolve_clip_tag
from crossgap_jax.models.clip import convert
from crossgap_jax.models.clip.declared import (
    architecture_diff,
    config_from_hf,
    config_from_open_clip,
    match_registered,
)
from crossgap_jax.models.configs import OPENAI_MEAN, OPENAI_STD, CLIPConfig, list_architectures

QUICK_GELU = True

_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclasses.dataclass
class _Loaded:
    """What reading a source produced, before it meets the requested architecture."""

    sd: dict[str, np.ndarray] | None  # PyTorch-layout state dict (None for native)
    fmt: str
    paths: list[str]
    declared: CLIPConfig | None = None  # config stated by the files, if any
    declared_by: str | None = None
    open_clip: bool = False  # open_clip-style file (gelu default when nothing declares)
    extra: dict = dataclasses.field(default_factory=dict)


def _hf_mean_std(folder_or_file: str | None) -> tuple[tuple, tuple]:
    if folder_or_file and os.path.isfile(folder_or_file):
        pre = read_json(folder_or_file)
        return (tuple(pre.get("image_mean", OPENAI_MEAN)), tuple(pre.get("image_std", OPENAI_STD)))
    return OPENAI_MEAN, OPENAI_STD


def _read_file(path: str, allow_pickle: bool) -> _Loaded:
    """A single weights file; a sibling HF ``config.json`` / ``open_clip_config.json`` is
    used when present."""
    base = os.path.basename(path)
    folder = os.path.dirname(os.path.abspath(path))
    if base.endswith(".index.json"):
        sd, paths = read_index(path)
        fmt = "sharded-" + ("safetensors" if ".safetensors" in base else "torch-state-dict")
        wrapped = False
    else:
        sd, fmt, wrapped = read_state_dict(path, allow_pickle=allow_pickle)
        paths = [path]
    # open_clip files: its hub filenames, or a training checkpoint ({"state_dict": ...},
    # DDP "module." prefixes).
    open_clip = (base.startswith("open_clip") or wrapped
                 or any(k.startswith("module.") for k in sd))
    loaded = _Loaded(sd, fmt, paths, open_clip=open_clip)
    layout = convert.detect_layout(convert.strip_prefixes(sd))
    if layout == "hf" and os.path.isfile(os.path.join(folder, "config.json")):
        mean, std = _hf_mean_std(os.path.join(folder, "preprocessor_config.json"))
        loaded.declared = config_from_hf(read_json(os.path.join(folder, "config.json")),
                                         mean=mean, std=std)
        loaded.declared_by = os.path.join(folder, "config.json")
    elif loaded.open_clip and os.path.isfile(os.path.join(folder, "open_clip_config.json")):
        loaded.declared = config_from_open_clip(
            read_json(os.path.join(folder, "open_clip_config.json")))
        loaded.declared_by = os.path.join(folder, "open_clip_config.json")
    return loaded


def _read_directory(folder: str, allow_pickle: bool) -> _Loaded:
    """A HF ``CLIPModel`` directory (``save_pretrained``) or an open_clip hub snapshot."""
    has = lambda f: os.path.isfile(os.path.join(folder, f))
    order = []
    if has("config.json"):
        order += [f for f in _HF_WEIGHT_FILES if f.endswith(".safetensors")
                  or f.endswith("safetensors.index.json")]
    if has("open_clip_config.json"):
        order.append("open_clip_model.safetensors")
    if has("config.json"):
        order += ["pytorch_model.bin", "pytorch_model.bin.index.json"]
    order.append("open_clip_pytorch_model.bin")
    for f in order:
        if has(f):
            return _read_file(os.path.join(folder, f), allow_pickle)
    listing = ", ".join(sorted(os.listdir(folder))[:20]) or "(empty)"
    raise CheckpointNotFoundError(
        f"directory {folder} holds no CLIP weights: expected a transformers CLIPModel "
        f"(config.json + model.safetensors / pytorch_model.bin / sharded index), open_clip "
        f"files ({', '.join(_OPEN_CLIP_WEIGHT_FILES)}) or a native .safetensors; found: "
        f"{listing}", target=folder)


def _read_hf_hub(repo: str, allow_pickle: bool) -> _Loaded:
    """A transformers ``CLIPModel`` repo on the hub (an open_clip-only repo is passed on to
    :func:`_read_open_clip_hub`)."""
    try:
        found = hub_fetch(repo, ("config.json",), required=False,
                           then=("model.safetensors or pytorch_model.bin",))
    except CheckpointNotFoundError:
        # Unreachable hub: an open_clip repo may still be in the cache.
        if hub_fetch(repo, ("open_clip_config.json",), optional=True) is not None:
            return _read_open_clip_hub(repo, allow_pickle)
        raise
    if found is None:
        if hub_fetch(repo, ("open_clip_config.json",), optional=True) is not None:
            return _read_open_clip_hub(repo, allow_pickle)
        raise CheckpointNotFoundError(f"hub repo {repo!r} has neither config.json (transformers) "
                                      f"nor open_clip_config.json (open_clip)",
                                      repo_id=hub_split(repo)[0])
    cfg_path = found[1]
    filename, path = hub_fetch(repo, _HF_WEIGHT_FILES)
    pre = hub_fetch(repo, ("preprocessor_config.json",), optional=True)
    mean, std = _hf_mean_std(pre[1] if pre else None)
    if filename.endswith(".index.json"):
        sd, paths = read_index(path, fetch=lambda s: hub_fetch(repo, (s,))[1])
        fmt = "sharded-" + ("safetensors" if ".safetensors" in filename else "torch-state-dict")
    else:
        sd, fmt, _ = read_state_dict(path, allow_pickle=allow_pickle)
        paths = [path]
    return _Loaded(sd, fmt, paths, config_from_hf(read_json(cfg_path), mean=mean, std=std),
                   f"{repo}/config.json", extra={"origin": "hf-hub", "repo_id": repo})


def _read_open_clip_hub(repo: str, allow_pickle: bool) -> _Loaded:
    found = hub_fetch(repo, ("open_clip_config.json",), required=False,
                       then=(" or ".join(_OPEN_CLIP_WEIGHT_FILES),))
    _, path = hub_fetch(repo, _OPEN_CLIP_WEIGHT_FILES)
    sd, fmt, _ = read_state_dict(path, allow_pickle=allow_pickle)
    declared = config_from_open_clip(read_json(found[1])) if found else None
    return _Loaded(sd, fmt, [path], declared, f"{repo}/open_clip_config.json" if found else None,
                   open_clip=True, extra={"origin": "open_clip-hub", "repo_id": repo})


def _read_source(source: str, *, allow_pickle: bool) -> _Loaded:
    """Any source string except pretrained tags."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        loaded = _read_directory(path, allow_pickle)
        loaded.extra.setdefault("origin", "local")
        return loaded
    if os.path.isfile(path):
        loaded = _read_file(path, allow_pickle)
        loaded.extra.setdefault("origin", "local")
        return loaded
    if source.startswith("hf-hub:"):
        return _read_open_clip_hub(source[len("hf-hub:"):], allow_pickle)
    if HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        try:
            return _read_hf_hub(source, allow_pickle)
        except CheckpointNotFoundError as e:
            hint = (f" ({source!r} is not a local path either; known architecture names: "
                    f"{', '.join(list_architectures())})")
            raise CheckpointNotFoundError(str(e) + hint, repo_id=e.repo_id,
                                          filenames=e.filenames, target=e.target) from e
    raise CheckpointNotFoundError(f"no such checkpoint file or directory: {source}",
                                  target=path)


# ---------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------
def claims(source: str) -> bool:
    """CLIP is the fallback family: it claims nothing by itself."""
    del source
    return False


def read(req: Request) -> Read:
    """Fetch and read a CLIP checkpoint (see the module docstring for the sources)."""
    arch = req.arch
    extra: dict[str, Any] = {}
    new_arch = None
    if arch is not None:
        if getattr(arch, "family", "clip") != "clip":
            raise CheckpointError(f"{arch.name!r} is a {arch.family!r} model, not CLIP")
        resolved = resolve_clip_tag(arch.name, req.source)
        if resolved and resolved[0] == "openai":
            path = fetch_openai(resolved[1], req.cache_dir, progress=req.progress)
            loaded = _read_file(path, req.allow_pickle)
            url, sha = openai_release(resolved[1])
            loaded.extra.update(origin="openai-url", url=url, sha256=sha,
                                source=req.source or "openai")
            if not arch.quick_gelu and req.quick_gelu is None:
                # open_clip's "openai" weights always run with OpenAI's activation.
                qg = arch.replace(quick_gelu=True)
                new_arch = qg.replace(name=match_registered(qg, prefer=arch.name) or qg.name)
        else:
            loaded = _read_source(resolved[1] if resolved else req.source,
                                  allow_pickle=req.allow_pickle)
    else:
        loaded = _read_source(req.source, allow_pickle=req.allow_pickle)
    extra.update(loaded.extra)
    layout = convert.detect_layout(convert.strip_prefixes(loaded.sd))
    declared, declared_by = loaded.declared, loaded.declared_by
    if arch is None and declared is None:
        declared, activation_source = _infer(loaded, layout, req)
        declared_by = "tensor shapes"
        extra["activation_source"] = activation_source
    return Read(loaded.sd, loaded.fmt, loaded.paths, layout, declared, declared_by,
                arch=new_arch, extra=extra)


def _infer(loaded: _Loaded, layout: str, req: Request) -> tuple[CLIPConfig, str]:
    """Architecture from tensor shapes; the activation is a default no file states."""
    assumed_quick = not loaded.open_clip
    try:
        config = convert.infer_config(loaded.sd, name="custom", quick_gelu=assumed_quick,
                                      layout=layout)
    except KeyError as e:
        raise CheckpointError(f"{req.label}: cannot infer the architecture, tensor "
                              f"{e} is missing") from e
    activation_source = ("default for open_clip files (GELU)" if loaded.open_clip
                         else "default for OpenAI / HF layouts (quick GELU)")
    if req.quick_gelu is None:
        warn_assumed(f"{req.label}: the checkpoint does not state its activation; assuming "
                     f"{'quick GELU' if assumed_quick else 'exact GELU'} ({activation_source}). "
                     f"Pass quick_gelu= to choose.")
    return config.replace(name=match_registered(config) or "custom"), activation_source


def convert_tensors(read: Read, config: CLIPConfig) -> Converted:
    """OpenAI / HF / open_clip state dict -> Flax paths (shapes checked by the loader)."""
    flat, names, unexpected = convert.state_dict_to_flat(read.tensors, config,
                                                          layout=read.layout)
    return Converted(flat, names, unexpected)


def adopt(requested: CLIPConfig, declared: CLIPConfig) -> CLIPConfig:
    """The requested architecture with the file's preprocessing mean / std."""
    return requested.replace(mean=declared.mean, std=declared.std)


__all__ = ["adopt", "architecture_diff", "claims", "config_from_hf", "config_from_open_clip",
           "convert_tensors", "match_registered", "read"]
