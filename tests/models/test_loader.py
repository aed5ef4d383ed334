"""The one loading pipeline (issue 14, items 2, 7, 10): family hook dispatch, the single fit
check, the content fingerprint, ``pretrained=`` and open_clip names, SigLIP's
``pool_index``, and the layering of model files vs converters (the faces of every
sub-package are checked in tests/test_layering.py).

No network: hub lookups run with ``HF_HUB_OFFLINE=1`` against an empty cache. Tiny models
with NumPy-random params (no compiled ``init``).
"""

from __future__ import annotations

import ast
import hashlib
import pathlib
import sys
import types
import warnings

import flax.traverse_util as traverse_util
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import crossgap_jax.models as M
from crossgap_jax.models.checkpoint import fit, loader
from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.clip import convert
from crossgap_jax.models.families import family_of
from crossgap_jax.models.siglip import convert as convert_siglip
from crossgap_jax.models.slip import convert as convert_slip

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _random_params(arch: str, seed: int = 0) -> dict:
    config = M.get_config(arch)
    rng = np.random.default_rng(seed)
    shapes = family_of(config).param_shapes(config)
    return jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes)


def _flat(params) -> dict:
    return traverse_util.flatten_dict(params)


def _contiguous(sd: dict) -> dict:
    """safetensors writes an array's memory as is: transposed views must be copied."""
    return {k: np.array(v, order="C") for k, v in sd.items()}


def _reference_hash(params) -> str:
    """sha256 over sorted '/'-joined paths and float32 bytes, re-derived here."""
    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in _flat(params).items()}
    h = hashlib.sha256()
    for k in sorted(flat):
        h.update(k.encode())
        h.update(flat[k].tobytes())
    return h.hexdigest()


# --- hook dispatch ------------------------------------------------------------------------
def test_unknown_family_is_a_clear_error():
    with pytest.raises(CheckpointError) as e:
        loader.loader_hooks("dinov2-not-registered")
    msg = str(e.value)
    assert "no checkpoint loader for model family 'dinov2-not-registered'" in msg
    assert "register_family" in msg and ", ".join(sorted(M.FAMILIES)) in msg
    assert {"clip", "dinov2", "dinov3", "pe_core", "siglip", "slip"} <= set(M.FAMILIES)
    with pytest.raises(CheckpointError, match="no checkpoint loader for model family 'nope'"):
        M.load("whatever.bin", family="nope")


def test_registered_hook_is_dispatched(tmp_path, monkeypatch):
    """A family registered by module path gets read / convert_tensors calls from load()."""
    params = _random_params("tiny")
    path = str(tmp_path / "tiny_openai.safetensors")
    save_file(_contiguous(convert.params_to_state_dict(params)), path)
    calls = []
    from crossgap_jax.models.clip import reader as clip_reader

    fake = types.ModuleType("fake_family_hooks")
    for name in ("claims", "architecture_diff", "match_registered", "adopt"):
        setattr(fake, name, getattr(clip_reader, name))
    fake.read = lambda req: calls.append(("read", req.source)) or clip_reader.read(req)
    fake.convert_tensors = lambda read, cfg: (calls.append(("convert", cfg.name))
                                              or clip_reader.convert_tensors(read, cfg))
    monkeypatch.setitem(sys.modules, "fake_family_hooks", fake)
    monkeypatch.setitem(M.FAMILIES, "fake", M.Family("fake", M.FAMILIES["clip"].model,
                                                  "fake_family_hooks"))
    config, got, info = M.load("tiny", path, family="fake")
    assert calls == [("read", path), ("convert", "tiny")]
    for k, v in _flat(params).items():
        np.testing.assert_array_equal(np.asarray(_flat(got)[k]), v)
    assert info["format"] == "safetensors" and info["layout"] == "openai"


def test_one_registry_entry_declares_a_family(monkeypatch):
    """register_family(Family(...)) is all a family needs: its model module's ARCHITECTURES
    become configs, family_of finds its model module, load() its hook module."""
    config = M.get_config("tiny").replace(name="fake-tiny", family="fake")
    model = types.ModuleType("fake_family_model")
    model.ARCHITECTURES = {"fake-tiny": config}
    model.ALIASES = {"open-fake": "fake-tiny"}
    hooks = types.ModuleType("fake_family_loader")
    monkeypatch.setitem(sys.modules, "fake_family_model", model)
    monkeypatch.setitem(sys.modules, "fake_family_loader", hooks)
    with pytest.raises(KeyError, match="unknown CLIP architecture 'fake-tiny'"):
        M.get_config("fake-tiny")

    M.register_family(M.Family("fake", "fake_family_model", "fake_family_loader"))
    try:
        assert M.get_config("fake-tiny") is config and "fake-tiny" in M.list_architectures()
        assert M.get_config("open-fake") is config
        assert family_of(config) is model and loader.loader_hooks("fake") is hooks
    finally:
        del M.FAMILIES["fake"]
    with pytest.raises(KeyError, match="unknown CLIP architecture 'fake-tiny'"):
        M.get_config("fake-tiny")  # gone with its entry
    assert M.get_config("tiny").family == "clip"  # the others untouched


# --- the one fit check ---------------------------------------------------------------------
def _expect_fit_message(err: CheckpointError, tensor: str, path: str, got, want):
    msg = str(err)
    assert f"{tensor} ({path}): checkpoint {got} vs model {want}" in msg
    assert msg.rstrip().endswith(fit.FIX)


def test_one_fit_message_for_every_converter(tmp_path):
    # CLIP (OpenAI layout)
    sd = convert.params_to_state_dict(_random_params("tiny"))
    sd["visual.proj"] = np.zeros((128, 16), np.float32)
    with pytest.raises(CheckpointError) as e:
        convert.state_dict_to_params(sd, M.get_config("tiny"))
    _expect_fit_message(e.value, "visual.proj", "visual/proj", (128, 16), (128, 32))
    assert str(e.value).startswith("checkpoint does not fit architecture 'tiny' (openai layout)")
    # SLIP
    sd = convert_slip.params_to_state_dict(_random_params("slip-tiny"))
    sd["image_projection"] = np.zeros((64, 7), np.float32)
    with pytest.raises(CheckpointError) as e:
        convert_slip.state_dict_to_params(sd, M.get_config("slip-tiny"))
    _expect_fit_message(e.value, "image_projection", "image_projection", (64, 7), (64, 32))
    assert "does not fit SLIP architecture 'slip-tiny' (slip layout)" in str(e.value)
    # SigLIP (transformers layout): Linear weights are (out, in) in the file
    sd = convert_siglip.params_to_hf_state_dict(_random_params("siglip-tiny"))
    sd["text_model.head.weight"] = np.zeros((64, 3), np.float32)
    with pytest.raises(CheckpointError) as e:
        convert_siglip.hf_state_dict_to_params(sd, M.get_config("siglip-tiny"))
    _expect_fit_message(e.value, "text_model.head.weight", "text_model/head/kernel", (3, 64),
                        (64, 64))
    # native: missing and unexpected tensors, same sections
    flat = dict(_flat(_random_params("tiny")))
    flat.pop(("ln_final", "bias"))
    flat[("extra", "w")] = np.zeros(2, np.float32)
    path = str(tmp_path / "broken.safetensors")
    M.save_native(path, M.get_config("tiny"), traverse_util.unflatten_dict(flat))
    with pytest.raises(CheckpointError) as e:
        M.load_native(path)
    msg = str(e.value)
    assert "missing tensors (Flax paths):\n  ln_final/bias" in msg
    assert "unexpected tensors:\n  extra/w" in msg and msg.rstrip().endswith(fit.FIX)


def test_fit_check_rejects_integer_tensors():
    flat = dict(_flat(_random_params("tiny")))
    flat[("ln_final", "bias")] = np.zeros(flat[("ln_final", "bias")].shape, np.int32)
    with pytest.raises(CheckpointError, match="ln_final/bias: checkpoint dtype int32 is not a "
                                              "float"):
        fit.check_fit(flat, M.get_config("tiny"))


# --- fingerprint -------------------------------------------------------------------------
def test_fingerprint_same_weights_two_paths_and_different_weights(tmp_path):
    params = _random_params("tiny", seed=1)
    a = str(tmp_path / "openai_layout.safetensors")
    save_file(_contiguous(convert.params_to_state_dict(params)), a)
    b = str(tmp_path / "native.safetensors")
    M.save_native(b, M.get_config("tiny"), params)
    (tmp_path / "link.safetensors").symlink_to(a)
    _, _, ia = M.load("tiny", a)
    _, _, ib = M.load("tiny", pretrained=b)
    _, _, il = M.load("tiny", str(tmp_path / "link.safetensors"))
    assert ia["format"] == "safetensors" and ib["format"] == "native"
    assert ia["params_sha256"] == ib["params_sha256"] == il["params_sha256"] \
        == _reference_hash(params)
    other = jax.tree.map(lambda x: x.copy(), params)
    other["ln_final"]["bias"][0] += 0.5
    c = str(tmp_path / "other.safetensors")
    M.save_native(c, M.get_config("tiny"), other)
    _, _, ic = M.load("tiny", c)
    assert ic["params_sha256"] == _reference_hash(other) != ia["params_sha256"]


def test_bundle_carries_the_loader_fingerprint(tmp_path):
    from crossgap_jax.inversion.resumable import model_fingerprint as resumable_fp
    from crossgap_jax.pipeline.store import model_fingerprint as store_fp

    params = _random_params("tiny", seed=2)
    path = str(tmp_path / "n.safetensors")
    M.save_native(path, M.get_config("tiny"), params)
    clip = M.load_clip(path)
    assert clip.weights_sha256 == clip.info["params_sha256"] == _reference_hash(params)
    assert clip._weights_hash[0] is clip.params  # handed over: not hashed a second time
    assert store_fp(clip) == {"architecture": "tiny", "family": "clip",
                              "params_sha256": _reference_hash(params), "dtype": "float32"}
    r = resumable_fp(clip)
    assert sorted(r) == ["config", "dtype", "params_sha256"]
    assert r["config"]["vision"]["width"] == 128 and r["params_sha256"] == _reference_hash(params)


# --- names: pretrained=, open_clip aliases -------------------------------------------------
def test_pretrained_alias_and_conflict(tmp_path):
    params = _random_params("tiny", seed=3)
    path = str(tmp_path / "n.safetensors")
    M.save_native(path, M.get_config("tiny"), params)
    _, _, i1 = M.load("tiny", path)
    _, _, i2 = M.load("tiny", pretrained=path)
    assert i1["params_sha256"] == i2["params_sha256"]
    assert M.load_clip("tiny", pretrained=path).weights_sha256 == i1["params_sha256"]
    with pytest.raises(ValueError, match="give checkpoint= or pretrained="):
        M.load("tiny", path, pretrained="openai")


_FACE_CHILD = """
import json, sys
import crossgap_jax.models as M
loaded = lambda: sorted(m for m in sys.modules
                        if m.endswith(".model") and m.startswith("crossgap_jax.models."))
before, jax_before = loaded(), "jax" in sys.modules
names = M.list_architectures()
print(json.dumps({"before": before, "jax_before": jax_before, "after": loaded(),
                  "families": {M.get_config(n).family for n in names} == set(M.FAMILIES),
                  "models": [M.FAMILIES[f].model for f in M.FAMILIES]}))
"""


def test_models_face_imports_no_model_module_until_the_first_lookup():
    """``import crossgap_jax.models`` imports neither JAX nor a family's model module; the
    first architecture lookup reads every registered family's table (a fresh process)."""
    import json
    import os
    import subprocess

    repo = str(pathlib.Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", _FACE_CHILD], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=repo), timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == [] and got["jax_before"] is False
    assert got["after"] == sorted(got["models"]) and got["families"] is True


def test_register_architecture_adds_a_name_and_refuses_a_known_one(monkeypatch):
    from crossgap_jax.models import configs

    monkeypatch.setattr(configs, "_REGISTRY", {})
    custom = M.get_config("tiny").replace(name="my-tiny")
    M.register_architecture(custom)
    assert M.get_config("my-tiny") is custom and M.list_architectures()[-1] == "my-tiny"
    with pytest.raises(ValueError, match="'tiny' already registered"):
        M.register_architecture(M.get_config("tiny").replace(layer_norm_eps=1e-6))
    wider = M.get_config("tiny").replace(embed_dim=48)
    M.register_architecture(wider, overwrite=True)  # replaces the family's entry
    assert M.get_config("tiny") is wider


def test_open_clip_siglip_name_is_our_config():
    ours = M.get_config("SigLIP-ViT-B-16")
    assert M.get_config("ViT-B-16-SigLIP") is ours
    # open_clip's ViT-B-16-SigLIP: 224 px, patch 16, width 768 x 12 layers, 32k vocab,
    # context 64 (its model config), the shapes we hold.
    assert (ours.vision.image_size, ours.vision.patch_size, ours.vision.width,
            ours.vision.layers, ours.text.vocab_size, ours.text.context_length) == (
        224, 16, 768, 12, 32000, 64)
    assert "ViT-B-16-SigLIP" not in M.list_architectures()  # an alias, not a second entry
    assert M.list_aliases()["ViT-B-16-SigLIP"] == "SigLIP-ViT-B-16"


def test_open_clip_siglip_name_resolves_to_the_webli_release(monkeypatch, tmp_path):
    """No download: offline with an empty cache, the message names the hub repo."""
    from huggingface_hub import constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for kw in ({"pretrained": "webli"}, {}):
        with pytest.raises(CheckpointNotFoundError) as e:
            M.load_clip("ViT-B-16-SigLIP", cache_dir=str(tmp_path / "hub"), **kw)
        assert e.value.repo_id == "google/siglip-base-patch16-224"


# --- SigLIP pool_index ---------------------------------------------------------------------
def test_siglip_pool_index_keyword_or_positional():
    from crossgap_jax.models.siglip import model as siglip

    config = M.get_config("siglip-tiny")
    params = _random_params("siglip-tiny", seed=4)
    ids = np.array([[5, 9, 1, 1] + [1] * 12, [7, 1, 1, 1] + [1] * 12], np.int32)
    pool = siglip.pool_indices(ids, config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = np.asarray(siglip.encode_text(params, ids, pool_index=pool, config=config))
        positional = np.asarray(siglip.encode_text(params, ids, pool, config=config))
    np.testing.assert_array_equal(new, positional)
    with pytest.raises(TypeError, match="eot_index"):
        siglip.encode_text(params, ids, config=config, eot_index=pool)


# --- layering ----------------------------------------------------------------------------
def _imported_modules(path: pathlib.Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
            mods.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


#: module-name parts that mark loading code: a reader / converter / checkpoint I/O.
LOADING_PARTS = ("checkpoint", "reader", "declared", "big_vision")


def _is_loading(module: str) -> bool:
    parts = module.split(".")[2:]
    return any(p in LOADING_PARTS or p.startswith("convert") for p in parts)


@pytest.mark.parametrize("model_file", [f"{fam}/model.py" for fam in (
    "clip", "siglip", "slip", "dinov2", "dinov3")])
def test_model_files_import_no_reader_or_converter(model_file):
    mods = _imported_modules(ROOT / "crossgap_jax" / "models" / model_file)
    bad = sorted(m for m in mods if m.startswith("crossgap_jax.models.") and _is_loading(m))
    assert not bad, f"{model_file} imports loading code: {bad}"


@pytest.mark.parametrize("config_name,config", [
    ("config.json", {"model_type": "dinov2"}), ("config.json", {"model_type": "siglip"}),
    ("config.json", {"model_type": "dinov3_vit"})])
def test_weights_file_inside_a_model_folder_names_the_folder(tmp_path, config_name, config):
    import json

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / config_name).write_text(json.dumps(config))
    weights = folder / "model.safetensors"
    save_file({"embeddings.cls_token": np.zeros((1, 1, 8), np.float32)}, str(weights))
    with pytest.raises(CheckpointError) as e:
        loader.load(str(weights))
    assert str(e.value) == ("unrecognised checkpoint layout; first tensor names: "
                            f"embeddings.cls_token; pass the folder ({folder}), not the "
                            "weights file inside it")
    (folder / config_name).unlink()  # a plain folder: no hint
    with pytest.raises(CheckpointError) as e:
        loader.load(str(weights))
    assert "pass the folder" not in str(e.value)
