"""Read DINOv3 ViT checkpoints into the Flax params of :mod:`crossgap_jax.models.dinov3.model`.

Two spellings of the same weights (``layout`` ``"hf"`` and ``"meta"``), as
``transformers DINOv3ViTModel name | Meta facebookresearch/dinov3 name -> Flax path``:

- ``embeddings.cls_token`` ``(1, 1, W)`` | ``cls_token`` -> ``embeddings/cls_token``
- ``embeddings.register_tokens`` ``(1, R, W)`` | ``storage_tokens``
  -> ``embeddings/register_tokens``
- ``embeddings.patch_embeddings.*`` | ``patch_embed.proj.*``
  -> ``embeddings/patch_embeddings/proj``
- ``[model.]layer.i.norm{1,2}.*`` | ``blocks.i.norm{1,2}.*`` -> ``layer_i/norm{1,2}``
- ``[model.]layer.i.attention.{q,k,v}_proj.*`` | ``blocks.i.attn.qkv.*`` (fused)
  -> ``layer_i/attention/{q,k,v}_proj``
- ``[model.]layer.i.attention.o_proj.*`` | ``blocks.i.attn.proj.*``
  -> ``layer_i/attention/o_proj``
- ``[model.]layer.i.layer_scale{1,2}.lambda1`` | ``blocks.i.ls{1,2}.gamma``
  -> ``layer_i/layer_scale{1,2}/lambda1``
- ``[model.]layer.i.mlp.{up,down}_proj.*`` | ``blocks.i.mlp.fc{1,2}.*``
  -> ``layer_i/mlp/fc{1,2}``
- ``norm.*`` | ``norm.*`` -> ``norm/{scale,bias}``

The hub checkpoints were written by transformers 4.56 (``layer.i``); transformers 5 names the
encoder ``model.layer.i`` (its ``conversion_mapping.py`` renames on load): both are read.
Meta's fused ``qkv`` is split in thirds (q, k, v rows); its ``qkv.bias_mask`` (Meta's
``LinearKMaskedBias``: the key bias is multiplied by zero) is applied, and a non-zero key
bias is refused (transformers' ``key_bias=False``, like this port). Linear weights are
transposed, the conv kernel goes OIHW -> HWIO. Ignored (``info["ignored"]``):
``mask_token`` (masked-image training), transformers' ``rope_embeddings.inv_freq`` and
Meta's ``rope_embed.periods`` buffers (the port computes the RoPE frequencies in float32 as
transformers does; Meta's releases store the periods in bfloat16, so outputs from Meta's own
code differ from transformers' - and from this port - by that rounding).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.checkpoint.formats import read_state_dict
from crossgap_jax.models.checkpoint.hf_dir import (
    local_or_hub,
    processor_normalisation,
    read_dir,
    release_source,
    square,
)
from crossgap_jax.models.checkpoint.hooks import Converted, Read, field_diffs, registered_like
from crossgap_jax.models.checkpoint.torch_names import split_fused, to_flax, to_state_dict
from crossgap_jax.models.configs import VisionConfig, get_config
from crossgap_jax.models.dinov3.model import (
    META_FILES,
    PRETRAINED,
    DINOv3Config,
)
from crossgap_jax.models.image_only import CLSMEAN_SUFFIX, IMAGENET_MEAN, IMAGENET_STD

_IGNORED = re.compile(r"^(embeddings\.mask_token|mask_token|rope_embeddings\.inv_freq|"
                      r"rope_embed\.periods)$")
_HF_LAYER = {"attention.q_proj": ("attention", "q_proj"),
             "attention.k_proj": ("attention", "k_proj"),
             "attention.v_proj": ("attention", "v_proj"),
             "attention.o_proj": ("attention", "o_proj"),
             "mlp.up_proj": ("mlp", "fc1"), "mlp.down_proj": ("mlp", "fc2"),
             "norm1": ("norm1",), "norm2": ("norm2",)}
_META_LAYER = {"attn.proj": ("attention", "o_proj"), "mlp.fc1": ("mlp", "fc1"),
               "mlp.fc2": ("mlp", "fc2"), "norm1": ("norm1",), "norm2": ("norm2",)}
_LEAF = {"weight": "kernel", "bias": "bias"}


def layout_of(sd: Mapping[str, Any]) -> str:
    """``"meta"`` when the keys are Meta's (``blocks.i...``), else ``"hf"``."""
    return "meta" if any(k.startswith("blocks.") for k in sd) else "hf"


def _put(flat, names, path, a, key, kind):
    if kind == "norm" and path[-1] == "kernel":
        path = path[:-1] + ("scale",)
    how = kind if kind in ("linear", "conv") and path[-1] == "kernel" else "none"
    flat[path], names[path] = np.ascontiguousarray(to_flax(a, how)), key


def _split_qkv(prefix: tuple[str, ...], key: str, sd: Mapping[str, Any], flat, names,
               problems: list[str]) -> None:
    """Meta's fused ``attn.qkv.{weight,bias}`` -> q / k / v (bias masked by ``bias_mask``)."""
    a = np.asarray(sd[key], np.float32)
    leaf = key.rsplit(".", 1)[1]
    if leaf == "bias":
        mask_key = key + "_mask"
        if mask_key in sd:
            mask = np.asarray(sd[mask_key], np.float32)
            if not np.all(np.isfinite(mask)):
                problems.append(f"{mask_key}: not finite (an uninitialised LinearKMaskedBias)")
                return
            a = a * mask
    q, k, v = split_fused(a)
    if leaf == "bias":
        if np.any(k != 0):
            problems.append(f"{key}: a non-zero key bias (transformers' DINOv3 and this port "
                            f"have none; Meta's releases mask it to zero)")
        _put(flat, names, prefix + ("q_proj", "bias"), q, key, "linear")
        _put(flat, names, prefix + ("v_proj", "bias"), v, key, "linear")
        return
    for part, w in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
        _put(flat, names, prefix + (part, "kernel"), w, key, "linear")


def map_tensors(sd: Mapping[str, Any]) -> tuple[dict, dict, list[str], list[str], list[str]]:
    """The renaming alone (no shape checks), either layout: ``(flat params {path: float32},
    {path: file name}, unknown names, ignored names, problems)``."""
    flat: dict[tuple[str, ...], np.ndarray] = {}
    names: dict[tuple[str, ...], str] = {}
    unknown, ignored, problems = [], [], []
    meta = layout_of(sd) == "meta"
    for key, value in sd.items():
        if _IGNORED.match(key) or (meta and key.endswith(".qkv.bias_mask")):
            if not key.endswith(".qkv.bias_mask"):
                ignored.append(key)
            continue
        m = re.fullmatch(r"(?:blocks|(?:model\.)?layer)\.(\d+)\.(.+)\.(weight|bias|lambda1|gamma)",
                         key)
        if m:
            i, mod, leaf = m.groups()
            prefix: tuple[str, ...] = (f"layer_{i}",)
            if meta and mod == "attn.qkv":
                _split_qkv(prefix + ("attention",), key, sd, flat, names, problems)
                continue
            if (mod, leaf) in (("layer_scale1", "lambda1"), ("layer_scale2", "lambda1"),
                               ("ls1", "gamma"), ("ls2", "gamma")):
                _put(flat, names, prefix + (f"layer_scale{mod[-1]}", "lambda1"),
                     np.asarray(value), key, "raw")
                continue
            table = _META_LAYER if meta else _HF_LAYER
            if mod in table and leaf in _LEAF and key.startswith("blocks.") == meta:
                kind = "norm" if mod.startswith("norm") else "linear"
                _put(flat, names, prefix + table[mod] + (_LEAF[leaf],), np.asarray(value),
                     key, kind)
                continue
            unknown.append(key)
            continue
        hit = {"embeddings.cls_token": ("embeddings", "cls_token"),
               "cls_token": ("embeddings", "cls_token"),
               "embeddings.register_tokens": ("embeddings", "register_tokens"),
               "storage_tokens": ("embeddings", "register_tokens")}.get(key)
        if hit:
            _put(flat, names, hit, np.asarray(value), key, "raw")
            continue
        m = re.fullmatch(r"(?:embeddings\.patch_embeddings|patch_embed\.proj)\.(weight|bias)",
                         key)
        if m:
            _put(flat, names, ("embeddings", "patch_embeddings", "proj", _LEAF[m.group(1)]),
                 np.asarray(value), key, "conv")
            continue
        m = re.fullmatch(r"norm\.(weight|bias)", key)
        if m:
            _put(flat, names, ("norm", _LEAF[m.group(1)]), np.asarray(value), key, "norm")
            continue
        unknown.append(key)
    return flat, names, sorted(unknown), sorted(ignored), problems


def state_dict_to_params(sd: Mapping[str, Any], config: DINOv3Config, *,
                         source: str = "state dict") -> tuple[dict, list[str]]:
    """A transformers ``DINOv3ViTModel`` or Meta DINOv3 state dict -> ``(Flax params,
    ignored keys)``.

    Raises:
        CheckpointError: unknown / missing tensors, shapes that do not fit ``config``
            (:func:`~crossgap_jax.models.checkpoint.fit.check_fit`), a non-zero key bias.
    """
    flat, names, unknown, ignored, problems = map_tensors(sd)
    return check_fit(flat, config, source=source, layout=layout_of(sd), names=names,
                     unexpected=unknown, mismatched=problems), ignored


def params_to_hf_state_dict(params: Mapping[str, Any], *, prefix: str = "layer."
                            ) -> dict[str, np.ndarray]:
    """Inverse of the ``"hf"`` mapping (float32, torch layouts). ``prefix``: ``"layer."``
    (the hub files, transformers 4.56) or ``"model.layer."`` (transformers 5's modules)."""
    inv = {v: k for k, v in _HF_LAYER.items()}

    def own(path: tuple[str, ...], v: np.ndarray) -> tuple[str, np.ndarray] | None:
        kernel = path[-1] == "kernel"
        if path[:2] == ("embeddings", "patch_embeddings"):  # the file has no ".proj"
            return (f"embeddings.patch_embeddings.{'weight' if kernel else 'bias'}",
                    v.transpose(3, 2, 0, 1) if kernel else v)
        if not path[0].startswith("layer_"):
            return None  # the class and register tokens, norm: the usual rules
        i = path[0].removeprefix("layer_")
        if path[1].startswith("layer_scale"):
            return f"{prefix}{i}.{path[1]}.lambda1", v
        leaf = "bias" if path[-1] == "bias" else "weight"
        return f"{prefix}{i}.{inv[path[1:-1]]}.{leaf}", v.T if kernel else v

    return {k: np.ascontiguousarray(v) for k, v in to_state_dict(params, (), own).items()}


def config_from_hf(cfg: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None, *,
                   name: str = "custom-dinov3", pooling: str = "cls") -> DINOv3Config:
    """A :class:`DINOv3Config` from a transformers ``DINOv3ViTModel`` ``config.json`` (missing
    keys take ``DINOv3ViTConfig``'s defaults) and, when given, its
    ``preprocessor_config.json`` (``size`` ``{height, width}``, ``resample`` 2 = bilinear /
    3 = bicubic, mean/std; without one: 224, bilinear, ImageNet mean/std, the
    ``DINOv3ViTImageProcessor`` defaults). The ``pos_embed_shift/jitter/rescale`` keys are
    training-time augmentation and do not matter at inference.

    Raises:
        CheckpointError: another ``model_type``, the gated (SwiGLU) MLP, an activation other
            than ``gelu``, biases other than transformers' defaults (q, v, o, MLP with bias;
            k without), non-square sizes, or a processor that crops or rescales otherwise.
    """
    if cfg.get("model_type", "dinov3_vit") != "dinov3_vit":
        raise CheckpointError(f"config.json has model_type {cfg.get('model_type')!r}, not "
                              "'dinov3_vit' (expected a transformers DINOv3ViTModel directory)")
    if cfg.get("use_gated_mlp", False):
        raise CheckpointError("config.json: use_gated_mlp (the SwiGLU MLP of DINOv3 ViT-S+/H+/"
                              "7B) is not supported; the ViT-L/16 release uses the GELU MLP")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"config.json: hidden_act {act!r} is not supported (only 'gelu')")
    biases = {"query_bias": True, "key_bias": False, "value_bias": True, "proj_bias": True,
              "mlp_bias": True}
    odd = [f"{k}={cfg[k]}" for k, v in biases.items() if k in cfg and bool(cfg[k]) != v]
    if odd:
        raise CheckpointError(f"config.json: {', '.join(odd)} is not supported (DINOv3's "
                              "biases: q, v, o and MLP with bias, k without)")
    if int(cfg.get("num_channels", 3)) != 3:
        raise CheckpointError(f"config.json: num_channels {cfg['num_channels']} (RGB only)")
    patch = square(cfg.get("patch_size", 16), "patch_size")
    width = int(cfg.get("hidden_size", 384))
    heads = int(cfg.get("num_attention_heads", 6))
    if width % (4 * heads):
        raise CheckpointError(f"config.json: hidden_size {width} is not a multiple of 4 x "
                              f"num_attention_heads {heads} (the RoPE splits each head in 4)")
    size, interp = square(cfg.get("image_size", 224), "image_size"), "bilinear"
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = dict(preprocessor or {})
    if pre:
        if pre.get("do_center_crop") or not pre.get("do_resize", True):
            raise CheckpointError("preprocessor_config.json: only the resize-without-crop "
                                  "processor of the DINOv3 releases is supported")
        s = pre.get("size", {"height": 224, "width": 224})
        if not isinstance(s, dict) or "height" not in s:
            raise CheckpointError(f"preprocessor_config.json: size {s!r} is not a "
                                  "{height, width} resize")
        size = square([s["height"], s["width"]], "preprocessor size")
        interp, mean, std = processor_normalisation(pre, 2, IMAGENET_MEAN, IMAGENET_STD)
    if size % patch:
        raise CheckpointError(f"input size {size} is not a multiple of the patch size {patch}")
    inter = int(cfg.get("intermediate_size", 1536))
    return DINOv3Config(
        name=name, embed_dim=width * (2 if pooling == "cls+mean" else 1),
        vision=VisionConfig(image_size=size, patch_size=patch, width=width,
                            layers=int(cfg.get("num_hidden_layers", 12)), heads=heads,
                            mlp_ratio=inter / width),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
        num_register_tokens=int(cfg.get("num_register_tokens", 0)), intermediate_size=inter,
        rope_theta=float(cfg.get("rope_theta", 100.0)),
        layerscale_value=float(cfg.get("layerscale_value", 1.0)), pooling=pooling,
        interpolation=interp, mean=mean, std=std)


_SHAPE_FIELDS = ("image_size", "patch_size", "width", "layers", "heads")
_MODEL_FIELDS = ("intermediate_size", "num_register_tokens", "layer_norm_eps", "rope_theta")


def architecture_diff(a: DINOv3Config, b: DINOv3Config) -> list[str]:
    """``"field: a vs b"`` for every architecture difference (pooling and preprocessing
    aside)."""
    if not isinstance(b, DINOv3Config):
        return [f"family: dinov3 vs {getattr(b, 'family', 'clip')}"]
    return field_diffs(a, b, towers={"vision": _SHAPE_FIELDS}) + field_diffs(a, b, _MODEL_FIELDS)


def match_registered(config: DINOv3Config, prefer: str | None = None) -> str | None:
    """The registered DINOv3 architecture equal to ``config`` in shapes and pooling
    (``prefer`` first)."""
    return registered_like(lambda c: (isinstance(c, DINOv3Config) and c.pooling == config.pooling
                                      and not architecture_diff(c, config)), prefer)


def adopt(requested: DINOv3Config, declared: DINOv3Config) -> DINOv3Config:
    """The config to load with when a name was requested: its shapes and pooling, the
    file's preprocessing (mean/std, interpolation) and initial layer scale."""
    return requested.replace(mean=declared.mean, std=declared.std,
                             interpolation=declared.interpolation,
                             layerscale_value=declared.layerscale_value)


def _meta_arch(path: str) -> str | None:
    """The registered architecture of a Meta release file name (``META_FILES``)."""
    base = os.path.basename(path)
    if not base.endswith(".pth"):
        return None
    return next((arch for stem, arch in META_FILES.items() if base.startswith(stem)), None)


def claims(source: str) -> bool:
    """A directory whose ``config.json`` says ``"model_type": "dinov3_vit"``, a hub id of a
    known release, or a Meta release file (``dinov3_vitl16_pretrain_lvd1689m-*.pth``).
    Reads no weights and never touches the network."""
    path = os.path.expanduser(str(source))
    if os.path.isdir(path):
        try:
            with open(os.path.join(path, "config.json")) as f:
                return json.load(f).get("model_type") == "dinov3_vit"
        except (OSError, ValueError):
            return False
    if os.path.isfile(path):
        return _meta_arch(path) is not None
    repo = str(source).removeprefix("hf-hub:").partition("@")[0]
    return repo in PRETRAINED.values()


def read(request: Any) -> Read:
    """``hooks.Read`` of a DINOv3 request: a ``DINOv3ViTModel`` directory, a hub id
    (``hf-hub:`` / ``@revision`` accepted), a Meta ``.pth`` file, ``"dinov3"`` / None (the
    architecture's release).

    Raises:
        CheckpointNotFoundError: no such path; a hub repo not in the cache while offline.
        CheckpointError: not a DINOv3 checkpoint, no release for the architecture, or a Meta
            file whose architecture is neither named nor known from its file name.
    """
    arch = request.arch
    if arch is not None and not isinstance(arch, DINOv3Config):
        raise CheckpointError(f"{arch.name!r} is not a DINOv3 architecture")
    source = release_source(arch, request.source, PRETRAINED, "dinov3", label="DINOv3",
                            fix="a DINOv3ViTModel directory, a hub id or Meta's .pth",
                            suffix=CLSMEAN_SUFFIX)
    path, origin = local_or_hub(source)
    pooling = arch.pooling if arch else "cls"
    if os.path.isfile(path):  # Meta's original checkpoint
        sd, fmt, _ = read_state_dict(path, allow_pickle=request.allow_pickle)
        known = _meta_arch(path)
        declared = get_config(known).with_pooling(pooling) if known else None
        if arch is None and declared is None:
            raise CheckpointError(f"{path}: a DINOv3 state dict without a config; name the "
                                  "architecture (load_clip('dinov3-vitl16', checkpoint=...))")
        return Read(tensors=sd, fmt=fmt, paths=[path], layout=layout_of(sd),
                    declared=declared, declared_by="file name" if known else None,
                    extra={"origin": origin})
    if not os.path.isdir(path):
        raise CheckpointNotFoundError(f"no such DINOv3 checkpoint: {source}", target=path)
    d = read_dir(path, "DINOv3ViTModel", allow_pickle=request.allow_pickle)
    declared = config_from_hf(d.config, d.preprocessor, pooling=pooling)
    return Read(tensors=d.tensors, fmt=d.fmt, paths=[d.weights], layout=layout_of(d.tensors),
                declared=declared, declared_by=d.config_file, extra={"origin": origin})


def convert_tensors(read_result: Any, config: DINOv3Config) -> Converted:
    """``hooks.Converted``: the renaming of :func:`map_tensors` (the loader checks fit; a
    non-zero key bias is raised here)."""
    flat, names, unknown, ignored, problems = map_tensors(read_result.tensors)
    if problems:
        raise CheckpointError(f"{read_result.paths[0]}: " + "; ".join(problems))
    return Converted(flat=flat, names=names, unexpected=unknown, extra={"ignored": ignored})
