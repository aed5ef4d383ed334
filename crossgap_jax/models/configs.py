"""CLIP architectures as small config records, and the registry of known names.

Architectures (shapes) are kept separate from pretrained-weight sources (see
``crossgap_jax.models.checkpoint.pretrained``), following open_clip's split.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# OpenAI CLIP preprocessing constants (also used by open_clip's OpenAI-compatible models):
# defined with the preprocessing in the data layer, re-exported here.
from crossgap_jax.data import OPENAI_MEAN, OPENAI_STD  # noqa: F401

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """ViT image tower."""

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Causal text transformer."""

    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    eot_token_id: int = EOT_TOKEN_ID
    sot_token_id: int = SOT_TOKEN_ID


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """A whole CLIP model: both towers, the joint embedding size and the activation.

    ``quick_gelu`` is True for the OpenAI checkpoints (x * sigmoid(1.702 x)) and False
    for most open_clip checkpoints (exact erf GELU).
    """

    name: str = "ViT-B/32"
    family: str = "clip"
    embed_dim: int = 512
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    quick_gelu: bool = True
    layer_norm_eps: float = 1e-5
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPConfig:
        d = dict(d)
        d["vision"] = VisionConfig(**d["vision"])
        d["text"] = TextConfig(**d["text"])
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)

    def replace(self, **kw: Any) -> CLIPConfig:
        return dataclasses.replace(self, **kw)


def vit_config(name: str, embed: int, res: int, patch: int, vw: int, vl: int, vh: int, tw: int,
               tl: int, th: int, quick_gelu: bool = True) -> CLIPConfig:
    """A ViT CLIP config: embed dim, image size, patch, vision width/layers/heads, text
    width/layers/heads (context 77, the OpenAI vocabulary)."""
    return CLIPConfig(
        name=name,
        embed_dim=embed,
        vision=VisionConfig(image_size=res, patch_size=patch, width=vw, layers=vl, heads=vh),
        text=TextConfig(width=tw, layers=tl, heads=th),
        quick_gelu=quick_gelu,
    )


_REGISTRY: dict[str, CLIPConfig] = {
    # OpenAI releases (quick_gelu).
    "ViT-B/32": vit_config("ViT-B/32", 512, 224, 32, 768, 12, 12, 512, 12, 8),
    "ViT-B/16": vit_config("ViT-B/16", 512, 224, 16, 768, 12, 12, 512, 12, 8),
    "ViT-L/14": vit_config("ViT-L/14", 768, 224, 14, 1024, 24, 16, 768, 12, 12),
    "ViT-L/14@336px": vit_config("ViT-L/14@336px", 768, 336, 14, 1024, 24, 16, 768, 12, 12),
    # open_clip names (exact GELU; the "-quickgelu" variants match OpenAI's activation).
    "ViT-B-32": vit_config("ViT-B-32", 512, 224, 32, 768, 12, 12, 512, 12, 8, quick_gelu=False),
    "ViT-B-16": vit_config("ViT-B-16", 512, 224, 16, 768, 12, 12, 512, 12, 8, quick_gelu=False),
    "ViT-L-14": vit_config("ViT-L-14", 768, 224, 14, 1024, 24, 16, 768, 12, 12, quick_gelu=False),
    "ViT-B-32-quickgelu": vit_config("ViT-B-32-quickgelu", 512, 224, 32, 768, 12, 12, 512, 12, 8),
    "ViT-L-14-quickgelu": vit_config("ViT-L-14-quickgelu", 768, 224, 14, 1024, 24, 16, 768, 12, 12),
    # Tiny configs for tests and smoke runs (real tokenizer vocabulary and context).
    # (vision heads = width // 64, the rule OpenAI's ``build_model`` uses).
    "tiny": vit_config("tiny", 32, 32, 8, 128, 2, 2, 64, 2, 4),
    "tiny-gelu": vit_config("tiny-gelu", 32, 32, 8, 128, 2, 2, 64, 2, 4, quick_gelu=False),
}


#: open_clip's names for registered architectures (accepted by :func:`get_config`; the
#: config returned is ours, under our name). Only names whose open_clip config has exactly
#: our shapes are listed: open_clip's other SigLIP models (256/384/512 px, L/16, SO400M,
#: i18n) have no config here.
ARCHITECTURE_ALIASES: dict[str, str] = {
    "ViT-B-16-SigLIP": "SigLIP-ViT-B-16",
    # Hugging Face's spelling of the DINOv3 ViT-L/16 release (models/dinov3).
    "facebook/dinov3-vitl16-pretrain-lvd1689m": "dinov3-vitl16",
    "ViT-B-16-SigLIP2": "SigLIP2-ViT-B-16",
}


def list_aliases() -> dict[str, str]:
    """open_clip name -> our architecture name (:data:`ARCHITECTURE_ALIASES`)."""
    return dict(ARCHITECTURE_ALIASES)


def list_architectures() -> list[str]:
    """Names accepted by :func:`get_config`."""
    return list(_REGISTRY)


def get_config(name: str) -> CLIPConfig:
    """Architecture config by name (``"ViT-B/32"``, ``"ViT-L-14"``, ``"tiny"``, ...) or by
    open_clip alias (``"ViT-B-16-SigLIP"``: :data:`ARCHITECTURE_ALIASES`).

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    if isinstance(name, CLIPConfig):
        return name
    if name not in _REGISTRY and ARCHITECTURE_ALIASES.get(name) in _REGISTRY:
        return _REGISTRY[ARCHITECTURE_ALIASES[name]]
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown CLIP architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def register_architecture(config: CLIPConfig, overwrite: bool = False) -> None:
    """Add an architecture to the registry (e.g. a custom small model)."""
    if config.name in _REGISTRY and not overwrite:
        raise ValueError(f"architecture {config.name!r} already registered")
    _REGISTRY[config.name] = config


# Small CLIPs trained in this project (crossgap_jax.train): a ViT image tower and a causal
# text transformer with the real 49,408-token OpenAI BPE vocabulary and 77-token context,
# small enough to train on a CPU in minutes. At small width the token embedding dominates
# (49,408 x width): the shipped demo model (crossgap-caltech) has 6.3M of its 8M parameters
# there.
def _small(name: str, *, embed: int, res: int, patch: int, vw: int, vl: int, vh: int, tw: int,
           tl: int, th: int) -> CLIPConfig:
    return vit_config(name, embed, res, patch, vw, vl, vh, tw, tl, th, quick_gelu=False)


SMALL_ARCHITECTURES: dict[str, CLIPConfig] = {
    c.name: c
    for c in [
        # sklearn digits upscaled to 32 px: 4 x 4 patches of 8 px (a quick training example).
        _small("crossgap-digits", embed=64, res=32, patch=8, vw=96, vl=3, vh=4, tw=64, tl=3,
               th=4),
        # The Caltech101 controlled experiment and the shipped demo model: 64 px, 8 px
        # patches (8 x 8 grid).
        _small("crossgap-caltech", embed=128, res=64, patch=8, vw=128, vl=4, vh=4, tw=128,
               tl=4, th=4),
        # A very small one for tests.
        _small("crossgap-test", embed=16, res=16, patch=8, vw=32, vl=1, vh=2, tw=16, tl=1,
               th=2),
    ]
}


def register_small_architectures() -> None:
    """Register :data:`SMALL_ARCHITECTURES` (idempotent; a changed config replaces the old).

    Called by this module when the registry is built, so ``get_config("crossgap-caltech")``
    works without importing the training code."""
    for name, cfg in SMALL_ARCHITECTURES.items():
        if _REGISTRY.get(name) != cfg:
            register_architecture(cfg, overwrite=True)


register_small_architectures()
