"""Real-size parity with the PyTorch references, through the checkpoint formats.

Random weights (LayerNorms and biases perturbed, see ``clip_factories.perturb_``) at the
exact ViT-B/32 and ViT-L/14 shapes. References: OpenAI's ``model.py`` CLIP and
transformers' ``CLIPModel`` (eager attention). Tolerance: max |jax - torch| / max |torch|
<= 1e-4 on float32 image and text features (measured: ~1e-6).

Also here, on the ViT-B/32 weights: the entry points the inverters use (token-embedding
replacement, EOT+1 truncation, patch tokens) and bfloat16 compute.
"""

from __future__ import annotations

import functools
import gc
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import clip_factories as F

from crossgap_jax.models.bundle import CLIP
from crossgap_jax.models.checkpoint.loader import load
from crossgap_jax.models.clip import model as clip_lib
from crossgap_jax.models.clip.tokenizer import eot_indices, get_tokenizer
from crossgap_jax.models.configs import get_config

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

RTOL = 1e-4
TEXTS = [
    "a photo of  £ ",
    "",
    "A man riding a wave on top of a surfboard.",
    " ".join(["many words"] * 60),  # over 77 tokens: truncated, EOT at position 76
]
N_IMAGES = 2


def _report(name: str, img_err: float, txt_err: float) -> None:
    print(f"\n[parity] {name}: image max rel err {img_err:.2e}, text {txt_err:.2e}")


def _features(config, params, pixels, ids):
    model = CLIP(config, params)
    return model.encode_image(pixels), model.encode_text(ids)


# --- ViT-B/32 ----------------------------------------------------------------------------

b32 = pytest.mark.xdist_group("parity_b32")
l14 = pytest.mark.xdist_group("parity_l14")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def b32_openai(openai_model_module, tmp_path_factory):
    """OpenAI model.py ViT-B/32 (weights fp16-exact) as a TorchScript archive (the
    released format) and a float32 plain state dict; reference features."""
    config = get_config("ViT-B/32")
    d = tmp_path_factory.mktemp("b32_openai")
    model = F.openai_model(openai_model_module, config, seed=10)
    F.round_to_fp16_(model)
    pixels, ids = F.random_inputs(config, TEXTS, N_IMAGES, seed=1)
    img, txt = F.openai_features(model, pixels, ids)
    ts = F.save_openai_torchscript(model, str(d / "ViT-B-32.pt"), config)
    sd = str(d / "state_dict.pt")
    torch.save(model.state_dict(), sd)
    del model
    gc.collect()
    cfg, params, info = load("ViT-B/32", ts)
    return dict(config=cfg, params=params, info=info, files=dict(torchscript=ts, state_dict=sd),
                pixels=pixels, ids=ids, img=img, txt=txt)


@pytest.fixture(scope="module")
def b32_hf(tmp_path_factory):
    config = get_config("ViT-B/32")
    d = tmp_path_factory.mktemp("b32_hf")
    model = F.hf_model(config, seed=11)
    pixels, ids = F.random_inputs(config, TEXTS, N_IMAGES, seed=2)
    img, txt = F.hf_features(model, pixels, ids)
    F.save_hf_dir(model, str(d / "hf"))
    del model
    gc.collect()
    return dict(dir=str(d / "hf"), pixels=pixels, ids=ids, img=img, txt=txt)


@b32
def test_b32_openai_torchscript(b32_openai):
    r = b32_openai
    assert r["info"]["format"] == "openai-torchscript"
    assert r["info"]["checkpoint_dtype"] == "float16"
    img, txt = _features(r["config"], r["params"], r["pixels"], r["ids"])
    ei, et = F.max_rel_err(img, r["img"]), F.max_rel_err(txt, r["txt"])
    _report("ViT-B/32 openai TorchScript vs model.py", ei, et)
    assert ei <= RTOL and et <= RTOL


@b32
def test_b32_openai_state_dict_with_inferred_architecture(b32_openai):
    r = b32_openai
    with pytest.warns(UserWarning, match="quick GELU"):
        config, params, info = load(r["files"]["state_dict"])
    assert config == get_config("ViT-B/32") and info["config_source"] == "tensor shapes"
    img, txt = _features(config, params, r["pixels"], r["ids"])
    ei, et = F.max_rel_err(img, r["img"]), F.max_rel_err(txt, r["txt"])
    _report("ViT-B/32 openai state dict (inferred arch) vs model.py", ei, et)
    assert ei <= RTOL and et <= RTOL


@b32
def test_b32_hf_directory(b32_hf):
    r = b32_hf
    config, params, info = load(r["dir"])
    assert config.name == "ViT-B/32" and info["layout"] == "hf"
    img, txt = _features(config, params, r["pixels"], r["ids"])
    ei, et = F.max_rel_err(img, r["img"]), F.max_rel_err(txt, r["txt"])
    _report("ViT-B/32 HF directory vs transformers CLIPModel", ei, et)
    assert ei <= RTOL and et <= RTOL


# --- inverter entry points (ViT-B/32 weights) ---------------------------------------------


def _jit(name, config, dtype=jnp.float32):
    return jax.jit(functools.partial(getattr(clip_lib, name), config=config, dtype=dtype))


@b32
def test_pseudo_token_replacement_reproduces_encode_text(b32_openai):
    """The OTI template with the "£" embedding replaced by the embedding of a real word
    gives that sentence's feature (the same arithmetic in two compiled programs: equal to
    float32 rounding; the template's own feature, the control, differs by > 1e-2)."""
    config, params = b32_openai["config"], b32_openai["params"]
    tok = get_tokenizer()
    template = tok(["a photo of  £ "] * 3)
    words = ["cat", "dog", "airplane"]
    real = tok([f"a photo of {w}" for w in words])
    assert template[0, :6].tolist() == [49406, 320, 1125, 539, 1950, 49407]
    assert (real[:, 4] != 1950).all() and (real[:, [0, 1, 2, 3, 5]] == template[:, [0, 1, 2, 3, 5]]
                                           ).all()  # each word is one token
    eot = eot_indices(template)
    emb = _jit("embed_tokens", config)(params, jnp.asarray(template))
    word_emb = params["token_embedding"]["embedding"][jnp.asarray(real[:, 4])]
    emb = emb.at[:, 4].set(word_emb)
    pseudo = _jit("encode_text_embeddings", config)(params, emb, jnp.asarray(eot))
    direct = _jit("encode_text", config)(params, jnp.asarray(real), jnp.asarray(eot))
    # two compiled programs (lookup fused differently): float32 rounding, not bitwise
    assert F.max_rel_err(pseudo, direct) <= 1e-5
    # And it is not trivially equal: the template's own feature differs.
    plain = _jit("encode_text", config)(params, jnp.asarray(template), jnp.asarray(eot))
    assert F.max_rel_err(plain, direct) > 1e-2


@b32
def test_first_eot_plus_one_positions_give_the_full_feature(b32_openai):
    """Causal mask + EOT pooling: positions after the EOT never matter. Different sequence
    lengths change XLA's reduction blocking, so equality is to float32 rounding through 12
    layers (max rel err <= 1e-5; measured ~1.4e-6)."""
    config, params = b32_openai["config"], b32_openai["params"]
    ids = get_tokenizer()(["a photo of  £ ", "a dog on a red sofa", ""])
    eot = eot_indices(ids)
    length = int(eot.max()) + 1
    emb = _jit("embed_tokens", config)(params, jnp.asarray(ids))
    enc = _jit("encode_text_embeddings", config)
    full = np.asarray(enc(params, emb, jnp.asarray(eot)))
    short = np.asarray(enc(params, emb[:, :length], jnp.asarray(eot)))
    err = F.max_rel_err(short, full)
    print(f"\n[parity] EOT+1 truncation ({length} of 77 positions): max rel err {err:.2e}")
    assert err <= 1e-5
    # Garbage after the EOT changes nothing either (same shapes: bitwise).
    noisy = emb.at[:, length:].set(jax.random.normal(jax.random.PRNGKey(0),
                                                     emb[:, length:].shape))
    np.testing.assert_array_equal(np.asarray(enc(params, noisy, jnp.asarray(eot))), full)


@b32
def test_patch_tokens_entry_point_is_encode_image(b32_openai):
    config, params, pixels = b32_openai["config"], b32_openai["params"], b32_openai["pixels"]
    tokens = _jit("embed_image_patches", config)(params, jnp.asarray(pixels))
    assert tokens.shape == (N_IMAGES, config.vision.num_patches, config.vision.width)
    # encode_image runs the last block at the class token only: the same arithmetic as the
    # tokens entry point with pooled_only, and the all-rows forward to rounding. (Two
    # compiled programs: equal here, but fusion may round differently on another BLAS.)
    pooled = jax.jit(functools.partial(clip_lib.encode_image_tokens, config=config,
                                       pooled_only=True))(params, tokens)
    all_rows = _jit("encode_image_tokens", config)(params, tokens)
    direct = _jit("encode_image", config)(params, jnp.asarray(pixels))
    assert F.max_rel_err(np.asarray(pooled), np.asarray(direct)) < 1e-6
    assert F.max_rel_err(np.asarray(all_rows), np.asarray(direct)) < 1e-5


@b32
def test_bfloat16_compute_error(b32_openai):
    """bfloat16 matmuls (LayerNorm/softmax in float32, params float32): error vs float32
    is printed; the bound is loose (rel err < 5e-2, cosine > 0.995)."""
    r = b32_openai
    f32 = CLIP(r["config"], r["params"])
    bf16 = f32.with_dtype("bfloat16")
    for name, a, b in (("image", bf16.encode_image(r["pixels"]), f32.encode_image(r["pixels"])),
                       ("text", bf16.encode_text(r["ids"]), f32.encode_text(r["ids"]))):
        assert a.dtype == np.float32
        err = F.max_rel_err(a, b)
        cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        print(f"\n[parity] ViT-B/32 bfloat16 vs float32 {name}: max rel err {err:.2e}, "
              f"min cosine {cos.min():.5f}")
        assert err < 5e-2 and cos.min() > 0.995
    for leaf in jax.tree.leaves(bf16.params):
        assert leaf.dtype == jnp.float32


# --- ViT-L/14 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l14_openai(openai_model_module, tmp_path_factory):
    """model.py ViT-L/14 -> fp16 plain state dict (OpenAI's non-JIT format) -> JAX."""
    config = get_config("ViT-L/14")
    d = tmp_path_factory.mktemp("l14_openai")
    model = F.openai_model(openai_model_module, config, seed=20)
    F.round_to_fp16_(model)
    pixels, ids = F.random_inputs(config, TEXTS, N_IMAGES, seed=3)
    ref = F.openai_features(model, pixels, ids)
    torch.save(F.openai_state_dict(model, torch.float16), d / "ViT-L-14.pt")
    del model
    gc.collect()
    cfg, params, info = load("ViT-L/14", str(d / "ViT-L-14.pt"))
    out = _features(cfg, params, pixels, ids)
    (d / "ViT-L-14.pt").unlink()
    return dict(ref=ref, out=out, info=info)


@pytest.fixture(scope="module")
def l14_hf(tmp_path_factory):
    """transformers ViT-L/14 -> save_pretrained (safetensors) -> JAX, config inferred."""
    config = get_config("ViT-L/14")
    d = tmp_path_factory.mktemp("l14_hf")
    model = F.hf_model(config, seed=21)
    pixels, ids = F.random_inputs(config, TEXTS, N_IMAGES, seed=4)
    ref = F.hf_features(model, pixels, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F.save_hf_dir(model, str(d / "hf"))
    del model
    gc.collect()
    cfg, params, info = load(str(d / "hf"))
    out = _features(cfg, params, pixels, ids)
    return dict(ref=ref, out=out, info=info, config=cfg)


@l14
def test_l14_openai_fp16_state_dict(l14_openai):
    r = l14_openai
    assert r["info"]["checkpoint_dtype"] == "float16"
    ei, et = F.max_rel_err(r["out"][0], r["ref"][0]), F.max_rel_err(r["out"][1], r["ref"][1])
    _report("ViT-L/14 openai fp16 state dict vs model.py", ei, et)
    assert ei <= RTOL and et <= RTOL


@l14
def test_l14_hf_directory(l14_hf):
    r = l14_hf
    assert r["config"].name == "ViT-L/14" and r["info"]["format"] == "safetensors"
    ei, et = F.max_rel_err(r["out"][0], r["ref"][0]), F.max_rel_err(r["out"][1], r["ref"][1])
    _report("ViT-L/14 HF directory vs transformers CLIPModel", ei, et)
    assert ei <= RTOL and et <= RTOL
