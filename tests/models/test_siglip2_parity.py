"""SigLIP 2 B/16 (``google/siglip2-base-patch16-224``) at real size with random weights vs
transformers' ``SiglipModel`` with that checkpoint's configuration (256k Gemma vocabulary,
64 text positions).

LayerNorms and biases are perturbed (``family_factories.perturb_``). The state dict has the
real tensor names and shapes and goes through the strict conversion check against the
registered ``SigLIP2-ViT-B-16``. One forward per tower, batch 2; text ids drawn across the
whole vocabulary and framed as the Gemma tokenizer frames them (pieces, ``<eos>`` 1,
``<pad>`` 0). Tolerance: relative max-abs error <= 1e-4.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from support import family_factories as F

from crossgap_jax.models.configs import get_config
from crossgap_jax.models.siglip import model as siglip
from crossgap_jax.models.siglip.convert import hf_state_dict_to_params

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # ~375M parameters: a minute on a 2-core CPU

RTOL = 1e-4
CFG = get_config("ViT-B-16-SigLIP2")


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_siglip2_b16_parity():
    torch.set_num_threads(2)
    hf = F.hf_siglip(vocab_size=256000)
    assert hf.config.text_config.max_position_embeddings == 64
    sd = F.hf_state_dict(hf)
    assert sd["text_model.embeddings.token_embedding.weight"].shape == (256000, 768)
    params = jax.device_put(hf_state_dict_to_params(sd, CFG))
    del sd
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    ids = np.zeros((2, 64), np.int32)
    ids[0, :9] = rng.integers(4, 256000, 9)
    ids[0, 9] = 1
    ids[1, :63] = rng.integers(4, 256000, 63)
    ids[1, 63] = 1  # a truncated text: <eos> kept last ("sticky")
    with torch.no_grad():
        want_i = hf.get_image_features(pixel_values=torch.from_numpy(
            pixels.transpose(0, 3, 1, 2).copy())).pooler_output.numpy()
        want_t = hf.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64))
                                      ).pooler_output.numpy()
    pool = np.full((2,), 63, np.int32)
    got_i = np.asarray(jax.jit(lambda p, x: siglip.encode_image(p, x, config=CFG))(params,
                                                                                   pixels))
    got_t = np.asarray(jax.jit(lambda p, x: siglip.encode_text(p, x, pool, config=CFG))(params,
                                                                                        ids))
    assert got_i.shape == got_t.shape == (2, 768)
    assert rel_err(got_i, want_i) <= RTOL, rel_err(got_i, want_i)
    assert rel_err(got_t, want_t) <= RTOL, rel_err(got_t, want_t)
