"""Reference PyTorch SigLIP / SLIP models with random weights, tiny SentencePiece models,
and checkpoint files made from them (transformers ``save_pretrained`` directories,
big_vision ``.npz``, SLIP ``.pt`` training checkpoints). Nothing here touches the network.

Used by ``test_siglip*.py``, ``test_slip*.py`` and ``test_isoclip.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random

import numpy as np

# --------------------------------------------------------------------------------------
# Text for tokenizer training: generated captions (deterministic, no data needed).
# --------------------------------------------------------------------------------------
_SUBJ = ["a dog", "two cats", "a man", "a young woman", "the red car", "a plate of food",
         "people", "a small bird", "an old train", "a group of kids", "a brown horse",
         "three sheep", "a surfer", "the chef", "a yellow bus"]
_VERB = ["sitting on", "running across", "standing next to", "looking at", "riding",
         "eating", "holding", "jumping over", "parked near", "flying above"]
_OBJ = ["a bench", "the beach", "a wooden table", "the street", "a field of grass",
        "a large building", "the water", "a pizza", "a snowy mountain", "the kitchen"]
_TAIL = ["", " in the rain", " at night", ", smiling.", "!", " (blurry)", " costs £5",
         " for £ 10", " £ ", " -- photo by J. Smith", "?"]


def captions(n: int = 3000, seed: int = 0) -> list[str]:
    """``n`` generated captions (some with punctuation, capitals and the pound sign)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_OBJ)}{rng.choice(_TAIL)}"
        out.append(s.capitalize() if rng.random() < 0.3 else s)
    return out


def train_spiece(path: str, vocab_size: int = 120, pound_piece: bool = True,
                 seed: int = 0) -> str:
    """Train a tiny unigram SentencePiece model with T5's special ids (pad 0, ``</s>`` 1,
    ``<unk>`` 2, no BOS), like SigLIP's ``c4_en`` vocabulary, and write it to ``path``.

    Args:
        pound_piece: True: ``£`` is learnt from text (the vocabulary gets ``▁£``); False:
            ``£`` is a user-defined symbol, so ordinary tokenisation gives ``▁`` then ``£``.
    """
    import sentencepiece as spm

    lines = [c.lower() for c in captions(3000, seed)]
    buf = io.BytesIO()
    kw = {} if pound_piece else {"user_defined_symbols": ["£"]}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, model_type="unigram", character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=2, num_threads=1, **kw)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return path


# --------------------------------------------------------------------------------------
# SigLIP
# --------------------------------------------------------------------------------------
def perturb_(model, seed: int = 0) -> None:
    """Non-trivial LayerNorms and biases (the default init leaves LN = (1, 0), zero biases
    and a zero logit bias, under which conversion bugs can hide). In place."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            is_norm = any(s in name for s in ("layer_norm", "layernorm", "norm1", "norm2",
                                              "ln_", "visual.norm"))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias") or name.endswith("_bias"):
                p.copy_(0.05 * noise)


def hf_siglip(vocab_size: int = 32000, tiny: bool = False, seed: int = 0):
    """transformers ``SiglipModel`` (B/16 shapes, or a tiny one), float32, eval, perturbed."""
    import torch
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

    torch.manual_seed(seed)
    if tiny:
        text = SiglipTextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=256,
                                num_hidden_layers=2, num_attention_heads=2,
                                max_position_embeddings=16, pad_token_id=1, bos_token_id=None,
                                eos_token_id=1)
        vision = SiglipVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                    num_attention_heads=2, image_size=32, patch_size=8)
    else:
        text = SiglipTextConfig(vocab_size=vocab_size, pad_token_id=1, bos_token_id=None,
                                eos_token_id=1)
        vision = SiglipVisionConfig()
    cfg = SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())
    cfg._attn_implementation = "eager"
    model = SiglipModel(cfg).eval()
    perturb_(model, seed)
    return model


def hf_state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def save_hf_siglip_dir(model, folder: str, spiece: str | None = None) -> str:
    """``save_pretrained`` + the SentencePiece model and HF's default preprocessor config."""
    import shutil

    model.save_pretrained(folder, safe_serialization=True)
    if spiece is not None:
        shutil.copy(spiece, os.path.join(folder, "spiece.model"))
    size = model.config.vision_config.image_size
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                   "size": {"height": size, "width": size}, "resample": 3, "do_rescale": True,
                   "rescale_factor": 1 / 255, "do_normalize": True,
                   "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, f)
    return folder


# --------------------------------------------------------------------------------------
# SLIP: a timm-like ViT (written here, the state-dict names of timm's VisionTransformer)
# plus OpenAI's text transformer (``clip/model.py``), as SLIP's ``models.py`` builds it.
# --------------------------------------------------------------------------------------
def slip_reference(openai_model_module, width: int, layers: int, heads: int, *,
                   image_size: int = 224, patch_size: int = 16, embed_dim: int = 512,
                   text_width: int = 512, text_layers: int = 12, text_heads: int = 8,
                   context_length: int = 77, vocab_size: int = 49408, seed: int = 0,
                   with_image_mlp: bool = True):
    """A PyTorch SLIP image-text model with random (perturbed) weights."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.num_heads = num_heads
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attn = (q @ k.transpose(-2, -1)) * (c // self.num_heads) ** -0.5
            x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
            return self.proj(x)

    class Mlp(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, num_heads)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp(dim, 4 * dim)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, width, patch_size, patch_size)

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            n = (image_size // patch_size) ** 2
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, n + 1, width) * 0.02)
            self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
            self.norm = nn.LayerNorm(width, eps=1e-6)

        def forward(self, x):
            x = self.patch_embed(x)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = x + self.pos_embed
            for blk in self.blocks:
                x = blk(x)
            return self.norm(x)[:, 0]

    class SLIP(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = VisionTransformer()
            mask = torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)
            self.transformer = openai_model_module.Transformer(text_width, text_layers,
                                                               text_heads, attn_mask=mask)
            self.token_embedding = nn.Embedding(vocab_size, text_width)
            self.positional_embedding = nn.Parameter(torch.randn(context_length,
                                                                 text_width) * 0.01)
            self.ln_final = openai_model_module.LayerNorm(text_width)
            self.image_projection = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)
            self.text_projection = nn.Parameter(torch.randn(text_width, embed_dim)
                                                * text_width**-0.5)
            self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
            if with_image_mlp:  # SimCLR head (ignored by the image-text model)
                self.image_mlp = nn.Sequential(nn.Linear(width, 64), nn.BatchNorm1d(64),
                                               nn.ReLU(), nn.Linear(64, 32))

        def encode_image(self, image):
            return self.visual(image) @ self.image_projection

        def encode_text(self, text):
            x = self.token_embedding(text) + self.positional_embedding
            x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            x = self.ln_final(x)
            return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    torch.manual_seed(seed)
    model = SLIP()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim >= 2 and "embedding" not in name:
                p.normal_(0.0, p.shape[-1] ** -0.5 if p.ndim == 2 else 0.02)
    perturb_(model, seed)
    return model.eval()


def save_slip_checkpoint(model, path: str, arch: str = "SLIP_VITB16") -> str:
    """A SLIP training checkpoint: ``{"epoch", "state_dict" (``module.`` keys), "args"}``."""
    import torch

    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    args = argparse.Namespace(model=arch, ssl_mlp_dim=4096, ssl_emb_dim=256, epochs=100,
                              lr=3e-3, output_dir="/checkpoint/slip")
    torch.save({"epoch": 100, "state_dict": sd, "optimizer": {}, "best_acc1": 0.0,
                "args": args}, path)
    return path


# --------------------------------------------------------------------------------------
# SigLIP 2: tiny Gemma-style tokenizers (special ids <pad> 0, <eos> 1, <bos> 2, <unk> 3)
# --------------------------------------------------------------------------------------
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def train_gemma_json(path: str, vocab_size: int = 300, pound_piece: bool = True,
                     bos_post_processor: bool = True, seed: int = 0) -> str:
    """Train a tiny BPE ``tokenizer.json`` shaped like Gemma's (byte fallback, spaces as
    ``▁``, no dummy prefix, Gemma's special ids) on generated captions.

    Args:
        pound_piece: True: captions with `` £`` are in the corpus, so ``▁£`` is learnt;
            False: ``£`` occurs only glued to a word, so the vocabulary has ``£`` alone.
        bos_post_processor: save a post-processor that adds ``<bos>`` (as Gemma's
            tokenizer.json does), which the package's tokenizer must ignore.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    lines = [c.lower() for c in captions(3000, seed)]
    if not pound_piece:
        lines = [ln.replace(" £", " x£") for ln in lines]
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=GEMMA_SPECIALS,
                         initial_alphabet=["\u2581", "£"], show_progress=False)
    tok.train_from_iterator(lines, trainer)
    if bos_post_processor:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    tok.save(path)
    return path


def train_gemma_spiece(path: str, vocab_size: int = 200, seed: int = 0) -> str:
    """Train a tiny SentencePiece BPE model with Gemma's special ids and no dummy prefix
    (``tokenizer.model`` of a SigLIP 2 checkpoint)."""
    import sentencepiece as spm

    lines = [c.lower() for c in captions(3000, seed)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, pad_id=0,
        eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", model_type="bpe", add_dummy_prefix=False,
        byte_fallback=False, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        num_threads=1)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return path
