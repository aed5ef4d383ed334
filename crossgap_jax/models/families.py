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

Checkpoint reading is not a family-module hook: each family's reader / converter is
registered in :data:`crossgap_jax.models.checkpoint.loader.LOADERS` (model modules import none).
"""

from __future__ import annotations

import importlib
from typing import Any

_FAMILIES: dict[str, str] = {
    "clip": "crossgap_jax.models.clip.model",
    "siglip": "crossgap_jax.models.siglip.model",
    "slip": "crossgap_jax.models.slip.model",
    "dinov2": "crossgap_jax.models.dinov2.model",
}


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
            f"--variants ncm) or choose a CLIP-family model (CLIP, SigLIP, SLIP)")


def register_family(name: str, module_path: str) -> None:
    """Register a family by the import path of its module."""
    _FAMILIES[name] = module_path


def family_module(name: str) -> Any:
    """The family module registered as ``name``."""
    if name not in _FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}")
    return importlib.import_module(_FAMILIES[name])


def family_of(config: Any) -> Any:
    """The family module of ``config`` (``config.family``, default ``"clip"``)."""
    return family_module(getattr(config, "family", "clip"))
