"""The host side of OTI/OVI: validation, batching, padding, sharding, progress, non-finite
detection. :func:`run_job` drives a :class:`Job` (the compiled programs of one method plus
its settings) over the examples and assembles an :class:`InversionResult`."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from crossgap_jax.data import pad_rows
from crossgap_jax.inversion import interrupt, progress
from crossgap_jax.inversion import sharding as shd
from crossgap_jax.inversion.config import ExecutionSettings, InversionSettings
from crossgap_jax.inversion.core import RawInversion, loss_weights, normal_init


@dataclasses.dataclass
class InversionResult:
    """Result of :func:`oti` / :func:`ovi` (NumPy arrays, N = number of inputs).

    Attributes:
        pseudo_tokens: ``(N, K, width)`` final pseudo tokens (K = R or P).
        features: ``(N, embed_dim)`` encoder feature of the final pseudo tokens.
        losses: ``(steps, N)`` per-example loss at each step's forward pass.
        record_steps: the step counts snapshotted.
        recorded_tokens: ``(S, N, K, width)`` pseudo tokens after each record step.
        recorded_features: ``(S, N, embed_dim)`` features after each record step.
        nonfinite: ``(N,)`` bool, True where a loss, token or feature was NaN/inf.
        hparams: the hyper-parameters used.
        seconds: wall time, compile included.
    """

    pseudo_tokens: np.ndarray
    features: np.ndarray
    losses: np.ndarray
    record_steps: tuple[int, ...]
    recorded_tokens: np.ndarray
    recorded_features: np.ndarray
    nonfinite: np.ndarray
    hparams: dict
    seconds: float = 0.0

    def features_at(self, step: int) -> np.ndarray:
        """``(N, embed_dim)`` features after ``step`` steps (a record step or the last)."""
        if step in self.record_steps:
            return self.recorded_features[self.record_steps.index(step)]
        if step == self.hparams["steps"]:
            return self.features
        raise KeyError(f"step {step} was not recorded; recorded: {self.record_steps}")


@dataclasses.dataclass(frozen=True)
class Job:
    """One OTI/OVI call, ready to run batch by batch.

    Attributes:
        settings, execution: what is computed and how.
        targets: ``(N, D)`` validated target features.
        token_shape: ``(K, width)`` pseudo tokens per example.
        init: ``(N, K, width)`` starting tokens, or ``None`` (seeded ``N(0, 0.02^2)``).
        params: model params; ``consts``: the other inputs every batch shares (template
            embeddings, hyper-parameters); both are replicated like the params.
        run: ``(params, consts, targets, x0, weights, progress_channel) -> RawInversion``,
            the whole loop of one batch as one compiled program (``progress_channel``: see
            :mod:`~crossgap_jax.inversion.progress`; ``None``: no progress callback).
        description: what ``result.hparams`` reports besides steps, seed, batch size and
            device count.
    """

    settings: InversionSettings
    execution: ExecutionSettings
    targets: np.ndarray
    token_shape: tuple[int, int]
    init: np.ndarray | None
    params: Any
    consts: Any
    run: Callable[..., RawInversion]
    description: dict


def check_targets(x: Any, dim: int, what: str) -> np.ndarray:
    """``(N, dim)`` finite, non-zero float32 rows, or a ``ValueError`` naming ``what``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must be (N, {dim}), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{what}: no examples (N = 0)")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} rows contain NaN/inf "
                         f"(first: row {int(np.argmax(bad))})")
    zero = np.linalg.norm(x, axis=1) == 0
    if zero.any():
        raise ValueError(f"{what}: {int(zero.sum())} rows are all zeros (no direction to match)")
    return x


def check_init(init: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """``init`` as float32 of ``shape`` (or ``None``), else a ``ValueError``."""
    if init is None:
        return None
    init = np.asarray(init, np.float32)
    if init.shape != shape:
        raise ValueError(f"init must be {shape}, got {init.shape}")
    if not np.isfinite(init).all():
        raise ValueError("init contains NaN/inf")
    return init


_init_jit = jax.jit(normal_init, static_argnames=("shape", "std"))


def _first_update(bar: Any, k: int) -> None:
    """Advance ``bar`` by ``k`` steps, clearing the first batch's "compiling" note."""
    if bar.postfix:
        bar.set_postfix_str("", refresh=False)
    bar.update(k)


def wait_ready(tree: Any) -> Any:
    """Wait for every array of ``tree`` by polling (1 ms, growing to 50 ms), not blocking
    in ``block_until_ready``: Python runs signal handlers only between bytecodes, so a
    Ctrl-C is handled at once instead of when the compiled program ends."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if isinstance(x, jax.Array)]
    pause = 0.001
    while not all(x.is_ready() for x in leaves):
        time.sleep(pause)
        pause = min(2 * pause, 0.05)
    return tree


def run_interruptibly(fn: Callable[[], Any]) -> Any:
    """``wait_ready(fn())`` in a worker thread, waited for from this thread in short slices.

    With a host callback in the program (the progress bar), the CPU backend runs the whole
    compiled loop inside the dispatching call, so a dispatch on this thread would hold off
    Python's signal handlers until the batch ends. Dispatched from a worker, the program
    runs there while this (main) thread keeps handling Ctrl-C; an exception raised by a
    handler here leaves the worker to finish the batch on its own (a daemon thread).
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["out"] = wait_ready(fn())
        except BaseException as e:  # re-raised on the caller's thread
            box["err"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="crossgap-jax-batch", daemon=True).start()
    while not done.wait(0.05):  # an interruptible wait: signal handlers run in between
        pass
    if "err" in box:
        raise box["err"]
    return box["out"]


def _eta(steps: int, ch: progress.Channel | None, t_batch: float,
         last: tuple[float, float] | None) -> tuple[float | None, str]:
    """Seconds left in the batch in flight and how that was estimated: from the channel's
    measured step time (else the previous batch's), or the previous batch's wall time."""
    if ch is not None:
        sps = ch.seconds_per_step() or (last[1] if last else None)
        if sps is not None:
            return ((steps - ch.done) * sps,
                    f"step {ch.done}/{steps} at {sps:.3g} s/step")
    if last is not None:
        return max(0.0, last[0] - (time.perf_counter() - t_batch)), "as long as the last batch"
    return None, ""


def run_job(kind: str, job: Job) -> InversionResult:
    """Run ``job`` over its examples in fixed-shape batches; ``kind`` (``"oti"``/``"ovi"``)
    names the bars and messages.

    Inside :func:`~crossgap_jax.inversion.interrupt.graceful_stop` (``invert_dataset``), a
    stop request ends the call after the batch in flight: the result then holds the first
    ``len(result.features) < N`` examples (whole batches).

    Raises:
        FloatingPointError: a non-finite loss, token or feature with
            ``on_nonfinite="raise"`` (otherwise a ``RuntimeWarning`` and
            ``result.nonfinite``).
    """
    s, ex = job.settings, job.execution
    t0 = time.perf_counter()
    targets, n, steps = job.targets, len(job.targets), s.steps
    devices = ex.devices
    mesh = shd.make_mesh(devices) if (devices is None or len(devices) > 1) else None
    n_dev = mesh.size if mesh is not None else 1
    if mesh is not None and n_dev == 1:
        mesh = None
    # One fixed batch shape per call: no recompilation for a ragged last batch, and a
    # second call with the same N / batch_size reuses the compiled program. ``pad_to``
    # keeps that shape for a call with fewer than ``batch_size`` examples.
    bsz = shd.round_up(min(ex.batch_size, max(n, int(ex.pad_to or 0))), n_dev)
    # Real examples per batch: the whole compiled batch for the per-example objective; for
    # the authors' batch mean exactly ``batch_size`` (the batch composition is part of the
    # objective), the rows up to the device-count multiple being weight-0 padding.
    step = bsz if s.loss_reduction == "per_example" else min(ex.batch_size, n)
    # Everything the program reads besides the examples goes to the same devices as the
    # examples: replicated over the mesh, or onto the one device asked for.
    params, consts = job.params, job.consts
    if mesh is not None:
        params, consts = shd.replicate((params, consts), mesh)
    elif devices is not None:
        params, consts = jax.device_put((params, consts), devices[0])
    key = jax.random.PRNGKey(s.seed)
    outs: dict[str, list[np.ndarray]] = {k: [] for k in (
        "tokens", "features", "losses", "rec_tokens", "rec_features")}
    starts = range(0, n, step)
    show = ex.progress if ex.progress is not None else len(starts) > 1
    # The bar counts steps: steps of the compiled loop report through a host callback (one
    # program per batch either way; without a bar, a program without the callback). The
    # first batch reports every step, later ones about every progress.REPORT_SECONDS.
    every = 1
    bar = tqdm(total=steps * len(starts), desc=kind.upper(), unit="step", disable=not show,
               leave=False, smoothing=0.1) if show else None
    req = interrupt.active()  # a Ctrl-C asks to stop after the batch in flight
    # the previous batch's (seconds, s/step), also of the previous call of the same run
    last: tuple[float, float] | None = req.last if req is not None else None
    for start in starts:
        t_batch, sps = time.perf_counter(), None
        stop = min(start + step, n)
        idx = np.arange(start, stop)
        if job.init is None:
            x0 = np.asarray(_init_jit(key, jnp.asarray(pad_rows(idx, bsz)),
                                      shape=job.token_shape, std=0.02))
        else:
            x0 = pad_rows(job.init[start:stop], bsz)
        t = pad_rows(targets[start:stop], bsz)
        w = np.asarray(loss_weights(stop - start, bsz, s.loss_reduction))
        if mesh is not None:
            t, x0, w = shd.shard_examples((t, x0, w), mesh)
        elif devices is not None:
            t, x0, w = jax.device_put((t, x0, w), devices[0])
        if bar is None:
            if req is not None:
                req.eta = functools.partial(_eta, steps, None, t_batch, last)
            raw = (wait_ready(job.run(params, consts, t, x0, w, None)) if req is None else
                   run_interruptibly(functools.partial(job.run, params, consts, t, x0, w,
                                                       None)))
        else:
            on_steps = bar.update
            if start == 0:  # the first batch may compile (tens of seconds on a CPU): say so
                bar.set_postfix_str("compiling / step 1")
                on_steps = functools.partial(_first_update, bar)
            with progress.channel(on_steps, every) as ch:
                if req is not None:
                    req.eta = functools.partial(_eta, steps, ch, t_batch, last)
                # wait inside the channel, so that every step's report reaches the bar
                raw = (wait_ready(job.run(params, consts, t, x0, w, ch.handle))
                       if req is None else
                       run_interruptibly(functools.partial(job.run, params, consts, t, x0,
                                                           w, ch.handle)))
            every = ch.next_every()  # later batches: a report about every 0.5 s
            sps = ch.seconds_per_step()
        m = stop - start
        outs["tokens"].append(np.asarray(raw.tokens)[:m])
        outs["features"].append(np.asarray(raw.features)[:m])
        outs["losses"].append(np.asarray(raw.losses)[:, :m])
        outs["rec_tokens"].append(np.asarray(raw.recorded_tokens)[:, :m])
        outs["rec_features"].append(np.asarray(raw.recorded_features)[:, :m])
        seconds = time.perf_counter() - t_batch
        last = (seconds, sps if sps is not None else seconds / steps)
        if req is not None:
            req.last = last
        if req is not None and req.requested and stop < n:
            n = stop  # the batches so far; the caller keeps them and stops
            break
    if req is not None:
        req.eta = None
    if bar is not None:
        bar.close()
    tokens = np.concatenate(outs["tokens"])
    features = np.concatenate(outs["features"])
    losses = np.concatenate(outs["losses"], axis=1)
    nonfinite = ~(np.isfinite(losses).all(0) & np.isfinite(features).all(1)
                  & np.isfinite(tokens.reshape(n, -1)).all(1))
    if nonfinite.any():
        bad = np.flatnonzero(nonfinite)
        msg = (f"{kind.upper()}: {len(bad)} of {n} examples produced non-finite losses, tokens "
               f"or features (indices {bad[:20].tolist()}{'...' if len(bad) > 20 else ''}); "
               f"see result.nonfinite")
        if ex.on_nonfinite == "raise":
            raise FloatingPointError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
    return InversionResult(
        pseudo_tokens=tokens, features=features, losses=losses, record_steps=s.record_steps,
        recorded_tokens=np.concatenate(outs["rec_tokens"], axis=1),
        recorded_features=np.concatenate(outs["rec_features"], axis=1), nonfinite=nonfinite,
        hparams=dict(job.description, steps=steps, seed=s.seed, batch_size=bsz, devices=n_dev),
        seconds=time.perf_counter() - t0,
    )
