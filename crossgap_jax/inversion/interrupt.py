"""Ctrl-C during a long inversion: finish the batch in flight, keep it, then stop.

A batch is one compiled program (all its optimisation steps); it cannot be stopped half
way, and a wait on it blocks Python's own SIGINT handling until it ends. So, while
:func:`~crossgap_jax.inversion.invert_dataset` runs (:func:`graceful_stop`, main thread
only; the previous handler is restored afterwards):

* the first SIGINT sets :attr:`StopRequest.requested` and says (on stderr, above the bar)
  that the run stops after the batch in flight and about when, from the step time measured
  by the progress channel or the previous batch. The driver
  (:func:`~crossgap_jax.inversion.driver.run_job`) waits for its batch by polling, so the
  handler runs at once, returns the finished batches, and ``invert_dataset`` writes them
  as a shard and raises :class:`InversionInterrupted` (a ``KeyboardInterrupt``);
* a second SIGINT raises :class:`InversionAborted` (a ``KeyboardInterrupt``) at once: the
  batch in flight is lost, every shard written before stays. The device keeps running that
  batch until it ends; a process that wants to exit before that calls ``os._exit`` (the
  CLI does).

Outside :func:`graceful_stop` (``oti`` / ``ovi`` called directly) SIGINT keeps Python's
behaviour; the driver's polling wait makes it raise ``KeyboardInterrupt`` at once instead
of after the batch.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm


class InversionInterrupted(KeyboardInterrupt):
    """The run stopped after a Ctrl-C, every finished batch written (``summary``: the
    :class:`~crossgap_jax.inversion.resumable.InvertSummary` of the work done)."""

    def __init__(self, message: str, summary: object = None):
        super().__init__(message)
        self.summary = summary


class InversionAborted(KeyboardInterrupt):
    """A second Ctrl-C: the run stopped at once; the batch in flight is lost, every shard
    written before stays. The device may still be running that batch, and a normal
    interpreter exit waits for it: ``device_busy`` tells a program that wants to exit now to
    use ``os._exit`` (the CLI does)."""

    device_busy = True


class StopRequest:
    """One run's stop flag, set by the first SIGINT.

    Attributes:
        requested: a stop after the batch in flight was asked for.
        what: names the run in messages (``"OVI"``).
        eta: set by the driver while a batch runs: ``() -> (seconds left or None, detail)``.
        last: ``(seconds, seconds per step)`` of the run's latest finished batch (the
            driver's estimate for a batch that has not reported a step time yet).
    """

    def __init__(self, what: str):
        self.requested = False
        self.what = what
        self.eta: Callable[[], tuple[float | None, str]] | None = None
        self.last: tuple[float, float] | None = None

    def message(self) -> str:
        """What the first Ctrl-C does, with the time left in the batch in flight."""
        left, detail = self.eta() if self.eta is not None else (None, "")
        when = (f"in about {format_seconds(left)}" if left is not None
                else "when it ends (its step time is not measured yet)")
        detail = f" ({detail})" if detail else ""
        return (f"{self.what}: interrupt: stopping after the batch in flight, {when}{detail}; "
                "its results are written, then the run stops. Press Ctrl-C again to abort "
                "now (the batch in flight is then lost).")


def format_seconds(s: float) -> str:
    """``"42 s"``, ``"3 min 5 s"``, ``"2 h 4 min"``."""
    s = max(0, round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


_active: StopRequest | None = None


def active() -> StopRequest | None:
    """The stop request of the :func:`graceful_stop` block in force, if any."""
    return _active


@contextlib.contextmanager
def graceful_stop(what: str) -> Iterator[StopRequest]:
    """Within the block, the first SIGINT asks for a stop after the batch in flight and the
    second raises :class:`InversionAborted` (see the module docstring).

    A no-op (a request that is never set) off the main thread, where handlers cannot be
    installed, or when SIGINT is ignored. The previous handler is restored on exit.
    """
    global _active
    stop = StopRequest(what)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or previous is None:  # ignored / not set from Python
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.requested:
            raise InversionAborted(f"{what}: aborted by a second Ctrl-C; the batch in flight "
                                   "is lost, every shard written before is kept")
        stop.requested = True
        tqdm.write(stop.message(), file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    outer, _active = _active, stop
    try:
        yield stop
    finally:
        _active = outer
        signal.signal(signal.SIGINT, previous)
