"""OTI and OVI on a tiny PE-Core (``pe-core-tiny``): the pseudo tokens sit where the
family's own encoders put them, and the loss falls.

PE-Core's text side is CLIP's (open_clip's ``SimpleTokenizer``, context 32, causal tower
pooled at EOT): OTI's pseudo tokens replace the token embeddings of the placeholder
positions right after ``"a photo of"`` (SOT at 0), and truncating the context after EOT is
exact. OVI's pseudo tokens replace the patch convolution's output; the class token,
positions and 2D RoPE come after the expansion.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from crossgap_jax.inversion import expand_patch_tokens, oti, ovi, prepare_template
from crossgap_jax.models import create_clip
from crossgap_jax.models.families import family_of


@pytest.fixture(scope="module")
def bundle():
    return create_clip("pe-core-tiny", seed=1)


def _targets(b, n: int = 3):
    rng = np.random.default_rng(0)
    s = b.config.vision.image_size
    img = b.encode_image(rng.standard_normal((n, s, s, 3)).astype(np.float32))
    txt = b.encode_text(b.tokenize(["a dog on the beach", "two cats", "a red car"][:n]))
    return img, txt


def _check_decreasing(losses: np.ndarray) -> None:
    assert np.isfinite(losses).all()
    assert losses[-1].mean() < losses[0].mean() - 1e-3, (losses[0].mean(), losses[-1].mean())


@pytest.mark.slow  # ~15 s: two OTI compilations (truncated and full context)
def test_oti_places_tokens_after_the_template(bundle):
    img, _ = _targets(bundle)
    res = oti(bundle, img, steps=25, num_tokens=2, learning_rate=5e-2, batch_size=4)
    _check_decreasing(res.losses)
    tpl = prepare_template("a photo of {}", 2, bundle.tokenizer)
    # SOT, "a", "photo", "of", then the two pseudo tokens, EOT.
    assert tpl.placeholder_index == 4 and tpl.eot_index == 6
    assert tpl.ids.shape[-1] == bundle.config.text.context_length == 32
    fam = family_of(bundle.config)
    assert fam.CAUSAL_TEXT
    emb = np.array(fam.embed_tokens(bundle.params, jnp.asarray(tpl.ids), config=bundle.config))
    emb = np.repeat(emb[None], 3, axis=0)
    emb[:, 4:6] = res.pseudo_tokens
    want = fam.encode_text_embeddings(bundle.params, jnp.asarray(emb),
                                      np.full((3,), 6, np.int32), config=bundle.config)
    np.testing.assert_allclose(res.features, np.asarray(want), rtol=1e-4, atol=1e-5)
    full = oti(bundle, img, steps=25, num_tokens=2, learning_rate=5e-2, batch_size=4,
               truncate=False)
    np.testing.assert_allclose(res.features, full.features, rtol=1e-4, atol=1e-5)


def test_ovi_expands_patch_tokens(bundle):
    _, txt = _targets(bundle)
    res = ovi(bundle, txt, steps=25, num_tokens=1, learning_rate=5e-2, batch_size=4)
    _check_decreasing(res.losses)
    assert res.pseudo_tokens.shape == (3, 1, bundle.config.vision.width)
    expanded = expand_patch_tokens(jnp.asarray(res.pseudo_tokens),
                                   bundle.config.vision.num_patches)
    want = bundle.fns.encode_image_tokens(bundle.params, expanded)
    np.testing.assert_allclose(res.features, np.asarray(want), rtol=1e-4, atol=1e-5)
