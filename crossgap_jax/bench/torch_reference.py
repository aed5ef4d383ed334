"""The authors' way of running OTI / OVI, in PyTorch, for speed comparisons (``bench``).

A self-contained PyTorch CLIP with OpenAI's architecture (pre-LayerNorm residual blocks,
``nn.MultiheadAttention`` over ``(L, B, w)``, QuickGELU MLP, causal text mask, EOT / class
token pooling, projections), built at any :class:`~crossgap_jax.models.configs.CLIPConfig`'s
shapes with random weights: the speed of a step does not depend on the values. It needs only
``torch`` (not the ``openai-clip`` package), so it runs on a bare GPU image.

The inversion loop is the authors' (PAPER.md): the batch-mean ``CosineEmbeddingLoss``
(target 1) minimised with ``torch.optim.AdamW``, the text side over the full 77-token
context; on CUDA under ``torch.autocast(float16)`` with a ``GradScaler``, float32 elsewhere.
``context`` below the full length gives the "fair" baseline (positions up to EOT only, exact
for a causal encoder), and :func:`invert` optionally wraps the feature function in
``torch.compile``.

Correctness of this module against OpenAI's ``model.py`` is checked in
``tests/bench/test_bench.py`` (same weights, same features).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-LN residual attention block over ``(L, B, width)``."""

    def __init__(self, width: int, heads: int, mask: torch.Tensor | None, quick_gelu: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width),
                                 QuickGELU() if quick_gelu else nn.GELU(),
                                 nn.Linear(4 * width, width))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.mask)[0]
        return x + self.mlp(self.ln_2(x))


class TextTower(nn.Module):
    """Token embeddings ``(B, L, w)`` -> ``(B, embed_dim)`` at the EOT position."""

    def __init__(self, config: Any, context: int):
        super().__init__()
        t = config.text
        mask = torch.full((context, context), float("-inf")).triu_(1)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context, t.width))
        self.blocks = nn.Sequential(*[Block(t.width, t.heads, mask, config.quick_gelu)
                                      for _ in range(t.layers)])
        self.ln_final = nn.LayerNorm(t.width)
        self.text_projection = nn.Parameter(t.width ** -0.5 * torch.randn(t.width,
                                                                          config.embed_dim))

    def forward(self, emb: torch.Tensor, eot: int) -> torch.Tensor:
        x = self.blocks((emb + self.positional_embedding).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_final(x[:, eot]) @ self.text_projection


class VisionTower(nn.Module):
    """Patch tokens ``(B, N, w)`` (the ``conv1`` output) -> ``(B, embed_dim)``."""

    def __init__(self, config: Any):
        super().__init__()
        v = config.vision
        self.num_patches = v.num_patches
        self.class_embedding = nn.Parameter(0.02 * torch.randn(v.width))
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(v.num_patches + 1, v.width))
        self.ln_pre = nn.LayerNorm(v.width)
        self.blocks = nn.Sequential(*[Block(v.width, v.heads, None, config.quick_gelu)
                                      for _ in range(v.layers)])
        self.ln_post = nn.LayerNorm(v.width)
        self.proj = nn.Parameter(v.width ** -0.5 * torch.randn(v.width, config.embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, _, w = tokens.shape
        cls = self.class_embedding.to(tokens.dtype) + torch.zeros(b, 1, w, dtype=tokens.dtype,
                                                                  device=tokens.device)
        x = self.ln_pre(torch.cat([cls, tokens], dim=1) + self.positional_embedding)
        x = self.blocks(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


def _frozen(module: nn.Module, device: str) -> nn.Module:
    module = module.float().eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def oti_feature_fn(config: Any, template_len: int, placeholder_index: int, context: int,
                   device: str, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v (B, R, text_width) -> (B, embed_dim)``: a template's text feature, v at the £.

    Args:
        template_len: tokens of the template including SOT and EOT (EOT at
            ``template_len - 1``).
        context: positions the encoder runs over: ``config.text.context_length`` (the
            authors') or ``template_len`` (truncated at EOT, exact for a causal encoder).
    """
    torch.manual_seed(seed)
    tower = _frozen(TextTower(config, context), device)
    base = 0.02 * torch.randn(context, config.text.width, device=device)
    eot = template_len - 1

    def fn(v: torch.Tensor) -> torch.Tensor:
        b, r, _ = v.shape
        emb = torch.cat([base[:placeholder_index].expand(b, -1, -1), v,
                         base[placeholder_index + r:].expand(b, -1, -1)], dim=1)
        return tower(emb, eot)

    return fn


def ovi_feature_fn(config: Any, device: str, seed: int = 0
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``w (B, P, vision_width) -> (B, embed_dim)``: P pseudo patches expanded (nearest)."""
    torch.manual_seed(seed)
    tower = _frozen(VisionTower(config), device)

    def fn(w: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(w.transpose(1, 2), size=tower.num_patches, mode="nearest")
        return tower(x.transpose(1, 2))

    return fn


def invert(feature_fn: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor,
           init: torch.Tensor, steps: int, *, lr: float = 2e-2, weight_decay: float = 0.01,
           amp: bool | None = None, compile_backend: str | None = None,
           step_times: list[float] | None = None) -> torch.Tensor:
    """The authors' loop: batch-mean ``CosineEmbeddingLoss`` (target 1), AdamW.

    Args:
        feature_fn: ``(B, K, w) -> (B, D)``.
        targets: ``(B, D)`` on the device.
        init: ``(B, K, w)`` starting tokens on the device.
        steps: optimisation steps.
        amp: float16 autocast with a ``GradScaler`` (default: on CUDA only).
        compile_backend: wrap the loss in ``torch.compile(backend=...)`` (``"inductor"``,
            the default of ``torch.compile``; the first step then compiles); None: eager.
        step_times: if given, the wall seconds of each step are appended (synchronised).

    Returns:
        the final tokens ``(B, K, w)``.
    """
    device = init.device
    amp = device.type == "cuda" if amp is None else amp
    v = nn.Parameter(init.detach().clone().float())
    ones = torch.ones(len(targets), device=device)
    opt = torch.optim.AdamW([v], lr=lr, weight_decay=weight_decay)
    crit = nn.CosineEmbeddingLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def loss_fn(tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            return crit(feature_fn(tokens).float(), targets, ones)

    run = loss_fn if compile_backend is None else torch.compile(loss_fn, backend=compile_backend)
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        scaler.scale(run(v)).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step_times is not None:
            step_times.append(time.perf_counter() - t0)
    return v.detach()
