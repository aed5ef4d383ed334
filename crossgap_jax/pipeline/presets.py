"""The authors' per-backbone configurations, with their keys, overridable from the CLI.

Values from the paper (see PAPER.md): AdamW lr 2e-2, weight decay 0.01, batch 64, OTI 150
steps with R = 1 for every backbone, OVI 1000 steps with P per backbone, template
``"a photo of {}"`` for OTI, seed 0.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from crossgap_jax.data.embedded import ASSET_DIR

#: The shipped demo model (a CLIP trained here, ``python -m crossgap_jax.train.demo_caltech``):
#: the weights of the ``demo`` preset and of ``--pretrained demo``.
DEMO_CHECKPOINT = os.path.join(ASSET_DIR, "demo_caltech101.safetensors")

_COMMON: dict[str, Any] = {
    "learning_rate": 2e-2,
    "weight_decay": 0.01,
    "batch_size": 64,
    "oti_steps": 150,
    "ovi_steps": 1000,
    "num_pseudo_tokens": 1,  # OTI's R (1 for every backbone in the paper)
    "template_sentence": "a photo of {}",
    "seed": 0,
    "isoclip_k": None,  # (k_top, k_bottom) override of IsoCLIP_K (CLI --isoclip-k)
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


# IsoCLIP's (k_top, k_bottom) as the IsoCLIP authors ran them (PAPER.md, "IsoCLIP, exactly"),
# keyed by (architecture, pretrained tag). Task "image": image retrieval and NCM
# classification; "text": text retrieval. A missing task was not published.
ISOCLIP_K: dict[tuple[str, str], dict[str, tuple[int, int]]] = {
    ("ViT-B/32", "openai"): {"image": (150, 50), "text": (20, 100)},
    ("ViT-B/16", "openai"): {"image": (200, 50), "text": (10, 50)},
    ("ViT-L/14", "openai"): {"image": (250, 200), "text": (10, 300)},
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): {"image": (50, 50)},
    ("ViT-B-16", "datacomp_xl_s13b_b90k"): {"image": (100, 100), "text": (2, 150)},
}
# open_clip's names of the OpenAI architectures (same weights with pretrained "openai").
_OPENAI_ALIASES = {"ViT-B-32": "ViT-B/32", "ViT-B-32-quickgelu": "ViT-B/32",
                   "ViT-B-16": "ViT-B/16", "ViT-L-14": "ViT-L/14",
                   "ViT-L-14-quickgelu": "ViT-L/14"}


def check_isoclip_k(value: Any) -> tuple[int, int]:
    """``(k_top, k_bottom)`` from a pair of non-negative integers.

    Raises:
        ValueError: anything else (the message shows the expected form).
    """
    try:
        top, bottom = value
    except (TypeError, ValueError):
        raise ValueError(f"isoclip_k must be TOP,BOTTOM (two non-negative integers, e.g. "
                         f"150,50), got {value!r}") from None
    for k in (top, bottom):
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"isoclip_k must be TOP,BOTTOM (two non-negative integers, e.g. "
                             f"150,50), got {value!r}")
    return int(top), int(bottom)


def isoclip_k(cfg: dict[str, Any], task: str) -> tuple[tuple[int, int], str]:
    """IsoCLIP's ``(k_top, k_bottom)`` for a run configuration and a task kind.

    Args:
        cfg: resolved configuration (:func:`get_preset`): ``model``, ``pretrained`` and the
            optional override ``isoclip_k``.
        task: ``"image"`` (image retrieval, NCM classification) or ``"text"`` (text
            retrieval).

    Returns:
        ``((k_top, k_bottom), source)``; ``source`` says where the values came from.

    Raises:
        ValueError: no override and no published value for this backbone and task (the
            message asks for ``--isoclip-k TOP,BOTTOM``; values are never guessed), or a
            malformed override.
    """
    if task not in ("image", "text"):
        raise ValueError(f"IsoCLIP task must be 'image' or 'text', got {task!r}")
    if cfg.get("isoclip_k") is not None:
        return check_isoclip_k(cfg["isoclip_k"]), "--isoclip-k"
    model, pretrained = cfg.get("model"), cfg.get("pretrained")
    key = (_OPENAI_ALIASES.get(model, model) if pretrained == "openai" else model, pretrained)
    published = ISOCLIP_K.get(key, {})
    if task not in published:
        where = ("only for image tasks" if published else "for no task")
        raise ValueError(
            f"IsoCLIP's authors published (k_top, k_bottom) {where} for model {model!r} with "
            f"pretrained {pretrained!r}, not for {task} tasks; pass --isoclip-k TOP,BOTTOM "
            f"(published backbones: "
            f"{', '.join(f'{m} ({p})' for m, p in ISOCLIP_K)})")
    return published[task], f"published for {key[0]} ({key[1]})"
