"""Reading a transformers model directory (``config.json``, ``preprocessor_config.json``,
``model.safetensors`` / ``pytorch_model.bin``) or its hub repo: the steps the readers of
the transformers-format families (DINOv2, DINOv3, SigLIP) share.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.formats import read_state_dict
from crossgap_jax.models.checkpoint.hub import HUB_ID, hub_fetch

#: The weights file of a transformers directory, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: ``preprocessor_config.json``'s ``resample`` (PIL) -> our interpolation name.
RESAMPLE = {2: "bilinear", 3: "bicubic"}


def read_json_checked(path: str) -> dict:
    """A JSON file as a dict.

    Raises:
        CheckpointError: the file cannot be read or is not JSON (names the file).
    """
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def square(v: Any, what: str) -> int:
    """A size that a config states as ``n`` or ``[n, n]`` -> ``n``.

    Raises:
        CheckpointError: a non-square pair (``what`` names the field).
    """
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise CheckpointError(f"non-square {what} {v} is not supported")
        v = v[0]
    return int(v)


def release_source(arch: Any, source: Any, pretrained: Mapping[tuple[str, str], str],
                   tag: str, *, label: str, fix: str, suffix: str = "") -> Any:
    """``source``, or the hub id of ``arch``'s release when ``source`` is None or the
    family ``tag`` (``pretrained`` is keyed by ``(name without suffix, tag)``).

    Raises:
        CheckpointError: no release for ``arch`` (``label``: the family; ``fix``: what to
            pass as ``checkpoint=`` instead).
    """
    if arch is None or (source is not None and source != tag):
        return source
    base = arch.name.removesuffix(suffix)
    if (base, tag) not in pretrained:
        raise CheckpointError(f"no released {label} weights for {arch.name!r}; pass "
                              f"checkpoint= {fix}")
    return pretrained[(base, tag)]


def hub_dir(repo: str) -> str:
    """Fetch ``config.json``, ``preprocessor_config.json`` (optional) and the weights of a
    hub repo through the package's hub machinery (Hugging Face cache, offline mode); the
    directory holding them."""
    weights = " or ".join(WEIGHT_FILES)
    _, cfg_path = hub_fetch(repo, ("config.json",), then=(weights,))
    hub_fetch(repo, ("preprocessor_config.json",), optional=True)
    hub_fetch(repo, WEIGHT_FILES, then=())
    return os.path.dirname(cfg_path)


def local_or_hub(source: Any) -> tuple[str, str]:
    """``(path, origin)``: an existing path as it is (``"local"``), a hub id (``hf-hub:`` /
    ``@revision`` accepted) fetched with :func:`hub_dir` (``"hf-hub"``)."""
    path = os.path.expanduser(str(source))
    repo = str(source).removeprefix("hf-hub:")
    if not os.path.exists(path) and HUB_ID.match(repo):
        return hub_dir(repo), "hf-hub"
    return path, "local"


@dataclasses.dataclass(frozen=True)
class HFDir:
    """What :func:`read_dir` found: the two JSON configs and the weights."""

    config: dict
    preprocessor: dict | None
    config_file: str
    weights: str
    tensors: dict[str, np.ndarray]
    fmt: str


def read_dir(path: str, model_class: str, *, allow_pickle: bool = False) -> HFDir:
    """Read a transformers directory: ``config.json``, ``preprocessor_config.json`` when
    present and the first of :data:`WEIGHT_FILES`.

    Raises:
        CheckpointNotFoundError: no ``config.json`` or no weights file (``model_class``,
            e.g. ``"Dinov2Model"``, says what directory was expected).
        CheckpointError: an unreadable JSON or weights file.
    """
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise CheckpointNotFoundError(f"{path}: no config.json (expected a transformers "
                                      f"{model_class} directory)", target=path)
    cfg = read_json_checked(cfg_file)
    pre_file = os.path.join(path, "preprocessor_config.json")
    pre = read_json_checked(pre_file) if os.path.isfile(pre_file) else None
    weights = next((os.path.join(path, f) for f in WEIGHT_FILES
                    if os.path.isfile(os.path.join(path, f))), None)
    if weights is None:
        raise CheckpointNotFoundError(f"{path}: no {' / '.join(WEIGHT_FILES)}", target=path)
    sd, fmt, _ = read_state_dict(weights, allow_pickle=allow_pickle)
    return HFDir(cfg, pre, cfg_file, weights, sd, fmt)


def processor_normalisation(pre: Mapping[str, Any], default_resample: int,
                            mean: tuple, std: tuple) -> tuple[str, tuple, tuple]:
    """``(interpolation, mean, std)`` of an image processor config (``resample`` 2 =
    bilinear, 3 = bicubic; ``image_mean`` / ``image_std``, else ``mean`` / ``std``).

    Raises:
        CheckpointError: another ``resample``, or a ``rescale_factor`` other than 1/255.
    """
    resample = int(pre.get("resample", default_resample))
    if resample not in RESAMPLE:
        raise CheckpointError(f"preprocessor_config.json: resample {resample} (only 2 = "
                              "bilinear, 3 = bicubic)")
    mean = tuple(float(x) for x in pre.get("image_mean", mean))
    std = tuple(float(x) for x in pre.get("image_std", std))
    if abs(float(pre.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise CheckpointError("preprocessor_config.json: rescale_factor other than 1/255")
    return RESAMPLE[resample], mean, std
