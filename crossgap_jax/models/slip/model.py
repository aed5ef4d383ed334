"""Flax linen SLIP (Mu et al. 2022): the ``"slip"`` model family.

SLIP's CLIP part is a timm ``VisionTransformer`` image tower (``num_classes=0``) plus
OpenAI's causal text transformer, joined by two projection matrices:

- image: conv patch embedding with bias, class token, position embedding over N + 1
  tokens, pre-norm blocks (``norm1``/``attn.qkv``/``attn.proj``/``norm2``/``mlp.fc1``/
  ``mlp.fc2``; exact erf GELU, LayerNorm eps 1e-6), final ``norm``, class token,
  ``@ image_projection``;
- text: OpenAI CLIP's text tower (``token_embedding``, ``positional_embedding``,
  ``transformer.resblocks``, ``ln_final``, ``text_projection``; causal mask, feature at
  EOT, LayerNorm eps 1e-5). Its activation is QuickGELU (SLIP copied OpenAI's
  ``ResidualAttentionBlock``); :attr:`SLIPConfig.quick_gelu` makes it configurable.

Parameter names mirror the SLIP state dict (``module.`` stripped):

===============================================  ======================================
SLIP checkpoint                                  Flax params path
===============================================  ======================================
``visual.cls_token`` / ``visual.pos_embed``      ``visual/cls_token`` / ``visual/pos_embed``
``visual.patch_embed.proj.{weight,bias}``        ``visual/patch_embed/proj/{kernel,bias}``
``visual.blocks.i.{norm1,norm2}``                ``visual/blocks_i/{norm1,norm2}``
``visual.blocks.i.attn.{qkv,proj}``              ``visual/blocks_i/attn/{qkv,proj}``
``visual.blocks.i.mlp.{fc1,fc2}``                ``visual/blocks_i/mlp/{fc1,fc2}``
``visual.norm``                                  ``visual/norm``
``image_projection`` / ``text_projection``       same (``(in, out)`` matrices)
``token_embedding`` ... ``ln_final``             as :mod:`crossgap_jax.models.clip.model`
===============================================  ======================================

The SimCLR head (``image_mlp.*``) is not part of the image-text model and is ignored.

Modality inversion: OVI's pseudo patch tokens replace the patch-conv output (bias
included); the class token is prepended and the positions added after the expansion,
as for CLIP. OTI is CLIP's (same tokenizer, same causal text tower).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossgap_jax.models.clip.tokenizer import get_tokenizer as _get
from crossgap_jax.models.configs import CLIPConfig, TextConfig, VisionConfig
from crossgap_jax.models.layers._module_fns import ModuleFns, image_functions
from crossgap_jax.models.layers.attention import select_rows, self_attention
from crossgap_jax.models.layers.causal_text import (
    CausalTextMethods,
    causal_text_functions,
    setup_text_tower,
)
from crossgap_jax.models.layers.norm import LayerNorm
from crossgap_jax.models.layers.vit_layers import Mlp as TimmMlp
from crossgap_jax.models.layers.vit_layers import PatchEmbed

# Same causal text tower as CLIP: truncating OTI's context after EOT is exact.
CAUSAL_TEXT = True

Params = Any
Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class SLIPConfig(CLIPConfig):
    """A SLIP model. Shapes use :class:`CLIPConfig`'s fields; SLIP-specific ones below.

    ``quick_gelu`` and ``layer_norm_eps`` are the *text* tower's (OpenAI's
    ``ResidualAttentionBlock``).

    Attributes:
        vision_quick_gelu: the image tower's activation (False: timm's exact GELU).
        vision_layer_norm_eps: the image tower's LayerNorm eps (timm: 1e-6).
        interpolation: PIL resampling of the shorter-side resize (SLIP's evaluation
            transform ``Resize(224)`` uses torchvision's default, bilinear).
    """

    name: str = "SLIP-ViT-B-16"
    family: str = "slip"
    embed_dim: int = 512
    vision: VisionConfig = dataclasses.field(
        default_factory=lambda: VisionConfig(image_size=224, patch_size=16, width=768,
                                             layers=12, heads=12))
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    quick_gelu: bool = True
    layer_norm_eps: float = 1e-5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    vision_quick_gelu: bool = False
    vision_layer_norm_eps: float = 1e-6
    interpolation: str = "bilinear"


CONFIG_CLASS = SLIPConfig


def slip_config(name: str, width: int, layers: int, heads: int, *, image_size: int = 224,
                patch_size: int = 16, embed_dim: int = 512, text_width: int = 512,
                text_layers: int = 12, text_heads: int = 8, **kw: Any) -> SLIPConfig:
    """A :class:`SLIPConfig` from a few numbers (text tower: SLIP's 512 x 12, 8 heads)."""
    return SLIPConfig(
        name=name, embed_dim=embed_dim,
        vision=VisionConfig(image_size=image_size, patch_size=patch_size, width=width,
                            layers=layers, heads=heads),
        text=TextConfig(width=text_width, layers=text_layers, heads=text_heads),
        **kw,
    )


ARCHITECTURES: dict[str, SLIPConfig] = {
    # timm vit_small / vit_base / vit_large_patch16_224 towers (SLIP's models.py).
    "SLIP-ViT-S-16": slip_config("SLIP-ViT-S-16", 384, 12, 6),
    "SLIP-ViT-B-16": slip_config("SLIP-ViT-B-16", 768, 12, 12),
    "SLIP-ViT-L-16": slip_config("SLIP-ViT-L-16", 1024, 24, 16),
    # Tiny config for tests and smoke runs (real tokenizer vocabulary and context).
    "slip-tiny": slip_config("slip-tiny", 64, 2, 2, image_size=32, patch_size=8, embed_dim=32,
                             text_width=64, text_layers=2, text_heads=4),
}



# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------
class TimmAttention(nn.Module):
    """timm ``Attention``: fused ``qkv`` Linear (q | k | v along the output axis), ``proj``."""

    width: int
    heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, pool_index: jax.Array | int | None = None) -> jax.Array:
        w = x.shape[-1]
        q, k, v = jnp.split(nn.Dense(3 * w, dtype=self.dtype, name="qkv")(x), 3, axis=-1)
        out, _ = self_attention(q, k, v, heads=self.heads, dtype=self.dtype,
                                pool_index=pool_index)
        return nn.Dense(w, dtype=self.dtype, name="proj")(out)


class TimmBlock(nn.Module):
    width: int
    heads: int
    mlp_ratio: float
    quick_gelu: bool
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, pool_index: jax.Array | int | None = None) -> jax.Array:
        """``(B, S, w)`` -> ``(B, S, w)`` (``(B, 1, w)``: row ``pool_index`` only)."""
        x = select_rows(x, pool_index) + TimmAttention(
            self.width, self.heads, self.dtype, name="attn")(
            LayerNorm(self.eps, self.dtype, name="norm1")(x), pool_index)
        hidden = int(round(self.width * self.mlp_ratio))
        return x + TimmMlp(self.width, hidden, self.quick_gelu, self.dtype, name="mlp")(
            LayerNorm(self.eps, self.dtype, name="norm2")(x))


class TimmViT(nn.Module):
    """timm ``VisionTransformer`` with ``num_classes=0``: the class token after ``norm``."""

    config: SLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config.vision
        q, eps = self.config.vision_quick_gelu, self.config.vision_layer_norm_eps
        self.patch_embed = PatchEmbed(c.width, c.patch_size, self.dtype)
        self.cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, c.width))
        self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.02),
                                    (1, c.num_patches + 1, c.width))
        self.blocks = [TimmBlock(c.width, c.heads, c.mlp_ratio, q, eps, self.dtype)
                       for _ in range(c.layers)]
        self.norm = LayerNorm(eps, self.dtype)

    def embed_patches(self, pixels: jax.Array) -> jax.Array:
        return self.patch_embed(pixels)

    def encode_tokens(self, tokens: jax.Array, pooled_only: bool = False) -> jax.Array:
        """``(B, N, w)`` patch tokens -> ``(B, w)`` class token after the final norm
        (``pooled_only``: the last block computes the class token only; exact)."""
        b, _, w = tokens.shape
        cls = jnp.broadcast_to(self.cls_token.astype(self.dtype), (b, 1, w))
        x = jnp.concatenate([cls, tokens.astype(self.dtype)], axis=1)
        x = x + self.pos_embed.astype(self.dtype)
        for i, block in enumerate(self.blocks):
            last = pooled_only and i == len(self.blocks) - 1
            x = block(x, 0 if last else None)
        return self.norm(x)[:, 0]

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.encode_tokens(self.embed_patches(pixels))


class SLIPModule(CausalTextMethods):
    """SLIP's image-text model with the checkpoint's top-level names (the text methods:
    :class:`CausalTextMethods`)."""

    config: SLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c, v = self.config, self.config.vision
        self.visual = TimmViT(c, self.dtype)
        self.image_projection = self.param("image_projection",
                                           nn.initializers.normal(v.width**-0.5),
                                           (v.width, c.embed_dim))
        setup_text_tower(self, c, self.dtype)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)),
                                      ())

    # --- image --------------------------------------------------------------------------
    def embed_image_patches(self, pixels: jax.Array) -> jax.Array:
        return self.visual.embed_patches(pixels)

    def encode_image_tokens(self, tokens: jax.Array, pooled_only: bool = False) -> jax.Array:
        x = self.visual.encode_tokens(tokens, pooled_only)
        return (x @ self.image_projection.astype(self.dtype)).astype(jnp.float32)

    def encode_image_preproj(self, pixels: jax.Array) -> jax.Array:
        return self.visual.encode_tokens(self.visual.embed_patches(pixels),
                                         pooled_only=True).astype(jnp.float32)

    def encode_image(self, pixels: jax.Array) -> jax.Array:
        return self.encode_image_tokens(self.embed_image_patches(pixels), pooled_only=True)

    def __call__(self, pixels: jax.Array, ids: jax.Array, eot_index: jax.Array):
        return self.encode_image(pixels), self.encode_text(ids, eot_index), self.logit_scale


_FNS = ModuleFns(SLIPModule)
init_params, param_shapes = _FNS.init_params, _FNS.param_shapes

# The family's pure functions over a params pytree (``config`` and ``dtype`` static): the
# causal text tower's (models/layers/causal_text.py) and the image tower's.
(embed_tokens, text_prefix, encode_text_embeddings, encode_text,
 encode_text_preproj) = causal_text_functions(_FNS, __name__, ("token_embedding", "embedding"))
embed_image_patches, encode_image_tokens, encode_image, encode_image_preproj = \
    image_functions(_FNS, __name__)


def projection_matrices(params: Params, config: SLIPConfig) -> tuple[jax.Array, jax.Array]:
    """``(image_projection (vision_width, D), text_projection (text_width, D))``."""
    del config
    return params["image_projection"], params["text_projection"]


def get_tokenizer(config: SLIPConfig) -> Any:
    """OpenAI's CLIP BPE tokenizer (SLIP uses it unchanged), context ``text.context_length``."""

    return _get(config.text.context_length)


def preprocess_options(config: SLIPConfig) -> dict:
    """SLIP's evaluation transform: shorter side to ``S`` with ``config.interpolation``,
    centre crop, [0, 1], ImageNet mean/std."""
    return {"image_size": config.vision.image_size, "mean": tuple(config.mean),
            "std": tuple(config.std), "resize": "shortest",
            "interpolation": config.interpolation}
