"""OTI and OVI through the bundle API on tiny configs of each non-OpenAI backbone family:
SigLIP (no class token, non-causal text pooled at the last position, SentencePiece),
SLIP (timm ViT with class token + CLIP text) and OpenCLIP-style CLIP with exact GELU
(``tiny-gelu``, the activation of the ``ViT-B-32`` / ``ViT-L-14`` open_clip configs), and
SigLIP 2 (``siglip2-tiny``: SigLIP's graph with a Gemma tokenizer that pads with ``<pad>``).

Each run optimises a few steps and must lower the loss; the placement of the pseudo tokens
is checked against the family's own encoders.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from support import family_factories as F

from crossgap_jax.inversion import expand_patch_tokens, oti, ovi, prepare_template
from crossgap_jax.models import create_clip
from crossgap_jax.models.families import family_of


@pytest.fixture(scope="module")
def spiece(tmp_path_factory) -> str:
    pytest.importorskip("sentencepiece")
    return F.train_spiece(str(tmp_path_factory.mktemp("sp") / "spiece.model"))


@pytest.fixture(scope="module")
def gemma_json(tmp_path_factory) -> str:
    pytest.importorskip("tokenizers")
    return F.train_gemma_json(str(tmp_path_factory.mktemp("gj") / "tokenizer.json"))


# SigLIP (the most different family) stays in the fast lane; SLIP and OpenCLIP-GELU cost
# ~70 CPU-s of compilation together and run in CI (make test).
@pytest.fixture(scope="module", params=[
    "siglip-tiny",
    pytest.param("slip-tiny", marks=pytest.mark.slow),
    pytest.param("tiny-gelu", marks=pytest.mark.slow),
    pytest.param("siglip2-tiny", marks=pytest.mark.slow),
])
def bundle(request, spiece, gemma_json):
    b = create_clip(request.param, seed=1)
    if b.config.family == "siglip":
        gemma = b.config.text_tokenizer == "gemma"
        b = dataclasses.replace(b, tokenizer_file=gemma_json if gemma else spiece)
    return b


def _targets(b, n: int = 3):
    rng = np.random.default_rng(0)
    s = b.config.vision.image_size
    img = b.encode_image(rng.standard_normal((n, s, s, 3)).astype(np.float32))
    txt = b.encode_text(b.tokenize(["a dog on the beach", "two cats", "a red car"][:n]))
    return img, txt


def _check_decreasing(losses: np.ndarray) -> None:
    assert np.isfinite(losses).all()
    first, last = losses[0].mean(), losses[-1].mean()
    assert last < first - 1e-3, (first, last)


def test_oti_decreases_and_places_tokens(bundle):
    img, _ = _targets(bundle)
    res = oti(bundle, img, steps=25, num_tokens=2, learning_rate=5e-2, batch_size=4)
    _check_decreasing(res.losses)
    assert res.pseudo_tokens.shape == (3, 2, bundle.config.text.width)
    # Recompute the feature with the family's encoder over the full context.
    fam = family_of(bundle.config)
    tpl = prepare_template("a photo of {}", 2, bundle.tokenizer)
    emb = np.array(fam.embed_tokens(bundle.params, jnp.asarray(tpl.ids), config=bundle.config))
    emb = np.repeat(emb[None], 3, axis=0)
    emb[:, tpl.placeholder_index: tpl.placeholder_index + 2] = res.pseudo_tokens
    pool = np.full((3,), tpl.eot_index, np.int32)
    want = fam.encode_text_embeddings(bundle.params, jnp.asarray(emb), pool,
                                      config=bundle.config)
    np.testing.assert_allclose(res.features, np.asarray(want), rtol=1e-4, atol=1e-5)
    if bundle.config.family == "siglip":
        assert tpl.eot_index == bundle.config.text.context_length - 1
        assert not fam.CAUSAL_TEXT
        # The template as the tokenizer frames any text: pieces, EOS, then pad ids up to
        # the pooled last position (SigLIP pads with EOS 1, SigLIP 2 with <pad> 0).
        n = tpl.placeholder_index + 2
        tail = tpl.ids[n:]
        assert tail[0] == bundle.tokenizer.eot_token_id
        assert (tail[1:] == bundle.config.text_pad_id).all()
    # Context truncation after EOT: exact for the causal towers, skipped for SigLIP.
    full = oti(bundle, img, steps=25, num_tokens=2, learning_rate=5e-2, batch_size=4,
               truncate=False)
    np.testing.assert_allclose(res.features, full.features, rtol=1e-4, atol=1e-5)


def test_ovi_decreases_and_expands_patches(bundle):
    _, txt = _targets(bundle)
    p = 4 if bundle.config.family == "siglip" else 1
    res = ovi(bundle, txt, steps=25, num_tokens=p, learning_rate=5e-2, batch_size=4)
    _check_decreasing(res.losses)
    assert res.pseudo_tokens.shape == (3, p, bundle.config.vision.width)
    expanded = expand_patch_tokens(jnp.asarray(res.pseudo_tokens), bundle.config.vision.num_patches)
    want = bundle.fns.encode_image_tokens(bundle.params, expanded)
    np.testing.assert_allclose(res.features, np.asarray(want), rtol=1e-4, atol=1e-5)
