"""Step-level progress from inside a compiled OTI/OVI loop.

The loop stays **one** XLA program. With a progress handle, a step whose count is a
multiple of the handle's ``every`` (and the last step) ends with an unordered host callback
(:func:`jax.debug.callback`) carrying ``(channel, steps done)``; the host looks the channel
up and advances its bar. The handle is a traced ``int32 (2,)`` argument ``(channel, every)``,
so every call, every bar and every reporting interval reuse one compiled program.

A report costs ~0.1 ms of host time on a CPU (its operand becomes a ``jax.Array`` on the
host; ``benchmarks/bench_progress.py``), a step without a report ~0.2 us. The driver
reports every step of a call's first batch, then every ``k`` steps with ``k`` chosen from
the measured step time so that the bar moves about every :data:`REPORT_SECONDS`, and every
step when steps are slower than that. (On an accelerator a report also makes the device
wait for the host; not measured here, but at one report per 0.5 s it is a few per second.)

Usage (host side)::

    with channel(bar.update, every=1) as ch:
        raw = oti_fn(..., progress_channel=ch.handle)  # calls emit(handle, done, steps)
        jax.block_until_ready(raw)                     # wait inside the block
    every = ch.next_every()
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

# Target interval between two bar updates once the step time is known (seconds).
REPORT_SECONDS = 0.5

_MAX_EVERY = 2**31 - 1  # int32: 'only the last step'
_lock = threading.Lock()
_channels: dict[int, Channel] = {}
_ids = itertools.count(1)


class Channel:
    """One call's progress channel (host side); see :func:`channel`.

    Attributes:
        handle: ``int32 (2,)`` ``(channel id, every)``, the program's traced argument.
    """

    def __init__(self, on_steps: Callable[[int], object], every: int):
        self.on_steps, self.every = on_steps, min(max(1, int(every)), _MAX_EVERY)
        self.id = next(_ids) % (2**31 - 1)
        self.handle = np.asarray([self.id, self.every], np.int32)
        self.done = 0  # steps reported so far
        self.first: tuple[float, int] | None = None  # (time, steps) at the first report
        self.last_time = 0.0  # time of the latest report (its steps: self.done)

    def _report(self, done: int) -> int:
        """Record ``done`` steps; return the new steps (0 for a late or repeated report)."""
        new = done - self.done
        if new <= 0:
            return 0
        self.done, self.last_time = done, time.perf_counter()
        if self.first is None:
            self.first = (self.last_time, done)
        return new

    def seconds_per_step(self) -> float | None:
        """Step time measured between the first and the last report (compilation and the
        first reported steps excluded); ``None`` with fewer than two reports."""
        if self.first is None or self.done <= self.first[1]:
            return None
        return (self.last_time - self.first[0]) / (self.done - self.first[1])

    def next_every(self, target: float | None = None) -> int:
        """Steps between reports for the next batch of the same program: about ``target``
        seconds (default :data:`REPORT_SECONDS`) at the measured step time, at least 1."""
        sps = self.seconds_per_step()
        if sps is None:
            return self.every
        target = REPORT_SECONDS if target is None else target
        return min(max(1, int(target / max(sps, 1e-9))), _MAX_EVERY)


def _report(msg: np.ndarray) -> None:
    """Host side of :func:`emit`: ``msg`` = ``(channel, steps done)``."""
    ch, done = (int(v) for v in np.asarray(msg))
    with _lock:
        entry = _channels.get(ch)
        new = entry._report(done) if entry is not None else 0  # closed: dropped
    if new:
        entry.on_steps(new)


def emit(handle: jax.Array, done: jax.Array, steps: int) -> None:
    """Traced side: report ``done`` steps when ``done`` is a multiple of the handle's
    ``every`` or the last step.

    Args:
        handle: ``int32 (2,)`` from :attr:`Channel.handle` (a traced program argument).
        done: int32 scalar, steps finished so far (1 after the first step).
        steps: the loop's number of steps (static).
    """
    due = (done % handle[1] == 0) | (done == steps)
    # One operand (each operand becomes a host jax.Array: ~0.1 ms apiece on a CPU).
    jax.lax.cond(due, lambda: jax.debug.callback(_report, jnp.stack([handle[0], done])),
                 lambda: None)


@contextlib.contextmanager
def channel(on_steps: Callable[[int], object], every: int = 1) -> Iterator[Channel]:
    """Open a channel whose steps go to ``on_steps(k)`` (k new steps); closed on exit.

    Wait for the program's results inside the block: a report arriving after the channel
    closed is dropped. Thread-safe: concurrent calls get distinct channels.
    """
    ch = Channel(on_steps, every)
    with _lock:
        _channels[ch.id] = ch
    try:
        yield ch
    finally:
        with _lock:
            _channels.pop(ch.id, None)
