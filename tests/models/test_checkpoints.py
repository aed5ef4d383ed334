"""Checkpoint formats, sources and errors, on tiny models with the real tensor names.

Every file here is generated from the reference PyTorch implementations (OpenAI
``model.py``, transformers ``CLIPModel``) so names, dtypes and containers are those of
the released checkpoints. The network is never used: sockets are blocked for the whole
module, downloads go through a fake ``urlopen``, the hub through a fake cache.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import warnings

import flax.traverse_util as traverse_util
import numpy as np
import pytest
from support import clip_factories as F

from crossgap_jax.fileio import sha256_file
from crossgap_jax.models import CheckpointError
from crossgap_jax.models.bundle import CLIP, load_clip
from crossgap_jax.models.checkpoint.errors import CheckpointNotFoundError, ChecksumError
from crossgap_jax.models.checkpoint.formats import read_safetensors, sniff_format
from crossgap_jax.models.checkpoint.hub import download_url
from crossgap_jax.models.checkpoint.loader import load
from crossgap_jax.models.checkpoint.native import load_native, save_native
from crossgap_jax.models.checkpoint.pretrained import (
    OPENAI_RELEASES,
    PRETRAINED,
    list_pretrained,
    openai_release,
)
from crossgap_jax.models.clip.convert import state_dict_to_params
from crossgap_jax.models.clip.declared import (
    config_from_hf,
    config_from_open_clip,
    match_registered,
)
from crossgap_jax.models.configs import get_config

torch = pytest.importorskip("torch")

TINY = get_config("tiny")
TEXTS = ["a photo of a cat", "", "a much longer sentence with quite a few more words in it"]
FEATURE_RTOL = 1e-5  # tiny models, float32: max |jax - torch| / max |torch|


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any socket connection is a test failure: nothing here may reach the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def ref(openai_model_module, tmp_path_factory):
    """Tiny OpenAI-layout model (weights fp16-exact) and checkpoint files made from it."""
    d = tmp_path_factory.mktemp("openai_files")
    model = F.openai_model(openai_model_module, TINY, seed=0)
    F.round_to_fp16_(model)  # fp16 files then hold exactly the reference weights
    pixels, ids = F.random_inputs(TINY, TEXTS, 2)
    sd32 = F.openai_state_dict(model)
    files = {
        "torchscript": F.save_openai_torchscript(model, str(d / "ViT-tiny.pt"), TINY),
        "state_dict_fp16": str(d / "sd16.pt"),
        "state_dict_fp32": str(d / "sd32.pt"),
        "open_clip_training": F.save_open_clip_training(model, str(d / "epoch_3.pt")),
    }
    torch.save(F.openai_state_dict(model, torch.float16), files["state_dict_fp16"])
    torch.save(sd32, files["state_dict_fp32"])
    expected = state_dict_to_params({k: v.numpy() for k, v in sd32.items()}, TINY)
    img, txt = F.openai_features(model, pixels, ids)
    return dict(model=model, files=files, sd=sd32, expected=expected, pixels=pixels, ids=ids,
                img=img, txt=txt, dir=d)


@pytest.fixture(scope="module")
def hf_ref(tmp_path_factory):
    """Tiny transformers CLIPModel and its save_pretrained variants."""
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("hf_files")
    model = F.hf_model(TINY, seed=1)
    pixels, ids = F.random_inputs(TINY, TEXTS, 2)
    pre = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    dirs = {
        "safetensors": F.save_hf_dir(model, str(d / "st"), preprocessor=pre),
        "bin": F.save_hf_dir(model, str(d / "bin"), safetensors=False),
        "sharded": F.save_hf_dir(model, str(d / "sharded"), max_shard_size="5MB"),
    }
    bare = d / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(dirs["safetensors"], "model.safetensors"), bare / "clip.safetensors")
    img, txt = F.hf_features(model, pixels, ids)
    return dict(model=model, dirs=dirs, bare=str(bare / "clip.safetensors"), pixels=pixels,
                ids=ids, img=img, txt=txt)


def _flat(params):
    return traverse_util.flatten_dict(params)


def assert_params_equal(a, b):
    fa, fb = _flat(a), _flat(b)
    assert set(fa) == set(fb)
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def assert_features_match(config, params, pixels, ids, img, txt):
    model = CLIP(config, params)
    assert F.max_rel_err(model.encode_image(pixels), img) <= FEATURE_RTOL
    assert F.max_rel_err(model.encode_text(ids), txt) <= FEATURE_RTOL


# --- OpenAI / open_clip layouts ----------------------------------------------------------


@pytest.mark.parametrize("kind,fmt,dtype", [
    ("torchscript", "openai-torchscript", "float16"),
    ("state_dict_fp16", "torch-state-dict", "float16"),
    ("state_dict_fp32", "torch-state-dict", "float32"),
    ("open_clip_training", "torch-state-dict", "float32"),
])
def test_openai_layout_formats_give_the_reference_params(ref, kind, fmt, dtype):
    config, params, info = load("tiny", ref["files"][kind])
    assert config == TINY
    assert_params_equal(params, ref["expected"])
    assert info["format"] == fmt and info["layout"] == "openai"
    assert info["checkpoint_dtype"] == dtype and info["origin"] == "local"
    assert info["source"] == ref["files"][kind]
    for leaf in _flat(params).values():
        assert leaf.dtype == np.float32


def test_torchscript_archive_is_recognised_and_int_buffers_ignored(ref):
    path = ref["files"]["torchscript"]
    assert sniff_format(path) == "torchscript"
    assert sniff_format(ref["files"]["state_dict_fp16"]) == "torch-zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sd = torch.jit.load(path, map_location="cpu").state_dict()
    assert {"input_resolution", "context_length", "vocab_size"} <= set(sd)
    assert sd["visual.conv1.weight"].dtype == torch.float16


def test_openai_layout_features_match_model_py(ref):
    config, params, _ = load("tiny", ref["files"]["torchscript"])
    assert_features_match(config, params, ref["pixels"], ref["ids"], ref["img"], ref["txt"])


def test_legacy_pickle_state_dict(ref, tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(ref["sd"], path, _use_new_zipfile_serialization=False)
    assert sniff_format(str(path)) == "torch-pickle"
    _, params, _ = load("tiny", str(path))
    assert_params_equal(params, ref["expected"])


def test_bare_state_dict_infers_shapes_and_warns_about_activation(ref, tmp_path):
    # OpenAI-layout .pt: quick GELU assumed; heads follow OpenAI's width // 64 rule.
    with pytest.warns(UserWarning, match="quick GELU"):
        config, params, info = load(ref["files"]["state_dict_fp32"])
    assert config.quick_gelu and info["config_source"] == "tensor shapes"
    assert config.vision == TINY.vision
    assert config.text.width == TINY.text.width and config.text.heads == TINY.text.width // 64
    assert config.name == "custom"  # tiny's text heads (4) break the width // 64 rule
    # open_clip file names: exact GELU assumed; quick_gelu= overrides without a warning.
    oc = tmp_path / "open_clip_pytorch_model.bin"
    shutil.copy(ref["files"]["state_dict_fp32"], oc)
    with pytest.warns(UserWarning, match="exact GELU"):
        config, _, _ = load(str(oc))
    assert not config.quick_gelu
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config, _, info = load(str(oc), quick_gelu=True)
    assert config.quick_gelu and info["activation_source"] == "argument"


def test_open_clip_directory_with_config(ref, tmp_path):
    from safetensors.torch import save_file

    save_file(ref["sd"], str(tmp_path / "open_clip_model.safetensors"))
    oc_cfg = {
        "model_cfg": {"embed_dim": 32, "quick_gelu": True,
                      "vision_cfg": {"image_size": 32, "layers": 2, "width": 128,
                                     "patch_size": 8, "head_width": 64},
                      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64,
                                   "heads": 4, "layers": 2}},
        "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]},
    }
    (tmp_path / "open_clip_config.json").write_text(json.dumps(oc_cfg))
    config, params, info = load(str(tmp_path))
    assert config.name == "tiny" and config.quick_gelu
    assert config.mean == (0.1, 0.2, 0.3) and config.std == (0.4, 0.5, 0.6)
    assert info["format"] == "safetensors" and info["config_source"].endswith(
        "open_clip_config.json")
    assert_params_equal(params, ref["expected"])
    # The same files under an architecture whose activation differs: refused.
    with pytest.raises(CheckpointError, match="quick_gelu: False vs True"):
        load("tiny-gelu", str(tmp_path))


def test_open_clip_unsupported_options_are_refused():
    with pytest.raises(CheckpointError, match="vision_cfg.attentional_pool=True"):
        config_from_open_clip({"model_cfg": {"vision_cfg": {"attentional_pool": True}}})
    # Training-only options are ignored; unset fields take open_clip's defaults.
    cfg = config_from_open_clip({"model_cfg": {"vision_cfg": {"patch_dropout": 0.5}}})
    assert cfg.vision.patch_size == 16 and cfg.text.heads == 8 and not cfg.quick_gelu


# --- Hugging Face layout -----------------------------------------------------------------


@pytest.mark.parametrize("kind,fmt", [("safetensors", "safetensors"),
                                      ("bin", "torch-state-dict"),
                                      ("sharded", "sharded-safetensors")])
def test_hf_directories(hf_ref, kind, fmt):
    config, params, info = load(hf_ref["dirs"][kind])
    assert config.name == "tiny"  # declared by config.json, matched to the registry
    assert info["format"] == fmt and info["layout"] == "hf"
    assert info["config_source"].endswith("config.json")
    assert_features_match(config, params, hf_ref["pixels"], hf_ref["ids"], hf_ref["img"],
                          hf_ref["txt"])
    if kind == "safetensors":
        assert config.mean == (0.5, 0.5, 0.5) and config.std == (0.25, 0.25, 0.25)
    if kind == "sharded":
        assert isinstance(info["path"], list) and len(info["path"]) == 2


def test_hf_sharded_index_file_directly(hf_ref):
    index = os.path.join(hf_ref["dirs"]["sharded"], "model.safetensors.index.json")
    config, _, info = load(index)
    assert config.name == "tiny" and info["format"] == "sharded-safetensors"


def test_hf_bare_safetensors_with_architecture(hf_ref):
    config, params, info = load("tiny", hf_ref["bare"])
    assert info["format"] == "safetensors" and info["layout"] == "hf"
    assert_features_match(config, params, hf_ref["pixels"], hf_ref["ids"], hf_ref["img"],
                          hf_ref["txt"])


def test_hf_config_parsing_defaults_and_activation():
    # save_pretrained may omit defaults: an empty sub-config means transformers' defaults.
    cfg = config_from_hf({"model_type": "clip", "text_config": {}, "vision_config": {}})
    assert cfg.quick_gelu and match_registered(cfg) == "ViT-B/32"
    gelu = config_from_hf({"text_config": {"hidden_act": "gelu"},
                             "vision_config": {"hidden_act": "gelu"}})
    assert not gelu.quick_gelu and match_registered(gelu) == "ViT-B-32"
    with pytest.raises(CheckpointError, match="hidden_act"):
        config_from_hf({"text_config": {"hidden_act": "gelu_new"}})
    with pytest.raises(CheckpointError, match="siglip"):
        config_from_hf({"model_type": "siglip"})


def test_bf16_safetensors_are_widened_exactly(tmp_path):
    from safetensors.torch import save_file

    x = torch.randn(5, 3).bfloat16()
    save_file({"a": x, "b": torch.arange(4, dtype=torch.float16)}, str(tmp_path / "x.st"))
    sd, _ = read_safetensors(str(tmp_path / "x.st"))
    np.testing.assert_array_equal(sd["a"], x.float().numpy())
    assert sd["b"].dtype == np.float16


# --- errors ------------------------------------------------------------------------------


def test_wrong_shape_names_the_tensor(ref, tmp_path):
    sd = dict(ref["sd"])
    sd["visual.proj"] = torch.zeros(128, 16)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=re.escape("visual.proj (visual/proj): checkpoint "
                                                        "(128, 16) vs model (128, 32)")):
        load("tiny", str(tmp_path / "bad.pt"))


def test_missing_and_unexpected_tensors_are_listed(ref, tmp_path):
    sd = dict(ref["sd"])
    del sd["ln_final.bias"], sd["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    sd["extra.head.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        load("tiny", str(tmp_path / "bad.pt"))
    msg = str(e.value)
    assert "missing tensors" in msg and "ln_final/bias" in msg
    assert "visual/transformer/resblocks_1/mlp/c_fc/kernel" in msg
    assert "unexpected tensors" in msg and "extra.head.weight" in msg


def test_checkpoint_of_another_architecture(ref):
    with pytest.raises(CheckpointError, match="visual.conv1.weight"):
        load("ViT-B/32", ref["files"]["state_dict_fp32"])


def test_unknown_architecture_lists_known_ones(ref):
    with pytest.raises(KeyError) as e:
        load("ViT-X/99", ref["files"]["state_dict_fp32"])
    for known in ("ViT-B/32", "ViT-L/14", "ViT-B-32", "tiny"):
        assert known in str(e.value)


def test_weights_only_refusal_mentions_allow_pickle(ref, tmp_path):
    path = tmp_path / "epoch_1.pt"
    torch.save({"state_dict": ref["sd"], "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load("tiny", str(path))
    _, params, _ = load("tiny", str(path), allow_pickle=True)
    assert_params_equal(params, ref["expected"])


def test_unrecognised_files_and_empty_directories(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="unrecognised checkpoint file"):
        load("tiny", str(tmp_path / "junk.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="holds no CLIP weights"):
        load("tiny", str(tmp_path / "empty"))
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint"):
        load("tiny", str(tmp_path / "nope.pt"))


def test_pretrained_tag_errors():
    with pytest.raises(CheckpointError, match="datacomp_xl_s13b_b90k"):
        load("ViT-B-16", "datacomp_xl_s13b_b90k")  # tag of other archs
    with pytest.raises(CheckpointError, match="laion2b_s34b_b79k"):
        load("ViT-B-32")  # no default: lists the tags
    with pytest.raises(CheckpointError, match="create_clip"):
        load("tiny")
    with pytest.raises(CheckpointError, match="not a known tag"):
        load("ViT-L-14", "no_such_tag")


def test_pretrained_tables_match_openai_clip_package():
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the openai-clip package is not installed")
    text = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "clip.py").read_text()
    theirs = dict(re.findall(r'"([^"]+)": "(https://openaipublic[^"]+)"', text))
    for arch, url in OPENAI_RELEASES.items():
        assert theirs[arch] == url
        assert openai_release(arch) == (url, url.split("/")[-2])
    assert openai_release("ViT-L-14")[0] == OPENAI_RELEASES["ViT-L/14"]
    pairs = list_pretrained()
    for pair in [("ViT-B-32", "datacomp_xl_s13b_b90k"), ("ViT-L-14", "datacomp_xl_s13b_b90k"),
                 ("ViT-B/32", "openai"), ("ViT-L/14", "openai")]:
        assert pair in pairs


# --- native format -----------------------------------------------------------------------


def test_native_roundtrip_without_torch(ref, tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    save_native(path, TINY, ref["expected"], {"source": "test", "n": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temp file left
    sums = {"/".join(k): float(np.asarray(v, np.float64).sum())
            for k, v in _flat(ref["expected"]).items()}
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import flax.traverse_util as tu
        from crossgap_jax.models.checkpoint.loader import load
        from crossgap_jax.models.checkpoint.native import load_native
        cfg, params, info = load({path!r})
        cfg2, params2, info2 = load_native({path!r})
        assert cfg == cfg2 and cfg.name == "tiny", cfg
        sums = {{"/".join(k): float(np.asarray(v, np.float64).sum())
                 for k, v in tu.flatten_dict(params).items()}}
        bad = [m for m in ("torch", "transformers") if m in sys.modules]
        print(json.dumps({{"sums": sums, "info": info2, "bad": bad, "fmt": info["format"]}}))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["bad"] == [], f"the native path imported {got['bad']}"
    assert got["fmt"] == "native"
    assert got["info"]["metadata"] == {"source": "test", "n": 3}
    assert got["sums"] == sums


def test_native_in_process_and_errors(ref, tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    save_native(path, TINY, ref["expected"])
    config, params, info = load("tiny", path)
    assert info["format"] == "native" and config == TINY
    assert_params_equal(params, ref["expected"])
    with pytest.raises(CheckpointError, match="vision.width: 768 vs 128"):
        load("ViT-B/32", path)
    # A file whose tensors do not fit its own config.
    broken = dict(_flat(ref["expected"]))
    broken.pop(("ln_final", "bias"))
    save_native(str(tmp_path / "broken.safetensors"), TINY,
                  traverse_util.unflatten_dict(broken))
    with pytest.raises(CheckpointError, match="missing tensors .*\n  ln_final/bias"):
        load_native(str(tmp_path / "broken.safetensors"))
    # A plain safetensors state dict is not native.
    with pytest.raises(CheckpointError, match="not in the native format"):
        from safetensors.numpy import save_file

        save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "plain.safetensors"))
        load_native(str(tmp_path / "plain.safetensors"))


def test_load_clip_bundle_from_checkpoint(ref):
    model = load_clip("tiny", ref["files"]["torchscript"])
    assert model.info["format"] == "openai-torchscript"
    assert F.max_rel_err(model.encode_text(ref["ids"]), ref["txt"]) <= FEATURE_RTOL


# --- downloads (fake urlopen) ------------------------------------------------------------


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve(monkeypatch, data: bytes | None, calls: list):
    def urlopen(url, timeout=None):
        calls.append(url)
        if data is None:
            raise urllib.error.URLError("network is blocked in tests")
        return _FakeResponse(data)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_download_checks_sha256_and_is_atomic(monkeypatch, tmp_path):
    payload = b"weights" * 1000
    good = hashlib.sha256(payload).hexdigest()
    dest = str(tmp_path / "cache" / "m.pt")
    calls: list = []
    _serve(monkeypatch, payload, calls)
    with pytest.raises(ChecksumError, match="expected " + "0" * 64):
        download_url("https://example.invalid/m.pt", dest, "0" * 64, progress=False)
    assert not os.path.exists(dest) and os.listdir(tmp_path / "cache") == []  # no partial file
    assert download_url("https://example.invalid/m.pt", dest, good, progress=False) == dest
    assert open(dest, "rb").read() == payload
    # A cached file with the right hash is not fetched again.
    _serve(monkeypatch, None, calls)
    n = len(calls)
    assert download_url("https://example.invalid/m.pt", dest, good, progress=False) == dest
    assert len(calls) == n
    # A corrupt cached file is downloaded again, with a warning.
    with open(dest, "wb") as f:
        f.write(b"corrupt")
    _serve(monkeypatch, payload, calls)
    with pytest.warns(UserWarning, match="sha256"):
        download_url("https://example.invalid/m.pt", dest, good, progress=False)
    assert open(dest, "rb").read() == payload


def test_openai_release_download_end_to_end(ref, monkeypatch, tmp_path):
    """``load(arch)`` -> release URL -> cache -> TorchScript, with a fake server."""
    data = open(ref["files"]["torchscript"], "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(OPENAI_RELEASES, "tiny", f"https://example.invalid/clip/models/{sha}"
                                                   f"/tiny.pt")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    calls: list = []
    _serve(monkeypatch, data, calls)
    cache = tmp_path / "cache"
    config, params, info = load("tiny", cache_dir=str(cache), progress=False)
    assert len(calls) == 1 and (cache / "tiny.pt").is_file()
    assert info["origin"] == "openai-url" and info["sha256"] == sha
    assert info["format"] == "openai-torchscript"
    assert_params_equal(params, ref["expected"])
    _serve(monkeypatch, None, calls)  # second load: from the cache, no request
    load("tiny", "openai", cache_dir=str(cache))
    assert len(calls) == 1


def test_openai_release_offline_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    calls: list = []
    _serve(monkeypatch, None, calls)
    url, sha = openai_release("ViT-B/32")
    cache = tmp_path / "cache"
    # Offline flag: no request at all.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as e:
        load("ViT-B/32", cache_dir=str(cache))
    assert calls == []
    msg = str(e.value)
    assert url in msg and str(cache / "ViT-B-32.pt") in msg and sha in msg
    assert "checkpoint=PATH" in msg
    assert e.value.url == url and e.value.target == str(cache / "ViT-B-32.pt")
    # No flag but no network: the request fails, same advice.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(CheckpointNotFoundError, match="network is blocked") as e:
        load("ViT-B-32", "openai", cache_dir=str(cache))
    assert calls == [url] and str(cache / "ViT-B-32.pt") in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


# --- Hugging Face hub (offline, fake cache) ----------------------------------------------


def _fake_hub_cache(root: pathlib.Path, repo_id: str, files: dict[str, str]) -> None:
    """Lay ``files`` (name -> local path) out as the HF cache does: blobs named by sha256,
    snapshot symlinks, refs/main."""
    base = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        sha = hashlib.sha256(open(src, "rb").read()).hexdigest()
        shutil.copy(src, base / "blobs" / sha)
        (snap / name).symlink_to(os.path.relpath(base / "blobs" / sha, snap))


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_offline_empty_cache_says_what_to_fetch(offline_hub):
    with pytest.raises(CheckpointNotFoundError) as e:
        load("openai/clip-vit-base-patch32")
    msg = str(e.value)
    assert "openai/clip-vit-base-patch32" in msg and "config.json" in msg
    assert "model.safetensors" in msg and "hf download" in msg and str(offline_hub) in msg
    assert "checkpoint=DIR" in msg
    assert e.value.repo_id == "openai/clip-vit-base-patch32"


def test_open_clip_tag_offline_says_what_to_fetch(offline_hub):
    with pytest.raises(CheckpointNotFoundError) as e:
        load("ViT-B-32", "datacomp_xl_s13b_b90k")
    msg = str(e.value)
    assert "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K" in msg
    assert "open_clip_config.json" in msg and "open_clip_model.safetensors" in msg


def test_hub_ids_resolve_from_the_cache_offline(offline_hub, hf_ref, ref, tmp_path):
    st = hf_ref["dirs"]["safetensors"]
    _fake_hub_cache(offline_hub, "someone/tiny-clip", {
        "config.json": os.path.join(st, "config.json"),
        "model.safetensors": os.path.join(st, "model.safetensors"),
    })
    config, params, info = load("someone/tiny-clip")
    assert config.name == "tiny" and info["origin"] == "hf-hub"
    assert info["sha256"] == sha256_file(os.path.join(st, "model.safetensors"))
    assert_features_match(config, params, hf_ref["pixels"], hf_ref["ids"], hf_ref["img"],
                          hf_ref["txt"])
    # open_clip repo through "hf-hub:" and through a pretrained tag of the table.
    from safetensors.torch import save_file

    save_file(ref["sd"], str(tmp_path / "oc.safetensors"))
    oc_cfg = tmp_path / "open_clip_config.json"
    oc_cfg.write_text(json.dumps({"model_cfg": {
        "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 128,
                                        "patch_size": 8},
        "text_cfg": {"width": 64, "heads": 4, "layers": 2}}}))
    _fake_hub_cache(offline_hub, "someone/tiny-open-clip", {
        "open_clip_config.json": str(oc_cfg),
        "open_clip_model.safetensors": str(tmp_path / "oc.safetensors"),
    })
    config, params, info = load("hf-hub:someone/tiny-open-clip")
    assert config.name == "tiny-gelu" and info["origin"] == "open_clip-hub"
    assert_params_equal(params, ref["expected"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRETRAINED, ("tiny-gelu", "test_tag"), "hf-hub:someone/tiny-open-clip")
        config, _, info = load("tiny-gelu", "test_tag")
    assert info["source"] == "test_tag" and info["repo_id"] == "someone/tiny-open-clip"


def test_unknown_name_that_looks_like_a_hub_id(offline_hub):
    with pytest.raises(CheckpointNotFoundError) as e:
        load("ViT-B/33")
    assert "known architecture names" in str(e.value) and "ViT-B/32" in str(e.value)
