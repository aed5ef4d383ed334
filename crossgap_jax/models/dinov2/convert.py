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

import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.checkpoint.hf_dir import (
    local_or_hub,
    processor_normalisation,
    read_dir,
    release_source,
    square,
)
from crossgap_jax.models.checkpoint.hooks import Converted, Read, field_diffs, registered_like
from crossgap_jax.models.checkpoint.torch_names import Mapped, rename, to_state_dict, torch_path
from crossgap_jax.models.configs import VisionConfig
from crossgap_jax.models.dinov2.model import (
    PRETRAINED,
    DINOv2Config,
)
from crossgap_jax.models.image_only import CLSMEAN_SUFFIX, IMAGENET_MEAN, IMAGENET_STD

_LEGACY = {"attention.attention.query": "attention.q_proj",
           "attention.attention.key": "attention.k_proj",
           "attention.attention.value": "attention.v_proj",
           "attention.output.dense": "attention.o_proj"}
_IGNORED = re.compile(r"^(dinov2\.)?(embeddings\.mask_token|classifier\..*)$")


def _canonical(name: str) -> str:
    """transformers-5 spelling of a state-dict key (``dinov2.`` prefix stripped)."""
    name = name.removeprefix("dinov2.")
    for old, new in _LEGACY.items():
        name = name.replace(old, new)
    return name


def _flax_path(key: str) -> Mapped:
    """``(flax path, how)`` of a state-dict key (either spelling); None for an unknown one."""
    return torch_path(_canonical(key), stacks=("layer",), norms=("norm1", "norm2", "layernorm"),
                      convs=("patch_embeddings.projection",),
                      plain=("cls_token", "position_embeddings", "lambda1"))


def map_tensors(sd: Mapping[str, Any]) -> tuple[dict, dict, list[str], list[str]]:
    """The renaming alone (no shape checks): ``(flat params {path: float32 array},
    {path: file name}, unknown names, ignored names)``. Linear kernels transposed, the conv
    kernel OIHW -> HWIO."""
    flat, names, unknown, ignored = rename(sd, _flax_path, _IGNORED)
    return flat, names, sorted(unknown), ignored


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
            ``config`` (:func:`~crossgap_jax.models.checkpoint.fit.check_fit`).
    """
    flat, names, unknown, ignored = map_tensors(sd)
    return check_fit(flat, config, source="state dict", layout="hf", names=names,
                     unexpected=unknown), ignored


def params_to_hf_state_dict(params: Mapping[str, Any], *, legacy: bool = True
                            ) -> dict[str, np.ndarray]:
    """Inverse of :func:`hf_state_dict_to_params` (float32 arrays, torch layouts).

    ``legacy=True`` writes the hub checkpoints' names (``attention.attention.query``,
    ``attention.output.dense``), False transformers 5's (``attention.q_proj``, ...).
    """
    out = to_state_dict(params, ("layer",))
    if not legacy:
        return out
    renamed = {}
    for key, value in out.items():
        for old, new in _LEGACY.items():
            key = key.replace(new + ".", old + ".")
        renamed[key] = value
    return renamed


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
    patch = square(cfg.get("patch_size", 14), "patch_size (config.json)")
    trained = square(cfg.get("image_size", 224), "image_size (config.json)")
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
        crop = square([c["height"], c["width"]] if isinstance(c, dict) else c, "crop_size")
        size = pre.get("size", {"shortest_edge": 256})
        if not isinstance(size, dict) or "shortest_edge" not in size:
            raise CheckpointError(f"preprocessor_config.json: size {size!r} is not a "
                                  "shortest_edge resize")
        resize = int(size["shortest_edge"])
        interp, mean, std = processor_normalisation(pre, 3, IMAGENET_MEAN, IMAGENET_STD)
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
    return (field_diffs(a, b, towers={"vision": _SHAPE_FIELDS})
            + field_diffs(a, b, ("position_grid", "layer_norm_eps")))


def _same(config: DINOv2Config):
    return lambda c: (isinstance(c, DINOv2Config) and c.pooling == config.pooling
                      and not architecture_diff(c, config))


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

    source = release_source(arch, source, PRETRAINED, "dinov2", label="DINOv2",
                            fix="a Dinov2Model directory or a hub id", suffix=CLSMEAN_SUFFIX)
    path, origin = local_or_hub(source)
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise CheckpointError(f"{source}: not a DINOv2 checkpoint (expected a "
                                  "transformers Dinov2Model directory with config.json)")
        raise CheckpointNotFoundError(f"no such DINOv2 checkpoint: {source}", target=path)
    d = read_dir(path, "Dinov2Model", allow_pickle=allow_pickle)
    declared = config_from_hf(d.config, d.preprocessor, pooling=arch.pooling if arch else "cls")
    return {"tensors": d.tensors, "format": d.fmt, "path": d.weights, "declared": declared,
            "declared_by": d.config_file, "origin": origin, "source": source}


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
    return registered_like(_same(config), prefer)
