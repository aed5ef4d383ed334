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
from crossgap_jax.models.layers._module_fns import ModuleFns, embed_rows, pool_rows
from crossgap_jax.models.layers.attention import KV, attention, select_rows, self_attention
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


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI's activation: ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


class MultiheadAttention(nn.Module):
    """Multi-head self-attention with a fused ``in_proj`` (q|k|v), as PyTorch's.

    Returns the output and the :class:`~crossgap_jax.models.layers.attention.KV` of ``x``'s
    positions; ``causal``/``prefix``/``pool_index``: see
    :func:`~crossgap_jax.models.layers.attention.self_attention` (``mask``: an explicit bool mask).
    """

    width: int
    heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, causal: bool = False,
                 prefix: KV | None = None, pool_index: jax.Array | int | None = None
                 ) -> tuple[jax.Array, KV]:
        q, k, v = jnp.split(nn.Dense(3 * self.width, dtype=self.dtype, name="in_proj")(x), 3,
                            axis=-1)
        if mask is not None:
            out, kv = attention(q, k, v, heads=self.heads, dtype=self.dtype, mask=mask), KV(k, v)
        else:
            out, kv = self_attention(q, k, v, heads=self.heads, dtype=self.dtype, causal=causal,
                                     prefix=prefix, pool_index=pool_index)
        return nn.Dense(self.width, dtype=self.dtype, name="out_proj")(out), kv


class MLP(nn.Module):
    width: int
    hidden: int
    use_quick_gelu: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.hidden, dtype=self.dtype, name="c_fc")(x)
        x = quick_gelu(x) if self.use_quick_gelu else jax.nn.gelu(x, approximate=False)
        return nn.Dense(self.width, dtype=self.dtype, name="c_proj")(x)


class ResidualAttentionBlock(nn.Module):
    width: int
    heads: int
    mlp_ratio: float
    use_quick_gelu: bool
    eps: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, causal: bool = False,
                 prefix: KV | None = None, pool_index: jax.Array | int | None = None
                 ) -> tuple[jax.Array, KV]:
        """``(B, S, w)`` -> ``(B, S, w)`` (``(B, 1, w)`` with ``pool_index``) and the block's
        :class:`~crossgap_jax.models.layers.attention.KV`."""
        a, kv = MultiheadAttention(self.width, self.heads, self.dtype, name="attn")(
            LayerNorm(self.eps, self.dtype, name="ln_1")(x), mask, causal=causal, prefix=prefix,
            pool_index=pool_index)
        x = select_rows(x, pool_index) + a
        hidden = int(self.width * self.mlp_ratio)
        x = x + MLP(self.width, hidden, self.use_quick_gelu, self.dtype, name="mlp")(
            LayerNorm(self.eps, self.dtype, name="ln_2")(x)
        )
        return x, kv


class Transformer(nn.Module):
    width: int
    layers: int
    heads: int
    mlp_ratio: float
    use_quick_gelu: bool
    eps: float = 1e-5
    dtype: Dtype = jnp.float32

    def setup(self):
        self.resblocks = [
            ResidualAttentionBlock(
                self.width, self.heads, self.mlp_ratio, self.use_quick_gelu, self.eps, self.dtype
            )
            for _ in range(self.layers)
        ]

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, causal: bool = False,
                 prefix: tuple[KV, ...] | None = None, pool_index: jax.Array | int | None = None,
                 return_kv: bool = False) -> Any:
        """``(B, S, w)`` -> ``(B, S, w)``; with ``pool_index`` the last block computes that
        row only (``(B, 1, w)``); ``prefix``: one cached :class:`KV` per block; with
        ``return_kv`` also the blocks' :class:`KV` (a tuple, one per block)."""
        kvs = []
        last = len(self.resblocks) - 1
        # Why the last block only: the feature reads one row (EOT / class token) of the last
        # block's output, and its other rows feed nothing after it; every earlier block must
        # still compute all rows (they are the last block's keys and values).
        for i, block in enumerate(self.resblocks):
            x, kv = block(x, mask, causal=causal, prefix=None if prefix is None else prefix[i],
                          pool_index=pool_index if i == last else None)
            kvs.append(kv)
        return (x, tuple(kvs)) if return_kv else x


def causal_text_prefix(m: nn.Module, embeddings: jax.Array) -> tuple[KV, ...]:
    """Per-block keys/values of the first ``P`` positions of a causal text tower with CLIP's
    names (``positional_embedding``, ``transformer``): ``(B, P, w)`` embeddings in."""
    p = embeddings.shape[1]
    x = embeddings.astype(m.dtype) + m.positional_embedding[:p].astype(m.dtype)
    return m.transformer(x, causal=True, return_kv=True)[1]


def causal_text_features(m: nn.Module, embeddings: jax.Array, eot_index: jax.Array,
                         prefix: tuple[KV, ...] | None = None,
                         pooled_only: bool = False) -> jax.Array:
    """``ln_final`` output at EOT, ``(B, width)``, of a causal text tower with CLIP's names.

    ``embeddings`` ``(B, S, w)`` are positions ``P..P+S-1`` after a cached ``prefix`` of
    ``P`` positions (``P = 0`` without), ``eot_index`` ``(B,)`` relative to them.
    """
    start = 0 if prefix is None else prefix[0].k.shape[1]
    length = embeddings.shape[1]
    x = (embeddings.astype(m.dtype)
         + m.positional_embedding[start:start + length].astype(m.dtype))
    x = m.transformer(x, causal=True, prefix=prefix,
                      pool_index=eot_index if pooled_only else None)
    x = m.ln_final(x)
    return x[:, 0] if pooled_only else pool_rows(x, eot_index)


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


class CLIPModule(nn.Module):
    """Both towers with OpenAI's top-level parameter names.

    Methods (use with ``apply(..., method=...)`` or the module-level pure functions):
    ``embed_tokens``, ``encode_text_embeddings``, ``encode_text``, ``embed_image_patches``,
    ``encode_image_tokens``, ``encode_image``.
    """

    config: CLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c, t = self.config, self.config.text
        self.visual = VisionTransformer(c, self.dtype)
        self.token_embedding = nn.Embed(
            t.vocab_size, t.width, embedding_init=nn.initializers.normal(0.02)
        )
        self.positional_embedding = self.param(
            "positional_embedding", nn.initializers.normal(0.01), (t.context_length, t.width)
        )
        self.transformer = Transformer(
            t.width, t.layers, t.heads, t.mlp_ratio, c.quick_gelu, c.layer_norm_eps, self.dtype
        )
        self.ln_final = LayerNorm(c.layer_norm_eps, self.dtype)
        self.text_projection = self.param(
            "text_projection", nn.initializers.normal(t.width**-0.5), (t.width, c.embed_dim)
        )
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(jnp.log(1 / 0.07)), ()
        )

    # --- text ---------------------------------------------------------------------------
    def embed_tokens(self, ids: jax.Array) -> jax.Array:
        """``(B, L)`` int ids -> ``(B, L, width)`` token embeddings (no positions; an id
        outside the vocabulary gives NaN, see :func:`embed_tokens`)."""
        return embed_rows(self.token_embedding.embedding, ids)

    def text_prefix(self, embeddings: jax.Array) -> tuple[KV, ...]:
        return causal_text_prefix(self, embeddings)

    def encode_text_embeddings(self, embeddings: jax.Array, eot_index: jax.Array,
                               project: bool = True, prefix: tuple[KV, ...] | None = None,
                               pooled_only: bool = False) -> jax.Array:
        """Token embeddings ``(B, L, width)`` and EOT positions ``(B,)`` -> ``(B, embed_dim)``
        (``(B, width)``, the ``ln_final`` output at EOT, with ``project=False``).

        ``L`` may be shorter than the context length: the causal mask means positions after
        the EOT never influence the feature, so ``L = max(eot_index) + 1`` is exact.
        ``prefix``/``pooled_only``: see :func:`causal_text_features`.
        """
        x = causal_text_features(self, embeddings, eot_index, prefix, pooled_only)
        if not project:
            return x.astype(jnp.float32)
        return (x @ self.text_projection.astype(self.dtype)).astype(jnp.float32)

    def encode_text(self, ids: jax.Array, eot_index: jax.Array, project: bool = True
                    ) -> jax.Array:
        # The last block at the EOT row only: exact, fewer FLOPs.
        return self.encode_text_embeddings(self.embed_tokens(ids), eot_index, project,
                                           pooled_only=True)

    # --- image --------------------------------------------------------------------------
    def embed_image_patches(self, pixels: jax.Array) -> jax.Array:
        return self.visual.embed_patches(pixels)

    def encode_image_tokens(self, tokens: jax.Array, pooled_only: bool = False) -> jax.Array:
        return self.visual.encode_tokens(tokens, True, pooled_only)

    def encode_image(self, pixels: jax.Array, project: bool = True) -> jax.Array:
        # The last block at the class token only: exact, fewer FLOPs.
        return self.visual.encode_tokens(self.visual.embed_patches(pixels), project,
                                         pooled_only=True)

    def __call__(self, pixels: jax.Array, ids: jax.Array, eot_index: jax.Array):
        """Image and text features (used for ``init``)."""
        return self.encode_image(pixels), self.encode_text(ids, eot_index), self.logit_scale


_FNS = ModuleFns(CLIPModule)
_module = _FNS.module
_apply = _FNS.apply
init_params = _FNS.init_params
param_shapes = _FNS.param_shapes


# Pure functions over a params pytree. ``config`` and ``dtype`` are static (hashable).
def embed_tokens(params: Params, ids: jax.Array, *, config: CLIPConfig,
                 dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, L)`` ids -> ``(B, L, text_width)`` token embeddings (float32).

    An id outside ``[0, vocab_size)`` (negative ones included) gives a row of NaN, so the
    feature is NaN, never another token's embedding. :meth:`CLIP.encode_text` refuses such
    ids before the compiled call (:func:`~crossgap_jax.models.inputs.check_text_inputs`).
    """
    del config, dtype
    return embed_rows(params["token_embedding"]["embedding"], ids)


def text_prefix(params: Params, embeddings: jax.Array, *, config: CLIPConfig,
                dtype: Dtype = jnp.float32) -> tuple[KV, ...]:
    """Keys and values of a shared text prefix, for :func:`encode_text_embeddings`'s
    ``prefix`` (exact: the text tower is causal, so the prefix never sees later positions).

    Args:
        embeddings: ``(B, P, text_width)`` token embeddings of positions ``0..P-1`` (``B``
            1 to share the prefix over every example).

    Returns:
        one :class:`~.layers.attention.KV` per block, ``(B, P, text_width)`` each.
    """
    return _apply("text_prefix", params, embeddings, config=config, dtype=dtype)


def encode_text_embeddings(params: Params, embeddings: jax.Array, eot_index: jax.Array, *,
                           config: CLIPConfig, dtype: Dtype = jnp.float32,
                           prefix: tuple[KV, ...] | None = None,
                           pooled_only: bool = False) -> jax.Array:
    """``(B, L, text_width)`` embeddings + ``(B,)`` EOT index -> ``(B, embed_dim)`` features.

    Args:
        prefix: :func:`text_prefix` of ``P`` earlier positions; ``embeddings`` are then
            positions ``P..P+L-1`` and ``eot_index`` counts from ``P``.
        pooled_only: the last block computes the EOT row only (exact; fewer FLOPs).

    An EOT index outside ``[0, L)`` (negative included) gives a NaN feature row; the bundle
    refuses it on the host.
    """
    return _apply("encode_text_embeddings", params, embeddings, eot_index, True, prefix,
                  pooled_only, config=config, dtype=dtype)


def encode_text(params: Params, ids: jax.Array, eot_index: jax.Array, *, config: CLIPConfig,
                dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, L)`` ids + ``(B,)`` EOT index -> ``(B, embed_dim)`` features (not normalised)."""
    return encode_text_embeddings(params, embed_tokens(params, ids, config=config), eot_index,
                                  config=config, dtype=dtype, pooled_only=True)


def embed_image_patches(params: Params, pixels: jax.Array, *, config: CLIPConfig,
                        dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, H, W, 3)`` pixels -> ``(B, N, vision_width)`` patch tokens (``conv1`` output)."""
    return _apply("embed_image_patches", params, pixels, config=config, dtype=dtype)


def encode_image_tokens(params: Params, tokens: jax.Array, *, config: CLIPConfig,
                        dtype: Dtype = jnp.float32, pooled_only: bool = False) -> jax.Array:
    """``(B, N, vision_width)`` patch tokens -> ``(B, embed_dim)`` image features
    (``pooled_only``: the last block computes the class token only; exact)."""
    return _apply("encode_image_tokens", params, tokens, pooled_only, config=config,
                  dtype=dtype)


def encode_image(params: Params, pixels: jax.Array, *, config: CLIPConfig,
                 dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, H, W, 3)`` normalised pixels -> ``(B, embed_dim)`` features (not normalised)."""
    return encode_image_tokens(params, embed_image_patches(params, pixels, config=config,
                                                           dtype=dtype),
                               config=config, dtype=dtype, pooled_only=True)


def encode_image_preproj(params: Params, pixels: jax.Array, *, config: CLIPConfig,
                         dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, H, W, 3)`` pixels -> ``(B, vision_width)`` features before ``visual.proj``."""
    return _apply("encode_image", params, pixels, False, config=config, dtype=dtype)


def encode_text_preproj(params: Params, ids: jax.Array, eot_index: jax.Array, *,
                        config: CLIPConfig, dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, L)`` ids -> ``(B, text_width)`` features before ``text_projection``."""
    return _apply("encode_text", params, ids, eot_index, False, config=config, dtype=dtype)


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
