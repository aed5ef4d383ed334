"""Deprecated module path: the batch loader is :mod:`crossgap_jax.data.loader` (renamed so that
it is not mistaken for the :mod:`crossgap_jax.pipeline` package). Names still resolve here,
with a :class:`DeprecationWarning`."""

from crossgap_jax.data import _moved, loader

__getattr__, __dir__ = _moved.forward(__name__, [loader])
