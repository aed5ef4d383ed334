"""Architecture config records, and the one registry of architecture names.

The records (:class:`CLIPConfig` with its :class:`VisionConfig` / :class:`TextConfig`) are
shared by every family (a family subclasses them). The names live with their family: each
family's model module declares ``ARCHITECTURES`` (name -> config) and optionally
``ALIASES`` (open_clip name -> ours), and :func:`get_config` / :func:`list_architectures`
read them from the families of :data:`~crossgap_jax.models.families.FAMILIES` on first
use (importing a model module imports JAX and Flax, so nothing is imported before a name
is looked up). :func:`register_architecture` adds a custom model's config.

Architectures (shapes) are kept separate from pretrained-weight sources (see
``crossgap_jax.models.checkpoint.pretrained``), following open_clip's split.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

# OpenAI CLIP preprocessing constants (also used by open_clip's OpenAI-compatible models):
# defined with the preprocessing in the data layer, re-exported here.
from crossgap_jax.data import OPENAI_MEAN, OPENAI_STD
from crossgap_jax.models.families import FAMILIES, Family

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


# Configs added with register_architecture (looked up before the families' tables).
_REGISTRY: dict[str, CLIPConfig] = {}
# family name -> (its entry when read, its ARCHITECTURES, its ALIASES): read on first lookup.
_FAMILY_TABLES: dict[str, tuple[Family, dict[str, CLIPConfig], dict[str, str]]] = {}


def _family_tables() -> list[tuple[dict[str, CLIPConfig], dict[str, str]]]:
    """``(ARCHITECTURES, ALIASES)`` of every registered family, in :data:`FAMILIES` order;
    a family's model module is imported the first time (and again after
    :func:`~crossgap_jax.models.families.register_family` replaced its entry)."""
    out = []
    for name, family in FAMILIES.items():
        cached = _FAMILY_TABLES.get(name)
        if cached is None or cached[0] != family:
            module = importlib.import_module(family.model)
            cached = (family, dict(getattr(module, "ARCHITECTURES", {})),
                      dict(getattr(module, "ALIASES", {})))
            _FAMILY_TABLES[name] = cached
        out.append(cached[1:])
    return out


def _architectures() -> dict[str, CLIPConfig]:
    """Every known name -> config: the families' tables, then the registered configs (a
    registered config replaces a family's of the same name)."""
    table: dict[str, CLIPConfig] = {}
    for archs, _ in _family_tables():
        table.update(archs)
    table.update(_REGISTRY)
    return table


def list_aliases() -> dict[str, str]:
    """open_clip name -> our architecture name, from the families' ``ALIASES`` (accepted by
    :func:`get_config`; the config returned is ours, under our name). Only names whose
    open_clip config has exactly our shapes are listed."""
    aliases: dict[str, str] = {}
    for _, al in _family_tables():
        aliases.update(al)
    return aliases


def list_architectures() -> list[str]:
    """Names accepted by :func:`get_config` (every family's, then the registered ones)."""
    return list(_architectures())


def get_config(name: str | CLIPConfig) -> CLIPConfig:
    """Architecture config by name (``"ViT-B/32"``, ``"ViT-L-14"``, ``"tiny"``,
    ``"SigLIP-ViT-B-16"``, ...) or by open_clip alias (``"ViT-B-16-SigLIP"``:
    :func:`list_aliases`); a config is returned as is.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    if isinstance(name, CLIPConfig):
        return name
    table = _architectures()
    if name not in table:
        name = list_aliases().get(name, name)
    if name not in table:
        raise KeyError(
            f"unknown CLIP architecture {name!r}; known: {', '.join(sorted(table))}"
        )
    return table[name]


def register_architecture(config: CLIPConfig, overwrite: bool = False) -> None:
    """Add an architecture (e.g. a custom small model) under ``config.name``.

    Raises:
        ValueError: the name is already known and ``overwrite`` is False.
    """
    if config.name in _architectures() and not overwrite:
        raise ValueError(f"architecture {config.name!r} already registered")
    _REGISTRY[config.name] = config
