"""Eager PyTorch reference of OTI / OVI over OpenAI's ``model.py`` CLIP (tests and benchmarks).

Written from the paper's description, independently of the JAX code:

- OTI: the template's token embeddings (full 77-token context) with the ``£`` positions
  replaced by the parameter, then the rest of OpenAI's ``encode_text`` (positional
  embedding, causal transformer, ``ln_final``, feature at the EOT = argmax id, projection).
- OVI: the ``conv1`` output replaced by the pseudo patch tokens expanded to the patch grid
  with ``F.interpolate(mode="nearest")``, then class token, positional embedding,
  ``ln_pre``, transformer, ``ln_post`` on the class token, ``proj``.
- Loss ``CosineEmbeddingLoss`` with target 1 averaged over the batch, ``torch.optim.AdamW``.

Only needs ``torch`` and the ``openai-clip`` package's ``model.py`` / ``simple_tokenizer.py``
(loaded by file path: the package ``__init__`` imports torchvision).
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

PLACEHOLDER = "£"


def load_openai_clip_file(name: str) -> Any:
    """Import ``clip/<name>.py`` of the openai-clip package without its ``__init__``.

    Raises:
        ModuleNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the openai-clip package is not installed")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / f"{name}.py"
    mod_spec = importlib.util.spec_from_file_location(f"openai_clip_{name}_ref", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def random_openai_vit_b32(model_module: Any, seed: int = 0) -> torch.nn.Module:
    """OpenAI ViT-B/32 ``CLIP`` at full size with random weights, float32, frozen.

    OpenAI's init leaves biases at 0 and LayerNorms at identity; they are perturbed here so
    that a conversion bug in any of them shows up in the features.
    """
    torch.manual_seed(seed)
    model = model_module.CLIP(
        embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
        vision_patch_size=32, context_length=77, vocab_size=49408, transformer_width=512,
        transformer_heads=8, transformer_layers=12,
    ).float().eval()
    return _perturbed(model, seed)


def _perturbed(model: Any, seed: int) -> Any:
    """``model`` with biases ~ 0.02 N(0, 1) and LayerNorm weights + 0.1 N(0, 1) (generator
    ``seed + 1``), gradients off: OpenAI's init leaves them at 0 / identity, which would hide a
    conversion bug in any of them."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif "ln_" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def template_ids(tokenizer_module: Any, template: str = "a photo of {}", num_tokens: int = 1,
                 context_length: int = 77) -> tuple[torch.Tensor, int]:
    """``(context_length,)`` ids of the template with R placeholders (OpenAI's tokenizer).

    Returns:
        ids and the position of the first placeholder token.
    """
    tok = tokenizer_module.SimpleTokenizer()
    text = template.format(f" {PLACEHOLDER} " * num_tokens)
    body = tok.encode(text)
    (pid,) = tok.encode(f" {PLACEHOLDER} ")
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    ids = torch.zeros(context_length, dtype=torch.long)
    seq = [sot, *body, eot]
    ids[: len(seq)] = torch.tensor(seq)
    return ids, seq.index(pid)


def text_features_from_embeddings(model: torch.nn.Module, emb: torch.Tensor,
                                  eot: torch.Tensor) -> torch.Tensor:
    """OpenAI ``encode_text`` after the token-embedding lookup: ``(B, 77, w) -> (B, D)``."""
    x = emb + model.positional_embedding
    x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ model.text_projection


def image_features_from_patch_tokens(visual: torch.nn.Module, tokens: torch.Tensor
                                     ) -> torch.Tensor:
    """OpenAI ``VisionTransformer.forward`` after ``conv1``: ``(B, N, w) -> (B, D)``."""
    b, _, w = tokens.shape
    cls = visual.class_embedding + torch.zeros(b, 1, w, dtype=tokens.dtype)
    x = torch.cat([cls, tokens], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    x = visual.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    return visual.ln_post(x[:, 0]) @ visual.proj


def expand_nearest(tokens: torch.Tensor, num_patches: int) -> torch.Tensor:
    """``(B, P, w) -> (B, num_patches, w)`` with PyTorch's nearest interpolation."""
    return F.interpolate(tokens.transpose(1, 2), size=num_patches, mode="nearest").transpose(1, 2)


def oti_feature_fn(model: torch.nn.Module, ids: torch.Tensor, placeholder_index: int
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v (B, R, w) -> (B, D)``: the template's text feature with v at the placeholders."""
    with torch.no_grad():
        base = model.token_embedding(ids)  # (77, w)
    eot = ids.argmax()

    def fn(v: torch.Tensor) -> torch.Tensor:
        b, r, _ = v.shape
        emb = torch.cat([base[:placeholder_index].expand(b, -1, -1), v,
                         base[placeholder_index + r:].expand(b, -1, -1)], dim=1)
        return text_features_from_embeddings(model, emb, eot.expand(b))

    return fn


def ovi_feature_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``w (B, P, vision_width) -> (B, D)``: image feature of the expanded pseudo patches."""
    visual = model.visual
    n = visual.positional_embedding.shape[0] - 1
    return lambda w: image_features_from_patch_tokens(visual, expand_nearest(w, n))


def invert(feature_fn: Callable[[torch.Tensor], torch.Tensor], targets: np.ndarray,
           init: np.ndarray, steps: int, lr: float = 2e-2, weight_decay: float = 0.01,
           step_callback: Callable[[int], None] | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The authors' loop: batch-mean ``CosineEmbeddingLoss`` (target 1) with AdamW.

    Args:
        feature_fn: ``(B, K, w) -> (B, D)``.
        targets: ``(B, D)``.
        init: ``(B, K, w)`` starting tokens.
        steps: optimisation steps.
        step_callback: called with the step index after each step (benchmark timing).

    Returns:
        ``tokens (B, K, w)``, ``final features (B, D)``, ``losses (steps, B)`` (each step's
        per-example ``1 - cos`` at its forward pass).
    """
    v = torch.nn.Parameter(torch.tensor(init, dtype=torch.float32))
    t = torch.tensor(targets, dtype=torch.float32)
    ones = torch.ones(len(t))
    opt = torch.optim.AdamW([v], lr=lr, weight_decay=weight_decay)
    crit = torch.nn.CosineEmbeddingLoss()
    per_example = torch.nn.CosineEmbeddingLoss(reduction="none")
    losses = []
    for i in range(steps):
        opt.zero_grad()
        f = feature_fn(v)
        loss = crit(f, t, ones)
        losses.append(per_example(f.detach(), t, ones))
        loss.backward()
        opt.step()
        if step_callback is not None:
            step_callback(i)
    with torch.no_grad():
        final = feature_fn(v)
    return v.detach().numpy(), final.numpy(), torch.stack(losses).numpy()


def tiny_openai_clip(model_module, seed: int = 0):
    """OpenAI ``CLIP`` with the shapes of our ``tiny`` config, perturbed like the B/32 one."""
    torch.manual_seed(seed)
    model = model_module.CLIP(embed_dim=32, image_resolution=32, vision_layers=2,
                              vision_width=128, vision_patch_size=8, context_length=77,
                              vocab_size=49408, transformer_width=64, transformer_heads=4,
                              transformer_layers=2).float().eval()
    return _perturbed(model, seed)
