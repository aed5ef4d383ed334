"""PE-Core checkpoints -> the Flax params of :mod:`crossgap_jax.models.pe_core.model`, and
the family's loader hooks (:mod:`crossgap_jax.models.checkpoint.loader`).

Two layouts, detected from the tensor names:

- ``"open_clip"``: open_clip's ``PE-Core-*`` state dict (hub ``timm/PE-Core-B-16``:
  ``open_clip_config.json`` + ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``):
  ``visual.trunk.*`` (timm ``Eva`` names), ``text.*``, ``logit_scale``. Our param names
  mirror it: renaming plus transposes (Linear ``.T``, conv ``OIHW -> HWIO``).
- ``"pe"``: perception_models' own files (hub ``facebook/PE-Core-B16-224``,
  ``PE-Core-B16-224.pt``; ``core/vision_encoder/pe.py``'s ``CLIP``): ``visual.conv1``,
  ``visual.class_embedding`` ``(w,)``, ``visual.positional_embedding`` ``(1 + N, w)``,
  ``visual.ln_pre`` / ``ln_post``, ``visual.transformer.resblocks.i.{ln_1, attn.in_proj_*,
  attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``visual.attn_pool.{probe, attn.in_proj_*,
  attn.out_proj, layernorm, mlp.c_fc, mlp.c_proj}``, ``visual.proj`` ``(w, D)``, and the text
  tower at the top level (``token_embedding``, ``positional_embedding``, ``transformer.*``,
  ``ln_final``, ``text_projection``), ``logit_scale``; optionally wrapped in
  ``{"state_dict"}`` / ``{"weights"}`` with ``module.`` prefixes (PE's ``load_ckpt``).
  They are renamed to open_clip's names first, as timm's ``_convert_pe`` does: the pool's
  fused ``in_proj`` split into ``q`` (first ``w`` rows) and ``kv`` (the rest), ``proj``
  becomes ``head`` with a zero bias, the class token and positions gain leading 1s.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.models.checkpoint.errors import (
    CheckpointError,
    CheckpointLayoutError,
    CheckpointNotFoundError,
)
from crossgap_jax.models.checkpoint.formats import (
    read_json,
    read_safetensors,
    safetensors_header,
    sniff_format,
    torch_to_numpy,
    unrecognised_file,
)
from crossgap_jax.models.checkpoint.hooks import (
    Converted,
    Read,
    Request,
    field_diffs,
    registered_like,
)
from crossgap_jax.models.checkpoint.hub import HUB_ID, hub_fetch
from crossgap_jax.models.checkpoint.pretrained import (
    PE_CORE_DEFAULT_TAG,
    PE_CORE_PRETRAINED,
    resolve_family_tag,
)
from crossgap_jax.models.checkpoint.torch_names import Mapped, rename, to_state_dict, torch_path
from crossgap_jax.models.configs import TextConfig, VisionConfig
from crossgap_jax.models.pe_core.model import PECoreConfig

Flat = dict[tuple[str, ...], np.ndarray]

_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_LAYER_NORMS = {"norm_pre", "norm", "norm1", "norm2", "ln_1", "ln_2", "ln_final"}
_PARAMS = {"cls_token", "pos_embed", "latent", "positional_embedding", "text_projection",
           "logit_scale"}


# ---------------------------------------------------------------------------------------
# perception_models names -> open_clip names
# ---------------------------------------------------------------------------------------
def _unwrap(sd: Mapping[str, Any]) -> dict[str, Any]:
    """PE's ``load_ckpt`` unwrapping: ``state_dict`` / ``weights`` wrappers, ``module.``."""
    for key in ("state_dict", "weights"):
        if isinstance(sd.get(key), Mapping):
            sd = sd[key]
            break
    return {k.replace("module.", ""): v for k, v in sd.items()}


_PE_BLOCK = [("ln_1", "norm1"), ("ln_2", "norm2"), ("attn.in_proj_weight", "attn.qkv.weight"),
             ("attn.in_proj_bias", "attn.qkv.bias"), ("attn.out_proj", "attn.proj"),
             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]


def pe_to_open_clip(sd: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """perception_models' ``CLIP`` state dict -> open_clip ``PE-Core`` names.

    Returns ``(renamed, unexpected)``: tensors with no open_clip counterpart are listed.
    """
    out: dict[str, np.ndarray] = {}
    unexpected: list[str] = []
    for name, value in _unwrap(sd).items():
        v = np.asarray(value)
        if name.startswith("visual."):
            k = name[len("visual."):]
            m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", k)
            if m:
                rest = m.group(2)
                for a, b in _PE_BLOCK:
                    if rest.startswith(a):
                        rest = b + rest[len(a):]
                        break
                out[f"visual.trunk.blocks.{m.group(1)}.{rest}"] = v
            elif k == "conv1.weight":
                out["visual.trunk.patch_embed.proj.weight"] = v
            elif k == "class_embedding":
                out["visual.trunk.cls_token"] = v.reshape(1, 1, -1)
            elif k == "positional_embedding":
                out["visual.trunk.pos_embed"] = v[None]
            elif k.split(".")[0] in ("ln_pre", "ln_post"):
                leaf = k.split(".", 1)[1]
                out[f"visual.trunk.{'norm_pre' if k.startswith('ln_pre') else 'norm'}.{leaf}"] = v
            elif k == "proj":
                out["visual.trunk.head.weight"] = v.T
                out["visual.trunk.head.bias"] = np.zeros(v.shape[1], v.dtype)
            elif k == "attn_pool.probe":
                out["visual.trunk.attn_pool.latent"] = v
            elif k in ("attn_pool.attn.in_proj_weight", "attn_pool.attn.in_proj_bias"):
                leaf = "weight" if k.endswith("weight") else "bias"
                w = v.shape[0] // 3
                out[f"visual.trunk.attn_pool.q.{leaf}"] = v[:w]
                out[f"visual.trunk.attn_pool.kv.{leaf}"] = v[w:]
            elif k.startswith("attn_pool."):
                k = (k.replace("attn_pool.attn.out_proj", "attn_pool.proj")
                     .replace("attn_pool.layernorm", "attn_pool.norm")
                     .replace("mlp.c_fc", "mlp.fc1").replace("mlp.c_proj", "mlp.fc2"))
                out[f"visual.trunk.{k}"] = v
            else:
                unexpected.append(name)
        elif name == "logit_scale":
            out[name] = v
        elif name.split(".")[0] in ("token_embedding", "positional_embedding", "transformer",
                                    "ln_final", "text_projection"):
            out[f"text.{name}"] = v
        else:
            unexpected.append(name)
    return out, unexpected


# ---------------------------------------------------------------------------------------
# open_clip names <-> Flax paths
# ---------------------------------------------------------------------------------------
_STACKS = ("blocks", "resblocks")


def _flax_path(name: str) -> Mapped:
    """open_clip tensor name -> (Flax path, transform: none | linear | conv)."""
    if name.split(".")[0] not in ("visual", "text", "logit_scale"):
        return None
    return torch_path(name, stacks=_STACKS, norms=_LAYER_NORMS, embeddings=("token_embedding",),
                      convs=("patch_embed.proj",), plain=_PARAMS)


def state_dict_to_flat(sd: Mapping[str, Any]) -> tuple[Flat, dict[tuple[str, ...], str],
                                                       list[str]]:
    """open_clip ``PE-Core`` names -> Flax paths (unchecked): ``(flat, names, unexpected)``."""
    flat, names, unexpected, _ = rename(sd, _flax_path)
    if ("logit_scale",) in flat and flat[("logit_scale",)].size == 1:
        flat[("logit_scale",)] = flat[("logit_scale",)].reshape(())  # some writers store (1,)
    return flat, names, unexpected


def params_to_open_clip_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`state_dict_to_flat` (float32 NumPy, open_clip's names)."""
    return to_state_dict(params, _STACKS)


def detect_layout(sd: Mapping[str, Any]) -> str | None:
    """``"open_clip"``, ``"pe"`` or None (not a PE-Core image-text state dict)."""
    keys = {k.replace("module.", "") for k in sd}
    if "visual.trunk.attn_pool.latent" in keys and "text.text_projection" in keys:
        return "open_clip"
    if "visual.attn_pool.probe" in keys and "visual.conv1.weight" in keys \
            and "text_projection" in keys:
        return "pe"
    return None


# ---------------------------------------------------------------------------------------
# Architecture from tensor shapes
# ---------------------------------------------------------------------------------------
def infer_config(sd: Mapping[str, Any], name: str = "custom-pe-core") -> PECoreConfig:
    """Architecture from open_clip-named tensor shapes (heads = width // 64 in both towers
    as in every PE-Core model; ``pool_heads`` 8, which no shape states).

    Raises:
        CheckpointError: a tensor the inference needs is missing (named).
    """
    need = ["visual.trunk.patch_embed.proj.weight", "visual.trunk.pos_embed",
            "visual.trunk.head.weight", "text.positional_embedding",
            "text.token_embedding.weight", "text.text_projection"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"not a PE-Core image-text checkpoint: missing {missing}")
    shape = lambda k: tuple(np.shape(sd[k]))
    vw, _, patch, _ = shape("visual.trunk.patch_embed.proj.weight")
    cls = "visual.trunk.cls_token" in sd
    grid = int(round((shape("visual.trunk.pos_embed")[1] - int(cls)) ** 0.5))
    count = lambda pre: len({k[len(pre):].split(".")[0] for k in sd if k.startswith(pre)})
    ctx, tw = shape("text.positional_embedding")
    fc1 = "visual.trunk.blocks.0.mlp.fc1.weight"
    return PECoreConfig(
        name=name, embed_dim=shape("visual.trunk.head.weight")[0],
        vision=VisionConfig(image_size=grid * patch, patch_size=patch, width=vw,
                            layers=count("visual.trunk.blocks."), heads=vw // 64,
                            mlp_ratio=(shape(fc1)[0] / vw) if fc1 in sd else 4.0),
        text=TextConfig(context_length=ctx, vocab_size=shape("text.token_embedding.weight")[0],
                        width=tw, layers=count("text.transformer.resblocks."), heads=tw // 64),
        class_token=cls)


_FIELDS = ("embed_dim", "pool_heads", "pool_mlp_ratio", "class_token", "rope_theta")


_TOWER_FIELDS = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio",
                 "context_length", "vocab_size")


def architecture_diff(a: PECoreConfig, b: PECoreConfig) -> list[str]:
    """``"field: a vs b"`` for every shape difference."""
    return field_diffs(a, b, _FIELDS, {"vision": _TOWER_FIELDS, "text": _TOWER_FIELDS})


def match_registered(config: PECoreConfig, prefer: str | None = None) -> str | None:
    """The first registered PE-Core architecture with ``config``'s shapes, or None."""
    del prefer
    return registered_like(lambda c: isinstance(c, PECoreConfig)
                           and not architecture_diff(c, config))


def adopt(requested: PECoreConfig, declared: PECoreConfig) -> PECoreConfig:
    """The requested architecture with the file's preprocessing (mean, std, resampling)."""
    return requested.replace(mean=declared.mean, std=declared.std,
                             interpolation=declared.interpolation)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
_HUB_NAME = re.compile(r"(^|/)PE-Core-", re.IGNORECASE)


def _tensor_names(path: str) -> bytes:
    """Bytes that hold the tensor names of a weights file, read without unpickling: the
    safetensors header or a torch zip's pickle (b"" for anything else)."""
    try:
        kind = sniff_format(path)
        if kind == "safetensors":
            return " ".join(safetensors_header(path)[0]).encode()
        if kind == "torch-zip":
            with zipfile.ZipFile(path) as z:
                pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                return z.read(pkl[0]) if pkl else b""
    except (OSError, ValueError, CheckpointError, zipfile.BadZipFile):
        return b""
    return b""


def _claims_file(path: str) -> bool:
    head = _tensor_names(path)
    return (b"attn_pool.latent" in head and b"visual.trunk" in head) or \
        (b"attn_pool.probe" in head and b"conv1.weight" in head and b"text_projection" in head)


def claims(source: str) -> bool:
    """A PE-Core weights file (open_clip or perception_models names, read without
    unpickling), an open_clip directory whose config names a ``vit_pe_core`` trunk, or a hub
    id of a PE-Core repo (``hf-hub:timm/PE-Core-B-16``, ``facebook/PE-Core-B16-224``)."""
    source = str(source)
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        cfg = os.path.join(path, "open_clip_config.json")
        try:
            return os.path.isfile(cfg) and "vit_pe_core" in open(cfg).read()
        except OSError:
            return False
    if os.path.isfile(path):
        return _claims_file(path)
    repo = source[len("hf-hub:"):] if source.startswith("hf-hub:") else source
    return bool(HUB_ID.match(repo)) and bool(_HUB_NAME.search(repo.split("@")[0]))


def _read_weights(path: str, allow_pickle: bool) -> tuple[dict[str, np.ndarray], str]:
    """A safetensors or torch file -> (tensors by the file's names, format)."""
    kind = sniff_format(path)
    if kind == "safetensors":
        return read_safetensors(path)[0], "safetensors"
    if kind not in ("torch-zip", "torch-pickle"):
        raise unrecognised_file(path)
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise CheckpointError(f"{path} is a PyTorch file; reading it needs torch") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # noqa: BLE001 - torch raises several types here
        raise CheckpointError(f"cannot read {path} with torch.load(weights_only="
                              f"{not allow_pickle}): {e}. If you trust the file, pass "
                              f"allow_pickle=True.") from e
    if isinstance(obj, Mapping):
        obj = _unwrap(obj)
    sd, _ = torch_to_numpy(obj)
    return sd, "torch-state-dict"


def _mean_std(cfg: Mapping[str, Any]) -> dict[str, Any]:
    pre = cfg.get("preprocess_cfg") or {}
    kw: dict[str, Any] = {}
    if "mean" in pre and "std" in pre:
        kw.update(mean=tuple(float(x) for x in pre["mean"]),
                  std=tuple(float(x) for x in pre["std"]))
    if pre.get("interpolation") in ("bilinear", "bicubic"):
        kw["interpolation"] = pre["interpolation"]
    return kw


def _locate(req: Request) -> tuple[str, str | None, dict[str, Any]]:
    """(weights file, open_clip_config.json or None, info extras) of a request."""
    source = req.source
    if req.arch is not None:
        if not isinstance(req.arch, PECoreConfig):
            raise CheckpointError(f"{req.arch.name!r} is not a PE-Core architecture")
        source = resolve_family_tag(PE_CORE_PRETRAINED, req.arch.name, source,
                                    PE_CORE_DEFAULT_TAG, "PE-Core") or source
    source = str(source)
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        weights = next((os.path.join(path, f) for f in (*_OPEN_CLIP_FILES,)
                        if os.path.isfile(os.path.join(path, f))), None)
        if weights is None:
            pts = sorted(f for f in os.listdir(path) if f.endswith(".pt"))
            if not pts:
                raise CheckpointNotFoundError(
                    f"{path}: no PE-Core weights ({', '.join(_OPEN_CLIP_FILES)} or a "
                    f"perception_models .pt)", target=path)
            weights = os.path.join(path, pts[0])
        cfg = os.path.join(path, "open_clip_config.json")
        return weights, (cfg if os.path.isfile(cfg) else None), {"origin": "local"}
    if os.path.isfile(path):
        cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "open_clip_config.json")
        return path, (cfg if os.path.isfile(cfg) else None), {"origin": "local"}
    repo = source[len("hf-hub:"):] if source.startswith("hf-hub:") else source
    if not HUB_ID.match(repo):
        raise CheckpointNotFoundError(f"no such PE-Core checkpoint: {source}", target=path)
    if repo.split("@")[0].lower().startswith("facebook/"):  # perception_models' own repo
        name = repo.split("@")[0].split("/", 1)[1]
        _, weights = hub_fetch(repo, (f"{name}.pt",))
        return weights, None, {"origin": "hf-hub", "repo_id": repo}
    found = hub_fetch(repo, ("open_clip_config.json",), required=False,
                      then=(" or ".join(_OPEN_CLIP_FILES),))
    _, weights = hub_fetch(repo, _OPEN_CLIP_FILES)
    return weights, (found[1] if found else None), {"origin": "open_clip-hub", "repo_id": repo}


def read(req: Request) -> Read:
    """An open_clip ``PE-Core`` file / directory / hub repo (``hf-hub:timm/PE-Core-B-16``,
    the tag ``"meta"``), or a perception_models ``.pt`` (``facebook/PE-Core-B16-224``)."""
    weights, cfg_file, extra = _locate(req)
    raw, fmt = _read_weights(weights, req.allow_pickle)
    layout = detect_layout(raw)
    if layout is None:
        raise CheckpointLayoutError(
            f"{weights}: not a PE-Core image-text checkpoint (expected open_clip's "
            f"visual.trunk.* / text.* names or perception_models' visual.conv1 / "
            f"visual.attn_pool.probe / text_projection)")
    sd, unexpected = pe_to_open_clip(raw) if layout == "pe" else (raw, [])
    declared = infer_config(sd)
    declared_by = "tensor shapes"
    if cfg_file is not None:
        cfg = read_json(cfg_file)
        timm_name = ((cfg.get("model_cfg") or {}).get("vision_cfg") or {}).get(
            "timm_model_name", "")
        if timm_name and not str(timm_name).startswith("vit_pe_core"):
            raise CheckpointError(f"{cfg_file}: its image tower is {timm_name!r}, not a "
                                  f"PE-Core trunk (vit_pe_core_*)")
        declared = declared.replace(**_mean_std(cfg))
        declared_by = cfg_file
    extra.update(tokenizer_file=None, pe_unexpected=unexpected)
    return Read(sd, fmt, [weights], layout, declared, declared_by, extra=extra)


def convert_tensors(read: Read, config: PECoreConfig) -> Converted:
    """open_clip-named tensors (PE's renamed by :func:`read`) -> Flax paths (shapes checked
    by the loader)."""
    del config
    flat, names, unexpected = state_dict_to_flat(read.tensors)
    unexpected = unexpected + list(read.extra.pop("pe_unexpected", []))
    return Converted(flat, names, unexpected)
