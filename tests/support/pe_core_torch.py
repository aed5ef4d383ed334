"""An independent PyTorch PE-Core (the reference of the Flax port's parity tests).

Written for these tests from the architecture as perception_models describes it
(``core/vision_encoder/pe.py``, ``rope.py``, ``config.py``), with its module names, so that
``state_dict()`` has exactly the names of a ``PE-Core-B16-224.pt`` file:

- image: ``conv1`` (no bias), ``class_embedding``, ``positional_embedding``, ``ln_pre``,
  ``transformer.resblocks.i`` (``ln_1``, ``attn.in_proj_weight``/``in_proj_bias``,
  ``attn.out_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``), with 2D RoPE on queries and
  keys (here as complex rotations of consecutive pairs), ``ln_post``, ``attn_pool``
  (``probe``, ``nn.MultiheadAttention`` ``attn``, ``layernorm``, ``mlp``), ``proj``;
- text: ``token_embedding``, ``positional_embedding``, ``transformer`` (causal, PyTorch's
  ``nn.MultiheadAttention``), ``ln_final``, EOT (argmax) pooling, ``text_projection``.

Nothing here is imported from the package.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pair_angles(grid: int, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """``(1 + grid**2, head_dim // 2)`` angle of every rotated pair: the first quarter of
    the pairs turn with the patch's column + 1, the next with its row + 1, frequency
    ``theta ** (-2 j / (head_dim / 2))`` for pair ``j`` of each quarter; the class token
    (row 0) does not turn."""
    quarter = head_dim // 4
    freq = torch.tensor([theta ** (-2.0 * j / (head_dim // 2)) for j in range(quarter)],
                        dtype=torch.float64)
    rows = []
    for r in range(grid):
        for c in range(grid):
            rows.append(torch.cat([(c + 1) * freq, (r + 1) * freq]))
    return torch.cat([torch.zeros(1, 2 * quarter, dtype=torch.float64),
                      torch.stack(rows)]).float()


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """``(B, H, S, hd)`` -> rotated: pair ``(x_2i, x_2i+1)`` as ``x_2i + i x_2i+1`` times
    ``exp(i angle)``."""
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(z).reshape(x.shape)


class Mlp(nn.Sequential):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)


class RopeSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        q, k, v = (x @ self.in_proj_weight.T + self.in_proj_bias).chunk(3, dim=-1)
        heads = lambda t: t.reshape(b, s, self.heads, w // self.heads).transpose(1, 2)
        q, k, v = rotate(heads(q), angles), rotate(heads(k), angles), heads(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // self.heads), dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, s, w))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, rope: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = (RopeSelfAttention(width, heads) if rope
                     else nn.MultiheadAttention(width, heads, batch_first=True))
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x, angles=None, mask=None):
        h = self.ln_1(x)
        if angles is not None:
            x = x + self.attn(h, angles)
        else:
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, rope: bool):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads, rope) for _ in range(layers)])


class AttentionPooling(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=1e-5)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x: torch.Tensor, with_mlp: bool = True) -> torch.Tensor:
        q = self.probe.expand(x.shape[0], -1, -1)
        y = self.attn(q, x, x, need_weights=False)[0]
        if with_mlp:
            y = y + self.mlp(self.layernorm(y))
        return y[:, 0]


class Visual(nn.Module):
    def __init__(self, image_size, patch, width, layers, heads, pool_heads, embed_dim):
        super().__init__()
        self.patch, self.heads = patch, heads
        self.grid = image_size // patch
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(
            torch.randn(1 + self.grid**2, width) * width**-0.5)
        self.ln_pre = nn.LayerNorm(width, eps=1e-5)
        self.transformer = Transformer(width, layers, heads, rope=True)
        self.ln_post = nn.LayerNorm(width, eps=1e-5)
        self.attn_pool = AttentionPooling(width, pool_heads)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)

    def pooled(self, pixels: torch.Tensor, with_mlp: bool = True) -> torch.Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
        angles = pair_angles(self.grid, x.shape[-1] // self.heads)
        for block in self.transformer.resblocks:
            x = block(x, angles)
        return self.attn_pool(self.ln_post(x), with_mlp)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pooled(pixels) @ self.proj


class PECoreTorch(nn.Module):
    """perception_models' ``CLIP`` layout: text tower at the top level, image in ``visual``."""

    def __init__(self, *, image_size=224, patch=16, width=768, layers=12, heads=12,
                 pool_heads=8, embed_dim=1024, context=32, vocab=49408, text_width=1024,
                 text_layers=24, text_heads=16):
        super().__init__()
        self.visual = Visual(image_size, patch, width, layers, heads, pool_heads, embed_dim)
        self.token_embedding = nn.Embedding(vocab, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(context, text_width) * 0.01)
        self.transformer = Transformer(text_width, text_layers, text_heads, rope=False)
        self.ln_final = nn.LayerNorm(text_width, eps=1e-5)
        self.text_projection = nn.Parameter(torch.randn(text_width, embed_dim)
                                            * text_width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pixels_nchw: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels_nchw)

    def text_preproj(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        mask = torch.full((n, n), float("-inf")).triu(1)
        for block in self.transformer.resblocks:
            x = block(x, mask=mask)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_preproj(ids) @ self.text_projection


def randomize(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Every parameter drawn from N(0, std) (LayerNorm scales around 1), seeded, so that no
    bias or norm is trivially zero / one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            if name.endswith("weight") and p.ndim == 1:
                p.copy_(1.0 + 10 * noise)
            elif "embedding" in name or name.endswith(("probe", "proj")):
                p.copy_(noise * 25)  # ~0.5: embeddings and heads of a trained scale
            else:
                p.copy_(noise)
    return model
