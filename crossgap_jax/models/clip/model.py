"""Flax linen CLIP: ViT image tower and causal text transformer.

Parameter names mirror OpenAI's PyTorch ``model.py`` so that checkpoint conversion is a
set of string rules plus transposes:

=====================================  ==========================================
PyTorch (OpenAI / open_clip)           Flax params path
=====================================  ==========================================
``visual.conv1.weight``                ``visual/conv1/kernel`` (HWIO)
``visual.class_embedding``             ``visual/class_embedding``
``visual.positional_embedding``        ``visual/positional_embedding``
``visual.ln_pre.{weight,bias}``        ``visual/ln_pre/{scale,bias}``
``visual.transformer.resblocks.i.*``   ``visual/transformer/resblocks_i/*``
``*.attn.in_proj_{weight,bias}``       ``*/attn/in_proj/{kernel,bias}`` (fused q|k|v)
``*.attn.out_proj.{weight,bias}``      ``*/attn/out_proj/{kernel,bias}``
``*.mlp.c_fc`` / ``*.mlp.c_proj``      ``*/mlp/c_fc`` / ``*/mlp/c_proj``
``visual.ln_post`` / ``visual.proj``   ``visual/ln_post`` / ``visual/proj``
``token_embedding.weight``             ``token_embedding/embedding``
``positional_embedding``               ``positional_embedding``
``transformer.resblocks.i.*``          ``transformer/resblocks_i/*``
``ln_final`` / ``text_projection``     ``ln_final`` / ``text_projection``
``logit_scale``                        ``logit_scale``
=====================================  ==========================================

The entry points the inverters need are exposed as pure functions of a params pytree:
:func:`encode_text_embeddings` (text from token *embeddings* and an explicit EOT index)
and :func:`encode_image_tokens` (image from patch *tokens*, the output of ``conv1``).
The ordinary encoders are these two after the embedding step. Two exact options serve the
inverters: ``pooled_only`` (the last block computes the pooled row only: EOT / class
token) and ``prefix`` (:func:`text_prefix`: the keys and values of a shared causal text
prefix, computed once; the embeddings passed are then the positions after it). Params
stay float32; the compute dtype is a module field (float32 default, bfloat16 option).
LayerNorm and softmax always run in float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossgap_jax.models.clip.tokenizer import get_tokenizer as _get
from crossgap_jax.models.configs import CLIPConfig, vit_config
from crossgap_jax.models.layers._module_fns import ModuleFns, image_functions
from crossgap_jax.models.layers.causal_text import (
    CausalTextMethods,
    Transformer,
    causal_text_functions,
    setup_text_tower,
)
from crossgap_jax.models.layers.norm import LayerNorm

CONFIG_CLASS = CLIPConfig


def _small(name: str, *, embed: int, res: int, patch: int, vw: int, vl: int, vh: int, tw: int,
           tl: int, th: int) -> CLIPConfig:
    return vit_config(name, embed, res, patch, vw, vl, vh, tw, tl, th, quick_gelu=False)


# Small CLIPs trained in this project (crossgap_jax.train): a ViT image tower and a causal
# text transformer with the real 49,408-token OpenAI BPE vocabulary and 77-token context,
# small enough to train on a CPU in minutes. At small width the token embedding dominates
# (49,408 x width): the shipped demo model (crossgap-caltech) has 6.3M of its 8M parameters
# there.
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

#: The CLIP family's architectures (read by :func:`~crossgap_jax.models.configs.get_config`).
ARCHITECTURES: dict[str, CLIPConfig] = {
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
    **SMALL_ARCHITECTURES,
}

# The text encoder is causal and pools at EOT: positions after the EOT never influence
# the feature, so encoding only the first EOT + 1 positions is exact.
CAUSAL_TEXT = True

Params = Any  # a (nested dict) pytree of float32 arrays
Dtype = Any


class VisionTransformer(nn.Module):
    """ViT image tower: conv patch embedding, class token, ln_pre, blocks, ln_post, proj."""

    config: CLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config.vision
        eps = self.config.layer_norm_eps
        self.conv1 = nn.Conv(
            c.width, (c.patch_size, c.patch_size), strides=(c.patch_size, c.patch_size),
            padding="VALID", use_bias=False, dtype=self.dtype,
        )
        scale = c.width**-0.5
        self.class_embedding = self.param(
            "class_embedding", nn.initializers.normal(scale), (c.width,)
        )
        self.positional_embedding = self.param(
            "positional_embedding", nn.initializers.normal(scale), (c.num_patches + 1, c.width)
        )
        self.ln_pre = LayerNorm(eps, self.dtype)
        self.transformer = Transformer(
            c.width, c.layers, c.heads, c.mlp_ratio, self.config.quick_gelu, eps, self.dtype
        )
        self.ln_post = LayerNorm(eps, self.dtype)
        self.proj = self.param(
            "proj", nn.initializers.normal(scale), (c.width, self.config.embed_dim)
        )

    def embed_patches(self, pixels: jax.Array) -> jax.Array:
        """``(B, H, W, 3)`` pixels -> ``(B, N, width)`` patch tokens (row-major grid)."""
        x = self.conv1(pixels.astype(self.dtype))
        b, gh, gw, w = x.shape
        return x.reshape(b, gh * gw, w)

    def encode_tokens(self, tokens: jax.Array, project: bool = True,
                      pooled_only: bool = False) -> jax.Array:
        """``(B, N, width)`` patch tokens -> ``(B, embed_dim)`` image features
        (``(B, width)``, the ``ln_post`` output, with ``project=False``); ``pooled_only``:
        the last block computes the class token only (exact)."""
        b = tokens.shape[0]
        cls = jnp.broadcast_to(self.class_embedding.astype(self.dtype), (b, 1, tokens.shape[-1]))
        x = jnp.concatenate([cls, tokens.astype(self.dtype)], axis=1)
        x = x + self.positional_embedding.astype(self.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x, pool_index=0 if pooled_only else None)
        x = self.ln_post(x[:, 0])
        if not project:
            return x.astype(jnp.float32)
        return (x @ self.proj.astype(self.dtype)).astype(jnp.float32)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.encode_tokens(self.embed_patches(pixels))


class CLIPModule(CausalTextMethods):
    """Both towers with OpenAI's top-level parameter names.

    Methods (use with ``apply(..., method=...)`` or the module-level pure functions):
    ``embed_tokens``, ``text_prefix``, ``encode_text_embeddings``, ``encode_text``,
    ``encode_text_preproj`` (the text tower's, :class:`CausalTextMethods`),
    ``embed_image_patches``, ``encode_image_tokens``, ``encode_image``,
    ``encode_image_preproj``.
    """

    config: CLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        self.visual = VisionTransformer(self.config, self.dtype)
        setup_text_tower(self, self.config, self.dtype)
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(jnp.log(1 / 0.07)), ()
        )

    # --- image --------------------------------------------------------------------------
    def embed_image_patches(self, pixels: jax.Array) -> jax.Array:
        return self.visual.embed_patches(pixels)

    def encode_image_tokens(self, tokens: jax.Array, pooled_only: bool = False) -> jax.Array:
        return self.visual.encode_tokens(tokens, True, pooled_only)

    def encode_image(self, pixels: jax.Array, project: bool = True) -> jax.Array:
        # The last block at the class token only: exact, fewer FLOPs.
        return self.visual.encode_tokens(self.visual.embed_patches(pixels), project,
                                         pooled_only=True)

    def encode_image_preproj(self, pixels: jax.Array) -> jax.Array:
        return self.encode_image(pixels, False)

    def __call__(self, pixels: jax.Array, ids: jax.Array, eot_index: jax.Array):
        """Image and text features (used for ``init``)."""
        return self.encode_image(pixels), self.encode_text(ids, eot_index), self.logit_scale


_FNS = ModuleFns(CLIPModule)
init_params, param_shapes = _FNS.init_params, _FNS.param_shapes

# The family's pure functions over a params pytree (``config`` and ``dtype`` static): the
# causal text tower's (models/layers/causal_text.py) and the image tower's.
(embed_tokens, text_prefix, encode_text_embeddings, encode_text,
 encode_text_preproj) = causal_text_functions(_FNS, __name__, ("token_embedding", "embedding"))
embed_image_patches, encode_image_tokens, encode_image, encode_image_preproj = \
    image_functions(_FNS, __name__)


def projection_matrices(params: Params, config: CLIPConfig) -> tuple[jax.Array, jax.Array]:
    """``(W_i (vision_width, embed_dim), W_t (text_width, embed_dim))``."""
    del config
    return params["visual"]["proj"], params["text_projection"]


def get_tokenizer(config: CLIPConfig) -> Any:
    """The CLIP BPE tokenizer for ``config``'s context length."""

    return _get(config.text.context_length)


def preprocess_options(config: CLIPConfig) -> dict:
    """Keyword arguments of :func:`~crossgap_jax.data.preprocess.preprocess_image` for
    ``config``: shortest-side bicubic resize, centre crop, the config's mean/std."""
    return {"image_size": config.vision.image_size, "mean": tuple(config.mean),
            "std": tuple(config.std), "resize": "shortest", "interpolation": "bicubic"}
