"""What the image-only families (DINOv2, DINOv3) share: the config's pooling rules, the
image-side module methods and pure entry points, and the text-side entry points, which
each refuse.

An image-only model module sets ``HAS_TEXT_TOWER = False`` and binds the text functions to
the family interface names (``embed_tokens = image_only.embed_tokens``, ...), so every
text-side call names the backbone and the fix instead of failing deep inside a graph.
``projection_matrices`` is the identity image head and an empty text head (nearest class
mean on the pre-projection features equals it on the embedding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossgap_jax.models.families import TEXT_BACKBONES, NoTextTowerError
from crossgap_jax.models.layers._module_fns import ModuleFns, image_functions
from crossgap_jax.models.layers.vit_layers import cls_pool

POOLINGS = ("cls", "cls+mean")
#: A registered architecture's name with ``"cls+mean"`` pooling: the base name + this.
CLSMEAN_SUFFIX = "-clsmean"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- the config -----------------------------------------------------------------------------
def pooled_dim(width: int, pooling: str) -> int:
    """``embed_dim`` of a ``pooling`` (``"cls"``: ``width``; ``"cls+mean"``: ``2 width``)."""
    return width * (2 if pooling == "cls+mean" else 1)


def check_pooling(config: Any, label: str) -> None:
    """The ``__post_init__`` checks every image-only config shares.

    Raises:
        ValueError: an unknown pooling, an ``embed_dim`` that does not match it, or an
            ``image_size`` that is not a multiple of the patch size (``label`` names the
            family, e.g. ``"DINOv2"``).
    """
    v = config.vision
    if config.pooling not in POOLINGS:
        raise ValueError(f"{label} pooling must be one of {POOLINGS}, got {config.pooling!r}")
    want = pooled_dim(v.width, config.pooling)
    if config.embed_dim != want:
        raise ValueError(f"{label} {config.name}: embed_dim {config.embed_dim} does not match "
                         f"pooling {config.pooling!r} of width {v.width} (expected {want})")
    if v.image_size % v.patch_size:
        raise ValueError(f"{label} {config.name}: image_size {v.image_size} is not a "
                         f"multiple of the patch size {v.patch_size}")


def with_pooling(config: Any, pooling: str) -> Any:
    """``config`` with another image embedding (``"cls"`` / ``"cls+mean"``); the name gets
    (or loses) the :data:`CLSMEAN_SUFFIX`."""
    base = config.name.removesuffix(CLSMEAN_SUFFIX)
    name = base + (CLSMEAN_SUFFIX if pooling == "cls+mean" else "")
    return dataclasses.replace(config, name=name, pooling=pooling,
                               embed_dim=pooled_dim(config.vision.width, pooling))


def with_clsmean(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (name -> config) plus each config's ``"cls+mean"`` variant."""
    out = dict(base)
    for cfg in base.values():
        clsmean = cfg.with_pooling("cls+mean")
        out[clsmean.name] = clsmean
    return out


# --- the Flax module -------------------------------------------------------------------------
class ImageOnlyViT(nn.Module):
    """The image-side methods of an image-only ViT. A family subclass builds its
    submodules in ``setup`` and provides ``embed_patches(pixels)`` (patch tokens) and
    ``hidden_states_from_tokens(tokens, grid_h, grid_w)`` (the final-normed tokens, float32);
    :attr:`prefix_tokens` counts the class and register tokens before the patches."""

    config: Any
    dtype: Any = jnp.float32

    @property
    def prefix_tokens(self) -> int:
        return 1

    def last_hidden_state(self, pixels: jax.Array) -> jax.Array:
        p = self.config.vision.patch_size
        return self.hidden_states_from_tokens(self.embed_image_patches(pixels),
                                              pixels.shape[1] // p, pixels.shape[2] // p)

    def pool(self, x: jax.Array) -> jax.Array:
        return cls_pool(x, self.config.pooling, self.prefix_tokens)

    def encode_image_tokens(self, tokens: jax.Array) -> jax.Array:
        g = self.config.vision.grid_size
        return self.pool(self.hidden_states_from_tokens(tokens, g, g))

    def encode_image(self, pixels: jax.Array) -> jax.Array:
        return self.pool(self.last_hidden_state(pixels))

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.encode_image(pixels)


# --- the image-side pure functions ----------------------------------------------------------
class ViTFunctions(NamedTuple):
    """An image-only family's ``init_params`` / ``param_shapes`` and pure image functions."""

    init_params: Callable
    param_shapes: Callable
    last_hidden_state: Callable
    embed_image_patches: Callable
    encode_image_tokens: Callable
    encode_image: Callable
    encode_image_preproj: Callable


def vit_functions(module_cls: type, module: str, label: str) -> ViTFunctions:
    """The :class:`ViTFunctions` of an :class:`ImageOnlyViT` subclass (``module``: the
    family's model module, their ``__module__``; ``label``: the family in messages).
    There is no projection: ``encode_image_preproj`` is ``encode_image``."""
    fns = ModuleFns(module_cls, image_only=True)

    def check_pixels(pixels: Any, config: Any) -> None:
        p = config.vision.patch_size
        if (pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.shape[1] % p
                or pixels.shape[2] % p):
            raise ValueError(f"{label} pixels must be (B, H, W, 3) NHWC with H and W "
                             f"multiples of the patch size {p}, got {tuple(pixels.shape)}")

    raises = ("\n\n    Raises:\n        ValueError: pixels not NHWC or not a multiple of the "
              "patch size.\n    ")
    image = image_functions(fns, module, pooled_only=False, check=check_pixels)
    last_hidden_state = fns.function(
        "last_hidden_state", "pixels",
        "``(B, H, W, 3)`` normalised pixels -> ``(B, S, width)`` float32: the final-normed "
        "tokens (transformers' ``last_hidden_state``: the class token, any registers, then "
        "the ``(H/p)(W/p)`` patches). ``H``, ``W``: any multiples of the patch size."
        + raises, check=check_pixels, module=module)
    return ViTFunctions(fns.init_params, fns.param_shapes, last_hidden_state,
                        image.embed_image_patches, image.encode_image_tokens,
                        image.encode_image, image.encode_image)


def _refuse(what: str, config: Any) -> NoReturn:
    raise NoTextTowerError(
        f"{what}: {config.name} ({config.family}) is an image-only backbone with no text "
        f"tower; use a model with a text tower ({TEXT_BACKBONES}) for text features, OTI/OVI and "
        f"zero-shot classification")


def embed_tokens(params: Any, ids: jax.Array, *, config: Any, dtype: Any = jnp.float32) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no text tower."""
    _refuse("token embeddings", config)


def encode_text_embeddings(params: Any, embeddings: jax.Array, eot_index: jax.Array, *,
                           config: Any, dtype: Any = jnp.float32) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no text tower."""
    _refuse("text encoding", config)


def encode_text(params: Any, ids: jax.Array, eot_index: jax.Array, *, config: Any,
                dtype: Any = jnp.float32) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no text tower."""
    _refuse("text encoding", config)


def get_tokenizer(config: Any, path: str | None = None) -> NoReturn:
    """Refused (:class:`NoTextTowerError`): no tokenizer."""
    _refuse("tokenizer", config)


def projection_matrices(params: Any, config: Any) -> tuple[jax.Array, jax.Array]:
    """``(I (D, D), (0, D) empty)``: no image projection (identity head) and no text tower.
    Features that need a real cross-modal head (IsoCLIP) are refused by the pipeline
    (:func:`~crossgap_jax.models.families.require_text_tower`)."""
    del params
    d = config.embed_dim
    return jnp.eye(d, dtype=jnp.float32), jnp.zeros((0, d), jnp.float32)
