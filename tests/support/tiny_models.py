"""The ``tiny`` CLIP with random weights, built once per test process and seed.

Building one compiles the parameter initialiser (~3 s here); every test module that needs
the same seed shares the bundle, and with it the functions it has compiled. The bundle's
arrays are immutable; a test that reassigns an attribute of its model builds its own with
``create_clip``.
"""

from __future__ import annotations

import functools

from crossgap_jax.models import CLIP, create_clip


@functools.cache
def tiny_clip(seed: int = 0) -> CLIP:
    """``create_clip("tiny", seed)``, shared by the whole test session."""
    return create_clip("tiny", seed)
