"""SLIP at real size with random weights vs a PyTorch reference.

The reference (``family_factories.slip_reference``) is SLIP's ``models.py`` structure: a
ViT with timm's ``VisionTransformer`` state-dict names and semantics (written in the test
module: timm itself needs torchvision, which is not usable beside the CPU torch wheel)
plus OpenAI's ``clip/model.py`` text ``Transformer`` (an independent implementation).
Weights random, LayerNorms and biases perturbed. Tolerance: relative max-abs error <= 1e-4.

B/16 goes through a real SLIP-format ``.pt`` file (``module.`` keys, ``args`` namespace,
SimCLR head) and ``load_clip``. L/16 (~340M parameters) converts the state dict in memory
(no 1.4 GB file): ~35 s and ~3.2 GB peak RSS on two cores.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from support import family_factories as F

from crossgap_jax.models import load_clip
from crossgap_jax.models.configs import get_config

torch = pytest.importorskip("torch")

# Real-size models (~100M-340M parameters): minutes on a 2-core CPU, outside `make test-fast`.
pytestmark = pytest.mark.slow

RTOL = 1e-4


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def _inputs(n_img: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(-2, 2, (n_img, 224, 224, 3)).astype(np.float32)
    return pixels


def _reference(ref, pixels, ids):
    with torch.no_grad():
        img = ref.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()
        txt = ref.encode_text(torch.from_numpy(ids.astype(np.int64))).numpy()
    return img, txt


@pytest.fixture(scope="module")
def b16(openai_model_module, tmp_path_factory):
    torch.set_num_threads(2)
    ref = F.slip_reference(openai_model_module, 768, 12, 12)
    path = F.save_slip_checkpoint(ref, str(tmp_path_factory.mktemp("slip") /
                                           "slip_base_100ep.pt"))
    bundle = load_clip(path)
    pixels = _inputs(2)
    ids = bundle.tokenize(["a photo of a dog", "a large building next to the water at night"])
    want = _reference(ref, pixels, ids)
    del ref
    gc.collect()
    return bundle, pixels, ids, want


def test_b16_loaded_by_detection(b16):
    bundle = b16[0]
    assert bundle.config == get_config("SLIP-ViT-B-16")
    assert bundle.info["format"] == "torch-state-dict" and bundle.info["family"] == "slip"


def test_b16_image_parity(b16):
    bundle, pixels, _, (img, _) = b16
    got = bundle.encode_image(pixels)
    assert got.shape == (2, 512)
    err = rel_err(got, img)
    assert err <= RTOL, err


def test_b16_text_parity(b16):
    bundle, _, ids, (_, txt) = b16
    err = rel_err(bundle.encode_text(ids), txt)
    assert err <= RTOL, err


def test_l16_parity(openai_model_module):
    from crossgap_jax.models.slip import model as slip
    from crossgap_jax.models.slip.convert import state_dict_to_params

    torch.set_num_threads(2)
    cfg = get_config("SLIP-ViT-L-16")
    ref = F.slip_reference(openai_model_module, 1024, 24, 16)
    pixels = _inputs(1, seed=1)
    ids = np.zeros((1, 77), np.int32)
    ids[0, :6] = [49406, 320, 1125, 539, 320, 49407]  # "a photo of a"
    img, txt = _reference(ref, pixels, ids)
    params, _ = state_dict_to_params({k: v.numpy() for k, v in ref.state_dict().items()}, cfg)
    del ref
    gc.collect()
    import jax

    got_img = np.asarray(jax.jit(lambda p, x: slip.encode_image(p, x, config=cfg))(params, pixels))
    got_txt = np.asarray(slip.encode_text(params, ids, np.array([5], np.int32), config=cfg))
    assert rel_err(got_img, img) <= RTOL, rel_err(got_img, img)
    assert rel_err(got_txt, txt) <= RTOL, rel_err(got_txt, txt)
