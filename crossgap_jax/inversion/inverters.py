"""OTI and OVI: the objectives, their compiled programs and the user API.

OTI (image -> text side): pseudo word-token embeddings ``(R, text_width)`` replace the
embeddings of the ``£`` placeholder tokens of a template such as ``"a photo of {}"``;
the text encoder's feature of that sentence is matched to an image feature.

OVI (text -> image side): pseudo patch tokens ``(P, vision_width)`` are expanded to the
``N`` patch positions by nearest-neighbour interpolation (position ``i`` takes token
``floor(i * P / N)``) and replace the patch-embedding output; the image encoder's
feature is matched to a text feature.

The forward passes are the model family's own encoders (``encode_text_embeddings`` with
its ``prefix``/``pooled_only`` options, ``encode_image_tokens`` with ``pooled_only``); the
loop is :mod:`~crossgap_jax.inversion.core`'s, the batching :mod:`.driver`'s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossgap_jax.inversion import config as cfg
from crossgap_jax.inversion import progress
from crossgap_jax.inversion.config import (
    DEFAULT_TEMPLATE,
    ExecutionSettings,
    InversionSettings,
    OTISettings,
    OVISettings,
)
from crossgap_jax.inversion.core import HParams, RawInversion, run_inversion
from crossgap_jax.inversion.driver import InversionResult, Job, check_init, check_targets, run_job
from crossgap_jax.inversion.template import prepare_template
from crossgap_jax.models import CLIPConfig, family_of

_O, _V, _E = OTISettings(), OVISettings(), ExecutionSettings()  # the one source of defaults


# ---------------------------------------------------------------------------------------
# Objectives: batched ``tokens -> features`` through the model's own encoders
# ---------------------------------------------------------------------------------------
def oti_features(params: Any, tokens: jax.Array, base_embeddings: jax.Array, *,
                 config: CLIPConfig, placeholder_index: int, eot_index: int,
                 dtype: Any = jnp.float32, prefix: Any = None,
                 pooled_only: bool = False) -> jax.Array:
    """Text features of the template with pseudo tokens placed at the placeholder.

    Args:
        params: model params pytree.
        tokens: ``(N, R, text_width)`` pseudo word-token embeddings.
        base_embeddings: ``(L, text_width)`` token embeddings of the tokenized template
            (``L`` may be truncated to ``eot_index + 1`` for a causal text tower).
        placeholder_index, eot_index: first placeholder and pooled position (static).
        prefix: the family's ``text_prefix`` of the positions before the placeholder (then
            only the positions from the placeholder on are encoded); ``None``: all.
        pooled_only: the last block computes the pooled row only (exact).

    Returns:
        ``(N, embed_dim)`` features (not normalised).
    """
    r = tokens.shape[1]
    fam = family_of(config)
    start = 0 if prefix is None else placeholder_index

    def one(tok: jax.Array) -> jax.Array:  # (R, width) -> (embed_dim,)
        emb = jnp.concatenate([base_embeddings[start:placeholder_index],
                               tok.astype(base_embeddings.dtype),
                               base_embeddings[placeholder_index + r:]], axis=0)
        eot = jnp.full((1,), eot_index - start, jnp.int32)
        return fam.encode_text_embeddings(params, emb[None], eot, config=config, dtype=dtype,
                                          prefix=prefix, pooled_only=pooled_only)[0]

    # vmap over the examples instead of one batched call: the pooling gather of a batched
    # call cannot be split along a sharded batch by the SPMD partitioner (it inserted an
    # all-reduce and an all-gather into every step); under vmap it is batch-parallel.
    return jax.vmap(one)(tokens)


def expand_patch_tokens(tokens: jax.Array, num_patches: int) -> jax.Array:
    """Nearest-neighbour expansion ``(N, P, w) -> (N, num_patches, w)``: ``i -> floor(i P / n)``.

    When ``P`` divides ``n`` this is each token repeated ``n / P`` times (a broadcast, whose
    gradient is a sum); otherwise a gather (whose gradient is a scatter-add, slower on CPU).
    """
    p = tokens.shape[1]
    if num_patches % p == 0:
        return jnp.repeat(tokens, num_patches // p, axis=1)
    idx = (np.arange(num_patches) * p) // num_patches
    return tokens[:, idx]


def ovi_features(params: Any, tokens: jax.Array, *, config: CLIPConfig,
                 dtype: Any = jnp.float32, pooled_only: bool = False) -> jax.Array:
    """Image features from ``(N, P, vision_width)`` pseudo patch tokens -> ``(N, embed_dim)``
    (``pooled_only``: the family's last block at the pooled token only; exact)."""
    expanded = expand_patch_tokens(tokens, config.vision.num_patches)
    return family_of(config).encode_image_tokens(params, expanded, config=config, dtype=dtype,
                                                 pooled_only=pooled_only)


def _oti_objective(params, base_embeddings, config, placeholder_index, eot_index, dtype,
                   cache_prefix):
    """OTI's ``tokens -> features`` inside a traced program; with ``cache_prefix`` (causal
    text towers) the template prefix is encoded here, once, outside the loop over steps."""
    fam = family_of(config)
    prefix = None
    # Why exact: in a causal tower the positions before the placeholder never attend to the
    # pseudo tokens, so their keys/values are the same at every step; computed once here, the
    # scan's body runs only the positions from the placeholder on.
    if cache_prefix and placeholder_index > 0 and getattr(fam, "CAUSAL_TEXT", False):
        prefix = fam.text_prefix(params, base_embeddings[None, :placeholder_index],
                                 config=config, dtype=dtype)
    return functools.partial(oti_features, params, base_embeddings=base_embeddings,
                             config=config, placeholder_index=placeholder_index,
                             eot_index=eot_index, dtype=dtype, prefix=prefix,
                             pooled_only=cache_prefix)


def _ovi_objective(params, config, dtype, pooled_only):
    return functools.partial(ovi_features, params, config=config, dtype=dtype,
                             pooled_only=pooled_only)


# ---------------------------------------------------------------------------------------
# Compiled programs: the whole loop of one batch, one XLA program
# ---------------------------------------------------------------------------------------
_OTI_STATIC = ("config", "placeholder_index", "eot_index", "record_steps", "dtype",
               "cache_prefix", "steps")
_OVI_STATIC = ("config", "record_steps", "dtype", "pooled_only", "steps")


def _on_step(channel: jax.Array | None, steps: int):
    """The loop's per-step hook: report progress on ``channel`` (``None``: no hook, and a
    program without the callback)."""
    return None if channel is None else functools.partial(progress.emit, channel, steps=steps)


@functools.partial(jax.jit, static_argnames=_OTI_STATIC)
def oti_fn(params: Any, targets: jax.Array, init: jax.Array, base_embeddings: jax.Array,
           hparams: HParams, weights: jax.Array | None = None,
           progress_channel: jax.Array | None = None, *, config: CLIPConfig,
           placeholder_index: int, eot_index: int,
           steps: int = _O.steps, record_steps: tuple[int, ...] = (),
           dtype: Any = jnp.float32, cache_prefix: bool = _E.cache_prefix) -> RawInversion:
    """The whole OTI optimisation as one compiled program.

    Args:
        params: model params (replicated when sharded).
        targets: ``(N, embed_dim)`` image features; ``init``: ``(N, R, text_width)``.
        base_embeddings: ``(L, text_width)`` template token embeddings.
        hparams: :class:`HParams` of traced scalars; ``weights``: ``(N,)`` traced objective
            weights (:func:`~crossgap_jax.inversion.core.loss_weights`; ``None``: 1).
        progress_channel: ``int32 (2,)`` handle of a
            :class:`~crossgap_jax.inversion.progress.Channel` (``(channel id, every)``):
            every ``every``-th step and the last report to it through a host callback
            (traced: every channel and interval share one program); ``None``: a program
            without the callback.
        cache_prefix: encode the template positions before the placeholder once per call
            and the last block at the pooled position only (exact; the prefix cache for
            causal text towers only).

    Returns:
        :class:`~crossgap_jax.inversion.core.RawInversion` with ``losses`` ``(steps, N)``.
    """
    fn = _oti_objective(params, base_embeddings, config, placeholder_index, eot_index, dtype,
                        cache_prefix)
    return run_inversion(fn, targets, init, hparams, steps, record_steps, weights,
                         _on_step(progress_channel, steps))


@functools.partial(jax.jit, static_argnames=_OVI_STATIC)
def ovi_fn(params: Any, targets: jax.Array, init: jax.Array, hparams: HParams,
           weights: jax.Array | None = None, progress_channel: jax.Array | None = None, *,
           config: CLIPConfig, steps: int = _V.steps,
           record_steps: tuple[int, ...] = (), dtype: Any = jnp.float32,
           pooled_only: bool = _E.pooled_only) -> RawInversion:
    """The whole OVI optimisation as one compiled program (arguments as :func:`oti_fn`;
    ``init`` ``(N, P, vision_width)``, ``targets`` text features)."""
    fn = _ovi_objective(params, config, dtype, pooled_only)
    return run_inversion(fn, targets, init, hparams, steps, record_steps, weights,
                         _on_step(progress_channel, steps))


# ---------------------------------------------------------------------------------------
# The user API
# ---------------------------------------------------------------------------------------
def invert(clip: Any, features: Any, settings: InversionSettings,
           execution: ExecutionSettings = _E, init: Any = None) -> InversionResult:
    """OTI (``settings`` an :class:`OTISettings`: image features in) or OVI
    (:class:`OVISettings`: text features in), typed form of :func:`oti` / :func:`ovi`.

    Args:
        clip: a model bundle (:class:`~crossgap_jax.models.bundle.CLIP`).
        features: ``(N, embed_dim)`` target features (normalisation optional).
        init: optional ``(N, K, width)`` starting tokens.

    Returns:
        :class:`InversionResult`.

    Raises:
        ValueError: bad features, init, template or token count (named in the message).
    """
    config, s, ex = clip.config, settings, execution
    dtype = jnp.dtype(ex.precision) if ex.precision else clip.dtype
    h = HParams(s.learning_rate, s.weight_decay, s.b1, s.b2, s.eps).as_arrays()
    desc = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("steps", "seed",
                                                                          "record_steps")}
    if isinstance(s, OTISettings):
        targets = check_targets(features, config.embed_dim, "image_features")
        tpl = prepare_template(s.template, s.num_tokens, clip.tokenizer)
        fam = family_of(config)
        # Truncation is exact only for a causal text encoder; others use the full context.
        exact = ex.truncate and getattr(fam, "CAUSAL_TEXT", False)
        length = tpl.eot_index + 1 if exact else config.text.context_length
        base = fam.embed_tokens(clip.params, jnp.asarray(tpl.ids[:length]), config=config)
        static = dict(config=config, placeholder_index=tpl.placeholder_index,
                      eot_index=tpl.eot_index, record_steps=s.record_steps, dtype=dtype,
                      cache_prefix=ex.cache_prefix, steps=s.steps)
        run = lambda p, c, t, x0, w, ch: oti_fn(p, t, x0, c[0], c[1], w, ch, **static)
        consts, width = (base, h), config.text.width
        desc.update(method="oti", truncate=ex.truncate, cache_prefix=ex.cache_prefix,
                    template_text=tpl.text)
    elif isinstance(s, OVISettings):
        targets = check_targets(features, config.embed_dim, "text_features")
        if s.num_tokens > config.vision.num_patches:
            raise ValueError(f"num_tokens must be in 1..{config.vision.num_patches}, "
                             f"got {s.num_tokens}")
        static = dict(config=config, record_steps=s.record_steps, dtype=dtype,
                      pooled_only=ex.pooled_only, steps=s.steps)
        run = lambda p, c, t, x0, w, ch: ovi_fn(p, t, x0, c, w, ch, **static)
        consts, width = h, config.vision.width
        desc.update(method="ovi", pooled_only=ex.pooled_only)
    else:
        raise TypeError(f"settings must be OTISettings or OVISettings, got {type(s).__name__}")
    shape = (s.num_tokens, width)
    job = Job(s, ex, targets, shape, check_init(init, (len(targets), *shape)), clip.params,
              consts, run, desc)
    return run_job(s.method, job)


def oti(clip: Any, image_features: Any, steps: int = _O.steps,
        num_tokens: int = _O.num_tokens, learning_rate: float = _O.learning_rate,
        weight_decay: float = _O.weight_decay, template: str = DEFAULT_TEMPLATE,
        seed: int = _O.seed, init: Any = None, record_steps: Sequence[int] = (), *,
        batch_size: int = _E.batch_size, truncate: bool = _E.truncate,
        cache_prefix: bool = _E.cache_prefix, b1: float = _O.b1, b2: float = _O.b2,
        eps: float = _O.eps, devices: Sequence[jax.Device] | None = None,
        progress: bool | None = None, on_nonfinite: str = _E.on_nonfinite,
        loss_reduction: str = _O.loss_reduction, pad_to: int | None = None,
        precision: str | None = None) -> InversionResult:
    """Optimization-based Textual Inversion: image features -> pseudo word tokens.

    The keyword form of :func:`invert` with :class:`~crossgap_jax.inversion.config.OTISettings`
    (steps, num_tokens, learning_rate, weight_decay, template, seed, record_steps, b1, b2,
    eps, loss_reduction; paper: 150 steps, R = 1, AdamW 2e-2 / 0.01, "a photo of {}") and
    :class:`~crossgap_jax.inversion.config.ExecutionSettings` (batch_size, truncate,
    cache_prefix, devices, progress, on_nonfinite, pad_to, precision); see their docstrings
    for each argument. ``init``: optional ``(N, R, text_width)`` starting tokens.

    Returns:
        :class:`InversionResult` with ``pseudo_tokens`` ``(N, R, text_width)``.
    """
    kw = {k: v for k, v in locals().items() if k not in ("clip", "image_features", "init")}
    settings, execution = cfg.split_kwargs("oti", kw)
    return invert(clip, image_features, settings, execution, init)


def ovi(clip: Any, text_features: Any, steps: int = _V.steps,
        num_tokens: int = _V.num_tokens, learning_rate: float = _V.learning_rate,
        weight_decay: float = _V.weight_decay, seed: int = _V.seed, init: Any = None,
        record_steps: Sequence[int] = (), *, batch_size: int = _E.batch_size,
        pooled_only: bool = _E.pooled_only, b1: float = _V.b1, b2: float = _V.b2,
        eps: float = _V.eps, devices: Sequence[jax.Device] | None = None,
        progress: bool | None = None, on_nonfinite: str = _E.on_nonfinite,
        loss_reduction: str = _V.loss_reduction, pad_to: int | None = None,
        precision: str | None = None) -> InversionResult:
    """Optimization-based Visual Inversion: text features -> pseudo patch tokens.

    The keyword form of :func:`invert` with :class:`~crossgap_jax.inversion.config.OVISettings`
    (paper: 1000 steps; P = 1 for CLIP B/32, 4 for L/14) and
    :class:`~crossgap_jax.inversion.config.ExecutionSettings` (``pooled_only``: the last
    block at the pooled token only, exact). Other arguments as :func:`oti`.

    Returns:
        :class:`InversionResult` with ``pseudo_tokens`` ``(N, P, vision_width)``.
    """
    kw = {k: v for k, v in locals().items() if k not in ("clip", "text_features", "init")}
    settings, execution = cfg.split_kwargs("ovi", kw)
    return invert(clip, text_features, settings, execution, init)
