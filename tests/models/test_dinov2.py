"""DINOv2 (image-only control backbone): parity with transformers' PyTorch ``Dinov2Model``,
the torch-bicubic position interpolation, the checkpoint reader, the preprocessing against
transformers' image processor, the CLI, and the refusals where a text tower is needed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from support.run_oracles import cached_features, ref_retrieval

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from crossgap_jax.models import CheckpointError, get_config, load_clip  # noqa: E402
from crossgap_jax.models.dinov2 import model as D  # noqa: E402
from crossgap_jax.models.dinov2.convert import (  # noqa: E402
    config_from_hf,
    hf_state_dict_to_params,
    params_to_hf_state_dict,
)
from crossgap_jax.models.families import NoTextTowerError  # noqa: E402

# transformers 5 spells the attention projections q/k/v/o_proj; the hub checkpoints (written
# by transformers 4) use these names, which transformers 5 renames on load.
HUB_NAMES = {"attention.q_proj.": "attention.attention.query.",
             "attention.k_proj.": "attention.attention.key.",
             "attention.v_proj.": "attention.attention.value.",
             "attention.o_proj.": "attention.output.dense."}
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _hf_model(seed: int, **cfg):
    """A transformers Dinov2Model with random weights, LayerNorms / layer scales / biases
    perturbed away from their init, eager attention."""
    torch.manual_seed(seed)
    config = transformers.Dinov2Config(**cfg)
    config._attn_implementation = "eager"
    model = transformers.Dinov2Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "lambda1" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _hub_state_dict(model) -> dict[str, np.ndarray]:
    """The model's state dict under the hub checkpoints' tensor names (mapped here, not by
    the converter under test)."""
    out = {}
    for k, v in model.state_dict().items():
        for new, old in HUB_NAMES.items():
            k = k.replace(new, old)
        out[k] = v.detach().numpy().copy()
    return out


def _torch_out(model, pixels_nhwc: np.ndarray):
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(pixels_nhwc.transpose(0, 3, 1, 2).copy()))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


# --- position interpolation ---------------------------------------------------------------
@pytest.mark.parametrize("n_in,n_out", [(37, 16), (37, 37), (6, 4), (16, 37), (5, 9), (3, 1)])
def test_bicubic_matrix_equals_torch_interpolate(n_in, n_out):
    x = torch.randn(1, 5, n_in, n_in, dtype=torch.float64, generator=torch.Generator()
                    .manual_seed(n_in * 100 + n_out))
    ref = torch.nn.functional.interpolate(x, size=(n_out, n_out), mode="bicubic",
                                          align_corners=False)[0].numpy()
    m = D.torch_bicubic_matrix(n_in, n_out, "float64")
    ours = np.einsum("oi,cij,pj->cop", m, x[0].numpy(), m)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_position_interpolation_equals_torch_and_not_jax_resize():
    import jax

    rng = np.random.default_rng(0)
    pos = rng.standard_normal((1, 1 + 37 * 37, 8)).astype(np.float32)
    grid = torch.from_numpy(pos[0, 1:].reshape(1, 37, 37, 8).transpose(0, 3, 1, 2).copy())
    ref = torch.nn.functional.interpolate(grid, size=(16, 20), mode="bicubic",
                                          align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 8).numpy()
    ours = np.asarray(D.interpolate_position_embeddings(pos, 16, 20))
    np.testing.assert_array_equal(ours[:, :1], pos[:, :1])  # class position untouched
    assert _rel(ours[:, 1:], ref) < 1e-6  # float32 noise of torch's own kernel
    # jax.image.resize's bicubic (Keys a = -0.5, antialiased downsampling) is another
    # function: it would fail this parity.
    jr = jax.image.resize(pos[0, 1:].reshape(37, 37, 8), (16, 20, 8), "bicubic")
    assert _rel(np.asarray(jr).reshape(1, -1, 8), ref) > 1e-3
    # Same grid: the stored embeddings as they are.
    np.testing.assert_array_equal(np.asarray(D.interpolate_position_embeddings(pos, 37, 37)),
                                  pos)


# --- parity at real size ---------------------------------------------------------------------
REAL = {"DINOv2-ViT-S-14": dict(hidden_size=384, num_attention_heads=6),
        "DINOv2-ViT-B-14": dict(hidden_size=768, num_attention_heads=12)}


def _parity(arch: str, size: int, seed: int) -> dict[str, float]:
    model = _hf_model(seed, num_hidden_layers=12, image_size=518, patch_size=14,
                      layerscale_value=1.0, **REAL[arch])
    config = get_config(arch)
    if size != config.vision.image_size:
        config = config.replace(vision=config.vision.__class__(
            **{**config.vision.__dict__, "image_size": size}))
    params, ignored = hf_state_dict_to_params(_hub_state_dict(model), config)
    assert ignored == ["embeddings.mask_token"]
    x = np.random.default_rng(seed).standard_normal((2, size, size, 3)).astype(np.float32)
    hidden, pooled = _torch_out(model, x)
    ours_hidden = D.last_hidden_state(params, x, config=config)
    ours_pooled = D.encode_image(params, x, config=config)
    clsmean = D.encode_image(params, x, config=config.with_pooling("cls+mean"))
    ref_clsmean = np.concatenate([hidden[:, 0], hidden[:, 1:].mean(1)], axis=1)
    errs = {"last_hidden_state": _rel(ours_hidden, hidden),
            "pooler_output": _rel(ours_pooled, pooled), "cls+mean": _rel(clsmean, ref_clsmean)}
    print(f"\n{arch} @ {size}px max relative error: {errs}")
    return errs


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(REAL))
def test_parity_real_size_224(arch):
    errs = _parity(arch, 224, seed=1)
    assert max(errs.values()) < 1e-4, errs


@pytest.mark.slow
def test_parity_real_size_native_518():
    errs = _parity("DINOv2-ViT-S-14", 518, seed=2)
    assert max(errs.values()) < 1e-4, errs


# --- checkpoint directories ------------------------------------------------------------------
TINY_HF = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=48,
               patch_size=8, layerscale_value=0.3)
TINY_PRE = {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 36},
            "resample": 3, "do_resize": True, "do_center_crop": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
            "image_processor_type": "BitImageProcessor", **IMAGENET}


def _write_dir(path, model, *, fmt="safetensors", pre=True) -> str:
    os.makedirs(path, exist_ok=True)
    sd = _hub_state_dict(model)
    if fmt == "safetensors":
        save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()},
                   os.path.join(path, "pytorch_model.bin"))
    cfg = model.config.to_dict()
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg.update(model_type="dinov2", architectures=["Dinov2Model"])
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    if pre:
        with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
            json.dump(TINY_PRE, f)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = _hf_model(3, **TINY_HF)
    return model, _write_dir(tmp_path_factory.mktemp("dinov2") / "ckpt", model)


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_directory_round_trip(tiny, tmp_path, fmt):
    model, _ = tiny
    path = _write_dir(tmp_path / fmt, model, fmt=fmt)
    # transformers itself reads these names as the hub checkpoints' (nothing missing).
    ref, info = transformers.Dinov2Model.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    clip = load_clip(path)  # family and architecture from config.json
    assert clip.config.family == "dinov2" and clip.info["layout"] == "hf"
    assert clip.config.position_grid == 6 and clip.config.vision.image_size == 32
    assert clip.config.resize_size == 36 and clip.config.layerscale_value == 0.3
    assert clip.info["ignored"] == ["embeddings.mask_token"]
    x = np.random.default_rng(4).standard_normal((3, 32, 32, 3)).astype(np.float32)
    _, pooled = _torch_out(model, x)
    assert _rel(clip.encode_image(x), pooled) < 1e-5
    # Round trip: params back to the hub names and values, exactly.
    back = params_to_hf_state_dict(clip.params)
    want = _hub_state_dict(model)
    del want["embeddings.mask_token"]
    assert sorted(back) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(back[k], want[k], err_msg=k)
    # The native format keeps the family and config (loads without torch).
    from crossgap_jax.models.checkpoint.native import save_native

    save_native(str(tmp_path / "n.safetensors"), clip.config, clip.params, {})
    native = load_clip(str(tmp_path / "n.safetensors"))
    assert native.config == clip.config
    np.testing.assert_array_equal(native.encode_image(x), clip.encode_image(x))
    # transformers 5 names are accepted too.
    p5, _ = hf_state_dict_to_params(params_to_hf_state_dict(clip.params, legacy=False),
                                    clip.config)
    np.testing.assert_array_equal(p5["encoder"]["layer_1"]["attention"]["o_proj"]["kernel"],
                                  clip.params["encoder"]["layer_1"]["attention"]["o_proj"]
                                  ["kernel"])


def test_named_architecture_must_fit(tiny):
    _, path = tiny
    with pytest.raises(CheckpointError, match=r"DINOv2-ViT-S-14.*vision.width: 384 vs 32"):
        load_clip("DINOv2-ViT-S-14", checkpoint=path)
    clip = load_clip("dinov2-tiny-clsmean", checkpoint=path)
    assert clip.config.pooling == "cls+mean" and clip.config.embed_dim == 64


def test_bad_tensors_named(tiny):
    model, _ = tiny
    config = config_from_hf(model.config.to_dict(), TINY_PRE)
    sd = _hub_state_dict(model)
    sd["encoder.layer.1.mlp.fc1.weight"] = sd["encoder.layer.1.mlp.fc1.weight"][:5]
    del sd["layernorm.bias"]
    sd["encoder.layer.0.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as e:
        hf_state_dict_to_params(sd, config)
    msg = str(e.value)
    assert "encoder.layer.0.extra.weight" in msg and "layernorm/bias" in msg
    assert ("encoder.layer.1.mlp.fc1.weight (encoder/layer_1/mlp/fc1/kernel): checkpoint "
            "(32, 5) vs model (32, 128)") in msg


@pytest.mark.parametrize("change,match", [
    ({"use_swiglu_ffn": True}, "SwiGLU"), ({"hidden_act": "silu"}, "hidden_act"),
    ({"model_type": "vit"}, "model_type")])
def test_unsupported_configs_refused(change, match):
    with pytest.raises(CheckpointError, match=match):
        config_from_hf({**TINY_HF, "model_type": "dinov2", **change})


def test_hub_id_offline(monkeypatch, tmp_path, tiny):
    """A hub id is read from the Hugging Face cache in offline mode; absent, the error names
    the repo and the files to fetch. No network either way."""
    from huggingface_hub import constants

    from crossgap_jax.models.checkpoint.errors import CheckpointNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointNotFoundError, match=r"facebook/dinov2-small.*hf download"):
        load_clip("DINOv2-ViT-S-14")  # the release tag resolves to the hub id
    with pytest.raises(CheckpointNotFoundError, match="facebook/dinov2-base"):
        load_clip("facebook/dinov2-base")
    # The same repo in the cache (hub layout: refs/main -> snapshots/<rev>/files).
    model, path = tiny
    repo = tmp_path / "hub" / "models--facebook--dinov2-small"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in os.listdir(path):
        os.symlink(os.path.join(path, f), snap / f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    clip = load_clip("facebook/dinov2-small")
    assert clip.info["origin"] == "hf-hub" and clip.config.vision.width == 32
    x = np.random.default_rng(5).standard_normal((1, 32, 32, 3)).astype(np.float32)
    assert _rel(clip.encode_image(x), _torch_out(model, x)[1]) < 1e-5


# --- preprocessing ---------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(300, 451), (257, 257), (480, 640), (233, 300)])
def test_preprocessing_equals_transformers_processor(hw):
    """Our pipeline with DINOv2's settings == transformers' BitImageProcessor (PIL backend)
    with the settings of the dinov2 checkpoints' preprocessor_config.json (shortest edge 256,
    bicubic, centre crop 224 with its floor offsets, ImageNet mean/std)."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    from crossgap_jax.data.preprocess import preprocess_image

    proc = BitImageProcessorPil(size={"shortest_edge": 256},
                                crop_size={"height": 224, "width": 224}, resample=3, **IMAGENET)
    rng = np.random.default_rng(hw[0])
    img = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    ref = proc(img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    ours = preprocess_image(img, **D.preprocess_options(get_config("DINOv2-ViT-S-14")))
    assert ours.shape == (224, 224, 3)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


# --- refusals and the CLI --------------------------------------------------------------------
def test_text_side_refused_by_the_bundle(tiny):
    _, path = tiny
    clip = load_clip(path)
    for call in (lambda: clip.tokenize(["a photo"]),
                 lambda: clip.encode_text(np.zeros((1, 77), np.int32))):
        with pytest.raises(NoTextTowerError, match=r"needs a text tower, but dinov2-tiny "
                                                   r"\(dinov2\) is an image-only"):
            call()
    with pytest.raises(NoTextTowerError, match=r"dinov2-tiny \(dinov2\) is an image-only"):
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
    """``encode`` on a generated checkpoint, without --model: the cached features equal
    transformers' processor + PyTorch Dinov2Model pooler output on the same files."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    from crossgap_jax.cli import main
    from crossgap_jax.pipeline.store import load_features

    model, path = tiny
    run = tmp_path / "run"
    assert main(["--quiet", "encode", "--dataset", "imagefolder", "--checkpoint", path,
                 "--data-root", str(folder), "--run-dir", str(run), "--batch-size", "4"]) == 0
    (npz,) = run.rglob("all-image-*.npz")
    fs = load_features(str(npz))
    assert fs.meta["model"]["family"] == "dinov2" and fs.features.shape == (6, 32)
    pre = {k: v for k, v in TINY_PRE.items() if k not in ("image_processor_type",)}
    proc = BitImageProcessorPil(**pre)
    images = [Image.open(folder / item).convert("RGB") for item in fs.items]
    pix = proc(images, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    assert _rel(fs.features, _torch_out(model, np.ascontiguousarray(pix))[1]) < 1e-5


@pytest.mark.parametrize("argv,what", [
    (["classify", "--variants", "ncm,inter"], "zero-shot classification"),
    (["classify", "--variants", "ovi"], "OVI"),
    (["oti"], "OTI"),
    (["retrieve", "--query-type", "isoclip", "--gallery-type", "isoclip"], "IsoCLIP"),
    (["retrieve", "--query-type", "span", "--gallery-type", "span"],
     "the span projection (Herzog & Wang)"),
    (["classify", "--variants", "span-ncm"], "span-projection NCM"),
])
def test_cli_refuses_text_tower_tasks(tiny, folder, tmp_path, capsys, argv, what):
    from crossgap_jax.cli import main

    _, path = tiny
    run = tmp_path / "run"
    rc = main(["--quiet", argv[0], "--dataset", "imagefolder", *argv[1:], "--checkpoint", path,
               "--data-root", str(folder), "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{what} needs a text tower, but dinov2-tiny (dinov2) is an image-only" in err
    assert not list(run.rglob("*.npz"))  # refused before any features were computed


def test_text_image_retrieval_refused(tiny, shared_data, tmp_path, capsys):
    from crossgap_jax.cli import main

    _, path = tiny
    rc = main(["--quiet", "retrieve", "--dataset", "coco_text", "--split", "test",
               "--checkpoint", path, "--data-root", str(shared_data), "--run-dir",
               str(tmp_path / "run"), "--max-queries", "4", "--max-gallery", "8"])
    assert rc == 2
    assert "text features needs a text tower, but dinov2-tiny" in capsys.readouterr().err


def test_classify_ncm_recomputed(tiny, shared_data, tmp_path):
    """NCM with DINOv2 features (identity head) against a brute-force recomputation from the
    cached features."""
    from crossgap_jax.cli import main
    from crossgap_jax.data import get_dataset
    from crossgap_jax.pipeline.store import load_features

    _, path = tiny
    run = tmp_path / "run"
    assert main(["--quiet", "classify", "--dataset", "caltech101", "--variants", "ncm",
                 "--checkpoint", path, "--data-root", str(shared_data), "--run-dir", str(run),
                 "--batch-size", "8", "--max-queries", "12", "--max-gallery", "200"]) == 0
    (rec,) = (json.loads(p.read_text()) for p in (run / "records").glob("classify-*.json"))
    res = rec["results"]

    def cached(split):
        (fs,) = [f for f in (load_features(str(p)) for p in run.rglob(f"{split}-image-*.npz"))
                 if not f.meta["projected"]]
        ds = get_dataset("caltech101", str(shared_data), split)
        pos = {it: i for i, it in enumerate(ds.items)}
        return fs.features.astype(np.float64), np.array([ds.labels[pos[i]] for i in fs.items])

    (xte, yte), (xtr, ytr) = cached("test"), cached("train")
    means = np.stack([xtr[ytr == c].mean(0) for c in range(100)])

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    sims = unit(xte) @ unit(means).T
    top1 = 100 * np.mean(np.argmax(sims, 1) == yte)
    assert res["ncm"]["top1"] == pytest.approx(top1, abs=1e-6)
    assert res["ncm"]["num_samples"] == 12 and res["ncm_train"]["num_images"] == 200
    assert "inter" not in res


@pytest.mark.slow
def test_indicators_and_fewshot_image_only(tiny, shared_data, tmp_path):
    """The misalignment indicators and few-shot NCM run on DINOv2 with their defaults
    narrowed to what needs no text tower (image-image; image / pca / centered)."""
    from crossgap_jax.cli import main

    _, path = tiny
    run = tmp_path / "run"
    common = ["--dataset", "caltech101", "--checkpoint", path, "--data-root", str(shared_data),
              "--run-dir", str(run), "--batch-size", "8", "--max-queries", "12"]
    assert main(["--quiet", "indicators", *common]) == 0
    (rec,) = (json.loads(p.read_text()) for p in (run / "indicators").glob("*.json"))
    assert rec["pairs"] == ["image-image"] and "text-image" not in rec["indicators"]
    assert main(["--quiet", "classify", "--variants", "fewshot", "--max-gallery", "200",
                 "--pca-k", "4", *common]) == 0
    (rec,) = (json.loads(p.read_text()) for p in (run / "records").glob("classify-*.json"))
    assert sorted(rec["results"]["fewshot"]["types"]) == ["centered", "image", "pca-4"]


def test_compare_on_an_image_only_backbone(tiny, shared_data, tmp_path):
    """``compare`` with DINOv2: every method that needs a text tower is a cell that says
    so (no number); the image and centred cells equal a brute-force NumPy recomputation
    from the run's cached features."""

    from crossgap_jax.cli import main
    from crossgap_jax.data import get_task

    _, path = tiny
    run, out = tmp_path / "run", tmp_path / "out.json"
    assert main(["--quiet", "compare", "--datasets", "caltech101", "--checkpoint", path,
                 "--data-root", str(shared_data), "--run-dir", str(run), "--batch-size", "8",
                 "--max-queries", "10", "--max-gallery", "40", "--methods",
                 "image,oti,isoclip,centered", "--isoclip-k", "3,10", "--shots", "1",
                 "--fewshot-seeds", "0", "--output", str(out)]) == 0
    cal = json.loads(out.read_text())["results"]["datasets"]["caltech101"]
    for row in ("oti", "isoclip"):
        assert "value" not in cal["cells"][row]
        assert "text tower" in cal["cells"][row]["skipped"], cal["cells"][row]
        # few-shot NCM: the same words for these rows, the image-only rows measured
        assert "text tower" in cal["fewshot"]["cells"][row]["skipped"], row
    assert {"image", "centered"} <= {r for r, c in cal["fewshot"]["cells"].items()
                                     if "shots" in c}
    q_d = cached_features(run, "caltech101", "test", True)
    g_d = cached_features(run, "caltech101", "train", True, 40)
    qi, gi = sorted(q_d), sorted(g_d)
    task = get_task("caltech101", str(shared_data))
    lab_q = dict(zip(task.query.items, task.query.labels))
    lab_g = dict(zip(task.gallery.items, task.gallery.labels))
    q = np.stack([q_d[i] for i in qi])
    g = np.stack([g_d[i] for i in gi])
    yq, yg = np.array([lab_q[i] for i in qi]), np.array([lab_g[i] for i in gi])
    uq = q / np.linalg.norm(q, axis=1, keepdims=True)
    ug = g / np.linalg.norm(g, axis=1, keepdims=True)
    mu = ug.mean(0)
    for row, (a, b) in {"image": (q, g), "centered": (uq - mu, ug - mu)}.items():
        assert cal["cells"][row]["value"] == pytest.approx(
            ref_retrieval(a, b, yq, yg)["mAP"], abs=1e-4), row
