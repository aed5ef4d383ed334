"""Shared pytest fixtures: the real data folder, the OpenAI reference code, tiny models."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_root() -> pathlib.Path | None:
    """``$CROSSGAP_SHARED_DATA``, else ``../shared/data`` beside the repository, else None."""
    env = os.environ.get("CROSSGAP_SHARED_DATA")
    candidates = [pathlib.Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found: set CROSSGAP_SHARED_DATA or place it at ../shared/data")
    return root


def load_openai_module(name: str):
    """Import a module of the ``openai-clip`` package by file path.

    Its package ``__init__`` imports torchvision, which is not usable beside the CPU torch
    wheel, so ``model.py`` / ``simple_tokenizer.py`` are loaded directly.
    """
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the openai-clip package is not installed (make setup installs it)")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / f"{name}.py"
    mod_spec = importlib.util.spec_from_file_location(f"openai_clip_{name}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def openai_model_module():
    pytest.importorskip("torch")
    return load_openai_module("model")


@pytest.fixture(scope="session")
def openai_tokenizer_module():
    return load_openai_module("simple_tokenizer")


@pytest.fixture(scope="session")
def tiny():
    """The ``tiny`` CLIP of seed 0, shared by the session (:mod:`support.tiny_models`)."""
    from support.tiny_models import tiny_clip

    return tiny_clip(0)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    """A native checkpoint of the ``tiny`` CLIP (seed 3), written once per session (read
    only: a test that changes a checkpoint writes its own)."""
    from support.tiny_models import tiny_clip

    from crossgap_jax.models.checkpoint.native import save_native

    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    clip = tiny_clip(3)
    save_native(path, clip.config, clip.params)
    return path
