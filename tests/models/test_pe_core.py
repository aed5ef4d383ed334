"""The PE-Core family on its tiny config: checkpoints in both layouts users have
(perception_models' ``.pt``, open_clip's files), detection, errors, tokenizer,
preprocessing, the IsoCLIP hooks and preset.

The reference is the independent PyTorch module of ``support/pe_core_torch.py`` (written
from perception_models' description, with its state-dict names); the real-size parity is in
``test_pe_core_parity.py``.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossgap_jax.models import (
    CheckpointError,
    CheckpointNotFoundError,
    get_tokenizer,
    load,
    load_clip,
)
from crossgap_jax.models.configs import get_config
from crossgap_jax.models.pe_core import convert as C
from crossgap_jax.models.pe_core import model as M

torch = pytest.importorskip("torch")
from support.pe_core_torch import PECoreTorch, randomize  # noqa: E402

RTOL = 1e-4
TINY = dict(image_size=32, patch=8, width=128, layers=2, heads=2, pool_heads=8, embed_dim=64,
            context=32, text_width=128, text_layers=2, text_heads=2)


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def ref():
    return randomize(PECoreTorch(**TINY), seed=3).eval()


@pytest.fixture(scope="module")
def pe_file(ref, tmp_path_factory) -> str:
    """perception_models' file layout: ``{"weights": state_dict}`` with ``module.`` keys."""
    path = tmp_path_factory.mktemp("pe") / "PE-Core-tiny.pt"
    torch.save({"weights": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    return str(path)


@pytest.fixture(scope="module")
def bundle(pe_file):
    return load_clip(pe_file)


def _inputs(bundle):
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    ids = bundle.tokenize(["a photo of a dog", "two cats on a red sofa"])
    return pixels, ids


def test_pe_file_detected_and_equal_to_reference(bundle, ref):
    assert bundle.config.name == "pe-core-tiny" and bundle.config.family == "pe_core"
    assert bundle.info["layout"] == "pe"
    pixels, ids = _inputs(bundle)
    with torch.no_grad():
        x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
        t = torch.from_numpy(ids.astype(np.int64))
        want_img, want_txt = ref.encode_image(x).numpy(), ref.encode_text(t).numpy()
        want_pool = ref.visual.pooled(x, with_mlp=False).numpy()
        want_tpre = ref.text_preproj(t).numpy()
    assert rel_err(bundle.encode_image(pixels), want_img) < RTOL
    assert rel_err(bundle.encode_text(ids), want_txt) < RTOL
    # IsoCLIP's pre-projection features: the pool without its MLP, ln_final at EOT.
    assert rel_err(bundle.encode_image(pixels, project=False), want_pool) < RTOL
    assert rel_err(bundle.encode_text(ids, project=False), want_tpre) < RTOL


def test_preproj_switch_and_heads(bundle):
    pixels, _ = _inputs(bundle)
    cfg, p = bundle.config, bundle.params
    full = M.encode_image_preproj(p, jnp.asarray(pixels), config=cfg.replace(preproj_pool_mlp=True))
    head = p["visual"]["trunk"]["head"]
    projected = np.asarray(full) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    np.testing.assert_allclose(projected, bundle.encode_image(pixels), rtol=1e-4, atol=1e-5)
    wi, wt = bundle.projection_matrices()
    assert wi.shape == (128, 64) and wt.shape == (128, 64)
    np.testing.assert_array_equal(head["bias"], 0.0)  # PE's proj has none: timm's zero bias


def test_open_clip_layout_roundtrip(bundle, tmp_path):
    from safetensors.numpy import save_file

    sd = C.params_to_open_clip_state_dict(bundle.params)
    # open_clip's names for PE-Core-B-16 (timm Eva trunk, CustomTextCLIP text tower).
    for name in ("visual.trunk.patch_embed.proj.weight", "visual.trunk.cls_token",
                 "visual.trunk.pos_embed", "visual.trunk.norm_pre.weight",
                 "visual.trunk.blocks.1.attn.qkv.weight", "visual.trunk.blocks.1.attn.proj.bias",
                 "visual.trunk.blocks.0.norm2.bias", "visual.trunk.blocks.0.mlp.fc2.weight",
                 "visual.trunk.norm.bias", "visual.trunk.attn_pool.latent",
                 "visual.trunk.attn_pool.q.weight", "visual.trunk.attn_pool.kv.bias",
                 "visual.trunk.attn_pool.proj.weight", "visual.trunk.attn_pool.norm.weight",
                 "visual.trunk.attn_pool.mlp.fc1.weight", "visual.trunk.head.weight",
                 "visual.trunk.head.bias", "text.token_embedding.weight",
                 "text.positional_embedding", "text.transformer.resblocks.1.attn.in_proj_weight",
                 "text.transformer.resblocks.0.attn.out_proj.weight",
                 "text.transformer.resblocks.0.ln_1.weight",
                 "text.transformer.resblocks.0.mlp.c_fc.bias", "text.ln_final.weight",
                 "text.text_projection", "logit_scale"):
        assert name in sd, name
    assert sd["visual.trunk.patch_embed.proj.weight"].shape == (128, 3, 8, 8)
    assert "visual.trunk.patch_embed.proj.bias" not in sd
    assert sd["visual.trunk.pos_embed"].shape == (1, 17, 128)
    assert sd["visual.trunk.attn_pool.kv.weight"].shape == (256, 128)
    folder = tmp_path / "hub"
    folder.mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": 64, "vision_cfg": {
            "timm_model_name": "vit_pe_core_base_patch16_224"}},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "interpolation": "bilinear", "resize_mode": "squash"}}))
    assert C.claims(str(folder))
    config, params, info = load(str(folder))
    assert config.name == "pe-core-tiny" and info["layout"] == "open_clip"
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params, bundle.params)


def test_claims_and_hub_ids(pe_file, tmp_path):
    assert C.claims(pe_file)
    assert C.claims("hf-hub:timm/PE-Core-B-16") and C.claims("facebook/PE-Core-B16-224")
    assert not C.claims("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    other = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, other)
    assert not C.claims(str(other))


def test_errors(pe_file, tmp_path):
    with pytest.raises(CheckpointError, match=r"vision\.width: 768 vs 128"):
        load("PE-Core-B-16", pe_file)
    bad = tmp_path / "bad.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a PE-Core image-text checkpoint"):
        load("PE-Core-B-16", str(bad))
    with pytest.raises(ValueError, match="quick_gelu must be False"):
        M.pe_core_config("x", quick_gelu=True)


def test_release_tag_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError, match="timm/PE-Core-B-16"):
        load("PE-Core-B-16", pretrained="meta")


def test_b16_config_and_shapes():
    c = get_config("PE-Core-B-16")
    v = c.vision
    assert (v.width, v.layers, v.heads, v.patch_size, v.image_size) == (768, 12, 12, 16, 224)
    assert (c.text.width, c.text.layers, c.text.heads, c.text.context_length) == (1024, 24, 16, 32)
    assert (c.embed_dim, c.pool_heads, c.class_token, c.quick_gelu) == (1024, 8, True, False)


def test_tokenizer_context_32(bundle):
    tok = bundle.tokenizer
    ids = tok(["A photo of a Dog.", "word " * 40])
    assert ids.shape == (2, 32)
    assert ids[0, 0] == 49406 and ids[1, 31] == 49407  # cut to 32, last position EOT
    clip77 = get_tokenizer(77)(["A photo of a Dog."])[0]  # OpenAI's BPE, context 77
    np.testing.assert_array_equal(ids[0], clip77[:32])
    assert (ids[1, 1:31] == get_tokenizer(77)(["word"])[0, 1]).all()


def test_preprocess_squash_bilinear(bundle):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8))
    x = bundle.preprocess([img])
    want = (np.asarray(img.resize((32, 32), Image.BILINEAR), np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(x[0], want, atol=1e-5)


def test_isoclip_preset():
    from crossgap_jax.pipeline.presets import isoclip_k, preset

    p = preset("pecore_vitb16")
    assert (p.model, p.pretrained) == ("PE-Core-B-16", "meta")
    assert isoclip_k(p, "image")[0] == (300, 50)
    with pytest.raises(ValueError, match="--isoclip-k"):
        isoclip_k(p, "text")


def test_isoclip_image_features_as_its_code(bundle, ref):
    """IsoCLIP on PE: x = the pool output without its MLP, P_i = head weight (no bias),
    P_t = text_projection; U_k from the SVD of P_i P_t^T (NumPy, from PAPER.md)."""
    from crossgap_jax.baselines.isoclip import isoclip_image_features, isoclip_map_for

    pixels, _ = _inputs(bundle)
    with torch.no_grad():
        x = ref.visual.pooled(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()),
                              with_mlp=False).double().numpy()
        p_i = ref.visual.proj.double().numpy()
        p_t = ref.text_projection.double().numpy()
    u, _, _ = np.linalg.svd(p_i @ p_t.T)
    uk = u[:, 10:128 - 5]
    want = x @ uk @ uk.T @ p_i
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = isoclip_image_features(bundle, pixels, isoclip_map_for(bundle, "image", 10, 5))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_native_roundtrip(bundle, tmp_path):
    from crossgap_jax.models import save_native

    path = save_native(str(tmp_path / "pe.safetensors"), bundle.config, bundle.params)
    again = load_clip(path)
    assert again.config == bundle.config
    pixels, _ = _inputs(bundle)
    np.testing.assert_array_equal(again.encode_image(pixels), bundle.encode_image(pixels))


# A user's open_clip file, built from the names in docs/backbones.md ("PE-Core open_clip
# tensor names"): B/16's patch 16 and 64-dim heads, a few small layers.
USER = dict(image_size=64, patch=16, width=128, layers=2, heads=2, pool_heads=8, embed_dim=64,
            context=32, text_width=128, text_layers=2, text_heads=2)
_BLOCK = {"ln_1": "norm1", "ln_2": "norm2", "attn.in_proj_weight": "attn.qkv.weight",
          "attn.in_proj_bias": "attn.qkv.bias", "attn.out_proj": "attn.proj",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_POOL = {"attn.out_proj": "proj", "layernorm": "norm", "mlp.c_fc": "mlp.fc1",
         "mlp.c_proj": "mlp.fc2"}


def _sub(rest, table):
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    raise KeyError(rest)


def _user_open_clip(pe: dict, width: int) -> dict:
    """perception_models names (the torch reference's) -> open_clip's, by the docs table."""
    v, t = "visual.", "visual.trunk."
    out = {}
    for k, x in pe.items():
        if not k.startswith(v):
            out[k if k == "logit_scale" else "text." + k] = x
            continue
        r = k[len(v):]
        if r.startswith("transformer.resblocks."):
            i, rest = r[len("transformer.resblocks."):].split(".", 1)
            out[f"{t}blocks.{i}.{_sub(rest, _BLOCK)}"] = x
        elif r in ("attn_pool.attn.in_proj_weight", "attn_pool.attn.in_proj_bias"):
            end = r.rsplit("_", 1)[1]
            out[f"{t}attn_pool.q.{end}"], out[f"{t}attn_pool.kv.{end}"] = x[:width], x[width:]
        elif r == "attn_pool.probe":
            out[t + "attn_pool.latent"] = x
        elif r.startswith("attn_pool."):
            out[t + "attn_pool." + _sub(r[len("attn_pool."):], _POOL)] = x
        elif r == "proj":
            out[t + "head.weight"], out[t + "head.bias"] = x.T, torch.zeros(x.shape[1])
        else:
            name, shape = {"conv1.weight": ("patch_embed.proj.weight", x.shape),
                           "class_embedding": ("cls_token", (1, 1, width)),
                           "positional_embedding": ("pos_embed", (1, *x.shape)),
                           "ln_pre.weight": ("norm_pre.weight", x.shape),
                           "ln_pre.bias": ("norm_pre.bias", x.shape),
                           "ln_post.weight": ("norm.weight", x.shape),
                           "ln_post.bias": ("norm.bias", x.shape)}[r]
            out[t + name] = x.reshape(shape)
    return {k: x.contiguous() for k, x in out.items()}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """The reference at USER size and its open_clip folders: ``bin`` (torch.save) and
    ``st`` (safetensors), each with an open_clip_config.json as the hub's."""
    from safetensors.torch import save_file

    ref = randomize(PECoreTorch(**USER), seed=5).eval()
    sd = _user_open_clip(ref.state_dict(), USER["width"])
    base = tmp_path_factory.mktemp("user")
    cfg = {"model_cfg": {"embed_dim": 64, "vision_cfg": {
        "timm_model_name": "vit_pe_core_base_patch16_224"}}, "preprocess_cfg": {
        "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}}
    for kind, name in (("bin", "open_clip_pytorch_model.bin"),
                       ("st", "open_clip_model.safetensors")):
        (base / kind).mkdir()
        (torch.save if kind == "bin" else save_file)(sd, str(base / kind / name))
        (base / kind / "open_clip_config.json").write_text(json.dumps(cfg))
    return ref, base


def test_user_open_clip_files_match_the_reference(user_files):
    ref, base = user_files
    pixels = np.random.default_rng(4).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    for src in ("bin", "st", "bin/open_clip_pytorch_model.bin",
                "st/open_clip_model.safetensors"):
        b = load_clip(str(base / src))
        assert b.info["layout"] == "open_clip" and b.config.family == "pe_core", src
        ids = b.tokenize(["a photo of a dog", "two cats on a red sofa"])
        with torch.no_grad():
            want_img = ref.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
            want_txt = ref.encode_text(torch.from_numpy(np.asarray(ids, np.int64)))
        assert rel_err(b.encode_image(pixels), want_img.numpy()) < RTOL, src
        assert rel_err(b.encode_text(ids), want_txt.numpy()) < RTOL, src


def test_user_open_clip_folder_through_the_encode_command(user_files, tmp_path):
    from PIL import Image

    from crossgap_jax.cli import main

    ref, base = user_files
    rng = np.random.default_rng(6)
    split = {"train": [], "val": [], "test": []}
    for part in split:
        for i in range(3):
            rel = f"c{i % 2}/{part}_{i}.png"
            (tmp_path / "dtd" / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(
                tmp_path / "dtd" / "images" / rel)
            split[part].append([rel, i % 2, f"c{i % 2}"])
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    assert main(["--quiet", "encode", "--checkpoint", str(base / "st"), "--dataset", "dtd",
                 "--split", "test", "--data-root", str(tmp_path), "--run-dir",
                 str(tmp_path / "run")]) == 0
    (cached,) = (tmp_path / "run" / "features" / "dtd").glob("test-image-*.npz")
    got = np.load(cached)
    b = load_clip(str(base / "st"))
    from crossgap_jax.data.decoding import load_image

    pixels = b.preprocess([load_image(tmp_path / "dtd" / "images" / r)
                           for r in got["items"]])
    with torch.no_grad():
        want = ref.encode_image(torch.from_numpy(np.asarray(pixels).transpose(0, 3, 1, 2)
                                                 .copy())).numpy()
    assert rel_err(got["features"], want) < RTOL


def test_user_files_truncated_and_wrong_family(user_files, tmp_path):
    _, base = user_files
    for kind, name, says in (
            ("bin", "open_clip_pytorch_model.bin", "damaged zip archive (torch.save files "
             "are zips; its index at the end is missing): the download or copy was probably "
             "interrupted"),
            ("st", "open_clip_model.safetensors", "truncated safetensors file")):
        cut = tmp_path / kind
        cut.mkdir()
        data = (base / kind / name).read_bytes()
        (cut / name).write_bytes(data[: len(data) // 2])
        (cut / "open_clip_config.json").write_bytes(
            (base / kind / "open_clip_config.json").read_bytes())
        for src in (cut, cut / name):
            with pytest.raises(CheckpointError) as e:
                load_clip(str(src))
            assert says in str(e.value) and "pass the folder" not in str(e.value), src
    for src in (base / "st", base / "st" / "open_clip_model.safetensors"):
        with pytest.raises(CheckpointError) as e:
            load("ViT-B-16", str(src))
        assert str(e.value).endswith("; it looks like a pe_core checkpoint: load it without "
                                     "an architecture name (--model), or with a pe_core one")
