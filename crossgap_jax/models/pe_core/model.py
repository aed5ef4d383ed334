"""Flax linen PE-Core (Bolya et al. 2025, "Perception Encoder"): the ``"pe_core"`` family.

Meta's Perception Encoder core CLIP models as open_clip builds them (``PE-Core-B-16``:
timm's ``vit_pe_core_base_patch16_224`` image trunk, ``timm_pool="map"``, no extra
projection, plus open_clip's ``TextTransformer`` as ``CustomTextCLIP.text``). Facts from
facebookresearch/perception_models ``core/vision_encoder/{pe,rope,config,transforms}.py``
and timm ``timm/models/eva.py`` (``vit_pe_core_*``, ``_convert_pe``):

- image: ``patch_size`` convolution **without bias**; class token (B/16, L/14; not G/14)
  prepended; learned absolute position embedding over ``1 + N`` tokens; ``norm_pre``
  (PE's ``ln_pre``); pre-norm blocks (``norm1`` -> self-attention with fused ``qkv`` and
  2D RoPE on queries and keys (:mod:`crossgap_jax.models.pe_core.rope`) -> ``proj``;
  ``norm2`` -> GELU MLP); **no LayerScale** in PE-Core (``ls_init_value=None``); final
  ``norm`` (PE's ``ln_post``) over every token; attention pooling (timm's
  ``AttentionPoolLatent``, PE's ``AttentionPooling``): a learned ``latent`` (PE's
  ``probe``) attends over all tokens with ``pool_heads`` heads (8), ``proj``, then
  ``y + mlp(norm(y))`` (no residual from the latent); the pooled vector through ``head``
  (PE's ``proj`` ``(width, embed_dim)``; timm gives it a bias, zero when converted from PE).
- text: OpenAI-CLIP-shaped causal transformer (``token_embedding``,
  ``positional_embedding`` over 32 positions, ``ln_1``/``attn``/``ln_2``/``mlp.c_fc``/
  ``mlp.c_proj`` blocks, exact GELU), ``ln_final``, feature at the EOT token (argmax of the
  ids: EOT 49407 is the largest id), ``@ text_projection`` (no bias).
- LayerNorm eps 1e-5 everywhere, exact (erf) GELU, ``logit_scale``; no ``logit_bias``.

Parameter names mirror open_clip's state dict of ``PE-Core-B-16`` (``hf-hub:timm/PE-Core-B-16``);
perception_models' own ``PE-Core-B16-224.pt`` names are mapped by
:mod:`crossgap_jax.models.pe_core.convert`:

==============================================  =========================================
open_clip ``PE-Core-B-16``                      Flax params path
==============================================  =========================================
``visual.trunk.patch_embed.proj.weight``        ``visual/trunk/patch_embed/proj/kernel``
``visual.trunk.cls_token`` ``(1, 1, w)``        ``visual/trunk/cls_token``
``visual.trunk.pos_embed`` ``(1, 1 + N, w)``    ``visual/trunk/pos_embed``
``visual.trunk.norm_pre`` / ``.norm``           ``visual/trunk/norm_pre`` / ``norm``
``visual.trunk.blocks.i.{norm1,norm2}``         ``visual/trunk/blocks_i/{norm1,norm2}``
``visual.trunk.blocks.i.attn.{qkv,proj}``       ``visual/trunk/blocks_i/attn/{qkv,proj}``
``visual.trunk.blocks.i.mlp.{fc1,fc2}``         ``visual/trunk/blocks_i/mlp/{fc1,fc2}``
``visual.trunk.attn_pool.latent`` ``(1, 1, w)``  ``visual/trunk/attn_pool/latent``
``visual.trunk.attn_pool.{q,kv,proj,norm}``     ``visual/trunk/attn_pool/{q,kv,proj,norm}``
``visual.trunk.attn_pool.mlp.{fc1,fc2}``        ``visual/trunk/attn_pool/mlp/{fc1,fc2}``
``visual.trunk.head.{weight,bias}``             ``visual/trunk/head/{kernel,bias}``
``text.token_embedding.weight``                 ``text/token_embedding/embedding``
``text.positional_embedding``                   ``text/positional_embedding``
``text.transformer.resblocks.i.*``              ``text/transformer/resblocks_i/*`` (CLIP's)
``text.ln_final`` / ``text.text_projection``    ``text/ln_final`` / ``text/text_projection``
``logit_scale``                                 ``logit_scale``
==============================================  =========================================

Modality inversion: OVI's pseudo patch tokens replace the patch convolution's output (no
bias); the class token is prepended and the positions added after the expansion, RoPE
applies in every block as for real patches. OTI is CLIP's: the same BPE tokenizer (context
32), the causal tower pooled at EOT (``CAUSAL_TEXT = True``).

IsoCLIP: the pre-projection image feature is what IsoCLIP's code takes for PE
(``src/utils.py`` overrides ``attn_pool.forward`` with ``encode_attention_module``, which
skips the pool's MLP residual): the attention pool's output ``y`` before ``+ mlp(norm(y))``;
``PECoreConfig.preproj_pool_mlp=True`` gives the full pooled vector instead (whose ``head``
output is the embedding). The image head is ``head``'s kernel without its bias (IsoCLIP
uses ``trunk.head.weight`` only; the released bias is zero).
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
from crossgap_jax.models.layers.attention import attention, self_attention
from crossgap_jax.models.layers.causal_text import (
    CausalTextMethods,
    causal_text_functions,
    setup_text_tower,
)
from crossgap_jax.models.layers.norm import LayerNorm
from crossgap_jax.models.layers.vit_layers import Mlp, PatchEmbed
from crossgap_jax.models.pe_core.rope import apply_rope, rope_2d_angles

# The text tower is CLIP's causal one pooled at EOT: truncating OTI's context is exact.
CAUSAL_TEXT = True

Params = Any
Dtype = Any

#: PE's normalisation (perception_models ``transforms.py``; open_clip ``_pecfg``).
PE_MEAN = (0.5, 0.5, 0.5)
PE_STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class PECoreConfig(CLIPConfig):
    """A PE-Core model. Shapes use :class:`CLIPConfig`'s fields (``quick_gelu`` is always
    False: PE uses the exact GELU); PE-specific ones below.

    Attributes:
        pool_heads: heads of the attention pooling (PE's ``attn_pooler_heads``: 8).
        pool_mlp_ratio: the pooling MLP's hidden size over the width (4).
        class_token: the image tower prepends a class token (B/16, L/14: True).
        rope_theta: RoPE base (10,000).
        interpolation: PIL resampling of the squash resize (PE trained with bilinear;
            open_clip's ``_pecfg``: ``bilinear``, ``resize_mode="squash"``).
        preproj_pool_mlp: what :func:`encode_image_preproj` returns. False (IsoCLIP's
            code): the attention pool's output without its MLP residual; True: the full
            pooled vector (``encode_image = preproj @ head + bias``).
    """

    name: str = "PE-Core-B-16"
    family: str = "pe_core"
    embed_dim: int = 1024
    vision: VisionConfig = dataclasses.field(
        default_factory=lambda: VisionConfig(image_size=224, patch_size=16, width=768,
                                             layers=12, heads=12))
    text: TextConfig = dataclasses.field(
        default_factory=lambda: TextConfig(context_length=32, width=1024, layers=24,
                                           heads=16))
    quick_gelu: bool = False
    layer_norm_eps: float = 1e-5
    mean: tuple[float, float, float] = PE_MEAN
    std: tuple[float, float, float] = PE_STD
    pool_heads: int = 8
    pool_mlp_ratio: float = 4.0
    class_token: bool = True
    rope_theta: float = 10000.0
    interpolation: str = "bilinear"
    preproj_pool_mlp: bool = False

    def __post_init__(self):
        if self.quick_gelu:
            raise ValueError("PE-Core uses the exact GELU: quick_gelu must be False")
        hd = self.vision.width // self.vision.heads
        if self.vision.width % self.vision.heads or hd % 4:
            raise ValueError(f"PE-Core's 2D RoPE needs width / heads divisible by 4, got "
                             f"{self.vision.width} / {self.vision.heads}")
        if self.vision.width % self.pool_heads:
            raise ValueError(f"pool_heads ({self.pool_heads}) must divide the vision width "
                             f"({self.vision.width})")


CONFIG_CLASS = PECoreConfig


def pe_core_config(name: str, *, image_size: int = 224, patch_size: int = 16,
                   width: int = 768, layers: int = 12, heads: int = 12, embed_dim: int = 1024,
                   text_width: int = 1024, text_layers: int = 24, text_heads: int = 16,
                   context_length: int = 32, **kw: Any) -> PECoreConfig:
    """A :class:`PECoreConfig` from a few numbers (defaults: ``PE-Core-B-16``)."""
    return PECoreConfig(
        name=name, embed_dim=embed_dim,
        vision=VisionConfig(image_size=image_size, patch_size=patch_size, width=width,
                            layers=layers, heads=heads),
        text=TextConfig(context_length=context_length, width=text_width, layers=text_layers,
                        heads=text_heads),
        **kw)


ARCHITECTURES: dict[str, PECoreConfig] = {
    # open_clip ``PE-Core-B-16.json`` (perception_models ``PE-Core-B16-224``).
    "PE-Core-B-16": pe_core_config("PE-Core-B-16"),
    # Tiny config for tests and smoke runs (real tokenizer vocabulary, PE's context 32;
    # heads = width // 64 and 8 pool heads, as the shapes of a file imply).
    "pe-core-tiny": pe_core_config("pe-core-tiny", image_size=32, patch_size=8, width=128,
                                   layers=2, heads=2, embed_dim=64, text_width=128,
                                   text_layers=2, text_heads=2),
}


# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------
class RopeAttention(nn.Module):
    """timm ``AttentionRope`` / PE ``SelfAttention``: fused ``qkv`` (q | k | v along the
    output axis), 2D RoPE on queries and keys, ``proj``."""

    width: int
    heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, angles: jax.Array) -> jax.Array:
        b, s, w = x.shape
        q, k, v = jnp.split(nn.Dense(3 * w, dtype=self.dtype, name="qkv")(x), 3, axis=-1)
        split = lambda t: t.reshape(b, s, self.heads, w // self.heads)
        q = apply_rope(split(q), angles).reshape(b, s, w)
        k = apply_rope(split(k), angles).reshape(b, s, w)
        out, _ = self_attention(q, k, v, heads=self.heads, dtype=self.dtype)
        return nn.Dense(w, dtype=self.dtype, name="proj")(out)


class Block(nn.Module):
    """Pre-norm block (no LayerScale): ``x + attn(norm1 x)``, then ``x + mlp(norm2 x)``."""

    width: int
    heads: int
    mlp_ratio: float
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, angles: jax.Array) -> jax.Array:
        ln = lambda name: LayerNorm(self.eps, self.dtype, name=name)
        x = x + RopeAttention(self.width, self.heads, self.dtype, name="attn")(
            ln("norm1")(x), angles)
        hidden = int(self.width * self.mlp_ratio)
        return x + Mlp(self.width, hidden, False, self.dtype, name="mlp")(ln("norm2")(x))


class AttentionPool(nn.Module):
    """timm ``AttentionPoolLatent`` (one latent, ``pool="token"``): ``(B, S, w) -> (B, w)``.

    ``y = proj(attention(q(latent), kv(x)))``; returns ``y + mlp(norm(y))``, or ``y``
    with ``with_mlp=False`` (IsoCLIP's ``encode_attention_module``).
    """

    width: int
    heads: int
    mlp_ratio: float
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, with_mlp: bool = True) -> jax.Array:
        b, _, w = x.shape
        latent = self.param("latent", nn.initializers.normal(w**-0.5), (1, 1, w))
        q = nn.Dense(w, dtype=self.dtype, name="q")(
            jnp.broadcast_to(latent.astype(self.dtype), (b, 1, w)))
        k, v = jnp.split(nn.Dense(2 * w, dtype=self.dtype, name="kv")(x), 2, axis=-1)
        y = nn.Dense(w, dtype=self.dtype, name="proj")(
            attention(q, k, v, heads=self.heads, dtype=self.dtype))
        mlp = Mlp(w, int(w * self.mlp_ratio), False, self.dtype, name="mlp")
        norm = LayerNorm(self.eps, self.dtype, name="norm")
        z = y + mlp(norm(y))  # always built, so that init creates every parameter
        return (z if with_mlp else y)[:, 0]


class VisionTrunk(nn.Module):
    """timm ``Eva`` as ``vit_pe_core_*`` configures it (``num_classes = embed_dim``)."""

    config: PECoreConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c, v = self.config, self.config.vision
        eps = c.layer_norm_eps
        n_pos = v.num_patches + int(c.class_token)
        self.patch_embed = PatchEmbed(v.width, v.patch_size, self.dtype, bias=False)
        if c.class_token:
            self.cls_token = self.param("cls_token", nn.initializers.normal(v.width**-0.5),
                                        (1, 1, v.width))
        self.pos_embed = self.param("pos_embed", nn.initializers.normal(v.width**-0.5),
                                    (1, n_pos, v.width))
        self.norm_pre = LayerNorm(eps, self.dtype)
        self.blocks = [Block(v.width, v.heads, v.mlp_ratio, eps, self.dtype)
                       for _ in range(v.layers)]
        self.norm = LayerNorm(eps, self.dtype)
        self.attn_pool = AttentionPool(v.width, c.pool_heads, c.pool_mlp_ratio, eps,
                                       self.dtype)
        self.head = nn.Dense(c.embed_dim, dtype=self.dtype)

    def embed_patches(self, pixels: jax.Array) -> jax.Array:
        return self.patch_embed(pixels)

    def pooled(self, tokens: jax.Array, with_mlp: bool = True) -> jax.Array:
        """``(B, N, w)`` patch tokens -> ``(B, w)`` attention-pooled vector (before ``head``)."""
        c, v = self.config, self.config.vision
        b, _, w = tokens.shape
        x = tokens.astype(self.dtype)
        if c.class_token:
            cls = jnp.broadcast_to(self.cls_token.astype(self.dtype), (b, 1, w))
            x = jnp.concatenate([cls, x], axis=1)
        x = self.norm_pre(x + self.pos_embed.astype(self.dtype))
        angles = jnp.asarray(rope_2d_angles(v.grid_size, v.grid_size, w // v.heads,
                                            theta=c.rope_theta, class_token=c.class_token))
        for block in self.blocks:
            x = block(x, angles)
        return self.attn_pool(self.norm(x), with_mlp)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.head(self.pooled(tokens))


class Visual(nn.Module):
    """open_clip's ``TimmModel`` wrapper: everything lives in ``trunk``."""

    config: PECoreConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        self.trunk = VisionTrunk(self.config, self.dtype)


class TextTower(nn.Module):
    """open_clip's ``TextTransformer`` (``CustomTextCLIP.text``) with CLIP's names."""

    config: PECoreConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        setup_text_tower(self, self.config, self.dtype)  # quick_gelu: always False for PE


class PECoreModule(CausalTextMethods):
    """Both towers with open_clip's top-level names (``visual``, ``text``, ``logit_scale``);
    the text methods are :class:`CausalTextMethods`' over ``text``."""

    config: PECoreConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        self.visual = Visual(self.config, self.dtype)
        self.text = TextTower(self.config, self.dtype)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)),
                                      ())

    @property
    def text_tower(self) -> nn.Module:
        return self.text

    # --- image --------------------------------------------------------------------------
    def embed_image_patches(self, pixels: jax.Array) -> jax.Array:
        return self.visual.trunk.embed_patches(pixels)

    def encode_image_tokens(self, tokens: jax.Array, pooled_only: bool = False) -> jax.Array:
        # ``pooled_only`` has no effect: the attention pool reads every token's last-block
        # output, so no row of the last block can be skipped.
        del pooled_only
        return self.visual.trunk(tokens).astype(jnp.float32)

    def encode_image_preproj(self, pixels: jax.Array) -> jax.Array:
        trunk = self.visual.trunk
        return trunk.pooled(trunk.embed_patches(pixels),
                            self.config.preproj_pool_mlp).astype(jnp.float32)

    def encode_image(self, pixels: jax.Array) -> jax.Array:
        return self.encode_image_tokens(self.embed_image_patches(pixels))

    def __call__(self, pixels: jax.Array, ids: jax.Array, eot_index: jax.Array):
        return self.encode_image(pixels), self.encode_text(ids, eot_index), self.logit_scale


_FNS = ModuleFns(PECoreModule)
init_params, param_shapes = _FNS.init_params, _FNS.param_shapes

# The family's pure functions over a params pytree (``config`` and ``dtype`` static): the
# causal text tower's (models/layers/causal_text.py) and the image tower's.
# encode_image_preproj: the attention pool's output before its MLP residual (IsoCLIP's
# ``encode_attention_module``), or with ``config.preproj_pool_mlp`` the full pooled vector
# before ``head``.
(embed_tokens, text_prefix, encode_text_embeddings, encode_text,
 encode_text_preproj) = causal_text_functions(_FNS, __name__,
                                              ("text", "token_embedding", "embedding"))
embed_image_patches, encode_image_tokens, encode_image, encode_image_preproj = \
    image_functions(_FNS, __name__)


def projection_matrices(params: Params, config: PECoreConfig) -> tuple[jax.Array, jax.Array]:
    """``(head kernel (vision_width, D), text_projection (text_width, D))``; the image
    head's bias is left out, as IsoCLIP's ``get_projection_layers`` does (zero in the
    released weights)."""
    del config
    return params["visual"]["trunk"]["head"]["kernel"], params["text"]["text_projection"]


def get_tokenizer(config: PECoreConfig) -> Any:
    """PE's tokenizer: open_clip's ``SimpleTokenizer`` (OpenAI's CLIP BPE, lower-cased,
    ``[SOT] ... [EOT]`` zero-padded; too long: cut, last position EOT) with context
    ``text.context_length`` (32)."""
    return _get(config.text.context_length)


def preprocess_options(config: PECoreConfig) -> dict:
    """PE's transform: squash-resize to ``S x S`` (no crop) with ``config.interpolation``
    (bilinear), [0, 1], mean/std 0.5 (perception_models ``transforms.py``, open_clip
    ``_pecfg``)."""
    return {"image_size": config.vision.image_size, "mean": tuple(config.mean),
            "std": tuple(config.std), "resize": "squash",
            "interpolation": config.interpolation}
