"""Long OTI / OVI runs over a dataset: atomic shards keyed by item name, resumable.

Layout of ``out_dir``::

    manifest.json          method, hyper-parameters, model fingerprint (written first)
    shard-<digest>.npz     one finished chunk of items (written to a temporary file in the
                           same folder, fsync'ed, then renamed with ``os.replace``)

A shard holds, for its ``n`` items (item-major, unlike :class:`InversionResult`):

==================== ======================= ==========================================
key                  shape                   meaning
==================== ======================= ==========================================
``names``            ``(n,)`` str            item names
``index``            ``(n,)`` int64          position of the item in the ``names`` list
``targets``          ``(n, D)``              the features that were inverted
``pseudo_tokens``    ``(n, K, width)``       final pseudo tokens
``features``         ``(n, D)``              encoder feature of the final tokens
``losses``           ``(n, steps)``          per-step loss
``recorded_tokens``  ``(n, S, K, width)``    tokens after each record step
``recorded_features````(n, S, D)``           features after each record step
``nonfinite``        ``(n,)`` bool           NaN/inf seen (see :func:`~.inverters.oti`)
``meta``             JSON string             wall time, host, execution options
==================== ======================= ==========================================

A run killed at any point loses only the chunk in flight: a shard either exists complete
or not at all, finished items are skipped on restart, and no item is written twice. A
restart with different hyper-parameters, a different model, or different target features
for an already finished item is refused (:class:`ResumeMismatchError`).

Each item's initial tokens depend only on ``seed`` and the item's *name* (not on its
position, chunk, host or restart), so the result of an item is the same however the run
was split. Options that change only the float rounding of the (batch-invariant, exact)
computation — ``batch_size``, ``truncate``, ``cache_prefix``, ``pooled_only``,
``devices`` — may differ between restarts.

The manifest also records the numerics-relevant JAX settings
(:mod:`~crossgap_jax.inversion.numerics`): a restart under another ``jax_enable_x64`` or
``jax_default_matmul_precision`` is refused; another backend or JAX version is recorded
only. Runs writing into one folder concurrently claim the items they compute (OS file
locks under ``.claims/``): none is computed twice, and a killed claimant's claim is stale,
not blocking. A Ctrl-C finishes the batch in flight, writes every finished batch and stops
(:mod:`~crossgap_jax.inversion.interrupt`).

Multi-host: every host calls :func:`invert_dataset` with the same arguments (after
``jax.distributed.initialize()``); each takes its contiguous
:func:`~crossgap_jax.inversion.sharding.process_shard` of the items, runs it on its local
devices and writes its own shards, into a shared folder or one folder per host
(:func:`load_inverted` accepts several folders).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from crossgap_jax.fileio import atomic_write_bytes, ensure_dir, jsonable
from crossgap_jax.inversion import config as inv_config
from crossgap_jax.inversion import interrupt, inverters
from crossgap_jax.inversion.config import (
    ExecutionSettings,
    InversionSettings,
    OTISettings,
    OVISettings,
)
from crossgap_jax.inversion.core import normal_init
from crossgap_jax.inversion.numerics import RESUME_KEYS, fix_hint, jax_numerics, resume_settings
from crossgap_jax.inversion.sharding import process_shard
from crossgap_jax.models import model_fingerprint as _model_fingerprint

FORMAT = "crossgap-jax/inversion-shards/1"
MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.npz"
LOCK = ".lock"  # the folder's bookkeeping lock (held for milliseconds at a time)
CLAIMS = ".claims"  # <id>.json (the claimed names) + <id>.lock (held while computing them)
# Manifest keys recorded but not compared (another device or JAX version: float rounding).
RECORDED_ONLY = ("environment",)

ARRAY_KEYS = ("index", "targets", "pseudo_tokens", "features", "losses", "recorded_tokens",
              "recorded_features", "nonfinite")


class ResumeMismatchError(ValueError):
    """``out_dir`` holds results of a different run (hyper-parameters, model or targets)."""


@dataclasses.dataclass
class InvertSummary:
    """What :func:`invert_dataset` did on this host.

    Attributes:
        out_dir: the output folder.
        num_items: items assigned to this host.
        already_done: of those, items found finished on disk (skipped).
        inverted: items inverted by this call.
        shards: shard files written by this call.
        nonfinite: names of items written with a non-finite result.
        seconds: wall time of this call.
        reused: items another run into the same folder finished while this one ran
            (claimed by it; never computed twice).
    """

    out_dir: str
    num_items: int
    already_done: int
    inverted: int
    shards: list[str]
    nonfinite: list[str]
    seconds: float
    reused: int = 0


# ---------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------
def _jsonable(x: Any) -> Any:
    """Plain JSON types (tuples -> lists, NumPy scalars -> Python) for comparisons:
    :func:`crossgap_jax.fileio.jsonable`."""
    return jsonable(x)


def model_fingerprint(clip: Any) -> dict[str, Any]:
    """Architecture config, compute dtype and the weights hash of a CLIP bundle: the keys of
    :func:`crossgap_jax.models.checkpoint.fingerprint.model_fingerprint` the manifests have always
    stored (``config``, ``dtype``, ``params_sha256``), so older runs still resume."""
    fp = _model_fingerprint(clip)
    return {k: fp[k] for k in ("config", "dtype", "params_sha256")}


def _hparams(settings: InversionSettings, execution: ExecutionSettings) -> dict[str, Any]:
    """The manifest's hyper-parameters (JSON form of ``settings``); with the batch mean the
    batch composition is part of the objective, so ``batch_size`` joins them then
    (:meth:`InversionSettings.manifest`)."""
    return _jsonable(settings.manifest(batch_size=execution.batch_size))


def _diff(stored: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(stored) | set(current)):
            out += _diff(stored.get(k, "<absent>"), current.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if stored == current else [f"{prefix[:-1]}: stored {stored!r}, now {current!r}"]


def _comparable(m: dict[str, Any]) -> dict[str, Any]:
    """A manifest as compared between runs: recorded-only keys dropped, and the JAX
    numerics of a manifest written before they were recorded taken as JAX's defaults."""
    m = {k: v for k, v in _jsonable(m).items() if k not in RECORDED_ONLY}
    m["numerics"] = resume_settings(m.get("numerics") or {})
    return m


def _check_manifest(out_dir: str, stored: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Refuse to resume a run of other settings (:class:`ResumeMismatchError`)."""
    stored, current = _comparable(stored), _comparable(manifest)
    for key in RESUME_KEYS:
        was, now = stored["numerics"][key], current["numerics"][key]
        if was != now:
            raise ResumeMismatchError(
                f"refusing to resume in {out_dir}: its shards were computed with {key}={was!r}, "
                f"this process has {key}={now!r}; {fix_hint(key, was)}, or use another "
                "output folder (the CLI: --run-dir)")
    diffs = _diff(stored, current)
    if diffs:
        raise ResumeMismatchError(
            f"refusing to resume in {out_dir}: it holds a different run:\n  "
            + "\n  ".join(diffs)
            + "\nuse another output folder (the CLI: --run-dir), or delete this one")


# ---------------------------------------------------------------------------------------
# Claims: runs writing into one folder never compute the same item twice
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Claim:
    id: str
    lock: FileLock


class _Claims:
    """The claims of the runs writing into ``out_dir``.

    A run claims the items it is about to compute under the folder's lock (:data:`LOCK`):
    ``.claims/<id>.json`` names them and ``.claims/<id>.lock`` stays locked (an OS lock,
    ``filelock``) until their shard is written. Another run skips the items of a *live*
    claim (its lock cannot be taken) and comes back for them later: they are finished then,
    or their claimant died (the OS released its lock) and it computes them itself. A claim
    whose lock can be taken is stale and is removed.
    """

    def __init__(self, out_dir: str):
        self.dir = os.path.join(out_dir, CLAIMS)
        self.lock = FileLock(os.path.join(out_dir, LOCK))

    def _path(self, cid: str, ext: str) -> str:
        return os.path.join(self.dir, f"{cid}.{ext}")

    def live(self) -> dict[str, set[str]]:
        """Claim id -> names of the live claims (call under :attr:`lock`); removes stale ones."""
        out: dict[str, set[str]] = {}
        for path in glob.glob(os.path.join(self.dir, "*.json")):
            cid = os.path.basename(path)[:-len(".json")]
            lock = FileLock(self._path(cid, "lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                with open(path) as f:
                    out[cid] = set(json.load(f))
                continue
            for p in (path, self._path(cid, "lock")):  # its run ended without releasing it
                with contextlib.suppress(FileNotFoundError):
                    os.remove(p)
            lock.release()
        return out

    def claim(self, names: list[str]) -> _Claim:
        """Claim ``names`` (call under :attr:`lock`, after :meth:`live`)."""
        ensure_dir(self.dir)
        cid = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        lock = FileLock(self._path(cid, "lock"))
        lock.acquire(timeout=0)
        atomic_write_bytes(self._path(cid, "json"), json.dumps(names).encode())
        return _Claim(cid, lock)

    def release(self, claim: _Claim) -> None:
        """Drop ``claim`` (its shard is written, or the run stops without it)."""
        with self.lock:
            for p in (self._path(claim.id, "json"), self._path(claim.id, "lock")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(p)
            claim.lock.release()

    def wait_any(self, names: set[str], req: interrupt.StopRequest) -> None:
        """Block until a live claim holding one of ``names`` is released (or none is live,
        or a stop is requested)."""
        with self.lock:
            holders = [cid for cid, held in self.live().items() if held & names]
        if not holders:
            return
        lock = FileLock(self._path(holders[0], "lock"))
        while not req.requested:
            try:
                lock.acquire(timeout=0.5)
            except Timeout:
                continue
            if not os.path.exists(self._path(holders[0], "json")):  # released, not stale:
                with contextlib.suppress(FileNotFoundError):  # our open re-created the file
                    os.remove(self._path(holders[0], "lock"))
            lock.release()
            return


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------
def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _read_manifest(out_dir: str) -> dict[str, Any] | None:
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _shard_paths(out_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(out_dir, SHARD_GLOB)))


def _load_shard(path: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except Exception as e:  # noqa: BLE001 - name the file, whatever went wrong
        raise OSError(f"cannot read shard {path} ({type(e).__name__}: {e}); shards are written "
                      "atomically, so this file was damaged afterwards: delete it and rerun "
                      "to recompute its items") from e


_init_jit = jax.jit(normal_init, static_argnames=("shape", "std"))


def _item_keys(names: Sequence[str]) -> np.ndarray:
    """A 31-bit integer per name (blake2b), the PRNG fold-in data of its init."""
    return np.array([int.from_bytes(hashlib.blake2b(n.encode(), digest_size=4).digest(), "little")
                     & 0x7FFFFFFF for n in names], dtype=np.int32)


def item_init(names: Sequence[str], seed: int, token_shape: tuple[int, int],
              std: float = 0.02) -> np.ndarray:
    """``(n, K, width)`` N(0, std^2) initial tokens that depend only on ``seed`` and each name."""
    keys = _item_keys(names)
    return np.asarray(_init_jit(jax.random.PRNGKey(seed), jax.numpy.asarray(keys),
                                shape=tuple(token_shape), std=std))


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def invert_dataset(clip: Any, names: Sequence[str], features: Any, out_dir: str,
                   settings: InversionSettings, execution: ExecutionSettings | None = None,
                   *, shard_size: int = 256, process_index: int | None = None,
                   process_count: int | None = None, check_targets: bool = True
                   ) -> InvertSummary:
    """Invert ``features`` item by item into resumable shards under ``out_dir``.

    Args:
        clip: a CLIP bundle.
        names: ``N`` unique item names (the keys of the results).
        features: ``(N, embed_dim)`` image features (OTI) or text features (OVI).
        out_dir: output folder (created; may already hold shards of the same run).
        settings: what is computed: :class:`~crossgap_jax.inversion.config.OTISettings`
            (image features in) or :class:`~crossgap_jax.inversion.config.OVISettings`
            (text features in); its hyper-parameters are the run's identity (manifest).
        execution: how it runs (:class:`~crossgap_jax.inversion.config.ExecutionSettings`,
            default: its defaults); may differ between restarts. Its ``progress`` shows bars
            over shards and over the optimisation steps of each shard (``None``: when there
            is more than one shard); its ``pad_to`` is set here (one batch shape per run).
        shard_size: items per shard file at most; rounded down to a multiple of
            ``batch_size`` when larger, so that no shard computes padding rows.
        process_index, process_count: this host's share of the items (default:
            ``jax.process_index()`` / ``jax.process_count()``); with
            ``loss_reduction="mean"`` (the authors' batch-mean objective) the batches are the
            consecutive ``batch_size`` items of ``names`` (the last one ragged): hosts and
            shards split the items at batch boundaries, and ``batch_size`` must not change
            between restarts.
        check_targets: on restart, check that the stored targets of finished items equal
            the given features (rtol 1e-4, atol 1e-6).

    Returns:
        :class:`InvertSummary` of this host's work.

    Raises:
        ResumeMismatchError: ``out_dir`` holds a run with other hyper-parameters, another
            model, or other targets for an item of the same name.
        ValueError: bad names / features.
        TypeError: ``settings`` / ``execution`` not the settings types.
    """
    t0 = time.perf_counter()
    if not isinstance(settings, (OTISettings, OVISettings)):
        raise TypeError(f"settings must be OTISettings or OVISettings, got "
                        f"{type(settings).__name__}")
    execution = ExecutionSettings() if execution is None else execution
    if not isinstance(execution, ExecutionSettings):
        raise TypeError(f"execution must be ExecutionSettings, got {type(execution).__name__}")
    method = settings.method
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        seen, dups = set(), []
        for n in names:
            if n in seen:
                dups.append(n)
            seen.add(n)
        raise ValueError(f"item names must be unique; repeated: {dups[:10]}")
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or len(features) != len(names):
        raise ValueError(f"features must be (len(names)={len(names)}, D), got {features.shape}")
    hp = _hparams(settings, execution)
    config = clip.config
    width = config.text.width if method == "oti" else config.vision.width
    token_shape = (settings.num_tokens, int(width))
    manifest = {"format": FORMAT, "method": method, "hparams": hp,
                "model": model_fingerprint(clip), "token_shape": list(token_shape),
                "feature_dim": int(features.shape[1])}

    ensure_dir(out_dir)
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    numerics = jax_numerics()
    manifest["numerics"] = resume_settings(numerics)
    claims = _Claims(out_dir)
    with claims.lock:
        stored = _read_manifest(out_dir)
        if stored is None:
            manifest["environment"] = {k: v for k, v in numerics.items() if k not in RESUME_KEYS}
            atomic_write_bytes(os.path.join(out_dir, MANIFEST),
                               json.dumps(manifest, indent=2, sort_keys=True).encode(), f"p{pi}")
        else:
            _check_manifest(out_dir, stored, manifest)
        # Leftovers of this host's killed runs (never complete shards: those are renamed);
        # not those of a live run of this host (their name holds its claim's id).
        live_ids = claims.live()
        for tmp in glob.glob(os.path.join(out_dir, f".tmp-p{pi}-*")):
            if not any(f"-{cid}-" in os.path.basename(tmp) for cid in live_ids):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)

    mean = settings.loss_reduction == "mean"
    batch_size = execution.batch_size
    if mean:  # hosts take whole batches of the dataset order
        nb = -(-len(names) // batch_size)
        bs = range(nb)[process_shard(nb, pi, pc)]
        mine = range(min(len(names), bs.start * batch_size), min(len(names), bs.stop * batch_size))
    else:
        mine = range(len(names))[process_shard(len(names), pi, pc)]
    position = {n: i for i, n in enumerate(names)}
    seen: dict[str, list[str]] = {}  # shard path -> its names
    done: set[str] = set()
    mismatched: list[str] = []
    for path in _shard_paths(out_dir):
        z = _load_shard(path, ("names", "targets") if check_targets else ("names",))
        shard_names = z["names"].tolist()
        seen[path] = shard_names
        done.update(shard_names)
        if check_targets:
            idx = np.array([position.get(n, -1) for n in shard_names], np.int64)
            known = idx >= 0
            same = np.isclose(z["targets"][known], features[idx[known]], rtol=1e-4,
                              atol=1e-6).all(axis=1)
            mismatched += [n for n, ok in zip(np.asarray(shard_names)[known].tolist(), same)
                           if not ok]
    if mismatched:
        raise ResumeMismatchError(
            f"refusing to resume in {out_dir}: {len(mismatched)} finished items were inverted "
            f"from other target features (e.g. {mismatched[:5]}); use another output folder "
            "(the CLI: --run-dir)")
    todo = [i for i in mine if names[i] not in done]
    if mean:
        chunks = _batch_aligned_chunks(todo, batch_size, shard_size, len(names), out_dir)
    else:
        # Shards hold whole batches: shard_size rounded down to a multiple of batch_size
        # (a shard of 256 at batch 200 would compute 200 + 56 rows padded to 200).
        step = shard_size if shard_size < batch_size else shard_size - shard_size % batch_size
        chunks = [todo[s:s + step] for s in range(0, len(todo), step)]
    # Every chunk compiles to one batch shape: batch_size, or the largest chunk when all are
    # smaller (100 items at batch 200 run as 100 rows, not 200 with 100 of padding).
    pad_to = batch_size if mean else min(batch_size, max(map(len, chunks), default=1))
    progress = execution.progress
    show = bool(chunks) and (progress if progress is not None else len(chunks) > 1)
    written: list[str] = []
    bad: list[str] = []
    inverted = reused = 0

    def refresh() -> None:  # shards other runs wrote meanwhile (call under claims.lock)
        for path in _shard_paths(out_dir):
            if path not in seen:
                seen[path] = _load_shard(path, ("names",))["names"].tolist()
                done.update(seen[path])

    def summary() -> InvertSummary:
        return InvertSummary(out_dir=out_dir, num_items=len(mine),
                             already_done=len(mine) - len(todo), inverted=inverted,
                             shards=written, nonfinite=bad, seconds=time.perf_counter() - t0,
                             reused=reused)

    queue, waiting = list(chunks), []
    bar = tqdm(total=len(todo), desc=f"{method.upper()} items", unit="item", disable=not show)
    with bar, interrupt.graceful_stop(method.upper()) as req:
        while (queue or waiting) and not req.requested:
            if not queue:  # only chunks another run holds: wait until one is released
                claims.wait_any({names[i] for c in waiting for i in c}, req)
                queue, waiting = waiting, []
                continue
            chunk = queue.pop(0)
            with claims.lock:
                refresh()
                taken = set().union(*claims.live().values())
                pending = [i for i in chunk if names[i] not in done]
                busy_keys = {(i // batch_size if mean else i) for i in pending
                             if names[i] in taken}
                free = [i for i in pending if (i // batch_size if mean else i) not in busy_keys]
                claim = claims.claim([names[i] for i in free]) if free else None
            finished_elsewhere = len(chunk) - len(pending)
            reused += finished_elsewhere
            bar.update(finished_elsewhere)
            if len(free) < len(pending):
                waiting.append([i for i in pending if i not in set(free)])
            if claim is None:
                continue
            try:
                n, path = _invert_chunk(clip, names, features, free, out_dir, settings,
                                        execution, token_shape, pad_to, bool(show), pi, pc,
                                        claim, bad)
            finally:
                claims.release(claim)
            inverted += n
            written.append(path)
            bar.update(n)
    if req.requested:
        left = len(todo) - inverted - reused
        raise interrupt.InversionInterrupted(
            f"{method.upper()}: interrupted; every finished batch is written ({inverted} items "
            f"by this run, {left} of this host's {len(mine)} left); rerun the same call to "
            f"resume in {out_dir}", summary())
    return summary()


def _invert_chunk(clip: Any, names: list[str], features: np.ndarray, chunk: list[int],
                  out_dir: str, settings: InversionSettings, execution: ExecutionSettings,
                  token_shape: tuple[int, int], pad_to: int, show: bool, pi: int, pc: int,
                  claim: _Claim, bad: list[str]) -> tuple[int, str]:
    """Invert the items ``chunk`` (indices into ``names``) and write them as one shard.

    After a Ctrl-C the driver returns the first whole batches only: those are written.
    Returns ``(items written, shard path)``; appends the non-finite names to ``bad``.
    """
    chunk_names = [names[i] for i in chunk]
    init = item_init(chunk_names, settings.seed, token_shape)
    t1 = time.perf_counter()
    # pad_to: a short chunk keeps the compiled batch shape of the full chunks (its padding
    # rows have weight 0 and never count, also not in the batch mean).
    res = inverters.invert(clip, features[chunk], settings,
                           dataclasses.replace(execution, progress=show, pad_to=pad_to), init)
    n = len(res.features)  # fewer than the chunk after a Ctrl-C (whole batches)
    chunk, chunk_names = chunk[:n], chunk_names[:n]
    arrays = {
        "names": np.array(chunk_names, dtype=str),
        "index": np.asarray(chunk, np.int64),
        "targets": features[chunk],
        "pseudo_tokens": res.pseudo_tokens[:n],
        "features": res.features[:n],
        "losses": np.ascontiguousarray(res.losses[:, :n].T),
        "recorded_tokens": np.ascontiguousarray(np.swapaxes(res.recorded_tokens[:, :n], 0, 1)),
        "recorded_features": np.ascontiguousarray(
            np.swapaxes(res.recorded_features[:, :n], 0, 1)),
        "nonfinite": res.nonfinite[:n],
        "meta": np.array(json.dumps({
            "seconds": time.perf_counter() - t1, "finished": time.time(),
            "process_index": pi, "process_count": pc, "host": os.uname().nodename,
            "execution": _jsonable({k: getattr(execution, k)
                                    for k in inv_config.EXECUTION_OPTIONS[settings.method]
                                    if k != "devices"}),
            "devices": res.hparams.get("devices"), "numerics": jax_numerics()})),
    }
    digest = hashlib.blake2b("\0".join(chunk_names).encode(), digest_size=10).hexdigest()
    path = os.path.join(out_dir, f"shard-{digest}.npz")
    atomic_write_bytes(path, _npz_bytes(arrays), f"p{pi}-{claim.id}")
    bad += [m for m, f in zip(chunk_names, res.nonfinite[:n]) if f]
    return n, path


def _batch_aligned_chunks(todo: list[int], batch_size: int, shard_size: int, num_items: int,
                          out_dir: str) -> list[list[int]]:
    """Chunks of ``todo`` made of whole batches ``[b * batch_size, (b + 1) * batch_size)``.

    Raises:
        ResumeMismatchError: a batch is partly finished on disk (its composition, part of the
            batch-mean objective, could not be reproduced).
    """
    groups: dict[int, list[int]] = {}
    for i in todo:
        groups.setdefault(i // batch_size, []).append(i)
    for b, members in groups.items():
        full = min(num_items, (b + 1) * batch_size) - b * batch_size
        if len(members) != full:
            raise ResumeMismatchError(
                f"refusing to resume in {out_dir}: batch {b} (items {b * batch_size}.."
                f"{b * batch_size + full - 1}) is partly finished, but the batch-mean objective "
                "needs whole batches; use another output folder (the CLI: --run-dir)")
    per_chunk = max(1, shard_size // batch_size)
    order = sorted(groups)
    return [[i for b in order[s:s + per_chunk] for i in groups[b]]
            for s in range(0, len(order), per_chunk)]


def load_inverted(out_dir: str | Sequence[str], names: Sequence[str] | None = None
                  ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Gather the shards of one run (one folder, or several with the same manifest).

    Args:
        out_dir: the folder given to :func:`invert_dataset`, or a list of them (one per
            host).
        names: return these items in this order (KeyError if one is missing); default:
            every finished item, in the order of the ``names`` list of the run.

    Returns:
        ``(names, arrays)`` with ``arrays`` keyed as the shard files (item-major, see the
        module docstring) plus ``record_steps`` ``(S,)``.

    Raises:
        FileNotFoundError: no manifest.
        ValueError: the folders hold different runs, or an item appears twice.
    """
    dirs = [out_dir] if isinstance(out_dir, (str, os.PathLike)) else list(out_dir)
    manifests = [_read_manifest(d) for d in dirs]
    for d, m in zip(dirs, manifests):
        if m is None:
            raise FileNotFoundError(f"no {MANIFEST} in {d}: not an invert_dataset folder")
    for d, m in zip(dirs[1:], manifests[1:]):
        diffs = _diff(_comparable(manifests[0]), _comparable(m))
        if diffs:
            raise ValueError(f"{d} holds a different run than {dirs[0]}: {diffs[:5]}")
    parts: list[dict[str, np.ndarray]] = []
    for d in dirs:
        for path in _shard_paths(d):
            parts.append(_load_shard(path, ("names", *ARRAY_KEYS)))
    k, w = manifests[0]["token_shape"]
    dim = manifests[0]["feature_dim"]
    steps = manifests[0]["hparams"]["steps"]
    rec = np.asarray(manifests[0]["hparams"]["record_steps"], np.int64)
    if not parts:
        empty = {"index": np.zeros((0,), np.int64), "targets": np.zeros((0, dim), np.float32),
                 "pseudo_tokens": np.zeros((0, k, w), np.float32),
                 "features": np.zeros((0, dim), np.float32),
                 "losses": np.zeros((0, steps), np.float32),
                 "recorded_tokens": np.zeros((0, len(rec), k, w), np.float32),
                 "recorded_features": np.zeros((0, len(rec), dim), np.float32),
                 "nonfinite": np.zeros((0,), bool)}
        parts = [{"names": np.zeros((0,), str), **empty}]
    all_names = np.concatenate([p["names"] for p in parts]).tolist()
    arrays = {key: np.concatenate([p[key] for p in parts]) for key in ARRAY_KEYS}
    pos: dict[str, int] = {}
    dups = []
    for i, n in enumerate(all_names):
        if n in pos:
            dups.append(n)
        pos[n] = i
    if dups:
        raise ValueError(f"{len(dups)} items appear in more than one shard (e.g. {dups[:5]}): "
                         "two runs wrote to the same folder concurrently")
    if names is None:
        order = np.lexsort((np.array(all_names, dtype=str), arrays["index"]))
    else:
        missing = [n for n in names if n not in pos]
        if missing:
            raise KeyError(f"{len(missing)} items are not (yet) inverted, e.g. {missing[:5]}")
        order = np.array([pos[n] for n in names], np.int64)
    out = {key: v[order] for key, v in arrays.items()}
    out["record_steps"] = rec
    return [all_names[i] for i in order], out
