"""Model families: each exposes the same pure entry points over a params pytree.

A family is a module (or object) with ``embed_tokens``, ``encode_text_embeddings``,
``encode_text``, ``embed_image_patches``, ``encode_image_tokens``, ``encode_image``,
``init_params``, ``param_shapes``, ``get_tokenizer(config)``, ``preprocess_options(config)``
(keyword arguments of ``preprocess_image``: resize mode, interpolation, mean/std),
``CONFIG_CLASS`` and the flag
``CAUSAL_TEXT`` (True when positions after the pooled one never influence the text
feature, which makes OTI's context truncation exact). The config's ``family`` attribute
selects it (``"clip"`` by default), so the bundle and the inverters never hard-code one
architecture.

Optional hooks, used when present: ``pool_indices(ids, config)`` (the pooled text
position when it is not the first EOT), ``pad_token_ids(ids, config)`` (a family whose
text encoder reads the whole context pads ids shorter than the context exactly as its
tokenizer does; see :func:`crossgap_jax.models.inputs.check_text_inputs`),
``encode_image_preproj`` /
``encode_text_preproj`` / ``projection_matrices`` (features before the projections, for
IsoCLIP), ``projection_biases(params, config) -> (b_i | None, b_t | None)`` (heads with a
bias, SigLIP's text head; absent means no bias), and on the tokenizer
``template_ids(text, placeholder)`` (OTI placeholder placement).

Checkpoint reading is not a family-module hook: it is the family's loader module (the
interface of :mod:`crossgap_jax.models.checkpoint.loader`; model modules import none).

The registry: one :class:`Family` entry per family in :data:`FAMILIES` names its model
module and its loader module; the model module's ``ARCHITECTURES`` (name -> config) and
``ALIASES`` are what :func:`~crossgap_jax.models.configs.get_config` looks up (read on first
lookup: this module imports no model module). Adding a family is its folder
``models/<name>/`` and one entry (or one :func:`register_family` call).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class Family:
    """Everything the package looks up about a model family.

    Attributes:
        name: the config's ``family`` value (``"clip"``, ``"siglip"``, ...).
        model: import path of the model module (the interface above; its optional
            ``ARCHITECTURES`` dict is registered with the family).
        loader: import path of its checkpoint hooks (interface:
            :mod:`crossgap_jax.models.checkpoint.loader`).
    """

    name: str
    model: str
    loader: str


_PKG = "crossgap_jax.models"

#: family name -> its entry; one line per family.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("clip", f"{_PKG}.clip.model", f"{_PKG}.clip.reader"),
    Family("siglip", f"{_PKG}.siglip.model", f"{_PKG}.siglip.convert"),
    Family("slip", f"{_PKG}.slip.model", f"{_PKG}.slip.convert"),
    Family("dinov2", f"{_PKG}.dinov2.model", f"{_PKG}.dinov2.convert"),
    Family("dinov3", f"{_PKG}.dinov3.model", f"{_PKG}.dinov3.convert"),
    Family("pe_core", f"{_PKG}.pe_core.model", f"{_PKG}.pe_core.convert"),
)}


#: The backbones with a text tower, as refusals name them (keep in step with FAMILIES).
TEXT_BACKBONES = "CLIP, OpenCLIP, SigLIP, SigLIP 2, SLIP, PE-Core"


class NoTextTowerError(ValueError):
    """A text-side operation (text features, OTI/OVI, zero-shot, IsoCLIP) was asked of an
    image-only backbone (a family whose ``HAS_TEXT_TOWER`` is False, e.g. DINOv2)."""


def has_text_tower(config: Any) -> bool:
    """Whether ``config``'s family has a text tower (its ``HAS_TEXT_TOWER``, default True)."""
    return bool(getattr(family_of(config), "HAS_TEXT_TOWER", True))


def require_text_tower(config: Any, what: str) -> None:
    """Raise :class:`NoTextTowerError` naming ``what`` and the backbone when ``config``'s
    family is image-only; no-op otherwise.

    ``what``: the operation, e.g. ``"OTI"``, ``"zero-shot classification"``.
    """
    if not has_text_tower(config):
        family = getattr(config, "family", "clip")
        raise NoTextTowerError(
            f"{what} needs a text tower, but {config.name} ({family}) is an image-only "
            f"backbone: use it for image features (encode, image-image retrieve, classify "
            f"--variants ncm) or choose a model with a text tower ({TEXT_BACKBONES})")


def register_family(family: Family) -> None:
    """Register ``family`` (replacing an entry of the same name); its architectures are read
    at the next lookup (:func:`~crossgap_jax.models.configs.get_config`)."""
    FAMILIES[family.name] = family


def family_module(name: str) -> Any:
    """The model module of the family registered as ``name``.

    Raises:
        KeyError: ``name`` is not registered (the message lists the registered ones).
    """
    if name not in FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name].model)


def family_of(config: Any) -> Any:
    """The family module of ``config`` (``config.family``, default ``"clip"``)."""
    return family_module(getattr(config, "family", "clip"))
