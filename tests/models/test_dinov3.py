"""DINOv3 ViT (image-only control backbone): parity with transformers' PyTorch
``DINOv3ViTModel`` (real ViT-L/16 size, random weights), its RoPE tables, both checkpoint
spellings (transformers safetensors names, Meta's ``.pth`` names), the preprocessing against
the steps of transformers' ``DINOv3ViTImageProcessor``, the CLI, and the refusals where a
text tower is needed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from crossgap_jax.models import CheckpointError, get_config, load_clip  # noqa: E402
from crossgap_jax.models.dinov3 import model as D  # noqa: E402
from crossgap_jax.models.dinov3.convert import (  # noqa: E402
    claims,
    config_from_hf,
    params_to_hf_state_dict,
    state_dict_to_params,
)
from crossgap_jax.models.families import NoTextTowerError  # noqa: E402

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _hf_model(seed: int, **cfg):
    """A transformers DINOv3ViTModel with random weights; LayerNorms, layer scales and biases
    perturbed away from their init; eager attention; eval mode (no RoPE augmentation)."""
    torch.manual_seed(seed)
    config = transformers.DINOv3ViTConfig(**cfg)
    config._attn_implementation = "eager"
    model = transformers.DINOv3ViTModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "lambda1" in name or name.endswith("bias") or "token" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _hub_state_dict(model) -> dict[str, np.ndarray]:
    """The hub files' names (written by transformers 4.56: ``layer.i``, no ``model.``); the
    renaming is written here, not taken from the converter under test."""
    return {k.removeprefix("model."): v.detach().numpy().copy()
            for k, v in model.state_dict().items()}


def _meta_state_dict(model) -> dict[str, np.ndarray]:
    """The same weights under Meta's names (facebookresearch/dinov3: fused ``qkv`` with a
    ``bias_mask`` that zeroes the key bias, ``ls{1,2}.gamma``, ``storage_tokens``,
    ``mlp.fc{1,2}``, bf16 ``rope_embed.periods``), built from transformers' tensors."""
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    out = {"cls_token": sd["embeddings.cls_token"],
           "storage_tokens": sd["embeddings.register_tokens"],
           "mask_token": sd["embeddings.mask_token"][0],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"],
           "rope_embed.periods": (100.0 ** (2 * np.arange(hd // 4) / (hd // 2))).astype(
               np.float32),
           "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    rng = np.random.default_rng(0)
    for i in range(cfg.num_hidden_layers):
        h, b = f"model.layer.{i}.", f"blocks.{i}."
        w = cfg.hidden_size
        out[b + "attn.qkv.weight"] = np.concatenate([sd[h + f"attention.{p}_proj.weight"]
                                                     for p in "qkv"])
        # Meta stores some key bias and masks it: the mask must be applied.
        kb = rng.standard_normal(w).astype(np.float32)
        out[b + "attn.qkv.bias"] = np.concatenate([sd[h + "attention.q_proj.bias"], kb,
                                                   sd[h + "attention.v_proj.bias"]])
        out[b + "attn.qkv.bias_mask"] = np.concatenate([np.ones(w), np.zeros(w),
                                                        np.ones(w)]).astype(np.float32)
        for ours, theirs in (("attn.proj", "attention.o_proj"), ("mlp.fc1", "mlp.up_proj"),
                             ("mlp.fc2", "mlp.down_proj"), ("norm1", "norm1"),
                             ("norm2", "norm2")):
            for leaf in ("weight", "bias"):
                out[f"{b}{ours}.{leaf}"] = sd[f"{h}{theirs}.{leaf}"]
        out[b + "ls1.gamma"] = sd[h + "layer_scale1.lambda1"]
        out[b + "ls2.gamma"] = sd[h + "layer_scale2.lambda1"]
    return out


def _torch_out(model, pixels_nhwc: np.ndarray):
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(pixels_nhwc.transpose(0, 3, 1, 2).copy()))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


# --- RoPE ------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw,head_dim", [((224, 224), 64), ((160, 256), 64), ((32, 48), 8)])
def test_rope_tables_equal_transformers_eval(hw, head_dim):
    """Our (cos, sin) == transformers' DINOv3ViTRopePositionEmbedding in eval mode; in
    training mode transformers rescales the coordinates at random (pos_embed_rescale=2), which
    the port leaves out."""
    cfg = transformers.DINOv3ViTConfig(hidden_size=head_dim * 2, num_attention_heads=2,
                                       patch_size=16 if head_dim == 64 else 8)
    rope = transformers.models.dinov3_vit.modeling_dinov3_vit.DINOv3ViTRopePositionEmbedding(
        cfg).eval()
    pix = torch.zeros(1, 3, *hw)
    cos, sin = (t.numpy() for t in rope(pix))
    p = cfg.patch_size
    ours_cos, ours_sin = D.rope_cos_sin(hw[0] // p, hw[1] // p, head_dim, 100.0)
    assert ours_cos.shape == cos.shape == (hw[0] // p * hw[1] // p, head_dim)
    np.testing.assert_allclose(ours_cos, cos, rtol=0, atol=2e-6)
    np.testing.assert_allclose(ours_sin, sin, rtol=0, atol=2e-6)
    torch.manual_seed(0)
    train_cos, _ = rope.train()(pix)
    assert np.abs(train_cos.numpy() - cos).max() > 1e-2  # augmentation on: not what we match


# --- parity at real size ---------------------------------------------------------------------
# facebook/dinov3-vitl16-pretrain-lvd1689m (transformers' convert_dinov3_vit_to_hf.py "vitl").
VITL = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, patch_size=16, num_register_tokens=4, layer_norm_eps=1e-5,
            rope_theta=100.0, query_bias=True, key_bias=False, value_bias=True,
            proj_bias=True, layerscale_value=1.0, use_gated_mlp=False, hidden_act="gelu")


@pytest.mark.slow
def test_parity_real_size_vitl16():
    """ViT-L/16 at real size, random weights under the hub files' tensor names: every token
    and the pooled feature (normed CLS = pooler_output) at 224 px, batch 2. (RoPE on other
    grids and the cls+mean pooling are checked against transformers on the tiny model.)"""
    model = _hf_model(1, **VITL)
    config = get_config("dinov3-vitl16")
    assert config_from_hf(model.config.to_dict()).vision == config.vision
    params, ignored = state_dict_to_params(_hub_state_dict(model), config)
    assert ignored == ["embeddings.mask_token"]
    x = np.random.default_rng(224).standard_normal((2, 224, 224, 3)).astype(np.float32)
    hidden, pooled = _torch_out(model, x)
    errs = {"224 last_hidden_state": _rel(D.last_hidden_state(params, x, config=config), hidden),
            "224 pooler_output": _rel(D.encode_image(params, x, config=config), pooled)}
    print(f"\ndinov3-vitl16 max relative error: {errs}")
    assert max(errs.values()) < 1e-4, errs


# --- checkpoints -----------------------------------------------------------------------------
TINY_HF = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               patch_size=8, image_size=32, num_register_tokens=2, layerscale_value=0.3)
TINY_PRE = {"size": {"height": 32, "width": 32}, "resample": 2, "do_resize": True,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_processor_type": "DINOv3ViTImageProcessorFast", **IMAGENET}


def _write_dir(path, model, *, pre=True) -> str:
    os.makedirs(path, exist_ok=True)
    save_file(_hub_state_dict(model), os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})
    cfg = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")}
    cfg.update(model_type="dinov3_vit", architectures=["DINOv3ViTModel"])
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    if pre:
        with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
            json.dump(TINY_PRE, f)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = _hf_model(3, **TINY_HF)
    return model, _write_dir(tmp_path_factory.mktemp("dinov3") / "ckpt", model)


def test_directory_round_trip(tiny, tmp_path):
    model, path = tiny
    # transformers itself reads the names we write as the hub files' (nothing missing).
    ref, info = transformers.DINOv3ViTModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    clip = load_clip(path)  # family and architecture from config.json
    assert clip.config.family == "dinov3" and clip.info["layout"] == "hf"
    assert clip.config.name == "dinov3-tiny" and clip.config.layerscale_value == 0.3
    assert clip.info["ignored"] == ["embeddings.mask_token"]
    x = np.random.default_rng(4).standard_normal((3, 32, 32, 3)).astype(np.float32)
    assert _rel(clip.encode_image(x), _torch_out(model, x)[1]) < 1e-5
    # Round trip to the hub names, exactly; transformers 5's module names are read too.
    back = params_to_hf_state_dict(clip.params)
    want = _hub_state_dict(model)
    del want["embeddings.mask_token"]
    assert sorted(back) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(back[k], want[k], err_msg=k)
    p5, _ = state_dict_to_params(params_to_hf_state_dict(clip.params, prefix="model.layer."),
                                 clip.config)
    np.testing.assert_array_equal(p5["layer_1"]["mlp"]["fc2"]["kernel"],
                                  clip.params["layer_1"]["mlp"]["fc2"]["kernel"])
    # The native format keeps the family and config.
    from crossgap_jax.models.checkpoint.native import save_native

    save_native(str(tmp_path / "n.safetensors"), clip.config, clip.params, {})
    native = load_clip(str(tmp_path / "n.safetensors"))
    assert native.config == clip.config
    np.testing.assert_array_equal(native.encode_image(x), clip.encode_image(x))


def test_meta_pth_names(tiny, tmp_path):
    """Meta's original checkpoint names (torch.save .pth): the fused qkv split, the key bias
    masked away, the result equal to transformers' model with the same weights."""
    model, _ = tiny
    sd = _meta_state_dict(model)
    path = tmp_path / "dinov3_tiny.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    assert not claims(str(path))  # unknown file name: the architecture must be named
    clip = load_clip("dinov3-tiny", checkpoint=str(path))
    assert clip.info["layout"] == "meta"
    assert clip.info["ignored"] == ["mask_token", "rope_embed.periods"]
    x = np.random.default_rng(5).standard_normal((2, 48, 40, 3)).astype(np.float32)
    hidden, _ = _torch_out(model, x)
    from crossgap_jax.models.dinov3.model import last_hidden_state

    assert _rel(last_hidden_state(clip.params, x, config=clip.config), hidden) < 1e-5
    # A key bias that the mask does not zero is refused, naming the tensor.
    sd["blocks.1.attn.qkv.bias_mask"][:] = 1.0
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qkv\.bias: a non-zero key"):
        state_dict_to_params(sd, clip.config)
    # Meta's release file names are recognised without an architecture name.
    assert claims(str(tmp_path / "missing.pth")) is False
    named = tmp_path / "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth"
    named.write_bytes(b"")
    assert claims(str(named))


def test_named_architecture_must_fit(tiny):
    _, path = tiny
    with pytest.raises(CheckpointError, match=r"dinov3-vitl16.*vision.width: 1024 vs 32"):
        load_clip("dinov3-vitl16", checkpoint=path)
    clip = load_clip("dinov3-tiny-clsmean", checkpoint=path)
    assert clip.config.pooling == "cls+mean" and clip.config.embed_dim == 64
    # cls+mean = [normed CLS, mean of the normed patch tokens] (1 CLS + 2 registers skipped)
    model, _ = tiny
    x = np.random.default_rng(6).standard_normal((2, 32, 32, 3)).astype(np.float32)
    hidden, _ = _torch_out(model, x)
    ref = np.concatenate([hidden[:, 0], hidden[:, 3:].mean(1)], axis=1)
    assert _rel(clip.encode_image(x), ref) < 1e-5


def test_bad_tensors_named(tiny):
    model, _ = tiny
    config = config_from_hf(model.config.to_dict(), TINY_PRE)
    sd = _hub_state_dict(model)
    sd["layer.1.mlp.up_proj.weight"] = sd["layer.1.mlp.up_proj.weight"][:5]
    del sd["norm.bias"]
    sd["layer.0.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as e:
        state_dict_to_params(sd, config)
    msg = str(e.value)
    assert "layer.0.extra.weight" in msg and "norm/bias" in msg
    assert "layer.1.mlp.up_proj.weight (layer_1/mlp/fc1/kernel): checkpoint (32, 5)" in msg


@pytest.mark.parametrize("change,match", [
    ({"use_gated_mlp": True}, "SwiGLU"), ({"hidden_act": "silu"}, "hidden_act"),
    ({"key_bias": True}, "key_bias=True"), ({"model_type": "dinov2"}, "model_type")])
def test_unsupported_configs_refused(change, match):
    with pytest.raises(CheckpointError, match=match):
        config_from_hf({**TINY_HF, "model_type": "dinov3_vit", **change})


def test_names_and_hub_id_offline(monkeypatch, tmp_path, tiny):
    """Both registered spellings name the ViT-L/16; a hub id is read from the Hugging Face
    cache in offline mode; absent, the error names the repo. No network either way."""
    from huggingface_hub import constants

    from crossgap_jax.models.checkpoint.errors import CheckpointNotFoundError

    hf = "facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert get_config(hf) is get_config("dinov3-vitl16")
    assert claims(hf)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("dinov3-vitl16", hf):
        with pytest.raises(CheckpointNotFoundError, match=rf"{hf}.*hf download"):
            load_clip(name)
    # The repo in the cache (hub layout: refs/main -> snapshots/<rev>/files); given as a
    # checkpoint, the file's own (tiny) config applies.
    model, path = tiny
    repo = tmp_path / "hub" / "models--facebook--dinov3-vitl16-pretrain-lvd1689m"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in os.listdir(path):
        os.symlink(os.path.join(path, f), snap / f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    from crossgap_jax.models import load

    config, params, info = load("dinov3-tiny", checkpoint=hf)
    assert info["origin"] == "hf-hub"
    x = np.random.default_rng(5).standard_normal((1, 32, 32, 3)).astype(np.float32)
    assert _rel(D.encode_image(params, x, config=config), _torch_out(model, x)[1]) < 1e-5


# --- preprocessing ---------------------------------------------------------------------------
def _processor_steps(img: Image.Image, size: int, dtype=torch.float32) -> np.ndarray:
    """transformers' DINOv3ViTImageProcessor._preprocess (image_processing_dinov3_vit.py) for
    one image, with torch: rescale to [0, 1] first, resize to size x size (bilinear,
    antialias=True, the torchvision backend's float-tensor resize = F.interpolate), normalise
    with ImageNet mean/std. (The processor itself needs torchvision, which this torch lacks.)"""
    a = np.array(img.convert("RGB"))
    t = torch.from_numpy(a).permute(2, 0, 1)[None].to(dtype) / 255
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET["image_mean"], dtype=dtype)[:, None, None]
    std = torch.tensor(IMAGENET["image_std"], dtype=dtype)[:, None, None]
    return ((t[0] - mean) / std).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("hw", [(300, 451), (224, 224), (480, 640), (120, 90)])
def test_preprocessing_equals_the_processor(hw):
    """Same algorithm as torch's antialiased bilinear (to 1e-6 against torch in float64);
    against the processor's float32 arithmetic within its own float32 weight rounding
    (~1e-5 in [0, 1] units, bound 1e-4 after normalisation)."""
    from crossgap_jax.data.preprocess import preprocess_image

    rng = np.random.default_rng(hw[0])
    img = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    opts = D.preprocess_options(get_config("dinov3-vitl16"))
    ours = preprocess_image(img, **opts)
    assert ours.shape == (224, 224, 3)
    np.testing.assert_allclose(ours, _processor_steps(img, 224, torch.float64), rtol=0,
                               atol=1e-6)
    ref = _processor_steps(img, 224)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    # Resizing the 8-bit image instead (PIL's usual path) is another function.
    u8 = preprocess_image(img, **{**opts, "resize_float": False})
    if hw != (224, 224):
        assert np.abs(u8 - ref).max() > 1e-3


# --- refusals and the CLI --------------------------------------------------------------------
def test_text_side_refused_by_the_bundle(tiny):
    _, path = tiny
    clip = load_clip(path)
    for call in (lambda: clip.tokenize(["a photo"]),
                 lambda: clip.encode_text(np.zeros((1, 77), np.int32))):
        with pytest.raises(NoTextTowerError, match=r"needs a text tower, but dinov3-tiny "
                                                   r"\(dinov3\) is an image-only"):
            call()
    with pytest.raises(NoTextTowerError, match=r"dinov3-tiny \(dinov3\) is an image-only"):
        D.encode_text(clip.params, np.zeros((1, 77), np.int32), np.zeros(1, np.int32),
                      config=clip.config)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(6)
    for c in ("cat", "dog"):
        (root / c).mkdir()
        for i in range(3):
            hw = (40 + 3 * i, 50 + 5 * i)
            Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


def test_cli_encode_equals_transformers(tiny, folder, tmp_path):
    """``encode`` on a generated checkpoint, without --model: the cached features equal the
    processor's steps + PyTorch DINOv3ViTModel's pooler output on the same files."""
    from crossgap_jax.cli import main
    from crossgap_jax.pipeline.store import load_features

    model, path = tiny
    run = tmp_path / "run"
    assert main(["--quiet", "encode", "--dataset", "imagefolder", "--checkpoint", path,
                 "--data-root", str(folder), "--run-dir", str(run), "--batch-size", "4"]) == 0
    (npz,) = run.rglob("all-image-*.npz")
    fs = load_features(str(npz))
    assert fs.meta["model"]["family"] == "dinov3" and fs.features.shape == (6, 32)
    pix = np.stack([_processor_steps(Image.open(folder / item), 32) for item in fs.items])
    assert _rel(fs.features, _torch_out(model, pix)[1]) < 1e-5


@pytest.mark.parametrize("argv,what", [
    (["classify", "--variants", "ncm,inter"], "zero-shot classification"),
    (["oti"], "OTI"),
    (["retrieve", "--query-type", "isoclip", "--gallery-type", "isoclip"], "IsoCLIP"),
])
def test_cli_refuses_text_tower_tasks(tiny, folder, tmp_path, capsys, argv, what):
    from crossgap_jax.cli import main

    _, path = tiny
    run = tmp_path / "run"
    rc = main(["--quiet", argv[0], "--dataset", "imagefolder", *argv[1:], "--checkpoint", path,
               "--data-root", str(folder), "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{what} needs a text tower, but dinov3-tiny (dinov3) is an image-only" in err
    assert not list(run.rglob("*.npz"))  # refused before any features were computed


def test_refusals_name_every_backbone_with_a_text_tower():
    import jax.numpy as jnp

    from crossgap_jax.models import create_clip
    from crossgap_jax.models.families import NoTextTowerError, require_text_tower

    dino = create_clip("dinov3-tiny")
    with pytest.raises(NoTextTowerError) as e1:
        require_text_tower(dino.config, "OTI")
    with pytest.raises(NoTextTowerError) as e2:
        dino.fns.encode_text(dino.params, jnp.zeros((1, 4), jnp.int32), jnp.zeros((1,), jnp.int32))
    for e in (e1, e2):
        assert "(CLIP, OpenCLIP, SigLIP, SigLIP 2, SLIP, PE-Core)" in str(e.value)
