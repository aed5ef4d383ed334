"""SigLIP family: tokenizer (vs transformers' SiglipTokenizer), checkpoint loading (HF
directory, big_vision .npz), preprocessing, and tiny-model parity with transformers.

Real-size parity is in ``test_siglip_parity.py``; OTI/OVI in
``test_siglip_slip_openclip_inversion.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from support import family_factories as F

from crossgap_jax.inversion import prepare_template
from crossgap_jax.models import CheckpointError, load_clip
from crossgap_jax.models.configs import get_config
from crossgap_jax.models.siglip.tokenizer import SigLIPTokenizer, canonicalize_text

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

TEXTS = F.captions(300, seed=1) + [
    "Hello, World!!  multiple   spaces", "UPPER case £ pound", "", "   ", "a " * 80,
    "unknown ∂ chars ☃ here", "tab\tnew\nline", "▁ underscore-like ▁x", "don't stop",
    "A PHOTO OF A DOG.", "£££", "price: £5.99 (approx.)",
]


@pytest.fixture(scope="module")
def spiece(tmp_path_factory) -> str:
    return F.train_spiece(str(tmp_path_factory.mktemp("sp") / "spiece.model"))


@pytest.fixture(scope="module")
def spiece_split_pound(tmp_path_factory) -> str:
    return F.train_spiece(str(tmp_path_factory.mktemp("sp2") / "spiece.model"),
                          pound_piece=False)


@pytest.fixture(scope="module")
def tiny_hf(spiece):
    assert SigLIPTokenizer(spiece, 16).vocab_size <= 512
    return F.hf_siglip(vocab_size=512, tiny=True)  # the "siglip-tiny" shapes


@pytest.fixture(scope="module")
def tiny_dir(tiny_hf, spiece, tmp_path_factory) -> str:
    return F.save_hf_siglip_dir(tiny_hf, str(tmp_path_factory.mktemp("siglip_hf")), spiece)


@pytest.fixture(scope="module")
def tiny_bundle(tiny_dir):
    return load_clip(tiny_dir)


# --- tokenizer --------------------------------------------------------------------------
def test_canonicalize():
    assert canonicalize_text("  A Photo, of   a DOG! ") == "a photo of a dog"
    assert canonicalize_text("£5.99") == "£599"  # ASCII punctuation only


@pytest.mark.parametrize("which", ["spiece", "spiece_split_pound"])
def test_tokenizer_matches_transformers(which, request):
    path = request.getfixturevalue(which)
    ours = SigLIPTokenizer(path, context_length=16)
    hf = transformers.SiglipTokenizer(path, model_max_length=16)
    want = hf(TEXTS, padding="max_length", truncation=True, max_length=16)["input_ids"]
    got = ours(TEXTS)
    assert got.dtype == np.int32 and got.shape == (len(TEXTS), 16)
    for t, a, b in zip(TEXTS, got, want):
        assert list(a) == list(b), t


def test_tokenizer_layout(spiece):
    tok = SigLIPTokenizer(spiece, context_length=16)
    assert tok.eot_token_id == tok.pad_token_id == 1  # T5 ids: </s> = 1, pads with </s>
    ids = tok(["a dog", "a " * 40])
    n = len(tok.encode("a dog"))
    assert ids[0, n] == 1 and (ids[0, n:] == 1).all()
    assert ids[1, -1] == 1 and (ids[1, :-1] != 1).all()  # truncated, EOS kept last
    np.testing.assert_array_equal(tok.pool_indices(ids), [15, 15])


@pytest.mark.parametrize("which", ["spiece", "spiece_split_pound"])
@pytest.mark.parametrize("r", [1, 3])
def test_template_placeholders(which, r, request):
    tok = SigLIPTokenizer(request.getfixturevalue(which), context_length=16)
    tpl = prepare_template("a photo of {}", r, tok)
    pid = tok.placeholder_id("£")
    assert tok.sp.id_to_piece(pid) == ("▁£" if which == "spiece" else "£")
    head = tok.encode("a photo of")
    np.testing.assert_array_equal(tpl.ids[: len(head)], head)
    assert tpl.placeholder_index == len(head)
    assert (tpl.ids[len(head): len(head) + r] == pid).all()
    assert tpl.ids[len(head) + r] == tok.eot_token_id
    assert tpl.eot_index == 15  # SigLIP pools the last position
    if which == "spiece":  # the piece "▁£" exists: ordinary tokenisation agrees
        np.testing.assert_array_equal(tpl.ids, tok([tpl.text])[0])


def test_template_too_long(spiece):
    tok = SigLIPTokenizer(spiece, context_length=8)
    with pytest.raises(ValueError, match="does not fit"):
        prepare_template("a photo of {}", 6, tok)


def test_missing_spiece_message(tmp_path):
    with pytest.raises(FileNotFoundError):
        SigLIPTokenizer(str(tmp_path / "nope.model"))


# --- loading and tiny parity -----------------------------------------------------------
def _hf_text(model, ids):
    with torch.no_grad():
        return model.get_text_features(input_ids=torch.from_numpy(np.asarray(ids, np.int64))
                                       ).pooler_output.numpy()


def _hf_image(model, pixels):
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        return model.get_image_features(pixel_values=x).pooler_output.numpy()


def test_load_hf_directory(tiny_bundle, tiny_hf, tiny_dir, spiece):
    b = tiny_bundle
    assert b.config.family == "siglip" and b.config.name == "siglip-tiny"
    assert b.info["layout"] == "hf" and b.info["tokenizer_file"].endswith("spiece.model")
    hf_tok = transformers.SiglipTokenizer(spiece, model_max_length=16)
    texts = TEXTS[:6]
    ids = b.tokenize(texts)
    np.testing.assert_array_equal(
        ids, hf_tok(texts, padding="max_length", truncation=True, max_length=16)["input_ids"])
    np.testing.assert_allclose(b.encode_text(ids), _hf_text(tiny_hf, ids), rtol=1e-5,
                               atol=1e-5)
    pixels = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(b.encode_image(pixels), _hf_image(tiny_hf, pixels), rtol=1e-5,
                               atol=1e-5)
    # By architecture name too; a different architecture is refused.
    b2 = load_clip("siglip-tiny", checkpoint=tiny_dir)
    assert b2.config == b.config
    with pytest.raises(CheckpointError, match="different architecture"):
        load_clip("SigLIP-ViT-B-16", checkpoint=tiny_dir)


def test_patch_tokens_are_conv_output(tiny_bundle, tiny_hf):
    """OVI replaces exactly the patch-conv output (bias included, no positions)."""
    pixels = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ours = np.asarray(tiny_bundle.fns.embed_image_patches(tiny_bundle.params, pixels))
    with torch.no_grad():
        x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
        ref = tiny_hf.vision_model.embeddings.patch_embedding(x).flatten(2).transpose(1, 2)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_preprocess_matches_transformers(tiny_bundle):
    from PIL import Image
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in ((50, 80), (32, 32), (97, 41))]
    ours = tiny_bundle.preprocess(images)
    proc = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    ref = proc(images, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    assert ours.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_big_vision_roundtrip_and_scan(tiny_bundle, tmp_path, spiece):
    from crossgap_jax.models.siglip.big_vision import big_vision_to_params, params_to_big_vision

    cfg = tiny_bundle.config
    bv = params_to_big_vision(tiny_bundle.params, cfg)
    path = str(tmp_path / "siglip.npz")
    np.savez(path, **bv)
    b = load_clip(path, tokenizer=spiece)
    assert b.info["layout"] == "big_vision" and b.config.name == "siglip-tiny"
    ids = b.tokenize(TEXTS[:4])
    np.testing.assert_allclose(b.encode_text(ids), tiny_bundle.encode_text(ids), rtol=1e-6,
                               atol=1e-6)
    # scan=True layout: one "encoderblock" with the layers stacked on a leading axis.
    scanned = {}
    for k, v in bv.items():
        if "/encoderblock_" in k:
            tower_enc, rest = k.split("/encoderblock_")
            i, leaf = rest.split("/", 1)
            scanned.setdefault(f"{tower_enc}/encoderblock/{leaf}", {})[int(i)] = v
        else:
            scanned[k] = v
    scanned = {k: (np.stack([v[i] for i in sorted(v)]) if isinstance(v, dict) else v)
               for k, v in scanned.items()}
    p2 = big_vision_to_params(scanned, cfg)
    import jax

    for a, c in zip(jax.tree.leaves(p2), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_conversion_errors(tiny_hf):
    from crossgap_jax.models.siglip.convert import hf_state_dict_to_params

    sd = F.hf_state_dict(tiny_hf)
    cfg = get_config("siglip-tiny")
    bad = dict(sd)
    del bad["vision_model.head.probe"]
    bad["text_model.extra.weight"] = np.zeros((2, 2), np.float32)
    bad["text_model.head.weight"] = np.zeros((3, 64), np.float32)
    with pytest.raises(CheckpointError) as e:
        hf_state_dict_to_params(bad, cfg)
    msg = str(e.value)
    assert "vision_model/head/probe" in msg and "text_model.extra.weight" in msg
    assert "text_model.head.weight (text_model/head/kernel): checkpoint (64, 3)" in msg


def test_no_tokenizer_message(tiny_bundle, tmp_path):
    import dataclasses

    b = dataclasses.replace(tiny_bundle, tokenizer_file=None)
    with pytest.raises(ValueError, match="spiece.model"):
        b.tokenize(["a dog"])
    # Encoding ids needs no tokenizer: pooling is at the last position.
    ids = np.ones((2, 16), np.int32)
    assert b.encode_text(ids).shape == (2, 64)


def test_detect_family(tiny_dir, tmp_path):
    from crossgap_jax.models.checkpoint.loader import detect_family

    assert detect_family(tiny_dir) == "siglip"
    os.makedirs(tmp_path / "empty")
    assert detect_family(str(tmp_path / "empty")) == "clip"


def test_pretrained_tag_offline(monkeypatch, tmp_path):
    from crossgap_jax.models.checkpoint.errors import CheckpointNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError, match="google/siglip-base-patch16-224"):
        load_clip("SigLIP-ViT-B-16", checkpoint="webli", cache_dir=str(tmp_path))
