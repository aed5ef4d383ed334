"""The authors' per-backbone configurations, with their keys, overridable from the CLI.

Values from the paper (see PAPER.md): AdamW lr 2e-2, weight decay 0.01, batch 64, OTI 150
steps with R = 1 for every backbone, OVI 1000 steps with P per backbone, template
``"a photo of {}"`` for OTI, seed 0.
"""

from __future__ import annotations

import copy
from typing import Any

_COMMON: dict[str, Any] = {
    "learning_rate": 2e-2,
    "weight_decay": 0.01,
    "batch_size": 64,
    "oti_steps": 150,
    "ovi_steps": 1000,
    "num_pseudo_tokens": 1,  # OTI's R (1 for every backbone in the paper)
    "template_sentence": "a photo of {}",
    "seed": 0,
}

# model: architecture name; pretrained: checkpoint tag / source for load_clip;
# ovi_num_pseudo_tokens: the authors' P for OVI.
PRESETS: dict[str, dict[str, Any]] = {
    "clip_vitb32": {"model": "ViT-B/32", "pretrained": "openai", "ovi_num_pseudo_tokens": 1},
    "clip_vitl14": {"model": "ViT-L/14", "pretrained": "openai", "ovi_num_pseudo_tokens": 4},
    "openclip_vitb32": {"model": "ViT-B-32", "pretrained": "datacomp_xl_s13b_b90k",
                        "ovi_num_pseudo_tokens": 1},
    "openclip_vitl14": {"model": "ViT-L-14", "pretrained": "datacomp_xl_s13b_b90k",
                        "ovi_num_pseudo_tokens": 2},
    "siglip_vitb16": {"model": "SigLIP-ViT-B-16", "pretrained": "webli",
                      "ovi_num_pseudo_tokens": 4},
    "slip_vitb16": {"model": "SLIP-ViT-B-16", "pretrained": "slip", "ovi_num_pseudo_tokens": 1},
    "slip_vitl16": {"model": "SLIP-ViT-L-16", "pretrained": "slip", "ovi_num_pseudo_tokens": 2},
    # The shipped demo model (crossgap_jax/assets/demo_caltech101.safetensors, a CLIP
    # trained here; crossgap_jax.demo) with the paper's OTI/OVI settings.
    "demo": {"model": "crossgap-caltech", "pretrained": "demo", "ovi_num_pseudo_tokens": 1},
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """The resolved configuration of preset ``name`` with ``overrides`` applied.

    Raises:
        KeyError: unknown preset (the message lists the known ones) or unknown override key.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    cfg = copy.deepcopy(_COMMON)
    cfg.update(PRESETS[name])
    cfg["preset"] = name
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in cfg:
            raise KeyError(f"unknown preset key {k!r}; keys: {', '.join(sorted(cfg))}")
        cfg[k] = type(cfg[k])(v) if isinstance(cfg[k], (int, float, str)) else v
    return cfg
