"""Flax linen DINOv2 (Oquab et al. 2023): the ``"dinov2"`` model family, image-only.

The computation is transformers' ``Dinov2Model`` (``modeling_dinov2.py``, transformers 5):

- patch embedding: ``Conv2d(3, W, kernel=stride=14)`` with bias;
- a learned class token prepended; learned position embeddings stored for the *training*
  grid (``1 + 37 x 37`` for the released 518 px checkpoints) and resampled to the input
  grid ``(H / 14, W / 14)`` by PyTorch's bicubic interpolation
  (``F.interpolate(size=(h, w), mode="bicubic", align_corners=False)``, no antialias,
  in float32; see :func:`torch_bicubic_matrix`); the class position is not resampled. When
  the grids agree the stored embeddings are used as they are (transformers does the same);
- pre-norm blocks: ``x + ls1 * attn(norm1(x))``, ``x + ls2 * mlp(norm2(x))`` with
  LayerNorm eps 1e-6, separate ``q/k/v`` projections with bias, multi-head softmax
  attention scaled by ``head_dim ** -0.5``, layer scale (a per-channel vector
  ``lambda1``), an MLP ``fc1 -> exact (erf) GELU -> fc2`` of width ``W * mlp_ratio``;
- a final ``layernorm`` over all tokens (``last_hidden_state``); the pooler output is the
  layer-normed class token.

Image embedding (:attr:`DINOv2Config.pooling`): ``"cls"`` = the pooler output (``W``),
``"cls+mean"`` = ``[cls, mean of the patch tokens]`` (``2 W``, the linear-probe feature of
DINOv2 and of transformers' ``Dinov2ForImageClassification``).

There is **no text tower and no projection**: :data:`HAS_TEXT_TOWER` is False, every text
entry point raises :class:`~crossgap_jax.models.families.NoTextTowerError`, and the
pipeline refuses OTI/OVI, zero-shot classification, text-image retrieval and IsoCLIP for
this family. :func:`projection_matrices` returns the identity as the image "head" (so the
pre-projection features *are* the embedding, used by nearest-class-mean classification)
and a ``(0, D)`` text matrix.

Parameter names mirror the transformers state dict (``.`` -> ``/``, Linear ``weight.T``
-> ``kernel``, LayerNorm ``weight`` -> ``scale``); see
:mod:`crossgap_jax.models.dinov2.convert`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossgap_jax.models import image_only
from crossgap_jax.models.configs import CLIPConfig, TextConfig, VisionConfig
from crossgap_jax.models.image_only import IMAGENET_MEAN, IMAGENET_STD
from crossgap_jax.models.image_only import (  # the text side: refused (re-exported)
    embed_tokens as embed_tokens,
)
from crossgap_jax.models.image_only import encode_text as encode_text
from crossgap_jax.models.image_only import encode_text_embeddings as encode_text_embeddings
from crossgap_jax.models.image_only import get_tokenizer as get_tokenizer
from crossgap_jax.models.image_only import projection_matrices as projection_matrices
from crossgap_jax.models.layers.attention import attention
from crossgap_jax.models.layers.norm import LayerNorm
from crossgap_jax.models.layers.vit_layers import LayerScale, Mlp, PatchEmbed

# No text tower: OTI's context truncation question does not arise; the flag is part of the
# family interface.
CAUSAL_TEXT = False
HAS_TEXT_TOWER = False

Dtype = Any

# Torch's bicubic convolution coefficient (aten/src/ATen/native/UpSample.h); PIL and
# jax.image.resize use the Keys value -0.5.
TORCH_CUBIC_A = -0.75


@dataclasses.dataclass(frozen=True)
class DINOv2Config(CLIPConfig):
    """A DINOv2 image encoder. Shapes use :class:`CLIPConfig`'s ``vision`` record; the
    ``text`` record is unused (the family has no text tower).

    Attributes:
        vision.image_size: the *input* resolution (the centre crop, 224 by default); the
            position embeddings are resampled to its grid.
        position_grid: side of the stored position-embedding grid (518 / 14 = 37 for the
            released checkpoints, transformers' ``config.image_size / patch_size``).
        layer_norm_eps: every LayerNorm's epsilon (1e-6).
        layerscale_value: initial layer scale of random init (checkpoints store theirs).
        pooling: ``"cls"`` (``embed_dim = width``) or ``"cls+mean"`` (``2 * width``).
        resize_size: shortest-edge resize before the centre crop (transformers'
            ``BitImageProcessor`` config of the DINOv2 checkpoints: 256).
        interpolation: PIL resampling of that resize (``"bicubic"``, ``resample=3``).
    """

    name: str = "DINOv2-ViT-S-14"
    family: str = "dinov2"
    embed_dim: int = 384
    vision: VisionConfig = dataclasses.field(
        default_factory=lambda: VisionConfig(image_size=224, patch_size=14, width=384,
                                             layers=12, heads=6))
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    quick_gelu: bool = False
    layer_norm_eps: float = 1e-6
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    position_grid: int = 37
    layerscale_value: float = 1.0
    pooling: str = "cls"
    resize_size: int = 256
    interpolation: str = "bicubic"

    def __post_init__(self):
        image_only.check_pooling(self, "DINOv2")

    def with_pooling(self, pooling: str) -> DINOv2Config:
        """The same model with another image embedding (``"cls"`` / ``"cls+mean"``); a
        registered name gets the ``-clsmean`` suffix for ``"cls+mean"``."""
        return image_only.with_pooling(self, pooling)


CONFIG_CLASS = DINOv2Config


def dinov2_config(name: str, width: int, layers: int, heads: int, *, image_size: int = 224,
                  patch_size: int = 14, position_grid: int = 37, pooling: str = "cls",
                  **kw: Any) -> DINOv2Config:
    """A :class:`DINOv2Config` from a few numbers (MLP ratio 4)."""
    return DINOv2Config(
        name=name, embed_dim=image_only.pooled_dim(width, pooling),
        vision=VisionConfig(image_size=image_size, patch_size=patch_size, width=width,
                            layers=layers, heads=heads),
        position_grid=position_grid, pooling=pooling, **kw)


def _architectures() -> dict[str, DINOv2Config]:
    base = {
        # facebook/dinov2-small and facebook/dinov2-base (config.json: hidden_size 384 / 768,
        # 12 layers, 6 / 12 heads, image_size 518, patch 14).
        "DINOv2-ViT-S-14": dinov2_config("DINOv2-ViT-S-14", 384, 12, 6),
        "DINOv2-ViT-B-14": dinov2_config("DINOv2-ViT-B-14", 768, 12, 12),
        # Tiny config for tests and smoke runs: 4 x 4 input grid from a 6 x 6 stored grid.
        "dinov2-tiny": dinov2_config("dinov2-tiny", 32, 2, 2, image_size=32, patch_size=8,
                                     position_grid=6, resize_size=36),
    }
    return image_only.with_clsmean(base)


ARCHITECTURES: dict[str, DINOv2Config] = _architectures()

# Hub ids of the released checkpoints (transformers Dinov2Model repos).
PRETRAINED: dict[tuple[str, str], str] = {
    ("DINOv2-ViT-S-14", "dinov2"): "facebook/dinov2-small",
    ("DINOv2-ViT-B-14", "dinov2"): "facebook/dinov2-base",
}



# ---------------------------------------------------------------------------------------
# Position-embedding interpolation (PyTorch bicubic, align_corners=False)
# ---------------------------------------------------------------------------------------
def _cubic_weights(t: np.ndarray, a: Any = TORCH_CUBIC_A) -> np.ndarray:
    """``(..., 4)`` weights of the taps at offsets -1, 0, 1, 2 for fractional part ``t``
    (Keys' cubic convolution with coefficient ``a``; torch's
    ``get_cubic_upsample_coefficients``)."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=32)
def torch_bicubic_matrix(in_size: int, out_size: int, dtype: str = "float32") -> np.ndarray:
    """``(out_size, in_size)`` matrix ``M`` with ``y = M @ x`` equal to
    ``torch.nn.functional.interpolate(x, size=out_size, mode="bicubic",
    align_corners=False)`` along one axis (no antialias).

    Source positions ``s = (o + 0.5) * in / out - 0.5`` (torch's
    ``area_pixel_compute_source_index`` with ``cubic=True``: not clamped at 0), taps at
    ``floor(s) - 1 .. floor(s) + 2`` clamped to the border (``upsample_get_value_bounded``),
    weights from :func:`_cubic_weights` with ``a = -0.75``. The 2-D resize is separable:
    ``M_h @ X @ M_w.T``.

    ``dtype``: the arithmetic of the positions and weights. ``"float32"`` (default) is
    torch's for float32 inputs (its ``opmath_t``): a source position near 37 carries
    float32 rounding (~2e-6), which moves the weights by as much, so computing them in
    float64 would leave a ~3e-6 relative difference to torch; emulated this way the
    weights agree with torch's to <= 6e-7 (exactly for the 37 -> 16 grid of 224 px inputs).
    ``"float64"`` matches torch on float64 inputs (1e-12).

    Raises:
        ValueError: a size < 1.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"interpolation sizes must be >= 1, got {in_size} -> {out_size}")
    f = np.dtype(dtype).type
    scale = f(in_size) / f(out_size)
    half = np.arange(out_size).astype(f) + f(0.5)
    # One rounding of scale * (o + 0.5) - 0.5 (torch's compiled kernel fuses the
    # multiply-add), the fractional part in ``dtype``, the weights evaluated in float64 and
    # rounded once.
    src = (np.float64(scale) * half.astype(np.float64) - 0.5).astype(f)
    base = np.floor(src)
    t = (src - base).astype(f)
    w = _cubic_weights(t.astype(np.float64)).astype(f)
    m = np.zeros((out_size, in_size), f)
    for k in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(m, (np.arange(out_size), idx), w[:, k])
    return m


def interpolate_position_embeddings(pos: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
    """Resample ``(1, 1 + G * G, W)`` position embeddings to a ``grid_h x grid_w`` patch grid
    -> ``(1, 1 + grid_h * grid_w, W)`` (transformers' ``interpolate_pos_encoding``: the class
    position kept, the patch grid bicubic-resampled as torch does, in float32).

    Unchanged when the grid is already ``grid_h x grid_w``.

    Raises:
        ValueError: the stored positions are not ``1 + G * G``.
    """
    n = pos.shape[1] - 1
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"position embeddings hold {n} patch positions, not a square grid")
    if g == grid_h == grid_w:
        return pos
    width = pos.shape[-1]
    grid = pos[0, 1:].astype(jnp.float32).reshape(g, g, width)
    mh = jnp.asarray(torch_bicubic_matrix(g, grid_h), jnp.float32)
    mw = jnp.asarray(torch_bicubic_matrix(g, grid_w), jnp.float32)
    out = jnp.einsum("oi,ijc,pj->opc", mh, grid, mw, precision=jax.lax.Precision.HIGHEST)
    out = out.reshape(1, grid_h * grid_w, width).astype(pos.dtype)
    return jnp.concatenate([pos[:, :1], out], axis=1)


# ---------------------------------------------------------------------------------------
# Modules (names mirror transformers' Dinov2Model)
# ---------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Separate ``q_proj``/``k_proj``/``v_proj`` (with bias), the package's one
    :func:`~crossgap_jax.models.layers.attention.attention`, ``o_proj``."""

    width: int
    heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = x.shape[-1]
        q, k, v = (nn.Dense(w, dtype=self.dtype, name=n)(x) for n in ("q_proj", "k_proj",
                                                                     "v_proj"))
        out = attention(q, k, v, heads=self.heads, dtype=self.dtype)
        return nn.Dense(w, dtype=self.dtype, name="o_proj")(out)


class Layer(nn.Module):
    """``Dinov2Layer``: pre-norm attention and MLP, each scaled by a layer scale."""

    config: DINOv2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, eps = self.config.vision, self.config.layer_norm_eps
        ls = self.config.layerscale_value
        h = Attention(c.width, c.heads, self.dtype, name="attention")(
            LayerNorm(eps, self.dtype, name="norm1")(x))
        x = x + LayerScale(ls, name="layer_scale1")(h)
        hidden = int(c.width * c.mlp_ratio)  # transformers: int(hidden_size * mlp_ratio)
        h = Mlp(c.width, hidden, False, self.dtype, name="mlp")(LayerNorm(eps, self.dtype,
                                                                    name="norm2")(x))
        return x + LayerScale(ls, name="layer_scale2")(h)


class Embeddings(nn.Module):
    config: DINOv2Config
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config.vision
        g = self.config.position_grid
        self.cls_token = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, c.width))
        self.position_embeddings = self.param("position_embeddings",
                                              nn.initializers.normal(0.02),
                                              (1, 1 + g * g, c.width))
        self.patch_embeddings = PatchEmbed(c.width, c.patch_size, self.dtype, "projection")

    def embed_patches(self, pixels: jax.Array) -> jax.Array:
        return self.patch_embeddings(pixels)

    def __call__(self, tokens: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
        """``(B, grid_h * grid_w, W)`` patch tokens -> ``(B, 1 + N, W)`` with the class token
        prepended and the (resampled) positions added."""
        b, _, w = tokens.shape
        cls = jnp.broadcast_to(self.cls_token.astype(self.dtype), (b, 1, w))
        x = jnp.concatenate([cls, tokens.astype(self.dtype)], axis=1)
        pos = interpolate_position_embeddings(self.position_embeddings, grid_h, grid_w)
        return x + pos.astype(self.dtype)


class DINOv2Module(image_only.ImageOnlyViT):
    """transformers' ``Dinov2Model`` with its top-level names (``embeddings``, ``encoder``,
    ``layernorm``); the pooling and entry methods are :class:`~.image_only.ImageOnlyViT`'s."""

    config: DINOv2Config
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embeddings = Embeddings(c, self.dtype)
        self.encoder = Encoder(c, self.dtype)
        self.layernorm = LayerNorm(c.layer_norm_eps, self.dtype)

    def embed_image_patches(self, pixels: jax.Array) -> jax.Array:
        return self.embeddings.embed_patches(pixels)

    def hidden_states_from_tokens(self, tokens: jax.Array, grid_h: int,
                                  grid_w: int) -> jax.Array:
        x = self.embeddings(tokens, grid_h, grid_w)
        return self.layernorm(self.encoder(x)).astype(jnp.float32)


class Encoder(nn.Module):
    config: DINOv2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.config.vision.layers):
            x = Layer(self.config, self.dtype, name=f"layer_{i}")(x)
        return x


# The family's pure functions: the image side (models/image_only.py) ...
(init_params, param_shapes, last_hidden_state, embed_image_patches, encode_image_tokens,
 encode_image, encode_image_preproj) = image_only.vit_functions(DINOv2Module, __name__, "DINOv2")
# ... and the text side: refused; the identity image head.
encode_text_preproj = encode_text


def preprocess_options(config: DINOv2Config) -> dict:
    """DINOv2's evaluation transform (transformers' ``BitImageProcessor`` config of the
    released checkpoints): shortest edge to ``resize_size`` (256) with PIL bicubic, centre
    crop ``image_size`` (224), [0, 1], ImageNet mean/std."""
    return {"image_size": config.vision.image_size, "mean": tuple(config.mean),
            "std": tuple(config.std), "resize": "shortest",
            "interpolation": config.interpolation, "resize_size": config.resize_size,
            "crop_offset": "floor"}
