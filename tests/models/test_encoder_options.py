"""The inverters' exact shortcuts as options of each family's own encoders: a cached causal
text prefix and the last block at the pooled row only give the full forward pass (to float
rounding) for CLIP, SLIP and SigLIP (tiny configs, random weights); SigLIP refuses a prefix.
And the one attention function against a NumPy re-derivation of softmax(q k^T / sqrt(d)) v."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.tiny_models import tiny_clip

from crossgap_jax.models.bundle import CLIP, TEXT_LENGTH_BUCKET, trim_causal_text
from crossgap_jax.models.configs import get_config
from crossgap_jax.models.families import family_module
from crossgap_jax.models.layers import attention as att

TOL = 1e-5


@functools.cache
def _model(family: str, arch: str):
    """(family module, config, seed-0 params); the CLIP ``tiny`` one is the session's."""
    fam = family_module(family)
    config = get_config(arch)
    params = tiny_clip(0).params if arch == "tiny" else fam.init_params(config, 0)
    return fam, config, params


def _jit(fn, **static):
    """``fn`` with ``static`` keyword arguments, compiled as one program (a tiny model's
    forward runs op by op ~4x slower than compiled here; the values are the same program's)."""
    return jax.jit(functools.partial(fn, **static))


@pytest.mark.parametrize("family,arch", [
    ("clip", "tiny"), pytest.param("slip", "slip-tiny", marks=pytest.mark.slow),
    pytest.param("siglip", "siglip-tiny", marks=pytest.mark.slow)])
def test_pooled_only_and_prefix_equal_the_full_forward(family, arch):
    fam, c, p = _model(family, arch)
    rng = np.random.default_rng(0)
    length = 9 if fam.CAUSAL_TEXT else c.text.context_length
    emb = jnp.asarray(rng.normal(size=(3, length, c.text.width)) * 0.1, jnp.float32)
    pool = jnp.asarray([8, 5, 2] if fam.CAUSAL_TEXT else [length - 1] * 3, jnp.int32)
    text_full = _jit(fam.encode_text_embeddings, config=c)
    text_fast = _jit(fam.encode_text_embeddings, config=c, pooled_only=True)
    full = np.asarray(text_full(p, emb, pool))
    fast = np.asarray(text_fast(p, emb, pool))
    scale = np.linalg.norm(full, axis=-1, keepdims=True)
    np.testing.assert_allclose(fast / scale, full / scale, rtol=0, atol=TOL)
    assert not np.allclose(full[0], full[1], atol=1e-3)  # the rows differ: a real check
    if fam.CAUSAL_TEXT:  # a shared 2-position prefix, computed once (batch 1)
        shared = emb.at[:, :2].set(emb[:1, :2])
        ref = np.asarray(text_full(p, shared, pool))
        prefix = _jit(fam.text_prefix, config=c)(p, shared[:1, :2])
        got = np.asarray(text_fast(p, shared[:, 2:], pool - 2, prefix=prefix))
        np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=TOL)
    else:
        with pytest.raises(ValueError, match="not causal"):
            fam.encode_text_embeddings(p, emb, pool, config=c, prefix=())
    tok = jnp.asarray(rng.normal(size=(2, c.vision.num_patches, c.vision.width)), jnp.float32)
    full = np.asarray(_jit(fam.encode_image_tokens, config=c)(p, tok))
    fast = np.asarray(_jit(fam.encode_image_tokens, config=c, pooled_only=True)(p, tok))
    scale = np.linalg.norm(full, axis=-1, keepdims=True)
    np.testing.assert_allclose(fast / scale, full / scale, rtol=0, atol=TOL)


def test_attention_matches_numpy_and_causal_prefix():
    rng = np.random.default_rng(1)
    b, s, w, heads = 2, 5, 8, 2
    q, k, v = (rng.normal(size=(b, s, w)).astype(np.float32) for _ in range(3))

    def ref(q, k, v, causal):  # per head: softmax(q k^T / sqrt(d) + mask) v
        hd = w // heads
        out = np.zeros_like(q)
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            logits = q[:, :, sl] @ k[:, :, sl].transpose(0, 2, 1) / np.sqrt(hd)
            if causal:
                logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
            e = np.exp(logits - logits.max(-1, keepdims=True))
            out[:, :, sl] = (e / e.sum(-1, keepdims=True)) @ v[:, :, sl]
        return out

    for causal in (False, True):
        got, _ = att.self_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), heads=heads,
                                    dtype=jnp.float32, causal=causal)
        np.testing.assert_allclose(np.asarray(got), ref(q, k, v, causal), rtol=0, atol=1e-5)
    # The last 3 positions after a cached prefix of 2, the pooled row only (row 1 -> 3).
    full = ref(q, k, v, True)
    prefix = att.KV(jnp.asarray(k[:, :2]), jnp.asarray(v[:, :2]))
    got, _ = att.self_attention(jnp.asarray(q[:, 2:]), jnp.asarray(k[:, 2:]),
                                jnp.asarray(v[:, 2:]), heads=heads, dtype=jnp.float32,
                                causal=True, prefix=prefix, pool_index=jnp.asarray([1, 2]))
    np.testing.assert_allclose(np.asarray(got)[:, 0], full[[0, 1], [3, 4]], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,arch", [
    ("clip", "tiny"), pytest.param("slip", "slip-tiny", marks=pytest.mark.slow)])
def test_bundle_encoders_equal_the_full_forward(family, arch):
    """``CLIP.encode_text`` cuts each causal batch after its last EOT (to a multiple of
    ``TEXT_LENGTH_BUCKET``) and both encoders run the last block at the pooled row only: the
    features equal the full-context, all-rows forward pass, for short and long rows."""
    fam, c, p = _model(family, arch)
    clip = tiny_clip(0) if arch == "tiny" else CLIP(c, p)
    rng = np.random.default_rng(2)
    ids = np.zeros((5, c.text.context_length), np.int32)
    eot = np.asarray([3, 9, TEXT_LENGTH_BUCKET, 5, c.text.context_length - 1])
    for row, e in enumerate(eot):
        ids[row, 0] = c.text.sot_token_id
        ids[row, 1:e] = rng.integers(1, c.text.sot_token_id, e - 1)
        ids[row, e] = c.text.eot_token_id
    emb = _jit(fam.embed_tokens, config=c)(p, jnp.asarray(ids))
    full = np.asarray(_jit(fam.encode_text_embeddings, config=c)(p, emb, jnp.asarray(eot)))
    # Batches of 2: EOTs [3, 9] cut to 16 positions, [16, 5] to 32, [76] (padded) to 77.
    got = clip.encode_text(ids, eot, batch_size=2)
    scale = np.linalg.norm(full, axis=-1, keepdims=True)
    np.testing.assert_allclose(got / scale, full / scale, rtol=0, atol=TOL)
    pixels = rng.normal(size=(3, c.vision.image_size, c.vision.image_size, 3)).astype(np.float32)
    tok = _jit(fam.embed_image_patches, config=c)(p, jnp.asarray(pixels))
    full = np.asarray(_jit(fam.encode_image_tokens, config=c)(p, tok))
    got = clip.encode_image(pixels)
    scale = np.linalg.norm(full, axis=-1, keepdims=True)
    np.testing.assert_allclose(got / scale, full / scale, rtol=0, atol=TOL)
    assert not np.allclose(got[0], got[1], atol=1e-3)


def test_trim_causal_text_lengths():
    ids = np.ones((2, 77), np.int32)
    for last, expected in ((0, TEXT_LENGTH_BUCKET), (TEXT_LENGTH_BUCKET - 1, TEXT_LENGTH_BUCKET),
                           (TEXT_LENGTH_BUCKET, 2 * TEXT_LENGTH_BUCKET), (76, 77)):
        got, eot = trim_causal_text(ids, np.asarray([0, last]))
        assert got.shape == (2, expected) and list(eot) == [0, last]
