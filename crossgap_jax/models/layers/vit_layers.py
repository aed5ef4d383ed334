"""Transformer layers shared by the model families: the two-layer MLP (every family), the
patch embedding and the layer scale (the timm-style towers: SLIP's image tower, DINOv2,
DINOv3, PE-Core) and the class-token pooling of the image-only families. Each family keeps
its own parameter names through module names (``fc1``/``fc2`` or CLIP's ``c_fc``/``c_proj``;
the patch convolution ``conv_name``)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def gelu(x: jax.Array, quick: bool, tanh: bool = False) -> jax.Array:
    """OpenAI's QuickGELU ``x * sigmoid(1.702 x)`` when ``quick``; else the tanh
    approximation when ``tanh`` (transformers' ``gelu_pytorch_tanh``, SigLIP); else the
    exact (erf) GELU of timm and transformers."""
    if quick:
        return x * jax.nn.sigmoid(1.702 * x)
    return jax.nn.gelu(x, approximate=tanh)


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``: ``(..., width) -> (..., width)`` through ``hidden`` units
    (:func:`gelu`'s ``quick`` / ``tanh``). ``names``: the two Linear layers' parameter
    names (OpenAI CLIP: ``("c_fc", "c_proj")``)."""

    width: int
    hidden: int
    quick_gelu: bool
    dtype: Dtype = jnp.float32
    tanh_gelu: bool = False
    names: tuple[str, str] = ("fc1", "fc2")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.hidden, dtype=self.dtype, name=self.names[0])(x)
        x = gelu(x, self.quick_gelu, self.tanh_gelu)
        return nn.Dense(self.width, dtype=self.dtype, name=self.names[1])(x)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution (with bias unless ``bias=False``, as PE's):
    ``(B, H, W, 3)`` pixels -> ``(B, (H / p) * (W / p), width)`` patch tokens, row-major
    over the patch grid."""

    width: int
    patch_size: int
    dtype: Dtype = jnp.float32
    conv_name: str = "proj"  # timm's name; DINOv2 (transformers) calls it "projection"
    bias: bool = True

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        p = self.patch_size
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", use_bias=self.bias,
                    dtype=self.dtype, name=self.conv_name)(pixels.astype(self.dtype))
        b, gh, gw, w = x.shape
        return x.reshape(b, gh * gw, w)


class LayerScale(nn.Module):
    """Per-channel scale ``x * lambda1`` (``lambda1`` ``(width,)``, float32; Touvron et al.
    2021, CaiT), the ``layer_scale{1,2}`` of transformers' DINOv2 / DINOv3 layers."""

    init_value: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lam = self.param("lambda1", nn.initializers.constant(self.init_value), (x.shape[-1],),
                         jnp.float32)
        return x * lam.astype(x.dtype)


def cls_pool(x: jax.Array, pooling: str, prefix: int = 1) -> jax.Array:
    """Image embedding from ``(B, S, W)`` normed tokens whose first ``prefix`` are the class
    token and any register tokens: ``"cls"`` -> ``x[:, 0]`` ``(B, W)``; ``"cls+mean"`` ->
    ``[x[:, 0], mean of x[:, prefix:]]`` ``(B, 2 W)`` (the linear-probe feature of DINOv2 /
    DINOv3; registers excluded from the mean)."""
    if pooling == "cls":
        return x[:, 0]
    return jnp.concatenate([x[:, 0], jnp.mean(x[:, prefix:], axis=1)], axis=-1)
