"""SLIP family on a tiny model: checkpoint files (SLIP's ``.pt`` training checkpoint with
``module.`` keys, ``args`` namespace and the SimCLR head), conversion errors, parity with
the PyTorch reference (timm-style ViT + OpenAI text transformer), preprocessing.

Real-size parity is in ``test_slip_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import family_factories as F

from crossgap_jax.models import CheckpointError, load_clip
from crossgap_jax.models.configs import get_config

torch = pytest.importorskip("torch")

TINY = dict(width=64, layers=2, heads=2, image_size=32, patch_size=8, embed_dim=32,
            text_width=64, text_layers=2, text_heads=4)


@pytest.fixture(scope="module")
def ref(openai_model_module):
    return F.slip_reference(openai_model_module, **TINY)


@pytest.fixture(scope="module")
def ckpt(ref, tmp_path_factory) -> str:
    return F.save_slip_checkpoint(ref, str(tmp_path_factory.mktemp("slip") / "slip_tiny.pt"))


@pytest.fixture(scope="module")
def bundle(ckpt):
    return load_clip(ckpt)


def _ref_text(ref, ids):
    with torch.no_grad():
        return ref.encode_text(torch.from_numpy(np.asarray(ids, np.int64))).numpy()


def _ref_image(ref, pixels):
    with torch.no_grad():
        return ref.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()


def test_load_detects_family_and_architecture(bundle, ckpt):
    assert bundle.config.family == "slip" and bundle.config.name == "slip-tiny"
    assert bundle.info["layout"] == "slip" and bundle.info["args"]["model"] == "SLIP_VITB16"
    assert any(k.startswith("image_mlp.") for k in bundle.info["ignored"])
    b2 = load_clip("slip-tiny", checkpoint=ckpt)
    assert b2.config == bundle.config
    with pytest.raises(CheckpointError, match="different architecture than 'SLIP-ViT-B-16'"):
        load_clip("SLIP-ViT-B-16", checkpoint=ckpt)


def test_tiny_parity(bundle, ref):
    texts = ["a photo of a dog", "two cats sitting on a bench at night", "x"]
    ids = bundle.tokenize(texts)
    np.testing.assert_allclose(bundle.encode_text(ids), _ref_text(ref, ids), rtol=1e-5,
                               atol=1e-5)
    pixels = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(bundle.encode_image(pixels), _ref_image(ref, pixels), rtol=1e-5,
                               atol=1e-5)


def test_patch_tokens_are_conv_output(bundle, ref):
    pixels = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ours = np.asarray(bundle.fns.embed_image_patches(bundle.params, pixels))
    with torch.no_grad():
        want = ref.visual.patch_embed(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(ours, want.numpy(), rtol=1e-5, atol=1e-6)


def test_state_dict_roundtrip(bundle):
    from crossgap_jax.models.slip.convert import params_to_state_dict, state_dict_to_params

    sd = params_to_state_dict(bundle.params)
    assert "visual.blocks.1.attn.qkv.weight" in sd
    assert "transformer.resblocks.0.attn.in_proj_weight" in sd
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    params, ignored = state_dict_to_params(wrapped, bundle.config)
    assert ignored == []
    import jax

    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(bundle.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_conversion_errors(bundle):
    from crossgap_jax.models.slip.convert import params_to_state_dict, state_dict_to_params

    sd = params_to_state_dict(bundle.params)
    del sd["visual.norm.weight"]
    sd["visual.head.weight"] = np.zeros((10, 64), np.float32)
    sd["visual.pos_embed"] = np.zeros((1, 5, 64), np.float32)
    with pytest.raises(CheckpointError) as e:
        state_dict_to_params(sd, get_config("slip-tiny"))
    msg = str(e.value)
    assert "visual/norm/scale" in msg and "visual.head.weight" in msg
    assert "visual.pos_embed (visual/pos_embed): checkpoint (1, 5, 64) vs model (1, 17, 64)" in msg
    assert "visual/pos_embed\n" not in msg + "\n"  # a mismatched tensor is not also "missing"


def test_pickle_policy(tmp_path, ref):
    """Files holding more than tensors + argparse.Namespace need allow_pickle."""
    from fractions import Fraction  # picklable, but not in torch's weights_only allow-list

    from crossgap_jax.models.slip.convert import read_slip_file

    path = str(tmp_path / "odd.pt")
    torch.save({"state_dict": ref.state_dict(), "extra": Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match="allow_pickle"):
        read_slip_file(path)
    sd, _ = read_slip_file(path, allow_pickle=True)
    assert "visual.cls_token" in sd


def test_preprocess(bundle):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8))
    x = bundle.preprocess([img])
    # SLIP's evaluation transform: Resize(32) (bilinear) + CenterCrop(32) + ImageNet stats.
    r = img.resize((51, 32), Image.BILINEAR).crop((10, 0, 42, 32))
    want = (np.asarray(r, np.float32) / 255 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0], want, atol=1e-5)


def test_registry_and_presets():
    from crossgap_jax.pipeline.presets import get_preset

    for preset, name in (("slip_vitb16", "SLIP-ViT-B-16"), ("slip_vitl16", "SLIP-ViT-L-16"),
                         ("siglip_vitb16", "SigLIP-ViT-B-16")):
        assert get_preset(preset)["model"] == name
        assert get_config(name).family in ("slip", "siglip")
    b, big = get_config("SLIP-ViT-B-16"), get_config("SLIP-ViT-L-16")
    assert (b.vision.width, b.vision.layers, b.vision.heads, b.embed_dim) == (768, 12, 12, 512)
    assert (big.vision.width, big.vision.layers, big.vision.heads) == (1024, 24, 16)
    assert big.text.width == 512 and big.text.heads == 8 and big.quick_gelu


def test_release_tag_offline(monkeypatch, tmp_path):
    from crossgap_jax.models.checkpoint.errors import CheckpointNotFoundError

    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError, match="slip_base_100ep.pt"):
        load_clip("SLIP-ViT-B-16", checkpoint="slip", cache_dir=str(tmp_path))
