"""SigLIP's big_vision layout (``.npz``: ``params/img/...``, ``params/txt/...``,
``params/t``, ``params/b``) <-> the Flax params of :mod:`crossgap_jax.models.siglip.model`.

Flax kernels already have our ``(in, out)`` / HWIO layout; multi-head attention kernels
are ``(width, heads, head_dim)`` (``out``: ``(heads, head_dim, width)``) and are reshaped;
the MAP head's query/key/value are fused into one ``in_proj``; position embeddings lose
their leading 1; ``scan``-ned encoders (``encoderblock`` with a leading depth axis) are
split. Shapes are checked by :func:`crossgap_jax.models.checkpoint.fit.check_fit`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.traverse_util as traverse_util
import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.configs import TextConfig, VisionConfig
from crossgap_jax.models.siglip.model import SigLIPConfig, gemma_text_fields

Flat = dict[tuple[str, ...], np.ndarray]


_BV_TOWER = {"img": "vision_model", "txt": "text_model"}
_BV_BLOCK = {"LayerNorm_0": "layer_norm1", "LayerNorm_1": "layer_norm2",
             "MultiHeadDotProductAttention_0": "self_attn", "MlpBlock_0": "mlp"}
_BV_QKV = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}
_BV_DENSE = {"Dense_0": "fc1", "Dense_1": "fc2"}
_BV_ENCODERS = ("Transformer", "Encoder_0")


def _strip_bv(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Drop the ``params/`` prefix, split ``scan``-ned encoder blocks into numbered ones."""
    out: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        k = k[len("params/"):] if k.startswith("params/") else k
        m = re.match(r"^(img|txt)/(Transformer|Encoder_0)/encoderblock/(.+)$", k)
        if m:  # scan=True checkpoints: one stacked block with a leading depth axis
            for i in range(np.shape(v)[0]):
                out[f"{m.group(1)}/{m.group(2)}/encoderblock_{i}/{m.group(3)}"] = np.asarray(v)[i]
            continue
        out[k] = np.asarray(v)
    return out


def _bv_attention(prefix: str, arrays: dict[str, np.ndarray], used: set[str]) -> dict[str, Any]:
    """q/k/v/out of a ``MultiHeadDotProductAttention`` as ``(w, w)`` kernels, ``(w,)`` biases."""
    got: dict[str, Any] = {}
    for name in ("query", "key", "value", "out"):
        for leaf in ("kernel", "bias"):
            key = f"{prefix}/{name}/{leaf}"
            if key not in arrays:
                continue
            used.add(key)
            a = arrays[key]
            if name == "out":
                a = a.reshape(-1, a.shape[-1]) if leaf == "kernel" else a
            else:
                a = a.reshape(a.shape[0], -1) if leaf == "kernel" else a.reshape(-1)
            got[f"{name}/{leaf}"] = a
    return got


def big_vision_to_params(arrays: Mapping[str, Any], config: SigLIPConfig) -> dict:
    """big_vision SigLIP arrays (``np.load(npz)``; keys ``params/img/...``) -> Flax params.

    Raises:
        CheckpointError: shape mismatches (named), missing or unexpected tensors (listed).
    """
    flat, unexpected = big_vision_flat(arrays)
    return check_fit(flat, config, layout="big_vision", unexpected=unexpected)


def big_vision_flat(arrays: Mapping[str, Any]) -> tuple[Flat, list[str]]:
    """big_vision names -> Flax paths (unchecked): ``(flat, unexpected)``."""
    a = _strip_bv(arrays)
    flat: Flat = {}
    used: set[str] = set()

    def take(key: str, path: tuple[str, ...], fn=lambda x: x) -> None:
        if key in a:
            flat[path] = fn(a[key])
            used.add(key)

    # Image tower.
    take("img/embedding/kernel", ("vision_model", "embeddings", "patch_embedding", "kernel"))
    take("img/embedding/bias", ("vision_model", "embeddings", "patch_embedding", "bias"))
    take("img/pos_embedding", ("vision_model", "embeddings", "position_embedding", "embedding"),
         lambda x: x.reshape(-1, x.shape[-1]))
    head = ("vision_model", "head")
    take("img/MAPHead_0/probe", (*head, "probe"))
    for leaf, ours in (("scale", "scale"), ("bias", "bias")):
        take(f"img/MAPHead_0/LayerNorm_0/{leaf}", (*head, "layernorm", ours))
    for dense, ours in _BV_DENSE.items():
        for leaf in ("kernel", "bias"):
            take(f"img/MAPHead_0/MlpBlock_0/{dense}/{leaf}", (*head, "mlp", ours, leaf))
    att = _bv_attention("img/MAPHead_0/MultiHeadDotProductAttention_0", a, used)
    if all(f"{n}/{leaf}" in att for n in ("query", "key", "value") for leaf in ("kernel", "bias")):
        flat[(*head, "attention", "in_proj", "kernel")] = np.concatenate(
            [att[f"{n}/kernel"] for n in ("query", "key", "value")], axis=1)
        flat[(*head, "attention", "in_proj", "bias")] = np.concatenate(
            [att[f"{n}/bias"] for n in ("query", "key", "value")])
    for leaf in ("kernel", "bias"):
        if f"out/{leaf}" in att:
            flat[(*head, "attention", "out_proj", leaf)] = att[f"out/{leaf}"]
    # Text tower.
    take("txt/Embed_0/embedding", ("text_model", "embeddings", "token_embedding", "embedding"))
    take("txt/pos_embedding", ("text_model", "embeddings", "position_embedding", "embedding"),
         lambda x: x.reshape(-1, x.shape[-1]))
    for leaf in ("kernel", "bias"):
        take(f"txt/head/{leaf}", ("text_model", "head", leaf))
    # Encoders of both towers.
    block_re = re.compile(r"^(img|txt)/(Transformer|Encoder_0)/(encoderblock_(\d+)|encoder_norm)"
                          r"/(.+)$")
    for key in sorted(a):
        m = block_re.match(key)
        if not m or key in used:
            continue
        tower, _, block, idx, rest = m.groups()
        top = _BV_TOWER[tower]
        if block == "encoder_norm":
            ln = "post_layernorm" if tower == "img" else "final_layer_norm"
            flat[(top, ln, rest)] = a[key]
            used.add(key)
            continue
        base = (top, "encoder", f"layers_{idx}")
        first, _, tail = rest.partition("/")
        if first == "MultiHeadDotProductAttention_0":
            continue  # handled below, per block
        if first not in _BV_BLOCK:
            continue
        if first == "MlpBlock_0":
            dense, _, leaf = tail.partition("/")
            if dense in _BV_DENSE:
                flat[(*base, "mlp", _BV_DENSE[dense], leaf)] = a[key]
                used.add(key)
        else:
            flat[(*base, _BV_BLOCK[first], tail)] = a[key]
            used.add(key)
    blocks = {(m.group(1), m.group(2), m.group(4)) for k in a
              if (m := block_re.match(k)) and m.group(4) is not None}
    for tower, enc, idx in blocks:
        att = _bv_attention(f"{tower}/{enc}/encoderblock_{idx}/MultiHeadDotProductAttention_0",
                            a, used)
        for k, v in att.items():
            name, leaf = k.split("/")
            flat[(_BV_TOWER[tower], "encoder", f"layers_{idx}", "self_attn", _BV_QKV[name],
                  leaf)] = v
    for key, ours in (("t", "logit_scale"), ("b", "logit_bias")):
        take(key, (ours,), lambda x: np.reshape(x, (1,)))
    unexpected = sorted(k for k in a if k not in used)
    return flat, unexpected


def params_to_big_vision(params: Mapping[str, Any], config: SigLIPConfig,
                         text_encoder_name: str = "Encoder_0") -> dict[str, np.ndarray]:
    """Flax params -> big_vision names and shapes (``params/...``), e.g. to write an ``.npz``.

    Args:
        text_encoder_name: the text encoder's module name (``"Encoder_0"`` in big_vision's
            text transformer).
    """
    p = {k: np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(params).items()}
    out: dict[str, np.ndarray] = {}
    inv_block = {v: k for k, v in _BV_BLOCK.items()}
    inv_dense = {v: k for k, v in _BV_DENSE.items()}
    inv_qkv = {v: k for k, v in _BV_QKV.items()}

    def heads_of(tower: str) -> int:
        return config.vision.heads if tower == "img" else config.text.heads

    def attn(prefix: str, name: str, leaf: str, v: np.ndarray, h: int) -> None:
        w = v.shape[-1] if leaf == "kernel" and name != "out" else None
        if name == "out":
            out[f"{prefix}/out/{leaf}"] = v.reshape(h, -1, v.shape[-1]) if leaf == "kernel" else v
        elif leaf == "kernel":
            out[f"{prefix}/{name}/kernel"] = v.reshape(v.shape[0], h, w // h)
        else:
            out[f"{prefix}/{name}/bias"] = v.reshape(h, -1)

    for path, v in p.items():
        if path[0] in ("logit_scale", "logit_bias"):
            out["params/" + ("t" if path[0] == "logit_scale" else "b")] = v.reshape(1)
            continue
        tower = "img" if path[0] == "vision_model" else "txt"
        enc = "Transformer" if tower == "img" else text_encoder_name
        pre = f"params/{tower}"
        rest = path[1:]
        if rest[:2] == ("embeddings", "patch_embedding"):
            out[f"{pre}/embedding/{rest[-1]}"] = v
        elif rest[:2] == ("embeddings", "position_embedding"):
            out[f"{pre}/pos_embedding"] = v[None]
        elif rest[:2] == ("embeddings", "token_embedding"):
            out[f"{pre}/Embed_0/embedding"] = v
        elif rest[0] in ("post_layernorm", "final_layer_norm"):
            out[f"{pre}/{enc}/encoder_norm/{rest[-1]}"] = v
        elif rest[0] == "head" and tower == "txt":
            out[f"{pre}/head/{rest[-1]}"] = v
        elif rest[0] == "head":
            hp = f"{pre}/MAPHead_0"
            if rest[1] == "probe":
                out[f"{hp}/probe"] = v
            elif rest[1] == "layernorm":
                out[f"{hp}/LayerNorm_0/{rest[-1]}"] = v
            elif rest[1] == "mlp":
                out[f"{hp}/MlpBlock_0/{inv_dense[rest[2]]}/{rest[-1]}"] = v
            elif rest[2] == "in_proj":
                for name, part in zip(("query", "key", "value"), np.split(v, 3, axis=-1)):
                    attn(f"{hp}/MultiHeadDotProductAttention_0", name, rest[-1], part,
                         heads_of(tower))
            else:
                attn(f"{hp}/MultiHeadDotProductAttention_0", "out", rest[-1], v, heads_of(tower))
        elif rest[0] == "encoder":
            i = rest[1].split("_")[1]
            bp = f"{pre}/{enc}/encoderblock_{i}"
            if rest[2] == "self_attn":
                attn(f"{bp}/MultiHeadDotProductAttention_0", inv_qkv[rest[3]], rest[-1], v,
                     heads_of(tower))
            elif rest[2] == "mlp":
                out[f"{bp}/MlpBlock_0/{inv_dense[rest[3]]}/{rest[-1]}"] = v
            else:
                out[f"{bp}/{inv_block[rest[2]]}/{rest[-1]}"] = v
        else:
            raise ValueError(f"unknown SigLIP param {'/'.join(path)}")
    return out


def config_from_big_vision(arrays: Mapping[str, Any], name: str = "custom-siglip"
                           ) -> SigLIPConfig:
    """Architecture from big_vision tensor shapes (heads from the attention kernels)."""
    a = _strip_bv(arrays)
    need = ["img/embedding/kernel", "img/pos_embedding", "txt/Embed_0/embedding",
            "txt/pos_embedding"]
    missing = [k for k in need if k not in a]
    if missing:
        raise CheckpointError(f"not a big_vision SigLIP checkpoint: missing {missing}")
    enc_t = next((e for e in _BV_ENCODERS if f"txt/{e}/encoderblock_0/MlpBlock_0/Dense_0/kernel"
                  in a), None)
    if enc_t is None:
        raise CheckpointError("big_vision checkpoint has no text encoder blocks")
    p, _, _, vw = a["img/embedding/kernel"].shape
    n = a["img/pos_embedding"].reshape(-1, vw).shape[0]
    grid = int(round(n**0.5))
    count = lambda pre: len({k.split("/")[2] for k in a if k.startswith(pre + "encoderblock_")})
    vq = a["img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"]
    tq = a[f"txt/{enc_t}/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"]
    vocab, tw = a["txt/Embed_0/embedding"].shape
    v_mlp = a["img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1]
    t_mlp = a[f"txt/{enc_t}/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1]
    embed = a["txt/head/kernel"].shape[1] if "txt/head/kernel" in a else tw
    return SigLIPConfig(
        name=name, embed_dim=int(embed),
        vision=VisionConfig(image_size=grid * p, patch_size=p, width=vw,
                            layers=count("img/Transformer/"), heads=vq.shape[1],
                            mlp_ratio=v_mlp / vw),
        text=TextConfig(context_length=a["txt/pos_embedding"].reshape(-1, tw).shape[0],
                        vocab_size=vocab, width=tw, layers=count(f"txt/{enc_t}/"),
                        heads=tq.shape[1], mlp_ratio=t_mlp / tw, eot_token_id=1,
                        sot_token_id=-1),
        **gemma_text_fields(int(vocab)),
    )
