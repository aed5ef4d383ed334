"""The generic compiled inversion loop shared by OTI and OVI.

Given a batched feature function ``features_fn(tokens (N, K, width)) -> (N, D)`` and
target features ``(N, D)``, optimise the pseudo tokens so that each example's feature
matches its target under the per-example loss ``1 - cos``. Everything — all steps of all
examples — is one XLA program: ``lax.scan`` over steps, per-example AdamW state created
with ``jax.vmap(tx.init)`` and applied with ``jax.vmap(tx.update)``.

Per-example objective vs the authors' batch mean: the authors minimise
``mean_i (1 - cos_i)``, whose gradient w.r.t. example i's tokens is ``grad_i / B``. Adam
is invariant to a constant gradient scale except through ``eps``: with the mean,
``eps`` acts like ``B * eps`` on the per-example gradient. With eps = 1e-8 the two agree
to ~1e-3 relative in the first steps at batch 4 and are identical at batch 1. By default
we use the per-example loss so that an example's result never depends on what else is in
its batch; :func:`run_inversion`'s traced ``weights`` reproduce the batch mean exactly
(weight ``1 / B`` on the B real rows, 0 on padding rows; see :func:`loss_weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class HParams(NamedTuple):
    """AdamW hyper-parameters, traced (changing them does not recompile)."""

    learning_rate: float | jax.Array = 2e-2
    weight_decay: float | jax.Array = 0.01
    b1: float | jax.Array = 0.9
    b2: float | jax.Array = 0.999
    eps: float | jax.Array = 1e-8

    def as_arrays(self) -> HParams:
        return HParams(*(jnp.asarray(v, jnp.float32) for v in self))


def make_optimizer(h: HParams) -> optax.GradientTransformation:
    """AdamW with PyTorch's semantics (decoupled decay on the pre-update value)."""
    return optax.adamw(learning_rate=h.learning_rate, b1=h.b1, b2=h.b2, eps=h.eps,
                       weight_decay=h.weight_decay)


LOSS_REDUCTIONS = ("per_example", "mean")


def check_loss_reduction(reduction: str) -> str:
    """``reduction`` if it is one of :data:`LOSS_REDUCTIONS`.

    Raises:
        ValueError: any other value (the valid ones named).
    """
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {reduction!r}")
    return reduction


def loss_weights(num_real: int, num_rows: int, reduction: str = "per_example") -> jax.Array:
    """Per-row weights of the objective ``sum_i w_i (1 - cos_i)`` of one compiled batch.

    Args:
        num_real: rows holding real examples (the first ``num_real``; 1..num_rows).
        num_rows: rows of the compiled batch (real + padding).
        reduction: ``"per_example"`` (w = 1 on real rows: each example's gradient is its own)
            or ``"mean"`` (w = 1 / num_real: the gradient of the authors' batch mean
            ``(1/B) sum_i (1 - cos_i)`` over the B = ``num_real`` real examples).

    Returns:
        ``(num_rows,)`` float32; padding rows get 0 (they never influence anything).

    Raises:
        ValueError: unknown ``reduction`` or ``num_real`` outside ``1..num_rows``.
    """
    check_loss_reduction(reduction)
    if not 1 <= num_real <= num_rows:
        raise ValueError(f"num_real must be in 1..{num_rows}, got {num_real}")
    w = 1.0 if reduction == "per_example" else 1.0 / num_real
    return jnp.asarray([w] * num_real + [0.0] * (num_rows - num_real), jnp.float32)


def cosine_loss(features: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example ``1 - cos(features, targets)``: ``(N, D), (N, D) -> (N,)``.

    Matches PyTorch ``CosineEmbeddingLoss`` with target 1 (its eps 1e-8 on the norms).
    """
    f = features.astype(jnp.float32)
    t = targets.astype(jnp.float32)
    num = jnp.sum(f * t, axis=-1)
    den = jnp.sqrt(jnp.sum(f * f, axis=-1) * jnp.sum(t * t, axis=-1) + 1e-12)
    return 1.0 - num / den


class RawInversion(NamedTuple):
    """Arrays returned by :func:`run_inversion` (device arrays; N rows, padding included)."""

    tokens: jax.Array  # (N, K, width) after the last step
    features: jax.Array  # (N, D) features of the final tokens
    losses: jax.Array  # (steps, N) loss at each step's forward pass
    recorded_tokens: jax.Array  # (S, N, K, width) at each record step
    recorded_features: jax.Array  # (S, N, D)


def run_inversion(
    features_fn: Callable[[jax.Array], jax.Array],
    targets: jax.Array,
    init: jax.Array,
    hparams: HParams,
    steps: int,
    record_steps: Sequence[int] = (),
    weights: jax.Array | None = None,
    on_step: Callable[[jax.Array], None] | None = None,
) -> RawInversion:
    """Optimise pseudo tokens; call under ``jit`` (``steps``/``record_steps`` static).

    Args:
        features_fn: batched ``(N, K, width) -> (N, D)``; must treat examples independently.
        targets: ``(N, D)`` target features (not necessarily normalised).
        init: ``(N, K, width)`` starting pseudo tokens.
        hparams: AdamW hyper-parameters (traced scalars).
        steps: number of optimisation steps (static).
        record_steps: sorted step counts (each in ``1..steps``) after which tokens and
            features are snapshotted (static).
        weights: ``(N,)`` traced per-example weights of the objective ``sum_i w_i (1 - cos_i)``
            (:func:`loss_weights`; ``None``: all 1, the per-example objective). Traced, so
            the per-example and batch-mean objectives and ragged batches share one program.
        on_step: called inside the loop after each step with the int32 number of steps done
            (a traced scalar), e.g. :func:`~crossgap_jax.inversion.progress.emit` (a host
            callback); it returns nothing and cannot change the computation.

    Returns:
        :class:`RawInversion`.
    """
    record_steps = _sorted_steps(record_steps)
    tx = make_optimizer(hparams)
    one_step = _make_step(features_fn, targets, tx, weights)
    n, num = init.shape[0], len(record_steps)
    rec = jnp.asarray(record_steps, jnp.int32)

    # One loop whatever the number of record steps: the snapshots are written into a
    # preallocated buffer inside it (a record step does not add a copy of the loop body).
    def body(carry, _):
        tokens, opt_state, snaps, done = carry
        (tokens, opt_state), losses = one_step((tokens, opt_state))
        done = done + 1  # steps done, counted in the carry (no (steps,) index array)
        if record_steps:  # one slot write per step, whatever the number of record steps
            # first record step >= done (a comparison, not searchsorted's loop)
            slot = jnp.minimum(jnp.sum(rec < done), num - 1)
            old = jax.lax.dynamic_index_in_dim(snaps, slot, axis=1, keepdims=False)
            new = jnp.where(rec[slot] == done, tokens, old)
            snaps = jax.lax.dynamic_update_index_in_dim(snaps, new, slot, axis=1)
        if on_step is not None:
            on_step(done)
        return (tokens, opt_state, snaps, done), losses

    # snapshots example-major (N, S, K, width), like every other leaf: one data sharding fits.
    snaps0 = jnp.zeros((n, num, *init.shape[1:]), init.dtype)
    carry = (init, jax.vmap(tx.init)(init), snaps0, jnp.int32(0))
    (tokens, _, snaps, _), losses = jax.lax.scan(body, carry, None, length=steps)
    # One forward pass over every snapshot and the final tokens (examples are independent):
    # (N, S', K, w) -> (N * S', K, w) -> (N, S', D).
    last_recorded = bool(record_steps) and record_steps[-1] == steps
    tok = snaps if last_recorded else jnp.concatenate([snaps, tokens[:, None]], axis=1)
    feats = features_fn(tok.reshape(-1, *tok.shape[2:])).reshape(n, tok.shape[1], -1)
    return RawInversion(
        tokens=tokens, features=feats[:, -1], losses=losses,
        recorded_tokens=jnp.swapaxes(snaps, 0, 1),
        recorded_features=jnp.swapaxes(feats[:, :num], 0, 1),
    )


def _sorted_steps(record_steps: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted({int(s) for s in record_steps}))


def _make_step(features_fn: Callable[[jax.Array], jax.Array], targets: jax.Array,
               tx: optax.GradientTransformation, weights: jax.Array | None = None) -> Callable:
    """One AdamW step ``(tokens, opt_state) -> ((tokens, opt_state), losses (N,))``.
    ``weights``: see :func:`run_inversion`."""
    w = jnp.ones(targets.shape[:1], jnp.float32) if weights is None else weights

    def total_loss(tokens):
        losses = cosine_loss(features_fn(tokens), targets)
        # Weighted sum of independent per-example losses: its gradient w.r.t. example i's
        # tokens is w_i times that example's own gradient (w_i = 1: per-example; 1/B: the
        # gradient of the batch mean, as PyTorch's mean reduction backpropagates it).
        return jnp.sum(w * losses), losses

    def step(carry):
        tokens, opt_state = carry
        (_, losses), grads = jax.value_and_grad(total_loss, has_aux=True)(tokens)
        updates, opt_state = jax.vmap(tx.update)(grads, opt_state, tokens)
        tokens = optax.apply_updates(tokens, updates)
        return (tokens, opt_state), losses

    return step


def normal_init(key: jax.Array, indices: jax.Array, shape: tuple[int, ...],
                std: float = 0.02) -> jax.Array:
    """Per-example ``N(0, std^2)`` init keyed by each example's global index.

    Example ``i`` always gets the same init for a given seed, whatever its batch, batch
    size or device count.

    Args:
        key: a PRNG key.
        indices: ``(N,)`` int global example indices.
        shape: ``(K, width)`` per-example token shape.

    Returns:
        ``(N, K, width)`` float32.
    """
    # float32 whatever ``jax_enable_x64`` says: a dtype-less draw would be float64 under
    # x64 (other values for the same seed, and a float64 optimisation).
    return jax.vmap(lambda i: jnp.float32(std) * jax.random.normal(
        jax.random.fold_in(key, i), shape, jnp.float32))(jnp.asarray(indices, jnp.int32))

