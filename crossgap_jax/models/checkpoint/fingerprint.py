"""The one content fingerprint of model weights, and the model identity built on it.

:func:`params_fingerprint` hashes the parameter *values* (sha256 over each leaf's
``/``-joined path and its float32 bytes, in sorted path order): the same weights reached
through another path, a symlink, another container or format give the same value;
different weights a different one. :func:`crossgap_jax.models.checkpoint.loader.load` computes it
once per load (``info["params_sha256"]``) and the bundle carries it
(:attr:`crossgap_jax.models.CLIP.weights_sha256`); the feature cache and the inversion
manifests key on :func:`model_fingerprint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import flax.traverse_util as traverse_util
import numpy as np


def params_fingerprint(params: Any) -> str:
    """Hex sha256 of a params pytree by content (see the module docstring).

    Args:
        params: a nested dict of arrays (any float dtype; hashed as float32 bytes).

    Returns:
        64 hex characters.
    """
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    h = hashlib.sha256()
    for k in sorted(flat):
        h.update(k.encode())
        h.update(np.ascontiguousarray(np.asarray(flat[k], np.float32)).tobytes())
    return h.hexdigest()


def model_fingerprint(clip: Any) -> dict[str, Any]:
    """Identity of a loaded bundle: ``architecture``, ``family``, ``config`` (all fields,
    JSON types), compute ``dtype`` and ``params_sha256`` (:func:`params_fingerprint`,
    computed once per load). Callers keep the keys they persist."""
    config = clip.config
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config)
    cfg = json.loads(json.dumps(cfg, default=lambda o: o.item() if hasattr(o, "item")
                                else str(o)))
    return {"architecture": config.name, "family": getattr(config, "family", "clip"),
            "config": cfg, "dtype": np.dtype(clip.dtype).name,
            "params_sha256": clip.weights_sha256}
