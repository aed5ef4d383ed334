"""SigLIP checkpoints -> the Flax params of :mod:`crossgap_jax.models.siglip.model`.

Two layouts:

- ``"hf"``: a transformers ``SiglipModel`` state dict (``save_pretrained`` directory with
  ``config.json``, ``model.safetensors`` / ``pytorch_model.bin``, ``spiece.model``). Our
  param names mirror it, so conversion is renaming plus transposes (Linear ``.T``, conv
  ``OIHW -> HWIO``).
- ``"big_vision"``: the ``.npz`` files big_vision writes (``params/img/...``,
  ``params/txt/...``, ``params/t``, ``params/b``). Flax kernels already have our
  ``(in, out)`` / HWIO layout; multi-head attention kernels are ``(width, heads,
  head_dim)`` (``out``: ``(heads, head_dim, width)``) and are reshaped; the MAP head's
  query/key/value are fused into one ``in_proj``; position embeddings lose their leading
  1. ``scan``-ned encoders (``encoderblock`` with a leading depth axis) are split.

Every conversion ends with a strict check against the shapes of the Flax model: a wrong
shape names the tensor; missing or unexpected tensors are listed (:class:`CheckpointError`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.checkpoint.formats import (
    is_npz,
    npz_names,
    read_json,
    read_npz,
)
from crossgap_jax.models.checkpoint.hf_dir import RESAMPLE, read_dir, square
from crossgap_jax.models.checkpoint.hooks import Converted, Read, Request, field_diffs
from crossgap_jax.models.checkpoint.hub import hub_snapshot
from crossgap_jax.models.checkpoint.pretrained import (
    SIGLIP_DEFAULT_TAG,
    SIGLIP_PRETRAINED,
    resolve_family_tag,
)
from crossgap_jax.models.checkpoint.torch_names import Mapped, rename, to_state_dict, torch_path
from crossgap_jax.models.configs import TextConfig, VisionConfig, get_config, list_architectures
from crossgap_jax.models.siglip.big_vision import big_vision_flat, config_from_big_vision
from crossgap_jax.models.siglip.gemma_tokenizer import find_gemma_file
from crossgap_jax.models.siglip.model import (
    GEMMA_PAD_ID,
    SIGLIP_EOS_ID,
    SigLIPConfig,
    gemma_text_fields,
)

Flat = dict[tuple[str, ...], np.ndarray]

_LAYER_NORMS = {"layer_norm1", "layer_norm2", "post_layernorm", "final_layer_norm", "layernorm"}
_EMBEDDINGS = {"token_embedding", "position_embedding"}
_HF_IGNORED = re.compile(r".*position_ids$")


# ---------------------------------------------------------------------------------------
# Strict check
# ---------------------------------------------------------------------------------------
def _finish(flat: Flat, config: SigLIPConfig, unexpected: list[str], layout: str,
            names: Mapping[tuple[str, ...], str] | None = None) -> dict:
    """The shared fit check (:func:`crossgap_jax.models.checkpoint.fit.check_fit`)."""
    return check_fit(flat, config, layout=layout, names=names, unexpected=unexpected)


# ---------------------------------------------------------------------------------------
# transformers SiglipModel layout
# ---------------------------------------------------------------------------------------
def _hf_path(name: str) -> Mapped:
    """HF tensor name -> (Flax path, transform: none | linear | conv)."""
    return torch_path(name, stacks=("layers",), norms=_LAYER_NORMS, embeddings=_EMBEDDINGS,
                      convs=("patch_embedding",), plain=("logit_scale", "logit_bias", "probe"))


def hf_state_dict_to_params(sd: Mapping[str, Any], config: SigLIPConfig) -> dict:
    """A transformers ``SiglipModel`` state dict (NumPy values) -> Flax params.

    Raises:
        CheckpointError: shape mismatches (named), missing or unexpected tensors (listed).
    """
    flat, names, unexpected = _hf_flat(sd)
    return _finish(flat, config, unexpected, "hf", names)


def _hf_flat(sd: Mapping[str, Any]) -> tuple[Flat, dict[tuple[str, ...], str], list[str]]:
    """HF names -> Flax paths (unchecked): ``(flat, names, unexpected)``."""
    flat, names, unexpected, _ = rename(sd, _hf_path, _HF_IGNORED)
    return flat, names, unexpected


def params_to_hf_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`hf_state_dict_to_params` (float32 NumPy, transformers names)."""
    return to_state_dict(params, ("layers",))


_HF_TEXT = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=64,
                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, projection_size=None)
_HF_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=224, patch_size=16,
                  hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=True)


def _text_fields(vocab_size: int, tokenizer_class: str | None) -> dict[str, Any]:
    """Tokenizer fields from the tokenizer's class (``tokenizer_config.json``) when given,
    else from the vocabulary size (256000: Gemma, SigLIP 2)."""
    if tokenizer_class is None:
        return gemma_text_fields(vocab_size)
    if "gemma" in tokenizer_class.lower() or "siglip2" in tokenizer_class.lower():
        return {"text_tokenizer": "gemma", "text_pad_id": GEMMA_PAD_ID}
    return {}


def config_from_hf(cfg: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None,
                   name: str = "custom-siglip", tokenizer_class: str | None = None
                   ) -> SigLIPConfig:
    """A transformers ``SiglipConfig`` dict (``config.json``) -> :class:`SigLIPConfig`.

    Missing keys take transformers' defaults. ``preprocessor`` (the
    ``preprocessor_config.json`` dict) supplies mean/std, size and resampling when given.
    SigLIP 2's fixed-resolution checkpoints (``google/siglip2-*-patch16-224`` ...) are
    ``model_type: "siglip"`` too; they are told apart by ``tokenizer_class`` (the
    ``tokenizer_config.json`` entry: ``GemmaTokenizer`` / ``Siglip2Tokenizer``) or, without
    it, by the Gemma vocabulary size 256000.

    Raises:
        CheckpointError: not a SigLIP config, or an option this port does not implement.
    """
    if cfg.get("model_type") != "siglip":
        raise CheckpointError(f"config.json describes a {cfg.get('model_type')!r} model, not a "
                              f"transformers SiglipModel ('siglip')")
    t = {**_HF_TEXT, **(cfg.get("text_config") or {})}
    v = {**_HF_VISION, **(cfg.get("vision_config") or {})}
    if not v["vision_use_head"]:
        raise CheckpointError("vision_use_head=False (no MAP head) is not supported")
    if t["hidden_act"] != v["hidden_act"] or t["layer_norm_eps"] != v["layer_norm_eps"]:
        raise CheckpointError("different hidden_act / layer_norm_eps in the two towers is not "
                              "supported")
    if t["hidden_act"] not in ("gelu_pytorch_tanh", "gelu"):
        raise CheckpointError(f"unsupported hidden_act {t['hidden_act']!r}")
    proj = int(t["projection_size"] or t["hidden_size"])
    pre = dict(preprocessor or {})
    kw: dict[str, Any] = {}
    if "image_mean" in pre:
        kw["mean"] = tuple(float(x) for x in pre["image_mean"])
        kw["std"] = tuple(float(x) for x in pre["image_std"])
    if pre.get("resample") in RESAMPLE:
        kw["interpolation"] = RESAMPLE[pre["resample"]]
    image_size = square(v["image_size"], "image_size")
    vh, th = int(v["hidden_size"]), int(t["hidden_size"])
    return SigLIPConfig(
        name=name,
        embed_dim=proj,
        vision=VisionConfig(image_size=image_size, patch_size=square(v["patch_size"], "patch"),
                            width=vh, layers=int(v["num_hidden_layers"]),
                            heads=int(v["num_attention_heads"]),
                            mlp_ratio=int(v["intermediate_size"]) / vh),
        text=TextConfig(context_length=int(t["max_position_embeddings"]),
                        vocab_size=int(t["vocab_size"]), width=th,
                        layers=int(t["num_hidden_layers"]), heads=int(t["num_attention_heads"]),
                        mlp_ratio=int(t["intermediate_size"]) / th,
                        eot_token_id=SIGLIP_EOS_ID, sot_token_id=-1),
        hidden_act=t["hidden_act"],
        layer_norm_eps=float(t["layer_norm_eps"]),
        **_text_fields(int(t["vocab_size"]), tokenizer_class),
        **kw,
    )


# ---------------------------------------------------------------------------------------
# Loader hooks (crossgap_jax.models.checkpoint.loader)
# ---------------------------------------------------------------------------------------
_HUB_FILES = ["config.json", "preprocessor_config.json", "spiece.model", "model.safetensors",
              "model.safetensors.index.json", "model-*.safetensors", "tokenizer_config.json",
              "tokenizer.json", "tokenizer.model"]


def _is_npz(path: str) -> bool:
    return is_npz(path) and any("img/embedding" in n for n in npz_names(path))


def is_siglip_checkpoint(source: str) -> bool:
    """A big_vision SigLIP ``.npz`` or a directory whose ``config.json`` says ``siglip``."""
    path = os.path.expanduser(str(source))
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        try:
            return os.path.isfile(cfg) and read_json(cfg).get("model_type") == "siglip"
        except (OSError, ValueError):
            return False
    return _is_npz(path)


claims = is_siglip_checkpoint


_TOWER_FIELDS = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio",
                 "context_length", "vocab_size")


def architecture_diff(a: SigLIPConfig, b: SigLIPConfig) -> list[str]:
    """``"field: a vs b"`` for every shape / activation difference."""
    return field_diffs(a, b, ("embed_dim", "hidden_act", "layer_norm_eps"),
                       {"vision": _TOWER_FIELDS, "text": _TOWER_FIELDS})


def _same_tokenizer(a: SigLIPConfig, b: SigLIPConfig) -> bool:
    return (a.text_tokenizer, a.text_pad_id) == (b.text_tokenizer, b.text_pad_id)


def match_registered(config: SigLIPConfig, prefer: str | None = None) -> str | None:
    """The first registered SigLIP architecture with ``config``'s shapes, preferring one
    with its tokenizer too (``siglip-tiny`` / ``siglip2-tiny`` share their shapes), or None.

    The tokenizer is not part of :func:`architecture_diff`: a big_vision ``.npz`` does not
    say which vocabulary it was trained with (only its size), so a named architecture
    brings its own tokenizer (:func:`adopt`).
    """
    del prefer
    shaped = [n for n in list_architectures() if isinstance(get_config(n), SigLIPConfig)
              and not architecture_diff(get_config(n), config)]
    same = [n for n in shaped if _same_tokenizer(get_config(n), config)]
    return (same or shaped or [None])[0]


def adopt(requested: SigLIPConfig, declared: SigLIPConfig) -> SigLIPConfig:
    """The requested architecture with the file's preprocessing (mean, std, resampling);
    its tokenizer fields are the requested architecture's."""
    return requested.replace(mean=declared.mean, std=declared.std,
                             interpolation=declared.interpolation)


def _find_tokenizer(folder: str, config: SigLIPConfig) -> str | None:
    """The tokenizer file of ``config``'s kind in ``folder`` (Gemma: ``tokenizer.json`` /
    ``tokenizer.model``; SentencePiece: ``spiece.model`` ...), else None."""
    if config.text_tokenizer == "gemma":
        return find_gemma_file(folder)
    for f in ("spiece.model", "tokenizer.model", "sentencepiece.model"):
        if os.path.isfile(os.path.join(folder, f)):
            return os.path.join(folder, f)
    return None


def read(req: Request) -> Read:
    """A transformers ``SiglipModel`` directory / hub repo, or a big_vision ``.npz``."""
    source, arch = req.source, req.arch
    if arch is not None:
        if not isinstance(arch, SigLIPConfig):
            raise CheckpointError(f"{arch.name!r} is not a SigLIP architecture")
        tagged = resolve_family_tag(SIGLIP_PRETRAINED, arch.name, source, SIGLIP_DEFAULT_TAG,
                                    "SigLIP")
        source = tagged or source
    path = os.path.expanduser(str(source))
    extra: dict[str, Any] = {"origin": "local"}
    if not os.path.exists(path) and re.fullmatch(r"[\w.\-]+/[\w.\-]+", str(source)):
        gemma = (arch is not None and arch.text_tokenizer == "gemma") or "siglip2" in str(
            source).lower()
        path = hub_snapshot(str(source), req.cache_dir, _HUB_FILES,
                            ("config.json", "model.safetensors",
                             "tokenizer.json" if gemma else "spiece.model"))
        extra["origin"] = "hf-hub"
    tokenizer = req.tokenizer
    if os.path.isdir(path):
        d = read_dir(path, "SiglipModel", allow_pickle=req.allow_pickle)
        tok_file = os.path.join(path, "tokenizer_config.json")
        tok_class = read_json(tok_file).get("tokenizer_class") if os.path.isfile(tok_file) \
            else None
        declared = config_from_hf(d.config, d.preprocessor, tokenizer_class=tok_class)
        sd, fmt, weights, layout, declared_by = d.tensors, d.fmt, d.weights, "hf", d.config_file
        tokenizer = tokenizer or _find_tokenizer(path, arch or declared)
    elif _is_npz(path):
        sd = read_npz(path)
        fmt, layout, weights = "big_vision-npz", "big_vision", path
        declared, declared_by = config_from_big_vision(sd), "tensor shapes"
        if tokenizer is None:
            tokenizer = _find_tokenizer(os.path.dirname(os.path.abspath(path)),
                                        arch or declared)
    elif os.path.exists(path):
        raise CheckpointError(f"{path}: not a SigLIP checkpoint (expected a transformers "
                              f"SiglipModel directory or a big_vision .npz)")
    else:
        raise CheckpointNotFoundError(f"no such SigLIP checkpoint: {source}", target=path)
    extra["tokenizer_file"] = tokenizer
    return Read(sd, fmt, [weights], layout, declared, declared_by, extra=extra)


def convert_tensors(read: Read, config: SigLIPConfig) -> Converted:
    """HF or big_vision tensors -> Flax paths (shapes checked by the loader)."""
    if read.layout == "hf":
        flat, names, unexpected = _hf_flat(read.tensors)
        return Converted(flat, names, unexpected)
    flat, unexpected = big_vision_flat(read.tensors)
    return Converted(flat, {}, unexpected)
