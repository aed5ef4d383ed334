"""OpenAI CLIP's causal text tower, shared by the families that use it (CLIP / open_clip,
SLIP, PE-Core): the pre-norm transformer with CLIP's parameter names, its pooling at the
EOT token (with the exact prefix cache and pooled-row shortcuts of
:mod:`~crossgap_jax.models.layers.attention`), the text methods of a family's Flax module
(:class:`CausalTextMethods`) and the matching pure entry points
(:func:`causal_text_functions`).

Names mirror OpenAI's ``model.py``: ``token_embedding``, ``positional_embedding``,
``transformer/resblocks_i/{ln_1, attn/{in_proj, out_proj}, ln_2, mlp/{c_fc, c_proj}}``,
``ln_final``, ``text_projection``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossgap_jax.models.layers._module_fns import ModuleFns, embed_rows, pool_rows
from crossgap_jax.models.layers.attention import KV, attention, select_rows, self_attention
from crossgap_jax.models.layers.norm import LayerNorm
from crossgap_jax.models.layers.vit_layers import Mlp

Dtype = Any


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
        x = x + Mlp(self.width, hidden, self.use_quick_gelu, self.dtype,
                    names=("c_fc", "c_proj"), name="mlp")(
            LayerNorm(self.eps, self.dtype, name="ln_2")(x))
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


def setup_text_tower(m: nn.Module, config: Any, dtype: Any) -> None:
    """Create the text tower's parameters on ``m`` from its ``setup`` (``token_embedding``,
    ``positional_embedding``, ``transformer``, ``ln_final``, ``text_projection``, in
    OpenAI's order and initialisation) for ``config.text`` / ``quick_gelu`` /
    ``layer_norm_eps`` / ``embed_dim``."""
    t = config.text
    m.token_embedding = nn.Embed(t.vocab_size, t.width,
                                 embedding_init=nn.initializers.normal(0.02))
    m.positional_embedding = m.param("positional_embedding", nn.initializers.normal(0.01),
                                     (t.context_length, t.width))
    m.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, config.quick_gelu,
                                config.layer_norm_eps, dtype)
    m.ln_final = LayerNorm(config.layer_norm_eps, dtype)
    m.text_projection = m.param("text_projection", nn.initializers.normal(t.width**-0.5),
                                (t.width, config.embed_dim))


class CausalTextMethods(nn.Module):
    """The text methods of a family module whose text tower is CLIP's: :attr:`text_tower`
    is the (sub)module holding ``token_embedding``, ``positional_embedding``,
    ``transformer``, ``ln_final`` and ``text_projection`` (the module itself for CLIP and
    SLIP, ``self.text`` for PE-Core). The whole-sentence encoders run the last block at the
    EOT row only (exact, fewer FLOPs)."""

    @property
    def text_tower(self) -> nn.Module:
        return self

    def embed_tokens(self, ids: jax.Array) -> jax.Array:
        """``(B, L)`` int ids -> ``(B, L, width)`` token embeddings (no positions; an id
        outside the vocabulary gives NaN)."""
        return embed_rows(self.text_tower.token_embedding.embedding, ids)

    def text_prefix(self, embeddings: jax.Array) -> tuple[KV, ...]:
        return causal_text_prefix(self.text_tower, embeddings)

    def text_preproj(self, embeddings: jax.Array, eot_index: jax.Array,
                     prefix: tuple[KV, ...] | None = None, pooled_only: bool = False
                     ) -> jax.Array:
        return causal_text_features(self.text_tower, embeddings, eot_index, prefix, pooled_only)

    def encode_text_embeddings(self, embeddings: jax.Array, eot_index: jax.Array,
                               prefix: tuple[KV, ...] | None = None,
                               pooled_only: bool = False) -> jax.Array:
        x = self.text_preproj(embeddings, eot_index, prefix, pooled_only)
        return (x @ self.text_tower.text_projection.astype(self.dtype)).astype(jnp.float32)

    def encode_text_preproj(self, ids: jax.Array, eot_index: jax.Array) -> jax.Array:
        return self.text_preproj(self.embed_tokens(ids), eot_index,
                                 pooled_only=True).astype(jnp.float32)

    def encode_text(self, ids: jax.Array, eot_index: jax.Array) -> jax.Array:
        return self.encode_text_embeddings(self.embed_tokens(ids), eot_index, pooled_only=True)


class TextFunctions(NamedTuple):
    """The pure text entry points of a causal-text family."""

    embed_tokens: Callable
    text_prefix: Callable
    encode_text_embeddings: Callable
    encode_text: Callable
    encode_text_preproj: Callable


def causal_text_functions(fns: ModuleFns, module: str, token_table: tuple[str, ...]
                          ) -> TextFunctions:
    """The pure text entry points of a family whose module mixes in
    :class:`CausalTextMethods` (methods of the same names but ``embed_tokens``, a plain
    lookup in ``token_table``).

    Args:
        fns: the family's :class:`ModuleFns`.
        module: the family's model module (the functions' ``__module__``).
        token_table: the params path of the ``(vocab, width)`` token embedding table.
    """

    def embed_tokens(params: Any, ids: jax.Array, *, config: Any,
                     dtype: Any = jnp.float32) -> jax.Array:
        """``(B, L)`` ids -> ``(B, L, text_width)`` token embeddings (float32, no positions).

        An id outside ``[0, vocab_size)`` (negative ones included) gives a row of NaN, so the
        feature is NaN, never another token's embedding; the bundle refuses such ids on the
        host (:func:`~crossgap_jax.models.inputs.check_text_inputs`).
        """
        del config, dtype
        table = params
        for key in token_table:
            table = table[key]
        return embed_rows(table, ids)

    embed_tokens.__module__ = module
    text_prefix = fns.function(
        "text_prefix", "embeddings",
        """Keys and values of a shared text prefix, for :func:`encode_text_embeddings`'s
    ``prefix`` (exact: the text tower is causal, so the prefix never sees later positions).

    Args:
        embeddings: ``(B, P, text_width)`` token embeddings of positions ``0..P-1`` (``B``
            1 to share the prefix over every example).

    Returns:
        one :class:`~crossgap_jax.models.layers.attention.KV` per block,
        ``(B, P, text_width)`` each.
    """, module=module)
    encode_text_embeddings = fns.function(
        "encode_text_embeddings", "embeddings eot_index",
        """``(B, L, text_width)`` embeddings + ``(B,)`` EOT index -> ``(B, embed_dim)`` features.

    ``L`` may stop after the last EOT (the causal mask makes it exact).

    Args:
        prefix: :func:`text_prefix` of ``P`` earlier positions; ``embeddings`` are then
            positions ``P..P+L-1`` and ``eot_index`` counts from ``P``.
        pooled_only: the last block computes the EOT row only (exact; fewer FLOPs).

    An EOT index outside ``[0, L)`` (negative included) gives a NaN feature row; the bundle
    refuses it on the host.
    """, options={"prefix": None, "pooled_only": False}, module=module)
    encode_text = fns.function(
        "encode_text", "ids eot_index",
        "``(B, L)`` ids + ``(B,)`` EOT index -> ``(B, embed_dim)`` features (not normalised).",
        module=module)
    encode_text_preproj = fns.function(
        "encode_text_preproj", "ids eot_index",
        "``(B, L)`` ids + ``(B,)`` EOT index -> ``(B, text_width)``: the ``ln_final`` output "
        "at EOT, before ``text_projection``.", module=module)
    return TextFunctions(embed_tokens, text_prefix, encode_text_embeddings, encode_text,
                         encode_text_preproj)
