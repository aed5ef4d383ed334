"""Contrastive losses: CLIP's inter-modal loss and a SimCLR-style intra-modal image term.

All functions are pure and batch-global (call them on the whole batch inside ``jit``; with
a sharded batch XLA inserts the gathers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows of ``(N, D)`` scaled to unit L2 norm (float32)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over rows of ``-sum_j targets_ij log softmax(logits)_ij``."""
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def clip_loss(image_features: jax.Array, text_features: jax.Array, logit_scale: jax.Array,
              labels: jax.Array | None = None) -> jax.Array:
    """Symmetric InfoNCE between ``(B, D)`` image and ``(B, D)`` text features.

    Args:
        image_features, text_features: paired rows (row i of each is a positive pair).
        logit_scale: log of the inverse temperature (CLIP's parameter); the logits are
            ``exp(logit_scale) * cos``.
        labels: optional ``(B,)`` class ids. Captions generated from class names make
            every caption of the same class an equally correct description of an image,
            so with labels all same-class pairs are positives (target mass split evenly
            among them, as in UniCL). Without labels: CLIP's one-hot diagonal targets.
            When all labels in a batch differ the two coincide.

    Returns:
        Scalar loss, the mean of the image->text and text->image cross-entropies.
    """
    img = l2_normalize(image_features)
    txt = l2_normalize(text_features)
    logits = jnp.exp(logit_scale) * (img @ txt.T)
    b = img.shape[0]
    if labels is None:
        targets = jnp.eye(b, dtype=jnp.float32)
    else:
        same = (labels[:, None] == labels[None, :]).astype(jnp.float32)
        targets = same / jnp.sum(same, axis=-1, keepdims=True)
    # ``same`` is symmetric, so the text->image targets are the same matrix.
    return 0.5 * (_soft_cross_entropy(logits, targets) + _soft_cross_entropy(logits.T, targets))


def intra_image_loss(view1: jax.Array, view2: jax.Array, temperature: float = 0.1) -> jax.Array:
    """SimCLR's NT-Xent between two augmented views ``(B, D)`` of the same images.

    For each of the 2B embeddings the positive is the other view of the same image and the
    negatives are the other 2B - 2 embeddings (SLIP's intra-modal term).
    """
    z = l2_normalize(jnp.concatenate([view1, view2], axis=0))
    n = z.shape[0]
    b = n // 2
    logits = (z @ z.T) / temperature
    logits = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, logits)
    positives = jnp.concatenate([jnp.arange(b, n), jnp.arange(0, b)])
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(logp[jnp.arange(n), positives])
