"""Flax linen SigLIP (Zhai et al. 2023): the ``"siglip"`` model family.

(Over 450 lines on purpose: the family is one module - config, Flax modules, the pure entry
points - as ``clip/model.py`` and ``slip/model.py`` are; its checkpoint loading lives beside
it, in ``siglip/convert.py`` / ``siglip/big_vision.py``.)

Architecture (``google/siglip-base-patch16-224``, big_vision ``siglip`` B/16):

- image tower: conv patch embedding *with* bias, learned position embedding over the N
  patches (**no class token**), pre-norm encoder blocks, ``post_layernorm`` over all
  tokens, then a multi-head attention-pooling head (MAP: a learned probe attends over the
  tokens, LayerNorm, residual MLP). The pooled vector *is* the image embedding (no
  projection).
- text tower: token + position embedding (64 positions), **non-causal** encoder, final
  LayerNorm, the feature of the **last position** (``L - 1``: with max-length padding a
  pad / EOS token) through a linear ``head`` (with bias).
- GELU with the tanh approximation (``gelu_pytorch_tanh``), LayerNorm eps 1e-6,
  ``logit_scale`` and ``logit_bias`` (sigmoid loss).

SigLIP 2 at fixed resolution (``SigLIP2-ViT-B-16``: ``google/siglip2-base-patch16-224``,
open_clip ``ViT-B-16-SigLIP2``) is this graph unchanged with a 256k Gemma vocabulary
(big_vision ``README_siglip2.md``: "The only difference is the vocab size (256k) and the
tokenizer (Gemma tokenizer)"; transformers loads it as ``SiglipModel``, ``model_type:
"siglip"``), so it is an architecture of this family: only its tokenizer differs
(``text_tokenizer="gemma"``: :mod:`~crossgap_jax.models.siglip.gemma_tokenizer`, EOS then
``<pad>`` padding, ``text_pad_id=0``). NaFlex SigLIP 2 (``Siglip2Model``: variable
resolution, 2-D resized position embeddings) is a different graph and is not ported.

Parameter names mirror transformers' ``SiglipModel`` so conversion is mechanical:

==================================================  ===========================================
transformers ``SiglipModel``                        Flax params path
==================================================  ===========================================
``vision_model.embeddings.patch_embedding``         ``vision_model/embeddings/patch_embedding``
``vision_model.embeddings.position_embedding``      ``.../position_embedding/embedding``
``*.encoder.layers.i.{layer_norm1,layer_norm2}``    ``*/encoder/layers_i/{layer_norm1,...}``
``*.encoder.layers.i.self_attn.{q,k,v,out}_proj``   ``*/encoder/layers_i/self_attn/{q_proj,...}``
``*.encoder.layers.i.mlp.{fc1,fc2}``                ``*/encoder/layers_i/mlp/{fc1,fc2}``
``vision_model.post_layernorm``                     ``vision_model/post_layernorm``
``vision_model.head.probe``                         ``vision_model/head/probe`` ``(1, 1, w)``
``vision_model.head.attention.in_proj_*``           ``vision_model/head/attention/in_proj``
``vision_model.head.attention.out_proj``            ``vision_model/head/attention/out_proj``
``vision_model.head.{layernorm,mlp}``               ``vision_model/head/{layernorm,mlp}``
``text_model.embeddings.{token,position}_embedding``  ``text_model/embeddings/...``
``text_model.final_layer_norm`` / ``.head``         ``text_model/final_layer_norm`` / ``head``
``logit_scale`` / ``logit_bias``                    ``logit_scale`` / ``logit_bias`` ``(1,)``
==================================================  ===========================================

Modality inversion on this architecture: OVI's pseudo patch tokens replace the output
of the patch convolution (bias included) and are expanded to all N patches; there is no
class token to prepend. OTI's pseudo tokens replace the token embeddings of the ``£``
placeholders and the feature is pooled at the last position (``CAUSAL_TEXT = False``:
every position influences it, so OTI never truncates the context).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossgap_jax.models.configs import CLIPConfig, TextConfig, VisionConfig
from crossgap_jax.models.layers._module_fns import ModuleFns, embed_rows, image_functions, pool_rows
from crossgap_jax.models.layers.attention import attention, select_rows, self_attention
from crossgap_jax.models.layers.norm import LayerNorm
from crossgap_jax.models.layers.vit_layers import Mlp
from crossgap_jax.models.siglip.gemma_tokenizer import CLEAN_MODES, load_gemma_tokenizer
from crossgap_jax.models.siglip.tokenizer import load_siglip_tokenizer

# Non-causal text encoder pooled at the last position: positions after the EOS do
# influence the feature, so OTI must encode the whole context.
CAUSAL_TEXT = False

Params = Any
Dtype = Any

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
# T5 / big_vision "c4_en" SentencePiece ids: <pad> 0, </s> 1, <unk> 2. SigLIP pads with
# </s> (HF ``pad_token="</s>"``, big_vision ``pad_value=1``).
SIGLIP_EOS_ID = 1
# SigLIP 2's Gemma vocabulary: <pad> 0, <eos> 1, <bos> 2, <unk> 3; padded with <pad>.
GEMMA_VOCAB_SIZE = 256000
GEMMA_PAD_ID = 0

_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")
_TOKENIZERS = ("sentencepiece", "gemma")


@dataclasses.dataclass(frozen=True)
class SigLIPConfig(CLIPConfig):
    """A SigLIP model. Shapes use :class:`CLIPConfig`'s fields; SigLIP-specific ones below.

    ``embed_dim`` is the text head's output size and must equal ``vision.width`` (the
    MAP head output is the image embedding). ``text.eot_token_id`` is the EOS id that the
    tokenizer appends (and pads with); pooling is always at the last position.

    Attributes:
        hidden_act: ``"gelu_pytorch_tanh"`` (SigLIP) or ``"gelu"`` (exact erf).
        resize_mode: ``"squash"``: resize to ``image_size x image_size`` without keeping
            the aspect ratio and without cropping (HF ``SiglipImageProcessor``).
        interpolation: PIL resampling for the resize (``"bicubic"``, HF's default).
        text_tokenizer: ``"sentencepiece"`` (SigLIP: T5 ``spiece.model``, padded with EOS,
            :mod:`~crossgap_jax.models.siglip.tokenizer`) or ``"gemma"`` (SigLIP 2: Gemma
            ``tokenizer.json`` / ``tokenizer.model``, EOS then ``<pad>`` padding,
            :mod:`~crossgap_jax.models.siglip.gemma_tokenizer`).
        text_pad_id: the id the tokenizer pads with (SigLIP: EOS 1; SigLIP 2: ``<pad>`` 0).
        text_clean: the Gemma tokenizer's cleaning, ``"canonicalize"`` (open_clip's, the
            default) or ``"lower"`` (big_vision's ``lower`` alone); SigLIP's SentencePiece
            tokenizer always canonicalises.
    """

    name: str = "SigLIP-ViT-B-16"
    family: str = "siglip"
    embed_dim: int = 768
    vision: VisionConfig = dataclasses.field(
        default_factory=lambda: VisionConfig(image_size=224, patch_size=16, width=768,
                                             layers=12, heads=12))
    text: TextConfig = dataclasses.field(
        default_factory=lambda: TextConfig(context_length=64, vocab_size=32000, width=768,
                                           layers=12, heads=12, eot_token_id=SIGLIP_EOS_ID,
                                           sot_token_id=-1))
    quick_gelu: bool = False
    layer_norm_eps: float = 1e-6
    mean: tuple[float, float, float] = SIGLIP_MEAN
    std: tuple[float, float, float] = SIGLIP_STD
    hidden_act: str = "gelu_pytorch_tanh"
    resize_mode: str = "squash"
    interpolation: str = "bicubic"
    text_tokenizer: str = "sentencepiece"
    text_pad_id: int = SIGLIP_EOS_ID
    text_clean: str = "canonicalize"

    def __post_init__(self):
        if self.text_tokenizer not in _TOKENIZERS:
            raise ValueError(f"text_tokenizer must be one of {_TOKENIZERS}, got "
                             f"{self.text_tokenizer!r}")
        if self.text_clean not in CLEAN_MODES:
            raise ValueError(f"text_clean must be one of {CLEAN_MODES}, got {self.text_clean!r}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {_ACTIVATIONS}, got {self.hidden_act!r}")
        if self.embed_dim != self.vision.width:
            raise ValueError(f"SigLIP embed_dim ({self.embed_dim}) must equal the vision width "
                             f"({self.vision.width}): the MAP head output is the embedding")


CONFIG_CLASS = SigLIPConfig


def siglip_config(name: str, *, image_size: int = 224, patch_size: int = 16, width: int = 768,
                  layers: int = 12, heads: int = 12, mlp_ratio: float = 4.0,
                  text_width: int | None = None, text_layers: int | None = None,
                  text_heads: int | None = None, text_mlp_ratio: float | None = None,
                  vocab_size: int = 32000, context_length: int = 64,
                  eos_id: int = SIGLIP_EOS_ID, **kw: Any) -> SigLIPConfig:
    """A :class:`SigLIPConfig` from a few numbers (text tower defaults to the image's)."""
    return SigLIPConfig(
        name=name,
        embed_dim=width,
        vision=VisionConfig(image_size=image_size, patch_size=patch_size, width=width,
                            layers=layers, heads=heads, mlp_ratio=mlp_ratio),
        text=TextConfig(context_length=context_length, vocab_size=vocab_size,
                        width=text_width or width, layers=text_layers or layers,
                        heads=text_heads or heads, mlp_ratio=text_mlp_ratio or mlp_ratio,
                        eot_token_id=eos_id, sot_token_id=-1),
        **kw,
    )


def gemma_text_fields(vocab_size: int) -> dict[str, Any]:
    """The tokenizer fields of a SigLIP 2 config (Gemma vocabulary) when ``vocab_size`` is
    Gemma's 256000, else none (SigLIP's SentencePiece defaults)."""
    if vocab_size == GEMMA_VOCAB_SIZE:
        return {"text_tokenizer": "gemma", "text_pad_id": GEMMA_PAD_ID}
    return {}


ARCHITECTURES: dict[str, SigLIPConfig] = {
    "SigLIP-ViT-B-16": siglip_config("SigLIP-ViT-B-16"),
    # SigLIP 2 B/16 at 224 px (google/siglip2-base-patch16-224, open_clip ViT-B-16-SigLIP2):
    # SigLIP's graph with the Gemma vocabulary (big_vision README_siglip2.md).
    "SigLIP2-ViT-B-16": siglip_config("SigLIP2-ViT-B-16", vocab_size=GEMMA_VOCAB_SIZE,
                                      **gemma_text_fields(GEMMA_VOCAB_SIZE)),
    # Tiny config for tests and smoke runs (small vocabulary: a test SentencePiece model).
    "siglip-tiny": siglip_config("siglip-tiny", image_size=32, patch_size=8, width=64, layers=2,
                                 heads=2, vocab_size=512, context_length=16),
    # Tiny SigLIP 2-shaped config (Gemma special ids, <pad> padding; a test tokenizer file).
    "siglip2-tiny": siglip_config("siglip2-tiny", image_size=32, patch_size=8, width=64,
                                  layers=2, heads=2, vocab_size=512, context_length=16,
                                  text_tokenizer="gemma", text_pad_id=GEMMA_PAD_ID),
}
#: open_clip's names for these architectures (exactly our shapes; open_clip's other SigLIP
#: models, 256/384/512 px, L/16, SO400M, i18n, have no config here).
ALIASES: dict[str, str] = {"ViT-B-16-SigLIP": "SigLIP-ViT-B-16",
                           "ViT-B-16-SigLIP2": "SigLIP2-ViT-B-16"}



# ---------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Non-causal self-attention with separate q/k/v projections (HF ``SiglipAttention``)."""

    width: int
    heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, pool_index: jax.Array | int | None = None) -> jax.Array:
        dense = lambda name: nn.Dense(self.width, dtype=self.dtype, name=name)
        out, _ = self_attention(dense("q_proj")(x), dense("k_proj")(x), dense("v_proj")(x),
                                heads=self.heads, dtype=self.dtype, pool_index=pool_index)
        return dense("out_proj")(out)


def _mlp(width: int, hidden: int, act: str, dtype: Dtype) -> Mlp:
    """The ``mlp`` (``fc1 -> act -> fc2``) of a layer or the MAP head; ``act`` is
    ``"gelu_pytorch_tanh"`` (tanh approximation) or ``"gelu"`` (exact)."""
    return Mlp(width, hidden, False, dtype, tanh_gelu=act == "gelu_pytorch_tanh", name="mlp")


class EncoderLayer(nn.Module):
    width: int
    heads: int
    mlp_ratio: float
    act: str
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, pool_index: jax.Array | int | None = None) -> jax.Array:
        """``(B, S, w)`` -> ``(B, S, w)`` (``(B, 1, w)``: row ``pool_index`` only)."""
        ln = lambda name: LayerNorm(self.eps, self.dtype, name=name)
        x = select_rows(x, pool_index) + SelfAttention(
            self.width, self.heads, self.dtype, name="self_attn")(ln("layer_norm1")(x),
                                                                 pool_index)
        hidden = int(round(self.width * self.mlp_ratio))
        return x + _mlp(self.width, hidden, self.act, self.dtype)(ln("layer_norm2")(x))


class Encoder(nn.Module):
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    act: str
    eps: float
    dtype: Dtype = jnp.float32

    def setup(self):
        # A list attribute named ``layers`` gives the submodules ``layers_0``, ``layers_1``...
        self.layers = [
            EncoderLayer(self.width, self.heads, self.mlp_ratio, self.act, self.eps, self.dtype)
            for _ in range(self.depth)
        ]

    def __call__(self, x: jax.Array, pool_index: jax.Array | int | None = None) -> jax.Array:
        """``pool_index`` ``(B,)``: the last layer computes that row only (``(B, 1, w)``)."""
        for i, layer in enumerate(self.layers):
            x = layer(x, pool_index if i == len(self.layers) - 1 else None)
        return x


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learned probe attends over the tokens.

    ``attention`` mirrors ``torch.nn.MultiheadAttention``: a fused ``in_proj`` (q|k|v
    along the output axis) and ``out_proj``.
    """

    width: int
    heads: int
    mlp_ratio: float
    act: str
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(B, N, w)`` tokens -> ``(B, w)`` pooled vector."""
        b, _, w = x.shape
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, w), jnp.float32)
        probe = jnp.broadcast_to(probe.astype(self.dtype), (b, 1, w))
        attn = _MHAParams(w, self.dtype, name="attention")
        q, _, _ = attn.project(probe)
        _, k, v = attn.project(x)
        y = attn.out(attention(q, k, v, heads=self.heads, dtype=self.dtype))
        hidden = int(round(w * self.mlp_ratio))
        y = y + _mlp(w, hidden, self.act, self.dtype)(
            LayerNorm(self.eps, self.dtype, name="layernorm")(y))
        return y[:, 0]


class _MHAParams(nn.Module):
    """Parameters of ``torch.nn.MultiheadAttention`` (``in_proj`` fused, ``out_proj``)."""

    width: int
    dtype: Dtype = jnp.float32

    def setup(self):
        self.in_proj = nn.Dense(3 * self.width, dtype=self.dtype)
        self.out_proj = nn.Dense(self.width, dtype=self.dtype)

    def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        q, k, v = jnp.split(self.in_proj(x), 3, axis=-1)
        return q, k, v

    def out(self, x: jax.Array) -> jax.Array:
        return self.out_proj(x)


class VisionEmbeddings(nn.Module):
    config: SigLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config.vision
        self.patch_embedding = nn.Conv(c.width, (c.patch_size, c.patch_size),
                                       strides=(c.patch_size, c.patch_size), padding="VALID",
                                       use_bias=True, dtype=self.dtype)
        self.position_embedding = nn.Embed(c.num_patches, c.width,
                                           embedding_init=nn.initializers.normal(c.width**-0.5))

    def patches(self, pixels: jax.Array) -> jax.Array:
        x = self.patch_embedding(pixels.astype(self.dtype))
        b, gh, gw, w = x.shape
        return x.reshape(b, gh * gw, w)

    def positions(self) -> jax.Array:
        return self.position_embedding.embedding

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.patches(pixels) + self.positions().astype(self.dtype)


class VisionModel(nn.Module):
    config: SigLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c, v = self.config, self.config.vision
        self.embeddings = VisionEmbeddings(c, self.dtype)
        self.encoder = Encoder(v.width, v.layers, v.heads, v.mlp_ratio, c.hidden_act,
                               c.layer_norm_eps, self.dtype)
        self.post_layernorm = LayerNorm(c.layer_norm_eps, self.dtype)
        self.head = MAPHead(v.width, v.heads, v.mlp_ratio, c.hidden_act, c.layer_norm_eps,
                            self.dtype)

    def embed_patches(self, pixels: jax.Array) -> jax.Array:
        """``(B, H, W, 3)`` -> ``(B, N, width)`` patch-conv output (bias included, no positions)."""
        return self.embeddings.patches(pixels)

    def encode_tokens(self, tokens: jax.Array) -> jax.Array:
        """``(B, N, width)`` patch tokens -> ``(B, width)`` MAP-pooled embedding."""
        x = tokens.astype(self.dtype) + self.embeddings.positions().astype(self.dtype)
        x = self.post_layernorm(self.encoder(x))
        return self.head(x).astype(jnp.float32)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.encode_tokens(self.embed_patches(pixels))


class TextEmbeddings(nn.Module):
    config: SigLIPConfig

    def setup(self):
        t = self.config.text
        self.token_embedding = nn.Embed(t.vocab_size, t.width,
                                        embedding_init=nn.initializers.normal(t.width**-0.5))
        self.position_embedding = nn.Embed(t.context_length, t.width,
                                           embedding_init=nn.initializers.normal(t.width**-0.5))

    def tokens(self, ids: jax.Array) -> jax.Array:
        return embed_rows(self.token_embedding.embedding, ids)

    def positions(self) -> jax.Array:
        return self.position_embedding.embedding

    def __call__(self, ids: jax.Array) -> jax.Array:
        return self.tokens(ids) + self.positions()[: ids.shape[1]]


class TextModel(nn.Module):
    config: SigLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c, t = self.config, self.config.text
        self.embeddings = TextEmbeddings(c)
        self.encoder = Encoder(t.width, t.layers, t.heads, t.mlp_ratio, c.hidden_act,
                               c.layer_norm_eps, self.dtype)
        self.final_layer_norm = LayerNorm(c.layer_norm_eps, self.dtype)
        self.head = nn.Dense(c.embed_dim, dtype=self.dtype)

    def embed_tokens(self, ids: jax.Array) -> jax.Array:
        return self.embeddings.tokens(ids)

    def pooled(self, embeddings: jax.Array, pool_index: jax.Array,
               pooled_only: bool = False) -> jax.Array:
        """``(B, L, w)`` token embeddings, ``(B,)`` pool positions -> ``(B, w)`` pre-head
        (``pooled_only``: the last layer computes the pooled row only; exact)."""
        length = embeddings.shape[1]
        x = embeddings.astype(self.dtype) + self.embeddings.positions()[:length].astype(self.dtype)
        x = self.final_layer_norm(self.encoder(x, pool_index if pooled_only else None))
        return x[:, 0] if pooled_only else pool_rows(x, pool_index)

    def encode_embeddings(self, embeddings: jax.Array, pool_index: jax.Array,
                          pooled_only: bool = False) -> jax.Array:
        return self.head(self.pooled(embeddings, pool_index, pooled_only)).astype(jnp.float32)

    def __call__(self, ids: jax.Array, pool_index: jax.Array) -> jax.Array:
        return self.encode_embeddings(self.embed_tokens(ids), pool_index)


class SigLIPModule(nn.Module):
    """Both towers with transformers' ``SiglipModel`` names (``vision_model``, ``text_model``)."""

    config: SigLIPConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        self.vision_model = VisionModel(self.config, self.dtype)
        self.text_model = TextModel(self.config, self.dtype)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(10.0)),
                                      (1,))
        self.logit_bias = self.param("logit_bias", nn.initializers.constant(-10.0), (1,))

    # --- text ---------------------------------------------------------------------------
    def embed_tokens(self, ids: jax.Array) -> jax.Array:
        return self.text_model.embed_tokens(ids)

    def encode_text_embeddings(self, embeddings: jax.Array, pool_index: jax.Array,
                               pooled_only: bool = False) -> jax.Array:
        return self.text_model.encode_embeddings(embeddings, pool_index, pooled_only)

    def encode_text_preproj(self, ids: jax.Array, pool_index: jax.Array) -> jax.Array:
        return self.text_model.pooled(self.embed_tokens(ids), pool_index).astype(jnp.float32)

    def encode_text(self, ids: jax.Array, pool_index: jax.Array) -> jax.Array:
        return self.text_model(ids, pool_index)

    # --- image --------------------------------------------------------------------------
    def embed_image_patches(self, pixels: jax.Array) -> jax.Array:
        return self.vision_model.embed_patches(pixels)

    def encode_image_tokens(self, tokens: jax.Array, pooled_only: bool = False) -> jax.Array:
        # ``pooled_only`` has no effect: the MAP head attends over every token's last-layer
        # output, so no row of the last layer can be skipped.
        del pooled_only
        return self.vision_model.encode_tokens(tokens)

    def encode_image(self, pixels: jax.Array) -> jax.Array:
        return self.vision_model(pixels)

    def encode_image_preproj(self, pixels: jax.Array) -> jax.Array:
        return self.vision_model(pixels)  # no image projection: the embedding itself

    def __call__(self, pixels: jax.Array, ids: jax.Array, pool_index: jax.Array):
        return (self.encode_image(pixels), self.encode_text(ids, pool_index), self.logit_scale,
                self.logit_bias)


_FNS = ModuleFns(SigLIPModule)
_apply = _FNS.apply
init_params, param_shapes = _FNS.init_params, _FNS.param_shapes


# ---------------------------------------------------------------------------------------
# The family's pure functions (same signatures as crossgap_jax.models.clip.model)
# ---------------------------------------------------------------------------------------
def embed_tokens(params: Params, ids: jax.Array, *, config: SigLIPConfig,
                 dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, L)`` ids -> ``(B, L, text_width)`` token embeddings (float32, no positions).

    An id outside ``[0, vocab_size)`` (negative ones included) gives a row of NaN; the bundle
    refuses such ids on the host (:func:`~crossgap_jax.models.inputs.check_text_inputs`).
    """
    del config, dtype
    return embed_rows(params["text_model"]["embeddings"]["token_embedding"]["embedding"], ids)


def encode_text_embeddings(params: Params, embeddings: jax.Array, pool_index: jax.Array, *,
                           config: SigLIPConfig, dtype: Dtype = jnp.float32, prefix: Any = None,
                           pooled_only: bool = False) -> jax.Array:
    """``(B, L, text_width)`` embeddings + ``(B,)`` pool positions -> ``(B, embed_dim)``.

    SigLIP pools at the last position: pass ``pool_index = L - 1`` (what
    :func:`pool_indices` and the SigLIP tokenizer's ``template_ids`` give).
    ``pooled_only``: the last layer computes the pooled row only (exact).

    Raises:
        ValueError: a ``prefix`` (the text tower is not causal: no prefix cache exists).
    """
    if prefix is not None:
        raise ValueError("SigLIP's text encoder is not causal (CAUSAL_TEXT = False): every "
                         "position sees every other, so a cached prefix is not exact; "
                         "pass prefix=None")
    return _apply("encode_text_embeddings", params, embeddings, pool_index, pooled_only,
                  config=config, dtype=dtype)


def encode_text(params: Params, ids: jax.Array, pool_index: jax.Array, *,
                config: SigLIPConfig, dtype: Dtype = jnp.float32) -> jax.Array:
    """``(B, L)`` ids + ``(B,)`` pool positions -> ``(B, embed_dim)`` (not normalised)."""
    return encode_text_embeddings(params, embed_tokens(params, ids, config=config), pool_index,
                                  config=config, dtype=dtype)


encode_text_preproj = _FNS.function(
    "encode_text_preproj", "ids pool_index",
    "``(B, L)`` ids + ``(B,)`` pool positions -> ``(B, text_width)`` pooled feature before "
    "the text ``head``.", module=__name__)


# No image projection: encode_image_preproj is encode_image.
embed_image_patches, encode_image_tokens, encode_image, encode_image_preproj = \
    image_functions(_FNS, __name__)


def projection_matrices(params: Params, config: SigLIPConfig) -> tuple[jax.Array, jax.Array]:
    """``(W_i (vision_width, D), W_t (text_width, D))``: identity for the image side (no
    projection), the text ``head`` kernel for the text side (its bias is not included)."""
    w_t = params["text_model"]["head"]["kernel"]
    return jnp.eye(config.vision.width, config.embed_dim, dtype=w_t.dtype), w_t


def projection_biases(params: Params, config: SigLIPConfig) -> tuple[None, jax.Array]:
    """``(b_i, b_t)`` of the heads of :func:`projection_matrices`: no image bias, the text
    ``head`` bias ``(D,)`` (IsoCLIP appends it as an extra row of ``W_t``)."""
    del config
    return None, params["text_model"]["head"]["bias"]


def pool_indices(ids: Any, config: SigLIPConfig) -> np.ndarray:
    """``(N, L)`` ids -> ``(N,)`` pooling positions: always ``L - 1`` (the last position)."""
    ids = np.asarray(ids)
    return np.full((ids.shape[0],), ids.shape[1] - 1, np.int32)


def pad_token_ids(ids: Any, config: SigLIPConfig) -> np.ndarray:
    """``(N, L)`` ids, ``L <= context_length`` -> ``(N, context_length)``: padded on the
    right with the tokenizer's pad id ``config.text_pad_id``. SigLIP pads with its EOS id
    (a row without its EOS gets it from the padding, exactly as the tokenizer appends it);
    SigLIP 2 pads with ``<pad>`` (0), so a row must already end in its ``<eos>``."""
    ids = np.asarray(ids, np.int32)
    ctx = config.text.context_length
    out = np.full((ids.shape[0], ctx), config.text_pad_id, np.int32)
    out[:, : ids.shape[1]] = ids
    return out


def get_tokenizer(config: SigLIPConfig, path: str | None = None) -> Any:
    """The tokenizer of ``config`` from ``path``: SigLIP's SentencePiece (an
    ``spiece.model`` file or a directory holding one) or, for ``text_tokenizer="gemma"``
    (SigLIP 2), the Gemma tokenizer (``tokenizer.json`` / ``tokenizer.model`` or their
    directory).

    Raises:
        ValueError: no path given (the vocabularies are not shipped with this package), or
            a Gemma file whose ``<eos>`` / ``<pad>`` ids differ from the config's.
    """
    if config.text_tokenizer == "gemma":
        if path is None:
            raise ValueError(
                f"{config.name} needs its Gemma tokenizer: load the model with "
                f"load_clip(..., tokenizer='path/to/tokenizer.json') (a transformers "
                f"SigLIP 2 directory provides tokenizer.json / tokenizer.model), or set "
                f"bundle.tokenizer_file")
        tok = load_gemma_tokenizer(path, config.text.context_length, config.text_clean)
        if (tok.eot_token_id, tok.pad_token_id) != (config.text.eot_token_id,
                                                    config.text_pad_id):
            raise ValueError(
                f"{tok.path}: <eos> / <pad> ids {tok.eot_token_id} / {tok.pad_token_id} differ "
                f"from {config.name}'s {config.text.eot_token_id} / {config.text_pad_id}; use "
                f"the tokenizer file that came with the checkpoint")
        return tok
    if path is None:
        raise ValueError(
            f"{config.name} needs its SentencePiece model: load the model with "
            f"load_clip(..., tokenizer='path/to/spiece.model') (a transformers SiglipModel "
            f"directory provides it), or set bundle.tokenizer_file")
    return load_siglip_tokenizer(path, config.text.context_length)


def preprocess_options(config: SigLIPConfig) -> dict:
    """Preprocessing of SigLIP: squash-resize to ``S x S`` (no crop, aspect ratio not kept)
    with ``config.interpolation``, scale to [0, 1], normalise with the config's 0.5/0.5."""
    return {"image_size": config.vision.image_size, "mean": tuple(config.mean),
            "std": tuple(config.std), "resize": "squash",
            "interpolation": config.interpolation}
