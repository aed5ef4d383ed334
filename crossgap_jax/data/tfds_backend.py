"""Deprecated module path: the tfds reader is :mod:`crossgap_jax.data.sources.tfds`. Names
still resolve here, with a :class:`DeprecationWarning`."""

from crossgap_jax.data import _moved
from crossgap_jax.data.sources import tfds

__getattr__, __dir__ = _moved.forward(__name__, [tfds])
