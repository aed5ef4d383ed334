"""Benchmarks that ship with the package: ``crossgap-jax bench`` (see docs/performance.md).

:mod:`~crossgap_jax.bench.compare` runs the phases; :mod:`~crossgap_jax.bench.flops` counts
FLOPs; :mod:`~crossgap_jax.bench.torch_reference` is the authors' PyTorch loop (imported only
when torch is installed).
"""

from crossgap_jax.bench.compare import BenchSettings, full_settings, run_bench, smoke_settings

__all__ = ["BenchSettings", "full_settings", "run_bench", "smoke_settings"]
