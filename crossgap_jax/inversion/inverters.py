"""OTI and OVI: functional cores (jit-compiled, one XLA program each) and the user API.

OTI (image -> text side): pseudo word-token embeddings ``(R, text_width)`` replace the
embeddings of the ``£`` placeholder tokens of a template such as ``"a photo of {}"``;
the text encoder's feature of that sentence is matched to an image feature.

OVI (text -> image side): pseudo patch tokens ``(P, vision_width)`` are expanded to the
``N`` patch positions by nearest-neighbour interpolation (position ``i`` takes token
``floor(i * P / N)``) and replace the patch-embedding output; the image encoder's
feature is matched to a text feature.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from crossgap_jax.inversion import sharding as shd
from crossgap_jax.inversion import shortcuts
from crossgap_jax.inversion.core import (
    ChunkState,
    HParams,
    RawInversion,
    finish_chunks,
    init_chunk_state,
    loss_weights,
    normal_init,
    run_chunk,
    run_inversion,
)
from crossgap_jax.inversion.core import validate_steps as _validate_steps
from crossgap_jax.models.configs import CLIPConfig
from crossgap_jax.models.families import family_of

PLACEHOLDER = "£"
DEFAULT_TEMPLATE = "a photo of {}"


# ---------------------------------------------------------------------------------------
# Functional cores
# ---------------------------------------------------------------------------------------
def oti_features(params: Any, tokens: jax.Array, base_embeddings: jax.Array, *,
                 config: CLIPConfig, placeholder_index: int, eot_index: int,
                 dtype: Any = jnp.float32) -> jax.Array:
    """Text features of the template with pseudo tokens placed at the placeholder.

    Args:
        params: CLIP params pytree.
        tokens: ``(N, R, text_width)`` pseudo word-token embeddings.
        base_embeddings: ``(L, text_width)`` token embeddings of the tokenized template
            (``L`` may be truncated to ``eot_index + 1``: exact, the encoder is causal).
        placeholder_index: position of the first placeholder token (static).
        eot_index: position of the EOT token (static, < L).

    Returns:
        ``(N, embed_dim)`` features (not normalised).
    """
    r = tokens.shape[1]
    encode = family_of(config).encode_text_embeddings

    def one(tok: jax.Array) -> jax.Array:  # (R, width) -> (embed_dim,)
        emb = jnp.concatenate([base_embeddings[:placeholder_index],
                               tok.astype(base_embeddings.dtype),
                               base_embeddings[placeholder_index + r:]], axis=0)
        eot = jnp.full((1,), eot_index, jnp.int32)
        return encode(params, emb[None], eot, config=config, dtype=dtype)[0]

    # vmap over the examples instead of one batched call: the encoder pools with
    # ``x[arange(B), eot]``, a gather the SPMD partitioner cannot split along a sharded
    # batch (it inserted an all-reduce and an all-gather into every step); under vmap it
    # is a batch-parallel gather and the sharded program needs no communication.
    return jax.vmap(one)(tokens)


def expand_patch_tokens(tokens: jax.Array, num_patches: int) -> jax.Array:
    """Nearest-neighbour expansion ``(N, P, w) -> (N, num_patches, w)``: ``i -> floor(i P / n)``."""
    p = tokens.shape[1]
    idx = (np.arange(num_patches) * p) // num_patches
    return tokens[:, idx]


def ovi_features(params: Any, tokens: jax.Array, *, config: CLIPConfig,
                 dtype: Any = jnp.float32, pooled_only: bool = False) -> jax.Array:
    """Image features from ``(N, P, vision_width)`` pseudo patch tokens -> ``(N, embed_dim)``.

    Args:
        pooled_only: run the last block at the class token only (exact; CLIP family, see
            :mod:`~crossgap_jax.inversion.shortcuts`); otherwise the model's encoder.
    """
    expanded = expand_patch_tokens(tokens, config.vision.num_patches)
    if pooled_only and shortcuts.supports(config):
        return jax.vmap(lambda t: shortcuts.image_features(params, t, config=config,
                                                           dtype=dtype))(expanded)
    return family_of(config).encode_image_tokens(params, expanded, config=config, dtype=dtype)


def oti_features_cached(params: Any, tokens: jax.Array, kv: shortcuts.KV,
                        suffix_embeddings: jax.Array, *, config: CLIPConfig, pool_index: int,
                        dtype: Any = jnp.float32) -> jax.Array:
    """:func:`oti_features` over the positions from the placeholder on, prefix cached.

    Args:
        params: CLIP params pytree.
        tokens: ``(N, R, text_width)`` pseudo word-token embeddings.
        kv: :func:`~crossgap_jax.inversion.shortcuts.prefix_kv` of the template positions
            before the first placeholder.
        suffix_embeddings: ``(S, text_width)`` template embeddings from the first placeholder
            on (its first R rows are replaced by the pseudo tokens).
        pool_index: EOT position relative to the first placeholder (static).

    Returns:
        ``(N, embed_dim)`` features (not normalised).
    """
    r = tokens.shape[1]

    def one(tok: jax.Array) -> jax.Array:
        emb = jnp.concatenate([tok.astype(suffix_embeddings.dtype), suffix_embeddings[r:]], 0)
        return shortcuts.suffix_features(params, emb, kv, pool_index=pool_index,
                                         config=config, dtype=dtype)

    return jax.vmap(one)(tokens)


@functools.partial(jax.jit, static_argnames=("config", "placeholder_index", "eot_index",
                                             "steps", "record_steps", "dtype", "cache_prefix"))
def oti_fn(params: Any, targets: jax.Array, init: jax.Array, base_embeddings: jax.Array,
           hparams: HParams, weights: jax.Array | None = None, *, config: CLIPConfig,
           placeholder_index: int, eot_index: int,
           steps: int = 150, record_steps: tuple[int, ...] = (),
           dtype: Any = jnp.float32, cache_prefix: bool = True) -> RawInversion:
    """The whole OTI optimisation as one compiled program.

    Args:
        params: CLIP params (replicated when sharded).
        targets: ``(N, embed_dim)`` image features.
        init: ``(N, R, text_width)`` initial pseudo tokens.
        base_embeddings: ``(L, text_width)`` template token embeddings (see
            :func:`prepare_template`).
        hparams: :class:`HParams` of traced scalars.
        weights: ``(N,)`` traced objective weights (see
            :func:`~crossgap_jax.inversion.core.loss_weights`; ``None``: per-example).
        cache_prefix: compute the template positions before the placeholder once per call
            instead of in every step (exact for the causal CLIP text tower; ignored for
            other families, see :mod:`~crossgap_jax.inversion.shortcuts`); this path also
            runs the last block at the EOT position only.

    Returns:
        :class:`~crossgap_jax.inversion.core.RawInversion` with ``losses`` ``(steps, N)``.
    """
    fn = _oti_features_fn(params, base_embeddings, config, placeholder_index, eot_index, dtype,
                          cache_prefix)
    return run_inversion(fn, targets, init, hparams, steps, record_steps, weights)


def _oti_features_fn(params, base_embeddings, config, placeholder_index, eot_index, dtype,
                     cache_prefix):
    """OTI's batched ``tokens -> features`` (inside a traced program)."""
    if cache_prefix and placeholder_index > 0 and shortcuts.supports(config):
        # Loop-invariant: computed once, outside the loop over steps.
        kv = shortcuts.prefix_kv(params, base_embeddings[:placeholder_index], config=config,
                                 dtype=dtype)
        return functools.partial(oti_features_cached, params, kv=kv,
                                 suffix_embeddings=base_embeddings[placeholder_index:],
                                 config=config, pool_index=eot_index - placeholder_index,
                                 dtype=dtype)
    return functools.partial(oti_features, params, base_embeddings=base_embeddings,
                             config=config, placeholder_index=placeholder_index,
                             eot_index=eot_index, dtype=dtype)


_OTI_STATIC = ("config", "placeholder_index", "eot_index", "record_steps", "dtype",
               "cache_prefix")


@functools.partial(jax.jit, static_argnames=_OTI_STATIC)
def _oti_chunk(params, targets, state, start, count, base_embeddings, hparams, weights, *,
               config, placeholder_index, eot_index, record_steps, dtype, cache_prefix
               ) -> ChunkState:
    fn = _oti_features_fn(params, base_embeddings, config, placeholder_index, eot_index, dtype,
                          cache_prefix)
    return run_chunk(fn, targets, hparams, state, start, count, record_steps, weights)


@functools.partial(jax.jit, static_argnames=(*_OTI_STATIC, "steps"))
def _oti_finish(params, state, base_embeddings, *, config, placeholder_index, eot_index,
                record_steps, dtype, cache_prefix, steps) -> RawInversion:
    fn = _oti_features_fn(params, base_embeddings, config, placeholder_index, eot_index, dtype,
                          cache_prefix)
    return finish_chunks(fn, state, steps, record_steps)


@functools.partial(jax.jit, static_argnames=("config", "steps", "record_steps", "dtype",
                                             "pooled_only"))
def ovi_fn(params: Any, targets: jax.Array, init: jax.Array, hparams: HParams,
           weights: jax.Array | None = None, *,
           config: CLIPConfig, steps: int = 1000, record_steps: tuple[int, ...] = (),
           dtype: Any = jnp.float32, pooled_only: bool = True) -> RawInversion:
    """The whole OVI optimisation as one compiled program.

    Args:
        params: CLIP params (replicated when sharded).
        targets: ``(N, embed_dim)`` text features.
        init: ``(N, P, vision_width)`` initial pseudo patch tokens.
        hparams: :class:`HParams` of traced scalars.
        pooled_only: run the last block at the class token only (exact; CLIP family).

    Returns:
        :class:`~crossgap_jax.inversion.core.RawInversion` with ``losses`` ``(steps, N)``.
    """
    fn = functools.partial(ovi_features, params, config=config, dtype=dtype,
                           pooled_only=pooled_only)
    return run_inversion(fn, targets, init, hparams, steps, record_steps, weights)


_OVI_STATIC = ("config", "record_steps", "dtype", "pooled_only")


@functools.partial(jax.jit, static_argnames=_OVI_STATIC)
def _ovi_chunk(params, targets, state, start, count, hparams, weights, *, config, record_steps,
               dtype, pooled_only) -> ChunkState:
    fn = functools.partial(ovi_features, params, config=config, dtype=dtype,
                           pooled_only=pooled_only)
    return run_chunk(fn, targets, hparams, state, start, count, record_steps, weights)


@functools.partial(jax.jit, static_argnames=(*_OVI_STATIC, "steps"))
def _ovi_finish(params, state, *, config, record_steps, dtype, pooled_only, steps
                ) -> RawInversion:
    fn = functools.partial(ovi_features, params, config=config, dtype=dtype,
                           pooled_only=pooled_only)
    return finish_chunks(fn, state, steps, record_steps)


_init_state_jit = jax.jit(init_chunk_state, static_argnames=("steps", "num_records"))
# Target wall time of one chunk of the progress-reporting loop: the bar moves about this
# often (never more often than once per step). The device waits for the host only between
# chunks, for the time of one dispatch.
PROGRESS_SECONDS = 2.0


def run_batch_chunked(run_chunk_fn, finish_fn, x0: jax.Array, steps: int,
                      num_records: int, on_steps=None,
                      seconds: float | None = None) -> RawInversion:
    """One batch of OTI/OVI as chunks of one compiled loop, reporting progress in between.

    ``run_chunk_fn(state, start, count)`` runs steps ``start+1 .. start+count`` (``start``,
    ``count`` traced: every chunk reuses one compiled program), ``finish_fn(state)`` builds
    the result. Chunk lengths adapt to the measured time per step so that ``on_steps(k)``
    (k steps just finished) is called about every ``seconds`` (default
    :data:`PROGRESS_SECONDS`). The result is bit-identical to the single-program loop
    (same step computation; tested).
    """
    target = PROGRESS_SECONDS if seconds is None else float(seconds)
    state = _init_state_jit(x0, steps=steps, num_records=num_records)
    # Example-major state: give it the examples' sharding, which the chunk program keeps, so
    # the second chunk sees the same input shardings as the first (no recompilation).
    state = jax.device_put(state, x0.sharding) if hasattr(x0, "sharding") else state
    done, count = 0, 1
    while done < steps:
        count = max(1, min(count, steps - done))
        t0 = time.perf_counter()
        state = run_chunk_fn(state, np.int32(done), np.int32(count))
        jax.block_until_ready(state.tokens)
        elapsed = time.perf_counter() - t0
        done += count
        if on_steps is not None:
            on_steps(count)
        # Next chunk: about `target` seconds at the last chunk's speed (at most 8x longer,
        # so a first chunk slowed by compilation is not extrapolated too far).
        count = max(1, min(8 * count, int(target * count / max(elapsed, 1e-9))))
    return finish_fn(state)


# ---------------------------------------------------------------------------------------
# Template handling (Python, outside the compiled program)
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Template:
    """A tokenized OTI template.

    Attributes:
        text: the formatted sentence (``template.format(" £ " * R)``).
        ids: ``(context_length,)`` int32 token ids.
        placeholder_index: position of the first of the R placeholder tokens.
        eot_index: position of EOT.
        num_tokens: R.
    """

    text: str
    ids: np.ndarray
    placeholder_index: int
    eot_index: int
    num_tokens: int


def prepare_template(template: str, num_tokens: int, tokenizer: Any) -> Template:
    """Tokenize ``template`` with R placeholders and locate them.

    The placeholder id is whatever the tokenizer produces for ``"£"`` (1950 with the
    OpenAI BPE: the byte-level symbol for UTF-8 C2 A3, not the vocabulary entry ``£</w>``).

    Raises:
        ValueError: the template lacks exactly one ``{}``, the placeholders are not R
            consecutive tokens, or the sentence does not fit the context.
    """
    if template.count("{}") != 1:
        raise ValueError(f"template must contain exactly one '{{}}': {template!r}")
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    if PLACEHOLDER in template:
        raise ValueError(f"template may not contain the placeholder {PLACEHOLDER!r} itself")
    text = template.format(f" {PLACEHOLDER} " * num_tokens)
    # Family hook: a tokenizer with ``template_ids(text, placeholder) -> (ids, positions,
    # pool_index)`` places the placeholders itself (SigLIP's SentencePiece, which pools at
    # the last position rather than at EOT).
    if hasattr(tokenizer, "template_ids"):
        ids, positions, pool = tokenizer.template_ids(text, PLACEHOLDER)
        positions = np.asarray(positions, np.int64)
        first = int(positions[0]) if len(positions) else -1
        if len(positions) != num_tokens or not np.array_equal(
                positions, np.arange(first, first + num_tokens)):
            raise ValueError(f"expected {num_tokens} consecutive placeholder tokens in {text!r}, "
                             f"found them at {positions.tolist()}")
        return Template(text, np.asarray(ids, np.int32), first, int(pool), num_tokens)
    placeholder_ids = tokenizer.encode(f" {PLACEHOLDER} ")
    if len(placeholder_ids) != 1:
        raise ValueError(f"placeholder {PLACEHOLDER!r} is not one token: {placeholder_ids}")
    pid = placeholder_ids[0]
    plain = tokenizer.encode(text)
    if len(plain) + 2 > tokenizer.context_length:
        raise ValueError(f"template with {num_tokens} pseudo tokens does not fit the context "
                         f"({len(plain) + 2} > {tokenizer.context_length} tokens)")
    ids = tokenizer([text])[0]
    positions = np.flatnonzero(ids == pid)
    first = int(positions[0]) if len(positions) else -1
    if len(positions) != num_tokens or not np.array_equal(
            positions, np.arange(first, first + num_tokens)):
        raise ValueError(f"expected {num_tokens} consecutive placeholder tokens in {text!r}, "
                         f"found them at {positions.tolist()}")
    eot = int(np.flatnonzero(ids == tokenizer.eot_token_id)[0])
    return Template(text, ids, first, eot, num_tokens)


# ---------------------------------------------------------------------------------------
# The user API: batching, padding, sharding, non-finite detection
# ---------------------------------------------------------------------------------------
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


def _check_targets(x: Any, dim: int, what: str) -> np.ndarray:
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


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """Pad the leading axis to ``size`` by repeating the last row (harmless, discarded)."""
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


_init_jit = jax.jit(normal_init, static_argnames=("shape", "std"))


def _drive(kind: str, run_batch, targets: np.ndarray, token_shape: tuple[int, int],
           init: Any, seed: int, batch_size: int, steps: int, record_steps: tuple[int, ...],
           devices: Sequence[jax.Device] | None, progress: bool | None, on_nonfinite: str,
           hparams: dict, params: Any, consts: Any, chunked: tuple | None = None,
           loss_reduction: str = "per_example", pad_to: int | None = None) -> InversionResult:
    if on_nonfinite not in ("warn", "raise"):
        raise ValueError(f"on_nonfinite must be 'warn' or 'raise', got {on_nonfinite!r}")
    t0 = time.perf_counter()
    n = len(targets)
    if init is not None:
        init = np.asarray(init, np.float32)
        if init.shape != (n, *token_shape):
            raise ValueError(f"init must be {(n, *token_shape)}, got {init.shape}")
        if not np.isfinite(init).all():
            raise ValueError("init contains NaN/inf")
    mesh = shd.make_mesh(devices) if (devices is None or len(devices) > 1) else None
    n_dev = mesh.size if mesh is not None else 1
    if mesh is not None and n_dev == 1:
        mesh = None
    # One fixed batch shape per call: no recompilation for a ragged last batch, and a
    # second call with the same N / batch_size reuses the compiled program. ``pad_to``
    # keeps that shape for a call with fewer than ``batch_size`` examples.
    loss_weights(1, 1, loss_reduction)  # validates the name
    bsz = shd.round_up(min(batch_size, max(n, int(pad_to or 0))), n_dev)
    # Real examples per batch: the whole compiled batch for the per-example objective; for
    # the authors' batch mean exactly ``batch_size`` (the batch composition is part of the
    # objective), the rows up to the device-count multiple being weight-0 padding.
    step = bsz if loss_reduction == "per_example" else min(batch_size, n)
    # Everything the program reads besides the examples (params, template embeddings,
    # hyper-parameters) goes to the same devices as the examples: replicated over the mesh,
    # or onto the one device asked for (arrays committed elsewhere would make jit refuse).
    if mesh is not None:
        params, consts = shd.replicate((params, consts), mesh)
    elif devices is not None:
        params, consts = jax.device_put((params, consts), devices[0])
    key = jax.random.PRNGKey(seed)
    outs: dict[str, list[np.ndarray]] = {k: [] for k in (
        "tokens", "features", "losses", "rec_tokens", "rec_features")}
    starts = range(0, n, step)
    show = progress if progress is not None else len(starts) > 1
    # With a bar, each batch runs as chunks of one compiled loop (``chunked``: the chunk and
    # finish programs) and the bar counts steps; without, as one program per batch.
    bar = tqdm(total=steps * len(starts), desc=kind.upper(), unit="step", disable=not show,
               leave=False, smoothing=0.1) if show and chunked is not None else None
    batches = starts if bar is not None else tqdm(starts, desc=kind.upper(), unit="batch",
                                                  disable=not show)
    for start in batches:
        stop = min(start + step, n)
        idx = np.arange(start, stop)
        if init is None:
            x0 = np.asarray(_init_jit(key, jnp.asarray(_pad_rows(idx, bsz)), shape=token_shape,
                                      std=0.02))
        else:
            x0 = _pad_rows(init[start:stop], bsz)
        t = _pad_rows(targets[start:stop], bsz)
        w = np.asarray(loss_weights(stop - start, bsz, loss_reduction))
        if mesh is not None:
            t, x0, w = shd.shard_examples((t, x0, w), mesh)
        elif devices is not None:
            t, x0, w = jax.device_put((t, x0, w), devices[0])
        if bar is not None:
            raw = run_batch_chunked(
                functools.partial(chunked[0], params, consts, t, w),
                functools.partial(chunked[1], params, consts), x0, steps, len(record_steps),
                bar.update)
        else:
            raw = run_batch(params, consts, t, x0, w)
        m = stop - start
        outs["tokens"].append(np.asarray(raw.tokens)[:m])
        outs["features"].append(np.asarray(raw.features)[:m])
        outs["losses"].append(np.asarray(raw.losses)[:, :m])
        outs["rec_tokens"].append(np.asarray(raw.recorded_tokens)[:, :m])
        outs["rec_features"].append(np.asarray(raw.recorded_features)[:, :m])
    if bar is not None:
        bar.close()
    tokens = np.concatenate(outs["tokens"])
    features = np.concatenate(outs["features"])
    losses = np.concatenate(outs["losses"], axis=1)
    rec_tokens = np.concatenate(outs["rec_tokens"], axis=1)
    rec_features = np.concatenate(outs["rec_features"], axis=1)
    nonfinite = ~(np.isfinite(losses).all(0) & np.isfinite(features).all(1)
                  & np.isfinite(tokens.reshape(n, -1)).all(1))
    if nonfinite.any():
        bad = np.flatnonzero(nonfinite)
        msg = (f"{kind.upper()}: {len(bad)} of {n} examples produced non-finite losses, tokens "
               f"or features (indices {bad[:20].tolist()}{'...' if len(bad) > 20 else ''}); "
               f"see result.nonfinite")
        if on_nonfinite == "raise":
            raise FloatingPointError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return InversionResult(
        pseudo_tokens=tokens, features=features, losses=losses, record_steps=record_steps,
        recorded_tokens=rec_tokens, recorded_features=rec_features, nonfinite=nonfinite,
        hparams=dict(hparams, steps=steps, seed=seed, batch_size=bsz, devices=n_dev),
        seconds=time.perf_counter() - t0,
    )


def oti(clip: Any, image_features: Any, steps: int = 150, num_tokens: int = 1,
        learning_rate: float = 2e-2, weight_decay: float = 0.01,
        template: str = DEFAULT_TEMPLATE, seed: int = 0, init: Any = None,
        record_steps: Sequence[int] = (), *, batch_size: int = 64, truncate: bool = True,
        cache_prefix: bool = True, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
        devices: Sequence[jax.Device] | None = None, progress: bool | None = None,
        on_nonfinite: str = "warn", loss_reduction: str = "per_example",
        pad_to: int | None = None) -> InversionResult:
    """Optimization-based Textual Inversion: image features -> pseudo word tokens.

    Args:
        clip: a :class:`~crossgap_jax.models.bundle.CLIP` bundle (its compute dtype is used).
        image_features: ``(N, embed_dim)`` image features (normalisation optional).
        steps: optimisation steps (paper: 150).
        num_tokens: R, pseudo tokens per example (paper: 1).
        learning_rate, weight_decay, b1, b2, eps: AdamW (PyTorch semantics).
        template: sentence with one ``{}`` where the R pseudo tokens go.
        seed: PRNG seed of the N(0, 0.02^2) init; example i's init depends only on
            ``seed`` and i.
        init: optional ``(N, R, text_width)`` starting tokens.
        record_steps: steps after which tokens and features are snapshotted.
        batch_size: examples per compiled batch (rounded up to the device count).
        truncate: run the text encoder only over the positions up to EOT (exact).
        cache_prefix: compute the template positions before the placeholder once per call,
            not in every step (exact; CLIP family only).
        devices: devices to shard examples over (default: all local devices).
        progress: show a progress bar over the optimisation steps (default: when there is
            more than one batch). With a bar, each batch runs as chunks of one compiled
            loop (lengths adapted to move the bar about every
            :data:`PROGRESS_SECONDS`; no recompilation, bit-identical results).
        on_nonfinite: ``"warn"`` (report indices, flag in ``result.nonfinite``) or
            ``"raise"``.
        loss_reduction: ``"per_example"`` (default: each example minimises its own
            ``1 - cos``, independent of its batch) or ``"mean"`` (the authors' objective:
            the mean of ``1 - cos`` over consecutive batches of exactly ``batch_size``
            examples in input order, the last one ragged; under Adam this acts as
            ``eps -> B * eps`` per batch). See docs/fidelity.md.
        pad_to: compile for batches of ``min(batch_size, pad_to)`` rows even when N is
            smaller (weight-0 padding rows; avoids a recompile for a short last chunk).

    Returns:
        :class:`InversionResult` with ``pseudo_tokens`` ``(N, R, text_width)``.
    """
    loss_weights(1, 1, loss_reduction)  # validates the name before any work
    config = clip.config
    record_steps = _validate_steps(steps, record_steps)
    targets = _check_targets(image_features, config.embed_dim, "image_features")
    tpl = prepare_template(template, num_tokens, clip.tokenizer)
    # Truncation is exact only for a causal text encoder (CLIP); others use the full context.
    exact = truncate and getattr(family_of(config), "CAUSAL_TEXT", False)
    length = tpl.eot_index + 1 if exact else config.text.context_length
    base = family_of(config).embed_tokens(clip.params, jnp.asarray(tpl.ids[:length]),
                                          config=config)
    h = HParams(learning_rate, weight_decay, b1, b2, eps).as_arrays()
    run = lambda p, c, t, x0, w: oti_fn(p, t, x0, c[0], c[1], w, config=config,
                                     placeholder_index=tpl.placeholder_index,
                                     eot_index=tpl.eot_index, steps=steps,
                                     record_steps=record_steps, dtype=clip.dtype,
                                     cache_prefix=cache_prefix)
    hp = dict(method="oti", learning_rate=learning_rate, weight_decay=weight_decay, b1=b1, b2=b2,
              eps=eps, num_tokens=num_tokens, template=template, truncate=truncate,
              cache_prefix=cache_prefix, template_text=tpl.text, loss_reduction=loss_reduction)
    static = dict(config=config, placeholder_index=tpl.placeholder_index,
                  eot_index=tpl.eot_index, record_steps=record_steps, dtype=clip.dtype,
                  cache_prefix=cache_prefix)
    chunked = (lambda p, c, t, w, st, a, k: _oti_chunk(p, t, st, a, k, c[0], c[1], w,
                                                       **static),
               lambda p, c, st: _oti_finish(p, st, c[0], steps=steps, **static))
    return _drive("oti", run, targets, (num_tokens, config.text.width), init, seed, batch_size,
                  steps, record_steps, devices, progress, on_nonfinite, hp, clip.params,
                  (base, h), chunked, loss_reduction, pad_to)


def ovi(clip: Any, text_features: Any, steps: int = 1000, num_tokens: int = 1,
        learning_rate: float = 2e-2, weight_decay: float = 0.01, seed: int = 0,
        init: Any = None, record_steps: Sequence[int] = (), *, batch_size: int = 64,
        pooled_only: bool = True, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
        devices: Sequence[jax.Device] | None = None, progress: bool | None = None,
        on_nonfinite: str = "warn", loss_reduction: str = "per_example",
        pad_to: int | None = None) -> InversionResult:
    """Optimization-based Visual Inversion: text features -> pseudo patch tokens.

    Args:
        clip: a CLIP bundle.
        text_features: ``(N, embed_dim)`` text features.
        steps: optimisation steps (paper: 1000).
        num_tokens: P, pseudo patch tokens (paper: 1 for CLIP B/32, 4 for L/14).
        pooled_only: run the last transformer block at the class token only (exact; the
            feature is read there; CLIP family only).
        Other arguments as :func:`oti`.

    Returns:
        :class:`InversionResult` with ``pseudo_tokens`` ``(N, P, vision_width)``.
    """
    loss_weights(1, 1, loss_reduction)  # validates the name before any work
    config = clip.config
    record_steps = _validate_steps(steps, record_steps)
    targets = _check_targets(text_features, config.embed_dim, "text_features")
    if not 1 <= num_tokens <= config.vision.num_patches:
        raise ValueError(f"num_tokens must be in 1..{config.vision.num_patches}, got {num_tokens}")
    h = HParams(learning_rate, weight_decay, b1, b2, eps).as_arrays()
    run = lambda p, c, t, x0, w: ovi_fn(p, t, x0, c, w, config=config, steps=steps,
                                     record_steps=record_steps, dtype=clip.dtype,
                                     pooled_only=pooled_only)
    hp = dict(method="ovi", learning_rate=learning_rate, weight_decay=weight_decay, b1=b1, b2=b2,
              eps=eps, num_tokens=num_tokens, pooled_only=pooled_only,
              loss_reduction=loss_reduction)
    static = dict(config=config, record_steps=record_steps, dtype=clip.dtype,
                  pooled_only=pooled_only)
    chunked = (lambda p, c, t, w, st, a, k: _ovi_chunk(p, t, st, a, k, c, w, **static),
               lambda p, c, st: _ovi_finish(p, st, steps=steps, **static))
    return _drive("ovi", run, targets, (num_tokens, config.vision.width), init, seed, batch_size,
                  steps, record_steps, devices, progress, on_nonfinite, hp, clip.params, h,
                  chunked, loss_reduction, pad_to)
