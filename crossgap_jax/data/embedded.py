"""Deprecated module path: the packaged demo data is :mod:`crossgap_jax.data.sources.embedded`.
Names still resolve here, with a :class:`DeprecationWarning`."""

from crossgap_jax.data import _moved
from crossgap_jax.data.sources import embedded

__getattr__, __dir__ = _moved.forward(__name__, [embedded])
