"""SigLIP 2 (fixed resolution) as an architecture of the SigLIP family: the Gemma tokenizer
(big_vision's framing: pieces, ``<eos>``, ``<pad>`` padding, no BOS), config detection from
transformers / big_vision checkpoints, and a tiny transformers-layout directory loaded end to
end (features vs transformers' ``SiglipModel``).

Real-size parity is in ``test_siglip2_parity.py``; OTI/OVI in
``test_siglip_slip_openclip_inversion.py``.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from support import family_factories as F

from crossgap_jax.inversion import prepare_template
from crossgap_jax.models import create_clip, load_clip
from crossgap_jax.models.configs import get_config
from crossgap_jax.models.siglip import model as siglip
from crossgap_jax.models.siglip.convert import config_from_hf, match_registered
from crossgap_jax.models.siglip.gemma_tokenizer import GemmaTokenizer, clean_text
from crossgap_jax.models.siglip.tokenizer import canonicalize_text

pytest.importorskip("tokenizers")
pytest.importorskip("sentencepiece")

TEXTS = F.captions(200, seed=2) + [
    "Hello, World!!  multiple   spaces", "UPPER case £ pound", "", "a " * 40,
    "A PHOTO OF A DOG.", "ÉCOLE Straße", "price: £5.99 (approx.)",
]
CTX = 16


@pytest.fixture(scope="module")
def gemma_json(tmp_path_factory) -> str:
    return F.train_gemma_json(str(tmp_path_factory.mktemp("gj") / "tokenizer.json"))


@pytest.fixture(scope="module")
def gemma_json_split_pound(tmp_path_factory) -> str:
    return F.train_gemma_json(str(tmp_path_factory.mktemp("gj2") / "tokenizer.json"),
                              pound_piece=False)


@pytest.fixture(scope="module")
def gemma_model(tmp_path_factory) -> str:
    return F.train_gemma_spiece(str(tmp_path_factory.mktemp("gm") / "tokenizer.model"))


def _expected(ids: list[int], ctx: int = CTX) -> list[int]:
    """big_vision's tok(bos="no", eos="sticky") with Gemma's pad: pieces, <eos> (1), <pad> (0)."""
    ids = ids[: ctx - 1] + [1]
    return ids + [0] * (ctx - len(ids))


# --- tokenizer --------------------------------------------------------------------------
def test_json_tokenizer_framing(gemma_json):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(gemma_json)
    tok = GemmaTokenizer(gemma_json, CTX)
    assert (tok.eot_token_id, tok.pad_token_id) == (1, 0)
    got = tok(TEXTS)
    assert got.dtype == np.int32 and got.shape == (len(TEXTS), CTX)
    for t, row in zip(TEXTS, got):
        # The file's post-processor adds <bos> (id 2); SigLIP 2 is tokenised without it.
        want = raw.encode(canonicalize_text(t)).ids
        assert want[:1] == [2]
        assert list(row) == _expected(want[1:]), t
    assert 2 not in got
    # Pieces of a short text, by name: no dummy prefix on the first word.
    row = tok(["A photo of a Dog!"])[0]
    assert [raw.id_to_token(int(i)) for i in row[:7]] == [
        "a", "\u2581photo", "\u2581of", "\u2581a", "\u2581dog", "<eos>", "<pad>"]


def test_sentencepiece_tokenizer_framing(gemma_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=gemma_model)
    tok = GemmaTokenizer(gemma_model, CTX)
    got = tok(TEXTS)
    for t, row in zip(TEXTS, got):
        want = sp.encode(canonicalize_text(t), add_eos=True)  # big_vision's to_int(eos=True)
        if len(want) > CTX:  # "sticky": truncated, the EOS kept last
            want = want[: CTX - 1] + [want[-1]]
        assert list(row) == want + [0] * (CTX - len(want)), t
    assert sp.id_to_piece(int(tok(["a dog"])[0][0])) == "a"  # add_dummy_prefix false


def test_truncation_keeps_eos(gemma_json):
    tok = GemmaTokenizer(gemma_json, 8)
    row = tok(["a dog " * 20])[0]
    assert row[-1] == 1 and 0 not in row


def test_clean_modes(gemma_json):
    assert clean_text("A Dog, SITTING!  École", "lower") == "a dog, sitting!  École"
    assert clean_text("A Dog, SITTING!  École", "canonicalize") == "a dog sitting école"
    low = GemmaTokenizer(gemma_json, CTX, clean="lower")
    can = GemmaTokenizer(gemma_json, CTX)
    assert list(low(["A Dog"])[0]) == list(can(["a dog"])[0])
    assert list(low(["a dog!"])[0]) != list(can(["a dog!"])[0])  # "!" kept by "lower"
    with pytest.raises(ValueError, match="canonicalize"):
        GemmaTokenizer(gemma_json, CTX, clean="none")


def test_not_a_gemma_vocabulary(tmp_path):
    t5 = F.train_spiece(str(tmp_path / "spiece.model"))  # T5 ids: no <eos> / <pad> pieces
    with pytest.raises(ValueError, match="not a Gemma vocabulary"):
        GemmaTokenizer(t5, CTX)
    with pytest.raises(FileNotFoundError):
        GemmaTokenizer(str(tmp_path / "nope.json"), CTX)


@pytest.mark.parametrize("which", ["gemma_json", "gemma_json_split_pound", "gemma_model"])
@pytest.mark.parametrize("r", [1, 3])
def test_template_placeholders(which, r, request):
    """The template equals ordinary tokenisation of the sentence, where each placeholder is
    one piece: ``▁£`` if the vocabulary has it, else the pair (``▁``, ``£``) becomes ``£``."""
    tok = GemmaTokenizer(request.getfixturevalue(which), CTX)
    tpl = prepare_template("a photo of {} on the beach", r, tok)
    pid = tok.placeholder_id("£")
    plain = tok.encode(tpl.text)
    split = which == "gemma_json_split_pound"
    space = tok.backend.piece_id("\u2581")
    head = tok.encode("a photo of")
    if split:  # ordinary tokenisation: "▁", "£" per placeholder
        assert plain[len(head): len(head) + 2 * r] == [space, pid] * r
        plain = head + [pid] * r + plain[len(head) + 2 * r:]
    assert list(tpl.ids) == _expected(plain)
    assert tpl.placeholder_index == len(head)
    assert tpl.eot_index == CTX - 1  # pooled at the last position (a <pad> here)
    assert tok.backend.piece_id("\u2581£" if not split else "£") == pid


# --- configs ----------------------------------------------------------------------------
def test_registered_names():
    cfg = get_config("ViT-B-16-SigLIP2")  # open_clip's spelling
    assert cfg is get_config("SigLIP2-ViT-B-16")
    assert (cfg.family, cfg.text_tokenizer, cfg.text_pad_id) == ("siglip", "gemma", 0)
    assert (cfg.text.vocab_size, cfg.text.context_length, cfg.text.eot_token_id) == (256000,
                                                                                      64, 1)
    assert cfg.vision == get_config("SigLIP-ViT-B-16").vision
    assert siglip.preprocess_options(cfg) == siglip.preprocess_options(
        get_config("SigLIP-ViT-B-16"))


def test_config_from_hf_detects_siglip2():
    transformers = pytest.importorskip("transformers")
    hf = transformers.SiglipConfig(text_config={"vocab_size": 256000}).to_dict()
    assert hf["model_type"] == "siglip"  # SigLIP 2 fixed-res checkpoints are SiglipModel
    declared = config_from_hf(hf)
    assert match_registered(declared) == "SigLIP2-ViT-B-16"
    assert config_from_hf(hf, tokenizer_class="GemmaTokenizerFast").text_tokenizer == "gemma"
    assert config_from_hf(hf, tokenizer_class="SiglipTokenizer").text_tokenizer == \
        "sentencepiece"
    v1 = config_from_hf(transformers.SiglipConfig().to_dict())
    assert match_registered(v1) == "SigLIP-ViT-B-16"
    pre = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2}
    assert config_from_hf(hf, pre).interpolation == "bilinear"


def test_config_from_big_vision_shapes():
    """big_vision's siglip2_b16_224.npz names and shapes (zero-stride arrays, no memory)."""
    from crossgap_jax.models.siglip.big_vision import config_from_big_vision

    z = lambda *s: np.broadcast_to(np.float32(0), s)
    a = {"params/img/embedding/kernel": z(16, 16, 3, 768),
         "params/img/pos_embedding": z(1, 196, 768),
         "params/txt/Embed_0/embedding": z(256000, 768),
         "params/txt/pos_embedding": z(1, 64, 768),
         "params/txt/head/kernel": z(768, 768)}
    for i in range(12):
        for t, enc in (("img", "Transformer"), ("txt", "Encoder_0")):
            blk = f"params/{t}/{enc}/encoderblock_{i}"
            a[f"{blk}/MultiHeadDotProductAttention_0/query/kernel"] = z(768, 12, 64)
            a[f"{blk}/MlpBlock_0/Dense_0/kernel"] = z(768, 3072)
    assert match_registered(config_from_big_vision(a)) == "SigLIP2-ViT-B-16"


def test_pad_token_ids_pads_with_pad():
    cfg = get_config("siglip2-tiny")
    out = siglip.pad_token_ids(np.array([[5, 6, 1]]), cfg)
    assert list(out[0]) == [5, 6, 1] + [0] * 13


def test_tokenizer_ids_must_match_config(tmp_path):
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.add_special_tokens(["<unk>", "<eos>", "<pad>"])  # <eos> 1, <pad> 2: not Gemma's ids
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    with pytest.raises(ValueError, match="differ from siglip2-tiny"):
        siglip.get_tokenizer(get_config("siglip2-tiny"), path)
    with pytest.raises(ValueError, match="tokenizer.json"):
        create_clip("siglip2-tiny").tokenize(["a dog"])


# --- a tiny transformers directory, loaded end to end ------------------------------------
def test_load_hf_directory(gemma_json, tmp_path):
    torch = pytest.importorskip("torch")
    hf = F.hf_siglip(vocab_size=512, tiny=True)
    folder = F.save_hf_siglip_dir(hf, str(tmp_path / "siglip2"))
    shutil.copy(gemma_json, os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GemmaTokenizer"}, f)
    with open(os.path.join(folder, "config.json")) as f:
        assert "text_model.embeddings.token_embedding.weight" not in f.read()
    b = load_clip(folder)
    assert b.config.name == "siglip2-tiny" and b.config.text_tokenizer == "gemma"
    assert b.info["tokenizer_file"].endswith("tokenizer.json")
    ids = b.tokenize(TEXTS[:5])
    np.testing.assert_array_equal(ids, GemmaTokenizer(gemma_json, CTX)(TEXTS[:5]))
    with torch.no_grad():
        want_t = hf.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64))
                                      ).pooler_output.numpy()
        pixels = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
        want_i = hf.get_image_features(pixel_values=torch.from_numpy(
            pixels.transpose(0, 3, 1, 2).copy())).pooler_output.numpy()
    np.testing.assert_allclose(b.encode_text(ids), want_t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.encode_image(pixels), want_i, rtol=1e-5, atol=1e-5)
    # Short ids are padded with <pad> (0), as the tokenizer pads.
    np.testing.assert_allclose(b.encode_text(ids[:, :8]), b.encode_text(
        np.where(np.arange(CTX) < 8, ids, 0)), rtol=1e-6, atol=1e-6)


def test_pretrained_tag_offline(monkeypatch, tmp_path):
    from crossgap_jax.models.checkpoint.errors import CheckpointNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError, match="google/siglip2-base-patch16-224"):
        load_clip("ViT-B-16-SigLIP2", pretrained="webli", cache_dir=str(tmp_path))


def test_big_vision_npz_with_gemma_tokenizer(gemma_json, tmp_path):
    """A big_vision ``.npz`` of a SigLIP 2-shaped model with its tokenizer beside it."""
    from crossgap_jax.models.siglip.big_vision import params_to_big_vision

    ref = create_clip("siglip2-tiny", seed=3)
    path = str(tmp_path / "siglip2_tiny.npz")
    np.savez(path, **params_to_big_vision(ref.params, ref.config))
    shutil.copy(gemma_json, tmp_path / "tokenizer.json")
    b = load_clip("siglip2-tiny", checkpoint=path)
    assert b.info["layout"] == "big_vision" and b.info["tokenizer_file"].endswith(
        "tokenizer.json")
    ids = b.tokenize(TEXTS[:4])
    assert (ids[:, -1] == 0).all()
    np.testing.assert_allclose(b.encode_text(ids), ref.encode_text(ids), rtol=1e-6, atol=1e-6)
