"""Configs that CLIP checkpoint files declare (transformers ``config.json``,
``open_clip_config.json``), and comparing / naming architectures.

Used by the CLIP family's reader (:mod:`crossgap_jax.models.clip.reader`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from crossgap_jax.models.checkpoint.errors import CheckpointError
from crossgap_jax.models.configs import (
    OPENAI_MEAN,
    OPENAI_STD,
    CLIPConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_architectures,
)

_HF_TEXT_DEFAULTS = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, vocab_size=49408,
                         hidden_act="quick_gelu", layer_norm_eps=1e-5)
_HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=32,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5)
_ACTIVATIONS = {"quick_gelu": True, "gelu": False}


def config_from_hf(cfg: Mapping[str, Any], name: str = "custom",
                   mean: tuple = OPENAI_MEAN, std: tuple = OPENAI_STD) -> CLIPConfig:
    """A transformers ``CLIPConfig`` dict (``config.json``) -> :class:`CLIPConfig`.

    Keys absent from the file take transformers' defaults (``save_pretrained`` may omit
    them). The EOT id always comes from our tokenizer, not the file's ``eos_token_id``.
    """
    if cfg.get("model_type", "clip") != "clip":
        raise CheckpointError(f"config.json describes a {cfg.get('model_type')!r} model, "
                              f"not a transformers CLIPModel ('clip')")
    t = {**_HF_TEXT_DEFAULTS, **(cfg.get("text_config") or cfg.get("text_config_dict") or {})}
    v = {**_HF_VISION_DEFAULTS,
         **(cfg.get("vision_config") or cfg.get("vision_config_dict") or {})}
    acts = {t["hidden_act"], v["hidden_act"]}
    if len(acts) != 1 or not acts <= set(_ACTIVATIONS):
        raise CheckpointError(f"unsupported hidden_act {sorted(acts)} (text/vision); supported: "
                              f"one of {sorted(_ACTIVATIONS)} for both towers")
    if t["layer_norm_eps"] != v["layer_norm_eps"]:
        raise CheckpointError("different layer_norm_eps in the two towers is not supported")
    return CLIPConfig(
        name=name,
        embed_dim=int(cfg.get("projection_dim", 512)),
        vision=VisionConfig(image_size=int(v["image_size"]), patch_size=int(v["patch_size"]),
                            width=int(v["hidden_size"]), layers=int(v["num_hidden_layers"]),
                            heads=int(v["num_attention_heads"]),
                            mlp_ratio=v["intermediate_size"] / v["hidden_size"]),
        text=TextConfig(context_length=int(t["max_position_embeddings"]),
                        vocab_size=int(t["vocab_size"]), width=int(t["hidden_size"]),
                        layers=int(t["num_hidden_layers"]), heads=int(t["num_attention_heads"]),
                        mlp_ratio=t["intermediate_size"] / t["hidden_size"]),
        quick_gelu=_ACTIVATIONS[acts.pop()],
        layer_norm_eps=float(t["layer_norm_eps"]),
        mean=tuple(mean), std=tuple(std),
    )


# open_clip options that do not change a standard ViT CLIP when at these values.
_OC_NEUTRAL: dict[str, tuple] = {
    "ls_init_value": (None,), "attentional_pool": (False,), "no_ln_pre": (False,),
    "pos_embed_type": ("learnable",), "final_ln_after_pool": (False,), "pool_type": (
        "tok", "argmax"), "output_tokens": (False,), "act_kwargs": (None, {}),
    "norm_kwargs": (None, {}), "timm_model_name": (None,), "input_patchnorm": (False,),
    "hf_model_name": (None,), "proj_type": ("linear",), "embed_cls": (False,),
    "no_causal_mask": (False,), "proj_bias": (False,), "pad_id": (0,), "pooler_type": (
        "argmax",), "output_dim": (None,),
}
_OC_IGNORED = {"patch_dropout", "dropout", "hf_tokenizer_name", "tokenizer_kwargs",
               "emb_dropout", "attn_dropout", "mask_ratio"}  # training-only or tokenizer


def config_from_open_clip(cfg: Mapping[str, Any], name: str = "custom") -> CLIPConfig:
    """An ``open_clip_config.json`` dict -> :class:`CLIPConfig` (standard ViT CLIP only).

    Raises:
        CheckpointError: the config uses an open_clip option this port does not implement.
    """
    model = cfg.get("model_cfg", cfg)
    pre = cfg.get("preprocess_cfg") or {}
    vc, tc = dict(model.get("vision_cfg") or {}), dict(model.get("text_cfg") or {})
    unsupported = []
    for tower, d, known in (("vision_cfg", vc, {"image_size", "layers", "width", "patch_size",
                                                "head_width", "mlp_ratio"}),
                            ("text_cfg", tc, {"context_length", "vocab_size", "width", "heads",
                                              "layers", "mlp_ratio"})):
        for k, val in d.items():
            if k in known or k in _OC_IGNORED or val in _OC_NEUTRAL.get(k, ()):
                continue
            unsupported.append(f"{tower}.{k}={val!r}")
    if model.get("custom_text") and tc.get("hf_model_name"):
        unsupported.append("custom_text with a Hugging Face text tower")
    if unsupported:
        raise CheckpointError("unsupported open_clip options: " + ", ".join(unsupported))
    image_size = vc.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise CheckpointError(f"non-square image_size {image_size} is not supported")
        image_size = image_size[0]
    vw = int(vc.get("width", 768))
    return CLIPConfig(
        name=name,
        embed_dim=int(model.get("embed_dim", 512)),
        vision=VisionConfig(image_size=int(image_size), patch_size=int(vc.get("patch_size", 16)),
                            width=vw, layers=int(vc.get("layers", 12)),
                            heads=vw // int(vc.get("head_width", 64)),
                            mlp_ratio=float(vc.get("mlp_ratio", 4.0))),
        text=TextConfig(context_length=int(tc.get("context_length", 77)),
                        vocab_size=int(tc.get("vocab_size", 49408)),
                        width=int(tc.get("width", 512)), layers=int(tc.get("layers", 12)),
                        heads=int(tc.get("heads", 8)), mlp_ratio=float(tc.get("mlp_ratio", 4.0))),
        quick_gelu=bool(model.get("quick_gelu", False)),
        mean=tuple(pre.get("mean", OPENAI_MEAN)), std=tuple(pre.get("std", OPENAI_STD)),
    )


def architecture_diff(a: CLIPConfig, b: CLIPConfig) -> list[str]:
    """Field-by-field differences in shape and activation (ignores name, mean, std)."""
    fam_a, fam_b = getattr(a, "family", "clip"), getattr(b, "family", "clip")
    if fam_a != fam_b or type(a) is not type(b) or type(a.vision) is not type(b.vision) \
            or type(a.text) is not type(b.text):
        return [f"family: {fam_a} ({type(a).__name__}) vs {fam_b} ({type(b).__name__})"]
    diffs = []
    for field in ("embed_dim", "quick_gelu", "layer_norm_eps"):
        if getattr(a, field) != getattr(b, field):
            diffs.append(f"{field}: {getattr(a, field)} vs {getattr(b, field)}")
    for tower in ("vision", "text"):
        for f in dataclasses.fields(getattr(a, tower)):
            if f.name in ("eot_token_id", "sot_token_id"):
                continue
            x, y = getattr(getattr(a, tower), f.name), getattr(getattr(b, tower), f.name)
            if x != y:
                diffs.append(f"{tower}.{f.name}: {x} vs {y}")
    return diffs


def match_registered(config: CLIPConfig, prefer: str | None = None) -> str | None:
    """Name of a registered architecture identical to ``config`` in shape and activation,
    or None. ``config.name`` wins if it matches, then names starting with ``prefer``
    (``"ViT-B-32"`` -> ``"ViT-B-32-quickgelu"``), then registry order (OpenAI names first).
    """
    family = getattr(config, "family", "clip")
    names = [n for n in list_architectures()
             if getattr(get_config(n), "family", "clip") == family
             and not architecture_diff(get_config(n), config)]
    if config.name in names:
        return config.name
    for n in names:
        if prefer and n.startswith(prefer):
            return n
    return names[0] if names else None
