"""Count XLA compilations through JAX's public logging (``jax.log_compiles``) and monitoring.

Tests use this instead of the private ``jitted._cache_size()``, whose meaning (and
existence) changes between JAX versions.
"""

from __future__ import annotations

import logging

import jax


class CompileCounter:
    """Context manager recording the compilations that happen inside it.

    Args:
        name: count only compilations of ``jit(<name>)`` (the jitted function's
            ``__name__``); default: every compilation.

    Attributes:
        logs: every ``jax`` log message seen.
        events: ``/jax/core/compile/backend_compile_duration`` monitoring events.
    """

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self, name: str | None = None):
        self.name = name
        self.events: list[str] = []
        self.logs: list[str] = []

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self._on_event)
        self._handler = logging.Handler(level=logging.DEBUG)
        self._handler.emit = lambda r: self.logs.append(r.getMessage())
        logging.getLogger("jax").addHandler(self._handler)
        self._ctx = jax.log_compiles(True)
        self._ctx.__enter__()
        return self

    def _on_event(self, name: str, secs: float, **kw) -> None:
        if name == self.EVENT:
            self.events.append(name)

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
        logging.getLogger("jax").removeHandler(self._handler)
        jax.monitoring.unregister_event_duration_listener(self._on_event)

    @property
    def compiles(self) -> int:
        """Number of ``Compiling jit(...)`` records (of ``jit(name)`` when a name is given)."""
        prefix = "Compiling" if self.name is None else f"Compiling jit({self.name})"
        return len([m for m in self.logs if m.startswith(prefix)])
