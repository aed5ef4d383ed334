"""Tiny-config unit tests of the Flax CLIP and the CLIP bundle (fast; no torch needed)."""

from __future__ import annotations

import functools

import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.compile_counter import CompileCounter
from support.tiny_models import tiny_clip

from crossgap_jax.models import bundle as bundle_lib
from crossgap_jax.models.bundle import create_clip, resolve_dtype
from crossgap_jax.models.clip import model as clip_lib
from crossgap_jax.models.configs import get_config

TINY = get_config("tiny")
TEXTS = ["a photo of a cat", "", "two dogs", "a photo of  £ ", "x " * 10, "the end"]


@pytest.fixture(scope="module")
def model():
    return tiny_clip(0)


@pytest.fixture(scope="module")
def pixels():
    s = TINY.vision.image_size
    return np.random.default_rng(0).standard_normal((5, s, s, 3)).astype(np.float32)


def test_param_tree_shapes_and_dtype(model):
    flat = traverse_util.flatten_dict(model.params)
    shapes = traverse_util.flatten_dict(clip_lib.param_shapes(TINY))
    assert set(flat) == set(shapes)
    for k, v in flat.items():
        assert v.shape == shapes[k].shape and v.dtype == jnp.float32, k
    v, t = TINY.vision, TINY.text
    assert flat[("visual", "conv1", "kernel")].shape == (v.patch_size, v.patch_size, 3, v.width)
    assert flat[("visual", "positional_embedding")].shape == (v.num_patches + 1, v.width)
    assert flat[("token_embedding", "embedding")].shape == (t.vocab_size, t.width)
    assert flat[("transformer", f"resblocks_{t.layers - 1}", "attn", "in_proj", "kernel")
                ].shape == (t.width, 3 * t.width)
    assert ("transformer", f"resblocks_{t.layers}", "ln_1", "scale") not in flat


def test_output_shapes(model, pixels):
    img = model.encode_image(pixels)
    txt = model.encode_text(model.tokenize(TEXTS))
    assert img.shape == (5, TINY.embed_dim) and img.dtype == np.float32
    assert txt.shape == (len(TEXTS), TINY.embed_dim) and txt.dtype == np.float32
    assert np.isfinite(img).all() and np.isfinite(txt).all()
    tokens = model.fns.embed_image_patches(model.params, jnp.asarray(pixels))
    assert tokens.shape == (5, TINY.vision.num_patches, TINY.vision.width)
    emb = model.fns.embed_tokens(model.params, jnp.asarray(model.tokenize(TEXTS)))
    assert emb.shape == (len(TEXTS), 77, TINY.text.width)


def test_bfloat16_runs_and_params_stay_float32(model, pixels):
    bf = model.with_dtype("bfloat16")
    assert bf.dtype == jnp.bfloat16 and model.dtype == jnp.float32
    a, b = bf.encode_image(pixels), model.encode_image(pixels)
    assert a.dtype == np.float32  # features come back float32
    err = np.abs(a - b).max() / np.abs(b).max()
    assert 0 < err < 5e-2  # bf16 really used (not bitwise f32), and close
    ids = model.tokenize(TEXTS)
    assert np.abs(bf.encode_text(ids) - model.encode_text(ids)).max() > 0
    for leaf in jax.tree.leaves(bf.params):
        assert leaf.dtype == jnp.float32
    with pytest.raises(ValueError, match="unknown compute dtype"):
        resolve_dtype("float8")


def test_ragged_batches_equal_unbatched(model, pixels):
    """Batched encoding (last batch padded) gives each row's single-example feature.
    Different batch shapes may change XLA's blocking: rtol 1e-5, atol 1e-6."""
    ids = model.tokenize(TEXTS)
    single_txt = np.concatenate([model.encode_text(ids[i:i + 1]) for i in range(len(ids))])
    single_img = np.concatenate([model.encode_image(pixels[i:i + 1]) for i in range(5)])
    for bs in (4, 64):
        np.testing.assert_allclose(model.encode_text(ids, batch_size=bs), single_txt,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.encode_image(pixels, batch_size=bs), single_img,
                                   rtol=1e-5, atol=1e-6)


def test_ragged_last_batch_does_not_recompile(model):
    ids = model.tokenize(TEXTS * 2)  # 12 rows
    model.encode_text(ids[:8], batch_size=4)
    with CompileCounter(bundle_lib._encode_text_jit.__name__) as counter:
        model.encode_text(ids[:5], batch_size=4)  # 4 + 1 (padded to 4)
        model.encode_text(ids[:11], batch_size=4)  # 4 + 4 + 3 (padded)
    assert counter.compiles == 0, counter.logs
    # Control: a new batch shape is a new program, and the counter sees it.
    with CompileCounter(bundle_lib._encode_text_jit.__name__) as control:
        model.encode_text(ids[:9], batch_size=9)  # (9, 77): a shape no other test uses
    assert control.compiles == 1, control.logs


def test_empty_inputs(model):
    assert model.encode_text(np.zeros((0, 77), np.int32)).shape[0] == 0


def test_bad_shapes_raise(model, pixels):
    with pytest.raises(ValueError, match="NHWC"):
        model.encode_image(pixels.transpose(0, 3, 1, 2))  # NCHW by mistake
    with pytest.raises(ValueError, match="NHWC"):
        model.encode_image(pixels[0])
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        model.encode_text(model.tokenize("a cat")[0])
    with pytest.raises(ValueError, match="no EOT"):
        model.encode_text(np.zeros((2, 77), np.int32))


def test_unknown_architecture():
    with pytest.raises(KeyError) as e:
        create_clip("ViT-Z/99")
    assert "ViT-B/32" in str(e.value) and "tiny" in str(e.value)
    with pytest.raises(KeyError):
        get_config("vit-b/32")  # names are case-sensitive


def test_eot_is_the_only_pooled_position(model):
    """Gradient of the feature w.r.t. token embeddings is zero after the EOT (causal mask)
    and non-zero at and before it: what makes OTI's EOT+1 truncation exact."""
    ids = model.tokenize(["a photo of  £ "])
    eot = np.array([5], np.int32)
    emb = model.fns.embed_tokens(model.params, jnp.asarray(ids))

    def loss(e):
        return model.fns.encode_text_embeddings(model.params, e, jnp.asarray(eot)).sum()

    g = np.asarray(jax.jit(jax.grad(loss))(emb))
    norms = np.linalg.norm(g[0], axis=-1)
    assert (norms[:6] > 0).all() and (norms[6:] == 0).all()


@pytest.mark.slow
def test_pure_functions_jit_vmap_and_pseudo_tokens(model, pixels):
    """The inverter entry points under jit/vmap; replacing the "£" embedding by a word's
    embedding reproduces that sentence (tiny model). The two sides are different compiled
    programs (XLA may fuse the embedding lookup differently), so equality is to float32
    rounding, not bitwise; a control shows the tolerance is far below a real difference."""
    p = model.params
    template = model.tokenize(["a photo of  £ "] * 2)
    real = model.tokenize(["a photo of cat", "a photo of dog"])
    eot = np.array([5, 5], np.int32)
    emb = model.fns.embed_tokens(p, jnp.asarray(template))
    emb = emb.at[:, 4].set(p["token_embedding"]["embedding"][jnp.asarray(real[:, 4])])
    enc = jax.jit(model.fns.encode_text_embeddings)
    direct = np.asarray(jax.jit(model.fns.encode_text)(p, jnp.asarray(real), jnp.asarray(eot)))
    np.testing.assert_allclose(np.asarray(enc(p, emb, jnp.asarray(eot))), direct,
                               rtol=1e-5, atol=1e-6)
    plain = np.asarray(enc(p, model.fns.embed_tokens(p, jnp.asarray(template)),
                           jnp.asarray(eot)))
    assert np.abs(plain - direct).max() > 1e-3  # the control: the template's own feature
    # vmap over examples = batch.
    one = functools.partial(enc, p)
    per = jax.vmap(lambda e, i: one(e[None], i[None])[0])(emb, jnp.asarray(eot))
    np.testing.assert_allclose(np.asarray(per), np.asarray(enc(p, emb, jnp.asarray(eot))),
                               rtol=1e-5, atol=1e-6)
    tokens = model.fns.embed_image_patches(p, jnp.asarray(pixels))
    np.testing.assert_allclose(np.asarray(model.fns.encode_image_tokens(p, tokens)),
                               np.asarray(model.fns.encode_image(p, jnp.asarray(pixels))),
                               rtol=1e-5, atol=1e-6)
