"""Deprecated module path: the text readers live one per source in
:mod:`crossgap_jax.data.sources` (``captions``, ``imdb``, ``newsgroups``, ``beir``, ``cisi``,
``jsonl``). Names still resolve here, with a :class:`DeprecationWarning`."""

from crossgap_jax.data import _moved
from crossgap_jax.data.sources import beir, captions, cisi, imdb, jsonl, newsgroups

__getattr__, __dir__ = _moved.forward(__name__, [captions, imdb, newsgroups, beir, cisi, jsonl])
