"""Deprecated module path: ``core`` was split into :mod:`crossgap_jax.data.types` (splits,
errors), :mod:`crossgap_jax.data.decoding` (image decoding) and
:mod:`crossgap_jax.data.task` (the retrieval task). Names still resolve here, with a
:class:`DeprecationWarning`."""

from crossgap_jax.data import _moved, decoding, task, types

__getattr__, __dir__ = _moved.forward(__name__, [types, decoding, task])
