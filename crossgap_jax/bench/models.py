"""Random-weight models and memory readings shared by the benchmark phases
(:mod:`~crossgap_jax.bench.compare`, :mod:`~crossgap_jax.bench.memory`)."""

from __future__ import annotations

import resource
from typing import Any

import jax
import numpy as np

from crossgap_jax.models import CLIP, family_of, get_config


def peak_memory() -> dict[str, float | None]:
    """Peak device bytes in use (``memory_stats()``; None where the backend has none) and
    peak host RSS of this process, in MiB."""
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {"device_peak_mib": None if peak is None else peak / 2**20,
            "host_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def random_clip(arch: str, dtype: str = "float32", seed: int = 0) -> Any:
    """A CLIP bundle at ``arch``'s real shapes with N(0, 0.02) weights drawn by NumPy (no
    init compile); LayerNorm scales 1, biases 0. Speed does not depend on the values."""

    config = get_config(arch)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return np.ones(s.shape, np.float32)
        if "bias" in name:
            return np.zeros(s.shape, np.float32)
        return (0.02 * rng.standard_normal(s.shape, dtype=np.float32))

    shapes = family_of(config).param_shapes(config)
    params = jax.device_put(jax.tree_util.tree_map_with_path(draw, shapes))
    return CLIP(config, params, dtype=dtype, info={"source": "random (benchmark)"})
