"""SigLIP B/16 at real size with random weights vs transformers' ``SiglipModel``.

LayerNorms, biases and the logit bias are perturbed (``family_factories.perturb_``) so
that no parameter sits at a trivially symmetric init. Tolerance: relative max-abs error
<= 1e-4 (measured ~1e-6 in float32 on CPU). The big_vision layout is checked twice: a
synthetic ``.npz`` with the real names and shapes written from the converted model must
load back to the same features, and the layout's conventions (``(width, heads,
head_dim)`` attention kernels, fused MAP-head projections) are checked independently by
evaluating one encoder block and the MAP head in NumPy straight from the big_vision arrays
against the PyTorch modules.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from support import family_factories as F

from crossgap_jax.models import load_clip
from crossgap_jax.models.configs import get_config
from crossgap_jax.models.siglip import model as siglip
from crossgap_jax.models.siglip.big_vision import params_to_big_vision
from crossgap_jax.models.siglip.convert import hf_state_dict_to_params

torch = pytest.importorskip("torch")

# Real-size models (~100M-340M parameters): minutes on a 2-core CPU, outside `make test-fast`.
pytestmark = pytest.mark.slow
pytest.importorskip("transformers")

RTOL = 1e-4
CFG = get_config("SigLIP-ViT-B-16")


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def hf_model():
    torch.set_num_threads(2)
    return F.hf_siglip()


@pytest.fixture(scope="module")
def params(hf_model):
    return jax.device_put(hf_state_dict_to_params(F.hf_state_dict(hf_model), CFG))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    ids = rng.integers(3, 32000, (3, 64)).astype(np.int32)
    ids[0, 7:] = 1  # "</s>" then </s> padding, as the tokenizer produces
    ids[1, 20:] = 1
    return pixels, ids


@pytest.fixture(scope="module")
def reference(hf_model, inputs):
    pixels, ids = inputs
    with torch.no_grad():
        img = hf_model.get_image_features(
            pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).pooler_output
        txt = hf_model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64))
                                         ).pooler_output
    return img.numpy(), txt.numpy()


@functools.partial(jax.jit, static_argnames=("config",))
def _features(p, pixels, ids, *, config):
    pool = np.full((ids.shape[0],), ids.shape[1] - 1, np.int32)
    return (siglip.encode_image(p, pixels, config=config),
            siglip.encode_text(p, ids, pool, config=config))


@pytest.fixture(scope="module")
def ours(params, inputs):
    pixels, ids = inputs
    return tuple(np.asarray(x) for x in _features(params, pixels, ids, config=CFG))


def test_image_parity(ours, reference):
    assert ours[0].shape == (2, 768)
    err = rel_err(ours[0], reference[0])
    assert err <= RTOL, err


def test_text_parity(ours, reference):
    assert ours[1].shape == (3, 768)
    err = rel_err(ours[1], reference[1])
    assert err <= RTOL, err


def test_big_vision_npz_roundtrip(params, inputs, reference, tmp_path_factory):
    bv = params_to_big_vision(params, CFG)
    shapes = {
        "params/img/embedding/kernel": (16, 16, 3, 768),
        "params/img/embedding/bias": (768,),
        "params/img/pos_embedding": (1, 196, 768),
        "params/img/Transformer/encoderblock_11/MultiHeadDotProductAttention_0/query/kernel":
            (768, 12, 64),
        "params/img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/bias":
            (12, 64),
        "params/img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/out/kernel":
            (12, 64, 768),
        "params/img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel": (768, 3072),
        "params/img/Transformer/encoder_norm/scale": (768,),
        "params/img/MAPHead_0/probe": (1, 1, 768),
        "params/img/MAPHead_0/MultiHeadDotProductAttention_0/key/kernel": (768, 12, 64),
        "params/img/MAPHead_0/LayerNorm_0/scale": (768,),
        "params/img/MAPHead_0/MlpBlock_0/Dense_1/kernel": (3072, 768),
        "params/txt/Embed_0/embedding": (32000, 768),
        "params/txt/pos_embedding": (1, 64, 768),
        "params/txt/Encoder_0/encoderblock_0/LayerNorm_1/bias": (768,),
        "params/txt/Encoder_0/encoder_norm/scale": (768,),
        "params/txt/head/kernel": (768, 768),
        "params/t": (1,),
        "params/b": (1,),
    }
    for k, shape in shapes.items():
        assert bv[k].shape == shape, k
    # 2 towers x 12 blocks x 16 tensors; img: conv 2, pos 1, norm 2; txt: embed 1, pos 1,
    # norm 2, head 2; MAP head: probe 1, q/k/v/out 8, LayerNorm 2, MLP 4; t, b.
    assert len(bv) == 2 * 12 * 16 + 5 + 6 + 15 + 2
    path = str(tmp_path_factory.mktemp("bv") / "webli_en_b16_224.npz")
    np.savez(path, **bv)
    bundle = load_clip(path)
    assert bundle.config == CFG and bundle.info["format"] == "big_vision-npz"
    pixels, ids = inputs
    img, txt = (np.asarray(x) for x in _features(bundle.params, pixels, ids, config=CFG))
    assert rel_err(img, reference[0]) <= RTOL
    assert rel_err(txt, reference[1]) <= RTOL


def _np_ln(x, scale, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _np_mhdpa(xq, xkv, a, prefix):
    """flax MultiHeadDotProductAttention from big_vision arrays (no reshaping to (w, w))."""
    q = np.einsum("bnd,dhk->bnhk", xq, a[f"{prefix}/query/kernel"]) + a[f"{prefix}/query/bias"]
    k = np.einsum("bnd,dhk->bnhk", xkv, a[f"{prefix}/key/kernel"]) + a[f"{prefix}/key/bias"]
    v = np.einsum("bnd,dhk->bnhk", xkv, a[f"{prefix}/value/kernel"]) + a[f"{prefix}/value/bias"]
    logits = np.einsum("bqhk,bshk->bhqs", q / np.sqrt(q.shape[-1]), k)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhqs,bshk->bqhk", w, v)
    return np.einsum("bqhk,hkd->bqd", o, a[f"{prefix}/out/kernel"]) + a[f"{prefix}/out/bias"]


def _np_mlp(x, a, prefix):
    h = _np_gelu_tanh(x @ a[f"{prefix}/Dense_0/kernel"] + a[f"{prefix}/Dense_0/bias"])
    return h @ a[f"{prefix}/Dense_1/kernel"] + a[f"{prefix}/Dense_1/bias"]


def test_big_vision_conventions_independently(params, hf_model):
    """One big_vision encoder block and the MAP head, evaluated in NumPy from the big_vision
    arrays, equal transformers' layers: the layout's reshapes are right, not just
    self-consistent."""
    a = {k: v.astype(np.float64) for k, v in params_to_big_vision(params, CFG).items()}
    x = np.random.default_rng(1).standard_normal((2, 196, 768))
    blk = "params/img/Transformer/encoderblock_3"
    y = x + _np_mhdpa(*(2 * [_np_ln(x, a[f"{blk}/LayerNorm_0/scale"],
                                    a[f"{blk}/LayerNorm_0/bias"])]),
                      a, f"{blk}/MultiHeadDotProductAttention_0")
    y = y + _np_mlp(_np_ln(y, a[f"{blk}/LayerNorm_1/scale"], a[f"{blk}/LayerNorm_1/bias"]), a,
                    f"{blk}/MlpBlock_0")
    hp = "params/img/MAPHead_0"
    probe = np.broadcast_to(a[f"{hp}/probe"], (2, 1, 768))
    z = _np_mhdpa(probe, x, a, f"{hp}/MultiHeadDotProductAttention_0")
    z = (z + _np_mlp(_np_ln(z, a[f"{hp}/LayerNorm_0/scale"], a[f"{hp}/LayerNorm_0/bias"]), a,
                     f"{hp}/MlpBlock_0"))[:, 0]
    with torch.no_grad():
        xt = torch.from_numpy(x.astype(np.float32))
        ref_y = hf_model.vision_model.encoder.layers[3](xt, attention_mask=None)
        ref_y = ref_y[0] if isinstance(ref_y, tuple) else ref_y
        ref_z = hf_model.vision_model.head(xt)
    assert rel_err(y, ref_y.numpy()) <= RTOL
    assert rel_err(z, ref_z.numpy()) <= RTOL
