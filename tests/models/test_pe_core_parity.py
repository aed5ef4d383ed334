"""PE-Core B/16 at real size (image 224, width 768 x 12; text 1024 x 24, context 32) with
random weights vs an independent PyTorch reference.

The reference (``support/pe_core_torch.py``) is written from perception_models'
``core/vision_encoder/pe.py`` / ``rope.py`` with that repository's state-dict names: its
``state_dict()`` is a ``PE-Core-B16-224.pt``. (open_clip and timm need torchvision, which
does not import beside the CPU torch wheel.) The state dict is converted in memory (no
1.8 GB file) through the perception_models -> open_clip renaming and the fit check that a
load runs. Tolerance: relative max-abs error <= 1e-4. One forward per tower (plus the
pre-projection features IsoCLIP reads), batch 2.
"""

from __future__ import annotations

import gc

import jax.numpy as jnp
import numpy as np
import pytest

from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.configs import get_config
from crossgap_jax.models.pe_core import convert as C
from crossgap_jax.models.pe_core import model as M

torch = pytest.importorskip("torch")
from support.pe_core_torch import PECoreTorch, randomize  # noqa: E402

pytestmark = pytest.mark.slow  # ~450M parameters

RTOL = 1e-4


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def b16():
    torch.set_num_threads(2)
    config = get_config("PE-Core-B-16")
    ref = randomize(PECoreTorch(), seed=0).eval()
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    ids = np.zeros((2, 32), np.int64)
    ids[0, :7] = [49406, 320, 1125, 539, 320, 1929, 49407]
    ids[1, :32] = np.r_[49406, rng.integers(300, 40000, 30), 49407]  # full context
    with torch.no_grad():
        x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
        t = torch.from_numpy(ids)
        want = {"image": ref.encode_image(x).numpy(),
                "image_pre": ref.visual.pooled(x, with_mlp=False).numpy(),
                "text": ref.encode_text(t).numpy(), "text_pre": ref.text_preproj(t).numpy()}
    sd, unexpected = C.pe_to_open_clip({k: v.numpy() for k, v in ref.state_dict().items()})
    del ref
    gc.collect()
    assert unexpected == []
    flat, names, unknown = C.state_dict_to_flat(sd)
    params = check_fit(flat, config, names=names, unexpected=unknown)
    del sd, flat
    gc.collect()
    return config, params, pixels, ids.astype(np.int32), want


def test_b16_image_parity(b16):
    config, params, pixels, _, want = b16
    got = M.encode_image(params, jnp.asarray(pixels), config=config)
    assert got.shape == (2, 1024)
    assert rel_err(got, want["image"]) < RTOL
    pre = M.encode_image_preproj(params, jnp.asarray(pixels), config=config)
    assert rel_err(pre, want["image_pre"]) < RTOL


def test_b16_text_parity(b16):
    config, params, _, ids, want = b16
    eot = np.argmax(ids, axis=-1).astype(np.int32)
    got = M.encode_text(params, jnp.asarray(ids), jnp.asarray(eot), config=config)
    assert got.shape == (2, 1024)
    assert rel_err(got, want["text"]) < RTOL
    pre = M.encode_text_preproj(params, jnp.asarray(ids), jnp.asarray(eot), config=config)
    assert rel_err(pre, want["text_pre"]) < RTOL
