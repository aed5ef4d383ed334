"""The process-wide JAX settings a result's numbers could depend on.

OTI/OVI draw and compute in float32 whatever ``jax_enable_x64`` says (the x64 run equals the
default run bit for bit on CPU, ``tests/inversion/test_x64.py``), but a global flag is the kind of
thing that silently changes numbers, so runs record them: the pipeline's provenance
(:func:`~crossgap_jax.pipeline.records.provenance`) and every resumable inversion's
manifest and shards (:mod:`~crossgap_jax.inversion.resumable`).

Two kinds:

* :data:`RESUME_KEYS` must agree between a run and its restart (a restart under other
  values is refused): ``jax_enable_x64`` (64-bit types: float64 arithmetic wherever a value
  has no explicit dtype) and ``jax_default_matmul_precision`` (how float32 matmuls run on
  accelerators: bfloat16 passes on TPUs and TF32 on recent NVIDIA GPUs by default, full
  float32 with ``"highest"``; that changes results beyond rounding noise).
* the rest (``backend``, ``device_kind``, ``jax_version``) are recorded only: another
  device or JAX version runs the same computation with other float rounding, like the
  execution options (``batch_size``, ``devices`` ...) that may differ between restarts.
"""

from __future__ import annotations

from typing import Any

import jax

RESUME_KEYS = ("jax_enable_x64", "jax_default_matmul_precision")
# What a manifest written before these were recorded is taken to have used: JAX's defaults.
DEFAULTS: dict[str, Any] = {"jax_enable_x64": False, "jax_default_matmul_precision": None}


def jax_numerics() -> dict[str, Any]:
    """The numerics-relevant JAX settings of this process.

    Returns:
        ``{"jax_enable_x64": bool, "jax_default_matmul_precision": str | None (None: the
        backend's default), "backend": "cpu" / "gpu" / "tpu", "device_kind": the first
        local device's kind, "jax_version": str}``.
    """
    prec = jax.config.jax_default_matmul_precision
    return {"jax_enable_x64": bool(jax.config.jax_enable_x64),
            "jax_default_matmul_precision": None if prec is None else str(prec),
            "backend": jax.default_backend(),
            "device_kind": jax.local_devices()[0].device_kind,
            "jax_version": jax.__version__}


def resume_settings(numerics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The :data:`RESUME_KEYS` part of ``numerics`` (default: this process's), with
    :data:`DEFAULTS` for keys it lacks (older manifests)."""
    numerics = jax_numerics() if numerics is None else numerics
    return {k: numerics.get(k, DEFAULTS[k]) for k in RESUME_KEYS}


def fix_hint(key: str, stored: Any) -> str:
    """How to run this process under the stored value of ``key`` (one clause)."""
    if key == "jax_enable_x64":
        return (f"run with JAX_ENABLE_X64={int(bool(stored))} (or "
                f"jax.config.update('jax_enable_x64', {bool(stored)}))")
    env = ("unset JAX_DEFAULT_MATMUL_PRECISION" if stored is None
           else f"run with JAX_DEFAULT_MATMUL_PRECISION={stored}")
    return f"{env} (or jax.config.update('jax_default_matmul_precision', {stored!r}))"
