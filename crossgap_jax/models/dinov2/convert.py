"""Read transformers ``Dinov2Model`` checkpoints into the Flax params of
:mod:`crossgap_jax.models.dinov2.model`.

Tensor names (the hub checkpoints ``facebook/dinov2-{small,base}`` were written by
transformers 4.x; transformers 5 renames the attention projections on load, and both
spellings are accepted here):

==============================================================  ===============================
transformers state dict                                         Flax params path
==============================================================  ===============================
``embeddings.cls_token`` ``(1, 1, W)``                          ``embeddings/cls_token``
``embeddings.position_embeddings`` ``(1, 1 + G*G, W)``          ``embeddings/position_embeddings``
``embeddings.patch_embeddings.projection.{weight,bias}``        ``.../projection/{kernel,bias}``
``encoder.layer.i.norm{1,2}.{weight,bias}``                     ``encoder/layer_i/norm{1,2}``
``encoder.layer.i.attention.attention.{query,key,value}``       ``encoder/layer_i/attention/``
(transformers 5: ``attention.{q,k,v}_proj``)                    ``{q,k,v}_proj``
``encoder.layer.i.attention.output.dense`` (5: ``o_proj``)      ``.../attention/o_proj``
``encoder.layer.i.layer_scale{1,2}.lambda1`` ``(W,)``           ``.../layer_scale{1,2}/lambda1``
``encoder.layer.i.mlp.fc{1,2}.{weight,bias}``                   ``.../mlp/fc{1,2}``
``layernorm.{weight,bias}``                                     ``layernorm/{scale,bias}``
==============================================================  ===============================

Linear weights are transposed (``(out, in)`` -> ``(in, out)``), the conv kernel goes
OIHW -> HWIO. ``embeddings.mask_token`` (masked-image pre-training only) and a
``Dinov2ForImageClassification``'s ``classifier.*`` are ignored (listed in
``info["ignored"]``); its ``dinov2.`` prefix is stripped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import flax.traverse_util as traverse_util
import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.formats import read_state_dict
from crossgap_jax.models.checkpoint.hooks import Converted, Read
from crossgap_jax.models.checkpoint.hub import HUB_ID
from crossgap_jax.models.checkpoint.hub import hub_fetch as _hub_fetch
from crossgap_jax.models.configs import VisionConfig, get_config, list_architectures
from crossgap_jax.models.dinov2.model import (
    CLSMEAN_SUFFIX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRETRAINED,
    DINOv2Config,
    param_shapes,
)

_LEGACY = {"attention.attention.query": "attention.q_proj",
           "attention.attention.key": "attention.k_proj",
           "attention.attention.value": "attention.v_proj",
           "attention.output.dense": "attention.o_proj"}
_IGNORED = re.compile(r"^(embeddings\.mask_token|classifier\..*)$")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _canonical(name: str) -> str:
    """transformers-5 spelling of a state-dict key (``dinov2.`` prefix stripped)."""
    name = name.removeprefix("dinov2.")
    for old, new in _LEGACY.items():
        name = name.replace(old, new)
    return name


def _flax_path(name: str) -> tuple[tuple[str, ...], str] | None:
    """``(flax path, kind)`` of a canonical key; kind: ``linear``, ``conv``, ``norm``,
    ``raw``; None for an unknown key."""
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", name)
    if m:
        rest = m.group(2).split(".")
        prefix: tuple[str, ...] = ("encoder", f"layer_{m.group(1)}")
        if rest[0] in ("norm1", "norm2") and len(rest) == 2:
            return prefix + (rest[0], "scale" if rest[1] == "weight" else rest[1]), "norm"
        if rest[0] == "attention" and len(rest) == 3 and rest[1] in (
                "q_proj", "k_proj", "v_proj", "o_proj"):
            return prefix + ("attention", rest[1],
                             "kernel" if rest[2] == "weight" else rest[2]), "linear"
        if rest[0] == "mlp" and len(rest) == 3 and rest[1] in ("fc1", "fc2"):
            return prefix + ("mlp", rest[1], "kernel" if rest[2] == "weight" else rest[2]), \
                "linear"
        if rest[0] in ("layer_scale1", "layer_scale2") and rest[1:] == ["lambda1"]:
            return prefix + (rest[0], "lambda1"), "raw"
        return None
    if name in ("embeddings.cls_token", "embeddings.position_embeddings"):
        return tuple(name.split(".")), "raw"
    m = re.fullmatch(r"embeddings\.patch_embeddings\.projection\.(weight|bias)", name)
    if m:
        leaf = "kernel" if m.group(1) == "weight" else "bias"
        return ("embeddings", "patch_embeddings", "projection", leaf), "conv"
    m = re.fullmatch(r"layernorm\.(weight|bias)", name)
    if m:
        return ("layernorm", "scale" if m.group(1) == "weight" else "bias"), "norm"
    return None


def map_tensors(sd: Mapping[str, Any]) -> tuple[dict, dict, list[str], list[str]]:
    """The renaming alone (no shape checks): ``(flat params {path: float32 array},
    {path: file name}, unknown names, ignored names)``. Linear kernels transposed, the conv
    kernel OIHW -> HWIO."""
    flat: dict[tuple[str, ...], np.ndarray] = {}
    names: dict[tuple[str, ...], str] = {}
    unknown, ignored = [], []
    for key, value in sd.items():
        name = _canonical(key)
        if _IGNORED.match(name):
            ignored.append(key)
            continue
        hit = _flax_path(name)
        if hit is None:
            unknown.append(key)
            continue
        path, kind = hit
        a = np.asarray(value, np.float32)
        if kind == "linear" and path[-1] == "kernel":
            a = a.T
        elif kind == "conv" and path[-1] == "kernel":
            a = a.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        flat[path], names[path] = a, key
    return flat, names, sorted(unknown), sorted(ignored)


def hf_state_dict_to_params(sd: Mapping[str, Any], config: DINOv2Config
                            ) -> tuple[dict, list[str]]:
    """transformers ``Dinov2Model`` state dict -> ``(Flax params, ignored keys)``.

    Args:
        sd: name -> array (NumPy or anything ``np.asarray`` takes), either spelling of
            the attention names (see the module table).
        config: the architecture the tensors must fit.

    Returns:
        float32 params in :mod:`~crossgap_jax.models.dinov2.model`'s layout, and the sorted
        ignored keys (``embeddings.mask_token``, ``classifier.*``).

    Raises:
        CheckpointError: unknown tensors, missing tensors, or shapes that do not fit
            ``config`` (each named with both shapes).
    """
    want = {k: tuple(v.shape) for k, v in
            traverse_util.flatten_dict(param_shapes(config)).items()}
    flat, names, unknown, ignored = map_tensors(sd)
    unknown += sorted(names[p] for p in flat if p not in want)
    bad = [f"{names[p]}: {tuple(np.shape(sd[names[p]]))} does not fit {'/'.join(p)} {want[p]}"
           for p in flat if p in want and tuple(flat[p].shape) != want[p]]
    missing = sorted("/".join(p) for p in want if p not in flat)
    problems = []
    if unknown:
        problems.append(f"unexpected tensors: {', '.join(unknown[:10])}"
                        + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:10])}"
                        + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""))
    if bad:
        problems.append("shape mismatch: " + "; ".join(bad[:10]))
    if problems:
        raise CheckpointError(f"the state dict does not fit DINOv2 architecture "
                              f"{config.name!r}: " + " | ".join(problems))
    return traverse_util.unflatten_dict({p: a for p, a in flat.items() if p in want}), ignored


def params_to_hf_state_dict(params: Mapping[str, Any], *, legacy: bool = True
                            ) -> dict[str, np.ndarray]:
    """Inverse of :func:`hf_state_dict_to_params` (float32 arrays, torch layouts).

    ``legacy=True`` writes the hub checkpoints' names (``attention.attention.query``,
    ``attention.output.dense``), False transformers 5's (``attention.q_proj``, ...).
    """
    out: dict[str, np.ndarray] = {}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        a = np.asarray(value, np.float32)
        leaf = path[-1]
        if path[0] == "encoder":
            i = path[1].removeprefix("layer_")
            mods = list(path[2:-1])
            name = f"encoder.layer.{i}." + ".".join(mods)
        elif path[0] == "embeddings" and len(path) == 2:
            out[f"embeddings.{leaf}"] = a
            continue
        else:
            name = ".".join(path[:-1])
        if leaf == "kernel":
            a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
            leaf = "weight"
        elif leaf == "scale":
            leaf = "weight"
        key = f"{name}.{leaf}"
        if legacy:
            for old, new in _LEGACY.items():
                key = key.replace(new + ".", old + ".")
        out[key] = np.ascontiguousarray(a)
    return out


def _square(v: Any, what: str) -> int:
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or v[0] != v[1]:
            raise CheckpointError(f"config.json: non-square {what} {v} is not supported")
        v = v[0]
    return int(v)


def config_from_hf(cfg: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None, *,
                   name: str = "custom-dinov2", pooling: str = "cls") -> DINOv2Config:
    """A :class:`DINOv2Config` from a transformers ``Dinov2Model`` ``config.json`` (missing keys
    take ``Dinov2Config``'s defaults) and, when given, its ``preprocessor_config.json``.

    The config's ``image_size`` (518 for the releases) sets the stored position grid
    (``image_size // patch_size``); the *input* resolution is the processor's crop size
    (224; the DINOv2 default when there is no processor file), the resize its
    ``size.shortest_edge`` (256), mean/std and ``resample`` (3 = bicubic, 2 = bilinear)
    as stated there.

    Raises:
        CheckpointError: another ``model_type``, an activation other than ``gelu``, the
            SwiGLU MLP (ViT-g), ``qkv_bias`` false, non-square sizes, or a processor that
            does not resize-and-crop.
    """
    if cfg.get("model_type", "dinov2") != "dinov2":
        raise CheckpointError(f"config.json has model_type {cfg.get('model_type')!r}, not "
                              "'dinov2' (expected a transformers Dinov2Model directory)")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"config.json: hidden_act {act!r} is not supported (only the "
                              "exact 'gelu' of the ViT-S/B/L releases)")
    if cfg.get("use_swiglu_ffn", False):
        raise CheckpointError("config.json: use_swiglu_ffn (the ViT-g/14 SwiGLU MLP) is not "
                              "supported; use dinov2-small / -base / -large")
    if not cfg.get("qkv_bias", True):
        raise CheckpointError("config.json: qkv_bias false is not supported")
    if int(cfg.get("num_channels", 3)) != 3:
        raise CheckpointError(f"config.json: num_channels {cfg['num_channels']} (RGB only)")
    patch = _square(cfg.get("patch_size", 14), "patch_size")
    trained = _square(cfg.get("image_size", 224), "image_size")
    width = int(cfg.get("hidden_size", 768))
    heads = int(cfg.get("num_attention_heads", 12))
    if width % heads:
        raise CheckpointError(f"config.json: hidden_size {width} is not a multiple of "
                              f"num_attention_heads {heads}")
    pre = dict(preprocessor or {})
    crop, resize, interp = 224, 256, "bicubic"
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if pre:
        if not pre.get("do_center_crop", True) or not pre.get("do_resize", True):
            raise CheckpointError("preprocessor_config.json: only resize + centre crop "
                                  "processors are supported (do_resize, do_center_crop)")
        c = pre.get("crop_size", {"height": 224, "width": 224})
        crop = _square([c["height"], c["width"]] if isinstance(c, dict) else c, "crop_size")
        size = pre.get("size", {"shortest_edge": 256})
        if not isinstance(size, dict) or "shortest_edge" not in size:
            raise CheckpointError(f"preprocessor_config.json: size {size!r} is not a "
                                  "shortest_edge resize")
        resize = int(size["shortest_edge"])
        resample = int(pre.get("resample", 3))
        if resample not in (2, 3):
            raise CheckpointError(f"preprocessor_config.json: resample {resample} (only 2 = "
                                  "bilinear, 3 = bicubic)")
        interp = "bicubic" if resample == 3 else "bilinear"
        mean = tuple(float(x) for x in pre.get("image_mean", IMAGENET_MEAN))
        std = tuple(float(x) for x in pre.get("image_std", IMAGENET_STD))
        if abs(float(pre.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
            raise CheckpointError("preprocessor_config.json: rescale_factor other than 1/255")
    mult = 2 if pooling == "cls+mean" else 1
    return DINOv2Config(
        name=name, embed_dim=width * mult,
        vision=VisionConfig(image_size=crop, patch_size=patch, width=width,
                            layers=int(cfg.get("num_hidden_layers", 12)), heads=heads,
                            mlp_ratio=float(cfg.get("mlp_ratio", 4))),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-6)),
        layerscale_value=float(cfg.get("layerscale_value", 1.0)),
        position_grid=trained // patch, pooling=pooling, resize_size=resize,
        interpolation=interp, mean=mean, std=std)


_SHAPE_FIELDS = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio")


def architecture_diff(a: DINOv2Config, b: DINOv2Config) -> list[str]:
    """``"field: a vs b"`` for every shape difference (pooling and preprocessing aside)."""
    diffs = [f"vision.{f}: {getattr(a.vision, f)} vs {getattr(b.vision, f)}"
             for f in _SHAPE_FIELDS if getattr(a.vision, f) != getattr(b.vision, f)]
    diffs += [f"{f}: {getattr(a, f)} vs {getattr(b, f)}"
              for f in ("position_grid", "layer_norm_eps") if getattr(a, f) != getattr(b, f)]
    return diffs


def registered_match(config: DINOv2Config) -> str | None:
    """The registered DINOv2 architecture equal to ``config`` in shapes and pooling."""
    for n in list_architectures():
        c = get_config(n)
        if (isinstance(c, DINOv2Config) and c.pooling == config.pooling
                and not architecture_diff(c, config)):
            return n
    return None


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def is_dinov2_checkpoint(source: str) -> bool:
    """A directory whose ``config.json`` says ``"model_type": "dinov2"``, or a hub id of a
    known DINOv2 release (``facebook/dinov2-small`` / ``-base``). Reads no weights and never
    touches the network."""
    path = os.path.expanduser(str(source))
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        try:
            with open(cfg) as f:
                return os.path.isfile(cfg) and json.load(f).get("model_type") == "dinov2"
        except (OSError, ValueError):
            return False
    repo = str(source).removeprefix("hf-hub:").partition("@")[0]
    return not os.path.exists(path) and repo in PRETRAINED.values()


def _hub_files(repo: str) -> str:
    """Fetch ``config.json``, ``preprocessor_config.json`` (optional) and the weights of a
    hub repo through the package's hub machinery (Hugging Face cache, offline mode); the
    directory holding them."""

    weights = " or ".join(_WEIGHT_FILES)
    _, cfg_path = _hub_fetch(repo, ("config.json",), then=(weights,))
    _hub_fetch(repo, ("preprocessor_config.json",), optional=True)
    _hub_fetch(repo, _WEIGHT_FILES, then=())
    return os.path.dirname(cfg_path)


def read_dinov2(arch: DINOv2Config | None, source: Any, *, allow_pickle: bool = False
                ) -> dict[str, Any]:
    """Resolve and read a DINOv2 checkpoint (the reader step of the :func:`read` hook).

    Args:
        arch: the requested architecture or None; with ``source`` None or ``"dinov2"`` its
            release hub id is used.
        source: a ``Dinov2Model`` directory, a hub id (``hf-hub:`` / ``@revision`` accepted),
            ``"dinov2"`` or None.

    Returns:
        ``{"tensors", "format", "path", "declared" (DINOv2Config), "declared_by",
        "origin", "source"}``.

    Raises:
        CheckpointNotFoundError: no such directory; a hub repo not in the cache while
            offline (the message says what to download).
        CheckpointError: not a DINOv2 directory, or no release for ``arch``.
    """

    if arch is not None and (source is None or source == "dinov2"):
        base = arch.name.removesuffix(CLSMEAN_SUFFIX)
        if (base, "dinov2") not in PRETRAINED:
            raise CheckpointError(f"no released DINOv2 weights for {arch.name!r}; pass "
                                  "checkpoint= a Dinov2Model directory or a hub id")
        source = PRETRAINED[(base, "dinov2")]
    origin = "local"
    path = os.path.expanduser(str(source))
    repo = str(source).removeprefix("hf-hub:")
    if not os.path.exists(path) and HUB_ID.match(repo):
        path, origin = _hub_files(repo), "hf-hub"
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise CheckpointError(f"{source}: not a DINOv2 checkpoint (expected a "
                                  "transformers Dinov2Model directory with config.json)")
        raise CheckpointNotFoundError(f"no such DINOv2 checkpoint: {source}", target=path)
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise CheckpointNotFoundError(f"{path}: no config.json (expected a transformers "
                                      "Dinov2Model directory)", target=path)
    pre_file = os.path.join(path, "preprocessor_config.json")
    declared = config_from_hf(_read_json(cfg_file),
                              _read_json(pre_file) if os.path.isfile(pre_file) else None,
                              pooling=arch.pooling if arch else "cls")
    weights = next((os.path.join(path, f) for f in _WEIGHT_FILES
                    if os.path.isfile(os.path.join(path, f))), None)
    if weights is None:
        raise CheckpointNotFoundError(f"{path}: no {' / '.join(_WEIGHT_FILES)}", target=path)
    sd, fmt, _ = read_state_dict(weights, allow_pickle=allow_pickle)
    return {"tensors": sd, "format": fmt, "path": weights, "declared": declared,
            "declared_by": cfg_file, "origin": origin, "source": source}


def adopt(requested: DINOv2Config, declared: DINOv2Config) -> DINOv2Config:
    """The config to load with when a name was requested: its shapes and pooling, the
    file's preprocessing (mean/std, resize, interpolation) and initial layer scale."""
    return requested.replace(mean=declared.mean, std=declared.std,
                             interpolation=declared.interpolation,
                             resize_size=declared.resize_size,
                             layerscale_value=declared.layerscale_value)


# ---------------------------------------------------------------------------------------
# Hooks of the one loading pipeline (crossgap_jax.models.checkpoint.loader: claims, read,
# convert_tensors, architecture_diff, match_registered, adopt)
# ---------------------------------------------------------------------------------------
claims = is_dinov2_checkpoint


def read(request: Any) -> Any:
    """``hooks.Read`` of a DINOv2 request (directory, hub id, ``"dinov2"`` tag)."""

    arch = request.arch
    if arch is not None and not isinstance(arch, DINOv2Config):
        raise CheckpointError(f"{arch.name!r} is not a DINOv2 architecture")
    r = read_dinov2(arch, request.source, allow_pickle=request.allow_pickle)
    return Read(tensors=r["tensors"], fmt=r["format"], paths=[r["path"]], layout="hf",
                declared=r["declared"], declared_by=r["declared_by"],
                extra={"origin": r["origin"]})


def convert_tensors(read_result: Any, config: DINOv2Config) -> Any:
    """``hooks.Converted``: the renaming of :func:`map_tensors` (the loader checks fit)."""

    flat, names, unknown, ignored = map_tensors(read_result.tensors)
    return Converted(flat=flat, names=names, unexpected=unknown, extra={"ignored": ignored})


def match_registered(config: DINOv2Config, prefer: str | None = None) -> str | None:
    """The registered name of an identical DINOv2 architecture (``prefer`` first)."""
    if prefer is not None:
        try:
            c = get_config(prefer)
        except KeyError:
            c = None
        if (isinstance(c, DINOv2Config) and c.pooling == config.pooling
                and not architecture_diff(c, config)):
            return prefer
    return registered_match(config)
