"""Flax linen DINOv3 ViT (Siméoni et al. 2025): the ``"dinov3"`` model family, image-only.

The computation is transformers' ``DINOv3ViTModel`` (``models/dinov3_vit/
modeling_dinov3_vit.py``, transformers 5), in eval mode:

- patch embedding: ``Conv2d(3, W, kernel=stride=16)`` with bias; the tokens are
  ``[cls, register_1..R, patches]`` (``R = num_register_tokens``, 4 for the releases).
  There are **no learned position embeddings**;
- 2-D rotary position embedding (RoPE, :func:`rope_cos_sin`) on the queries and keys of the
  patch tokens only (class and register tokens are not rotated). Patch centres
  ``((i + 0.5) / h, (j + 0.5) / w)`` mapped to ``[-1, 1]`` per axis (Meta's
  ``normalize_coords="separate"``); per head of size ``d``, ``d / 4`` frequencies
  ``inv_freq_k = rope_theta ** (-4 k / d)`` (``rope_theta`` 100), angles
  ``2 pi * coord * inv_freq`` for y then x (``d / 2``), tiled twice (``d``), applied as
  ``q cos + rotate_half(q) sin`` with ``rotate_half(x) = [-x2, x1]``. The coordinates are
  computed for the input's own grid, so any multiple of 16 works without resampling.
  transformers' train-time coordinate augmentation (``pos_embed_shift`` / ``_jitter`` /
  ``_rescale``, random) only runs in training mode and is not part of this port;
- pre-norm blocks (LayerNorm eps 1e-5): ``x + ls1 * attn(norm1(x))``,
  ``x + ls2 * mlp(norm2(x))``; attention with ``q``/``v``/``o`` biases and **no key bias**
  (transformers' ``key_bias=False``; Meta masks it to zero), softmax scaled by
  ``head_dim ** -0.5``; MLP ``up_proj -> exact (erf) GELU -> down_proj`` of width
  ``intermediate_size`` (4096 for ViT-L); layer scale ``lambda1`` per channel;
- a final ``norm`` over all tokens (``last_hidden_state``); the pooler output is the
  normed class token (``sequence_output[:, 0]``), which is also Meta's
  ``forward(...)`` output (``head(x_norm_clstoken)``, ``dinov3/models/vision_transformer.py``).

Image embedding (:attr:`DINOv3Config.pooling`): ``"cls"`` = the pooler output (``W``),
as DINOv2's ``"cls"``; ``"cls+mean"`` = ``[cls, mean of the normed patch tokens]``
(``2 W``; registers excluded), the linear-probe input of Meta's evaluation.

There is **no text tower and no projection**, exactly as :mod:`crossgap_jax.models.dinov2.model`:
:data:`HAS_TEXT_TOWER` is False, text entry points raise
:class:`~crossgap_jax.models.families.NoTextTowerError`, :func:`projection_matrices` returns
the identity image head and a ``(0, D)`` text matrix.

Parameter paths (mapped from both checkpoint spellings by
:mod:`crossgap_jax.models.dinov3.convert`): ``embeddings/{cls_token, register_tokens}``,
``embeddings/patch_embeddings/proj/{kernel,bias}``, ``layer_i/{norm1,norm2}``,
``layer_i/attention/{q_proj,k_proj,v_proj,o_proj}`` (``k_proj`` without bias),
``layer_i/{layer_scale1,layer_scale2}/lambda1``, ``layer_i/mlp/{fc1,fc2}``, ``norm``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
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

CAUSAL_TEXT = False
HAS_TEXT_TOWER = False

Dtype = Any



@dataclasses.dataclass(frozen=True)
class DINOv3Config(CLIPConfig):
    """A DINOv3 ViT image encoder. Shapes use :class:`CLIPConfig`'s ``vision`` record
    (``vision.mlp_ratio`` is unused: :attr:`intermediate_size` is the MLP width); the ``text``
    record is unused.

    Attributes:
        vision.image_size: the input resolution (224: the processor's resize).
        num_register_tokens: register ("storage") tokens after the class token (4).
        intermediate_size: MLP hidden width (ViT-L: 4096).
        rope_theta: RoPE base period (100).
        layer_norm_eps: every LayerNorm's epsilon (1e-5).
        layerscale_value: initial layer scale of random init (checkpoints store theirs).
        pooling: ``"cls"`` (``embed_dim = width``) or ``"cls+mean"`` (``2 * width``).
        interpolation: the resize of :func:`preprocess_options` (``"bilinear"``).
    """

    name: str = "dinov3-vitl16"
    family: str = "dinov3"
    embed_dim: int = 1024
    vision: VisionConfig = dataclasses.field(
        default_factory=lambda: VisionConfig(image_size=224, patch_size=16, width=1024,
                                             layers=24, heads=16))
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    quick_gelu: bool = False
    layer_norm_eps: float = 1e-5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_register_tokens: int = 4
    intermediate_size: int = 4096
    rope_theta: float = 100.0
    layerscale_value: float = 1.0
    pooling: str = "cls"
    interpolation: str = "bilinear"

    def __post_init__(self):
        image_only.check_pooling(self, "DINOv3")
        v = self.vision
        if v.width % (4 * v.heads):
            raise ValueError(f"DINOv3 {self.name}: the RoPE needs a head size divisible by 4, "
                             f"got width {v.width} / {v.heads} heads")

    def with_pooling(self, pooling: str) -> DINOv3Config:
        """The same model with another image embedding (``"cls"`` / ``"cls+mean"``); a
        registered name gets the ``-clsmean`` suffix for ``"cls+mean"``."""
        return image_only.with_pooling(self, pooling)


CONFIG_CLASS = DINOv3Config


def dinov3_config(name: str, width: int, layers: int, heads: int, intermediate: int, *,
                  image_size: int = 224, patch_size: int = 16, registers: int = 4,
                  pooling: str = "cls", **kw: Any) -> DINOv3Config:
    """A :class:`DINOv3Config` from a few numbers."""
    return DINOv3Config(
        name=name, embed_dim=image_only.pooled_dim(width, pooling),
        vision=VisionConfig(image_size=image_size, patch_size=patch_size, width=width,
                            layers=layers, heads=heads, mlp_ratio=intermediate / width),
        num_register_tokens=registers, intermediate_size=intermediate, pooling=pooling, **kw)


def _architectures() -> dict[str, DINOv3Config]:
    base = {
        # facebook/dinov3-vitl16-pretrain-lvd1689m: transformers' conversion script
        # (convert_dinov3_vit_to_hf.py, "vitl") and Meta's hub/backbones.py dinov3_vitl16:
        # width 1024, 24 layers, 16 heads, patch 16, 4 registers, MLP ratio 4 (GELU, not
        # SwiGLU), LayerNorm eps 1e-5, RoPE base 100, "separate" coordinates.
        "dinov3-vitl16": dinov3_config("dinov3-vitl16", 1024, 24, 16, 4096),
        # Tiny config for tests and smoke runs (2 registers, head size 8).
        "dinov3-tiny": dinov3_config("dinov3-tiny", 32, 2, 4, 64, image_size=32,
                                     patch_size=8, registers=2),
    }
    return image_only.with_clsmean(base)


ARCHITECTURES: dict[str, DINOv3Config] = _architectures()
#: Hugging Face's spelling of the release.
ALIASES: dict[str, str] = {"facebook/dinov3-vitl16-pretrain-lvd1689m": "dinov3-vitl16"}

# Hub ids of the released checkpoints (transformers DINOv3ViTModel repos; gated on the hub).
PRETRAINED: dict[tuple[str, str], str] = {
    ("dinov3-vitl16", "dinov3"): "facebook/dinov3-vitl16-pretrain-lvd1689m",
}
# Meta's original checkpoint files (facebookresearch/dinov3, hub/backbones.py) by
# architecture: a file named like this is recognised as that architecture.
META_FILES: dict[str, str] = {
    "dinov3_vitl16_pretrain_lvd1689m": "dinov3-vitl16",
}


# ---------------------------------------------------------------------------------------
# Rotary position embedding (transformers' DINOv3ViTRopePositionEmbedding, eval mode)
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def rope_cos_sin(grid_h: int, grid_w: int, head_dim: int, theta: float = 100.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)``, each ``(grid_h * grid_w, head_dim)`` float32, of the patch grid
    (row-major, as the patch tokens).

    transformers' ``get_patches_center_coordinates`` and
    ``DINOv3ViTRopePositionEmbedding.forward`` (eval: no coordinate augmentation): centres
    ``arange(0.5, n) / n`` per axis, ``2 c - 1``; ``inv_freq = 1 / theta ** arange(0, 1,
    4 / head_dim)``; angles ``2 pi * coords[:, :, None] * inv_freq`` flattened (y
    frequencies, then x) and tiled twice. Everything in float32, as there.

    Raises:
        ValueError: ``head_dim`` not a multiple of 4, or an empty grid.
    """
    if head_dim % 4 or grid_h < 1 or grid_w < 1:
        raise ValueError(f"RoPE needs head_dim % 4 == 0 and a non-empty grid, got head_dim "
                         f"{head_dim}, grid {grid_h} x {grid_w}")
    f32 = np.float32
    inv_freq = f32(1) / np.power(f32(theta), np.arange(0, head_dim // 4, dtype=f32)
                                 * f32(4 / head_dim))
    ch = np.arange(grid_h, dtype=f32) + f32(0.5)
    cw = np.arange(grid_w, dtype=f32) + f32(0.5)
    ch, cw = ch / f32(grid_h), cw / f32(grid_w)
    coords = np.stack(np.meshgrid(ch, cw, indexing="ij"), axis=-1).reshape(-1, 2)
    coords = f32(2) * coords - f32(1)
    angles = f32(2 * math.pi) * coords[:, :, None] * inv_freq[None, None, :]
    angles = np.tile(angles.reshape(angles.shape[0], -1), (1, 2)).astype(f32)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, prefix: int) -> jax.Array:
    """Rotate ``(B, N, heads, d)`` queries or keys: positions ``prefix..N-1`` (the patches)
    get ``x cos + rotate_half(x) sin`` with ``(N - prefix, d)`` tables, the first ``prefix``
    (class and register tokens) stay as they are (transformers' ``apply_rotary_pos_emb``)."""
    head, patches = x[:, :prefix], x[:, prefix:]
    c, s = cos[None, :, None, :].astype(x.dtype), sin[None, :, None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-patches[..., half:], patches[..., :half]], axis=-1)
    return jnp.concatenate([head, patches * c + rotated * s], axis=1)


# ---------------------------------------------------------------------------------------
# Modules (paths listed in the module docstring)
# ---------------------------------------------------------------------------------------
class Attention(nn.Module):
    """``q_proj`` / ``v_proj`` / ``o_proj`` with bias, ``k_proj`` without; RoPE on the patch
    queries and keys; the package's one
    :func:`~crossgap_jax.models.layers.attention.attention`."""

    width: int
    heads: int
    prefix: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        b, n, w = x.shape
        hd = w // self.heads
        q = nn.Dense(w, dtype=self.dtype, name="q_proj")(x).reshape(b, n, self.heads, hd)
        k = nn.Dense(w, use_bias=False, dtype=self.dtype, name="k_proj")(x)
        v = nn.Dense(w, dtype=self.dtype, name="v_proj")(x)
        q = apply_rope(q, cos, sin, self.prefix).reshape(b, n, w)
        k = apply_rope(k.reshape(b, n, self.heads, hd), cos, sin, self.prefix).reshape(b, n, w)
        out = attention(q, k, v, heads=self.heads, dtype=self.dtype)
        return nn.Dense(w, dtype=self.dtype, name="o_proj")(out)


class Layer(nn.Module):
    """``DINOv3ViTLayer``: pre-norm attention and MLP, each scaled by a layer scale."""

    config: DINOv3Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        c, eps, ls = self.config, self.config.layer_norm_eps, self.config.layerscale_value
        h = Attention(c.vision.width, c.vision.heads, 1 + c.num_register_tokens, self.dtype,
                      name="attention")(LayerNorm(eps, self.dtype, name="norm1")(x), cos, sin)
        x = x + LayerScale(ls, name="layer_scale1")(h)
        h = Mlp(c.vision.width, c.intermediate_size, False, self.dtype, name="mlp")(
            LayerNorm(eps, self.dtype, name="norm2")(x))
        return x + LayerScale(ls, name="layer_scale2")(h)


class Embeddings(nn.Module):
    config: DINOv3Config
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        w = c.vision.width
        self.cls_token = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, w))
        self.register_tokens = self.param("register_tokens", nn.initializers.normal(0.02),
                                          (1, c.num_register_tokens, w))
        self.patch_embeddings = PatchEmbed(w, c.vision.patch_size, self.dtype, "proj")

    def embed_patches(self, pixels: jax.Array) -> jax.Array:
        return self.patch_embeddings(pixels)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """``(B, N, W)`` patch tokens -> ``(B, 1 + R + N, W)``."""
        b, _, w = tokens.shape
        head = jnp.concatenate([self.cls_token, self.register_tokens], axis=1)
        head = jnp.broadcast_to(head.astype(self.dtype), (b, head.shape[1], w))
        return jnp.concatenate([head, tokens.astype(self.dtype)], axis=1)


class DINOv3Module(image_only.ImageOnlyViT):
    """transformers' ``DINOv3ViTModel`` (``embeddings``, the encoder's ``layer_i``, ``norm``);
    the pooling and entry methods are :class:`~.image_only.ImageOnlyViT`'s."""

    config: DINOv3Config
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embeddings = Embeddings(c, self.dtype)
        self.layers = [Layer(c, self.dtype, name=f"layer_{i}") for i in range(c.vision.layers)]
        self.norm = LayerNorm(c.layer_norm_eps, self.dtype)

    @property
    def prefix_tokens(self) -> int:
        return 1 + self.config.num_register_tokens  # the class and register tokens

    def embed_image_patches(self, pixels: jax.Array) -> jax.Array:
        return self.embeddings.embed_patches(pixels)

    def hidden_states_from_tokens(self, tokens: jax.Array, grid_h: int,
                                  grid_w: int) -> jax.Array:
        v = self.config.vision
        cos, sin = (jnp.asarray(t) for t in rope_cos_sin(grid_h, grid_w, v.width // v.heads,
                                                         self.config.rope_theta))
        x = self.embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x).astype(jnp.float32)


# The family's pure functions: the image side (models/image_only.py) ...
(init_params, param_shapes, last_hidden_state, embed_image_patches, encode_image_tokens,
 encode_image, encode_image_preproj) = image_only.vit_functions(DINOv3Module, __name__, "DINOv3")
# ... and the text side: refused; the identity image head.
encode_text_preproj = encode_text


def preprocess_options(config: DINOv3Config) -> dict:
    """DINOv3's evaluation transform (transformers' ``DINOv3ViTImageProcessor``: rescale to
    [0, 1], *then* resize to ``image_size x image_size`` (no crop, aspect not kept),
    bilinear with antialiasing, ImageNet mean/std; Meta's README ``make_transform``: the
    same steps). The resize runs on the float image (``resize_float``), not on uint8."""
    return {"image_size": config.vision.image_size, "mean": tuple(config.mean),
            "std": tuple(config.std), "resize": "squash",
            "interpolation": config.interpolation, "resize_float": True}
