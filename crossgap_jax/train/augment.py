"""On-device image augmentation (jit/vmap friendly): random resized crop, flip, jitter.

Images are stored as ``(N, S, S, 3)`` uint8 at the model resolution (already resized and
centre-cropped the way ``clip.preprocess`` does), so evaluation is just
:func:`normalize` and training adds random crops of the stored image.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from crossgap_jax.train.configs import AugmentConfig


def normalize(images_uint8: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """``(..., 3)`` uint8 (or [0, 255] float) -> CLIP-normalised float32."""
    x = images_uint8.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _one(key: jax.Array, image: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """One ``(S, S, 3)`` float [0, 1] image -> augmented ``(S, S, 3)``."""
    s = image.shape[0]
    k_area, k_ratio, k_y, k_x, k_flip, k_b, k_c = jax.random.split(key, 7)
    area = jax.random.uniform(k_area, (), minval=cfg.crop_scale[0], maxval=cfg.crop_scale[1])
    log_r = jax.random.uniform(k_ratio, (), minval=jnp.log(cfg.crop_ratio[0]),
                               maxval=jnp.log(cfg.crop_ratio[1]))
    ratio = jnp.exp(log_r)
    h = jnp.clip(jnp.sqrt(area / ratio), 0.05, 1.0) * s  # crop height/width in pixels
    w = jnp.clip(jnp.sqrt(area * ratio), 0.05, 1.0) * s
    y0 = jax.random.uniform(k_y, ()) * (s - h)
    x0 = jax.random.uniform(k_x, ()) * (s - w)
    scale = jnp.stack([s / h, s / w])
    translation = jnp.stack([-y0 * s / h, -x0 * s / w])
    out = jax.image.scale_and_translate(image, (s, s, 3), (0, 1), scale, translation,
                                        method="linear", antialias=True)
    if cfg.flip:
        out = jnp.where(jax.random.bernoulli(k_flip), out[:, ::-1], out)
    if cfg.brightness > 0:
        out = out * jax.random.uniform(k_b, (), minval=1 - cfg.brightness,
                                       maxval=1 + cfg.brightness)
    if cfg.contrast > 0:
        c = jax.random.uniform(k_c, (), minval=1 - cfg.contrast, maxval=1 + cfg.contrast)
        m = jnp.mean(out)
        out = (out - m) * c + m
    return jnp.clip(out, 0.0, 1.0)


def augment(key: jax.Array, images_uint8: jax.Array, cfg: AugmentConfig,
            mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """``(B, S, S, 3)`` uint8 -> augmented, CLIP-normalised ``(B, S, S, 3)`` float32.

    Each image gets its own key (``fold_in`` of ``key`` with its row index).
    """
    x = images_uint8.astype(jnp.float32) / 255.0
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    x = jax.vmap(lambda k, im: _one(k, im, cfg))(keys, x)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
