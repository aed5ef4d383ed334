"""Reference PyTorch CLIP models with random weights, and checkpoint files made from them.

The files have the exact tensor names, dtypes and containers of the real releases:
OpenAI's TorchScript archive (fp16, with the int buffers ``input_resolution`` /
``context_length`` / ``vocab_size``), plain state dicts, transformers ``save_pretrained``
directories, open_clip training checkpoints. Used by ``test_checkpoints.py`` and
``test_parity.py``; nothing here touches the network.
"""

from __future__ import annotations

import copy
import json
import os
import warnings

import numpy as np

from crossgap_jax.models.configs import CLIPConfig


def perturb_(model, seed: int = 0) -> None:
    """Make LayerNorms and biases non-trivial (the default init leaves LN = (1, 0) and
    attention biases 0, under which some conversion bugs are invisible). In place."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            is_norm = any(s in name for s in ("ln_", "layer_norm", "layrnorm", "layernorm",
                                              "final_layer_norm"))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias") or name.endswith("_bias"):
                p.copy_(0.05 * noise)


def openai_model(model_module, config: CLIPConfig, seed: int = 0):
    """OpenAI ``model.py`` CLIP of ``config``'s shapes, float32, eval mode, perturbed.

    ``model.py`` hard-codes vision heads as ``width // 64``; other counts are patched in.
    """
    import torch

    v, t = config.vision, config.text
    torch.manual_seed(seed)
    model = model_module.CLIP(
        embed_dim=config.embed_dim, image_resolution=v.image_size, vision_layers=v.layers,
        vision_width=v.width, vision_patch_size=v.patch_size, context_length=t.context_length,
        vocab_size=t.vocab_size, transformer_width=t.width, transformer_heads=t.heads,
        transformer_layers=t.layers,
    ).float().eval()
    if v.heads != v.width // 64:  # model.py hard-codes vision heads = width // 64
        for block in model.visual.transformer.resblocks:
            block.attn.num_heads = v.heads
            block.attn.head_dim = v.width // v.heads
    if not config.quick_gelu:
        for block in [*model.visual.transformer.resblocks, *model.transformer.resblocks]:
            block.mlp.gelu = torch.nn.GELU()
    perturb_(model, seed + 1)
    return model


def round_to_fp16_(model) -> None:
    """Round every float parameter to fp16 precision, keeping float32 storage (so that a
    fp16 file of the model holds exactly the reference's weights)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def save_openai_torchscript(model, path: str, config: CLIPConfig) -> str:
    """A TorchScript archive like OpenAI's releases: traced, fp16, int buffers."""
    import torch

    m = copy.deepcopy(model)
    for name, value in (("input_resolution", config.vision.image_size),
                        ("context_length", config.text.context_length),
                        ("vocab_size", config.text.vocab_size)):
        if hasattr(m, name):
            delattr(m, name)
        m.register_buffer(name, torch.tensor(value))
    s = config.vision.image_size
    image = torch.zeros(1, 3, s, s)
    text = torch.zeros(1, config.text.context_length, dtype=torch.long)
    text[0, :2] = torch.tensor([config.text.sot_token_id, config.text.eot_token_id])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks in MHA
        traced = torch.jit.trace(m, (image, text), check_trace=False)
    traced.half().save(path)
    return path


def openai_state_dict(model, dtype=None) -> dict:
    import torch

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in sd.items()}
    return sd


def save_open_clip_training(model, path: str) -> str:
    """An open_clip training checkpoint: ``{"epoch", "name", "state_dict"}`` with DDP
    ``module.`` prefixes."""
    import torch

    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "name": "run", "state_dict": sd}, path)
    return path


def hf_config(config: CLIPConfig):
    """transformers ``CLIPConfig`` of the same architecture (eos_token_id 49407)."""
    from transformers import CLIPConfig as HFConfig

    v, t = config.vision, config.text
    act = "quick_gelu" if config.quick_gelu else "gelu"
    return HFConfig(
        text_config=dict(vocab_size=t.vocab_size, hidden_size=t.width,
                         intermediate_size=int(t.width * t.mlp_ratio),
                         num_hidden_layers=t.layers, num_attention_heads=t.heads,
                         max_position_embeddings=t.context_length, hidden_act=act,
                         layer_norm_eps=config.layer_norm_eps, bos_token_id=t.sot_token_id,
                         eos_token_id=t.eot_token_id, pad_token_id=1),
        vision_config=dict(hidden_size=v.width, intermediate_size=int(v.width * v.mlp_ratio),
                           num_hidden_layers=v.layers, num_attention_heads=v.heads,
                           image_size=v.image_size, patch_size=v.patch_size, hidden_act=act,
                           layer_norm_eps=config.layer_norm_eps),
        projection_dim=config.embed_dim,
    )


def hf_model(config: CLIPConfig, seed: int = 0):
    """transformers ``CLIPModel`` (eager attention, float32, eval), perturbed."""
    import torch
    from transformers import CLIPModel

    torch.manual_seed(seed)
    cfg = hf_config(config)
    cfg._attn_implementation = "eager"  # the plain softmax(QK^T)V reference
    model = CLIPModel(cfg).float().eval()
    assert model.text_model.encoder.layers[0].self_attn.config._attn_implementation == "eager"
    perturb_(model, seed + 1)
    return model


def save_hf_dir(model, folder: str, *, safetensors: bool = True,
                max_shard_size: str | None = None, preprocessor: dict | None = None) -> str:
    """A ``save_pretrained`` directory; ``safetensors=False`` writes ``pytorch_model.bin``."""
    import torch

    os.makedirs(folder, exist_ok=True)
    if safetensors:
        kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(folder, **kw)
    else:
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))
    if preprocessor is not None:
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(preprocessor, f)
    return folder


# --- reference forward passes ------------------------------------------------------------


def openai_features(model, pixels_nhwc: np.ndarray, ids: np.ndarray):
    """(image features, text features) of the OpenAI model.py reference, float32 NumPy."""
    import torch

    with torch.no_grad():
        img = model.encode_image(torch.from_numpy(pixels_nhwc.transpose(0, 3, 1, 2).copy()))
        txt = model.encode_text(torch.from_numpy(ids.astype(np.int64)))
    return img.float().numpy(), txt.float().numpy()


def hf_features(model, pixels_nhwc: np.ndarray, ids: np.ndarray):
    """(image features, text features) of a transformers CLIPModel, float32 NumPy."""
    import torch

    with torch.no_grad():
        img = model.get_image_features(
            pixel_values=torch.from_numpy(pixels_nhwc.transpose(0, 3, 1, 2).copy()))
        txt = model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64)))
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    return img.float().numpy(), txt.float().numpy()


def max_rel_err(a, b) -> float:
    """``max |a - b| / max |b|`` (scale-aware; element-wise ratios blow up near zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def random_inputs(config: CLIPConfig, texts, n_images: int, seed: int = 0):
    """Pixels ``(n, H, W, 3)`` (normalised-looking noise) and token ids of ``texts``."""
    from crossgap_jax.models.clip.tokenizer import get_tokenizer

    rng = np.random.default_rng(seed)
    s = config.vision.image_size
    pixels = rng.standard_normal((n_images, s, s, 3)).astype(np.float32)
    ids = get_tokenizer(config.text.context_length)(texts)
    return pixels, ids
