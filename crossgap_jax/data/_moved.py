"""Deprecated module paths of the data layer: attribute access forwarded, with a warning.

The data layer was reorganised (issue 14, item 9): one module per data source under
:mod:`crossgap_jax.data.sources`, and :mod:`~crossgap_jax.data.types`,
:mod:`~crossgap_jax.data.decoding`, :mod:`~crossgap_jax.data.task` instead of ``core``,
:mod:`~crossgap_jax.data.loader` instead of ``pipeline``. The old modules stay importable;
each name read through them resolves to the same object in its new home and raises a
:class:`DeprecationWarning` that names that home.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any


def forward(old: str, homes: Sequence[ModuleType]) -> tuple[Callable[[str], Any],
                                                              Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for the deprecated module ``old``.

    Args:
        old: the deprecated module's name (its ``__name__``).
        homes: the modules its names moved to, searched in order.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the deprecated module.

    Raises (from the returned ``__getattr__``):
        AttributeError: a name none of ``homes`` defines.
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        having = [h for h in homes if hasattr(h, name)]
        if not having:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        obj = getattr(having[0], name)
        # Name the module that defines the object, not one that merely imports it.
        home = next((h for h in having if getattr(obj, "__module__", None) == h.__name__),
                    having[0])
        warnings.warn(f"{old}.{name} moved to {home.__name__}.{name}; import it from there "
                      f"({old} will be removed)", DeprecationWarning, stacklevel=2)
        return obj

    def __dir__() -> list[str]:
        return sorted({n for h in homes for n in dir(h) if not n.startswith("__")})

    return __getattr__, __dir__
