"""Checkpoint state dicts (name -> array) <-> the Flax params pytree.

Torch-free: callers hand in NumPy arrays (``checkpoint/formats.py`` and the family readers
do the file reading).
Conversion is string rules plus transposes, then a strict check against the shapes of
the Flax model: a wrong shape names the tensor, missing or unexpected tensors are an
error that lists them.

Layouts:
- ``"openai"``: OpenAI ``model.py`` names (also open_clip's for its ViT CLIP models).
- ``"hf"``: transformers ``CLIPModel`` names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointLayoutError
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.checkpoint.torch_names import Mapped, rename, to_state_dict, torch_path
from crossgap_jax.models.configs import CLIPConfig, TextConfig, VisionConfig

# Buffers some checkpoints carry that are not parameters.
_IGNORED = re.compile(
    r"^(input_resolution|context_length|vocab_size|attn_mask|.*\.attn_mask|"
    r".*position_ids|.*num_batches_tracked)$"
)


def strip_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Unwrap ``{"state_dict": ...}`` training checkpoints and DDP ``module.`` prefixes."""
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module.") :]
        out[k] = v
    return out


def detect_layout(sd: Mapping[str, Any]) -> str:
    """``"openai"`` (also open_clip) or ``"hf"`` from the tensor names."""
    keys = set(sd)
    if "visual.conv1.weight" in keys and "token_embedding.weight" in keys:
        return "openai"
    if "vision_model.embeddings.patch_embedding.weight" in keys:
        return "hf"
    if any(k.startswith("text.") for k in keys) and "visual.conv1.weight" in keys:
        raise CheckpointError(
            "this open_clip checkpoint uses a custom text tower ('text.*' keys); only the "
            "standard CLIP text transformer is supported"
        )
    sample = ", ".join(sorted(keys)[:8])
    raise CheckpointLayoutError(f"unrecognised checkpoint layout; first tensor names: {sample}")


def infer_config(sd: Mapping[str, Any], name: str = "custom", quick_gelu: bool = True,
                 layout: str | None = None) -> CLIPConfig:
    """Architecture from tensor shapes (heads = width // 64, as OpenAI's ``build_model``)."""
    sd = strip_prefixes(sd)
    layout = layout or detect_layout(sd)
    if layout == "hf":
        sd = hf_to_openai_names(sd)
    shape = lambda k: tuple(np.shape(sd[k]))
    vw = shape("visual.conv1.weight")[0]
    patch = shape("visual.conv1.weight")[-1]
    n_pos = shape("visual.positional_embedding")[0]
    grid = int(round((n_pos - 1) ** 0.5))
    vl = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    tw = shape("ln_final.weight")[0]
    tl = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    return CLIPConfig(
        name=name,
        embed_dim=shape("text_projection")[1],
        vision=VisionConfig(image_size=grid * patch, patch_size=patch, width=vw, layers=vl,
                            heads=vw // 64),
        text=TextConfig(context_length=shape("positional_embedding")[0],
                        vocab_size=shape("token_embedding.weight")[0], width=tw, layers=tl,
                        heads=tw // 64),
        quick_gelu=quick_gelu,
    )


def hf_to_openai_names(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Rename (and fuse/transpose where needed) a transformers ``CLIPModel`` state dict.

    q/k/v projections are concatenated into ``in_proj``; ``visual_projection`` and
    ``text_projection`` are PyTorch ``Linear`` weights ``(out, in)`` and are transposed
    to OpenAI's ``(in, out)`` matrices.
    """
    out: dict[str, np.ndarray] = {}
    qkv: dict[str, dict[str, np.ndarray]] = {}
    simple = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
        "logit_scale": "logit_scale",
    }
    layer_re = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")
    sub = {
        "layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj",
    }
    for k, v in sd.items():
        v = np.asarray(v)
        if k in simple:
            out[simple[k]] = v
        elif k == "visual_projection.weight":
            out["visual.proj"] = v.T
        elif k == "text_projection.weight":
            out["text_projection"] = v.T
        elif m := layer_re.match(k):
            tower, i, rest = m.groups()
            prefix = ("visual.transformer" if tower == "vision" else "transformer")
            prefix = f"{prefix}.resblocks.{i}"
            qm = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if qm:
                qkv.setdefault(f"{prefix}.attn.in_proj_{qm.group(2)}", {})[qm.group(1)] = v
                continue
            for a, b in sub.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
            else:
                out[k] = v  # left for the unexpected-tensor report
                continue
            out[f"{prefix}.{rest}"] = v
        else:
            out[k] = v
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{name}: incomplete q/k/v projections ({sorted(parts)})")
        out[name] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


_NORMS = ("ln_pre", "ln_post", "ln_1", "ln_2", "ln_final")
_PLAIN = ("class_embedding", "positional_embedding", "proj", "text_projection", "logit_scale")


def _openai_name_to_path(name: str) -> Mapped:
    """OpenAI tensor name -> (flax path, transform) or None if not a parameter we know."""
    return torch_path(name, stacks=("resblocks",), norms=_NORMS,
                      embeddings=("token_embedding",), convs=("visual.conv1",), plain=_PLAIN)


def state_dict_to_flat(sd: Mapping[str, Any], config: CLIPConfig, layout: str | None = None
                       ) -> tuple[dict[tuple[str, ...], np.ndarray], dict[tuple[str, ...], str],
                                  list[str]]:
    """Map a PyTorch-layout state dict to Flax paths, unchecked:
    ``(flat {path: float32 array}, names {path: tensor name}, unexpected tensor names)``."""
    del config  # the mapping is by name; shapes are checked by fit.check_fit
    sd = strip_prefixes(sd)
    layout = layout or detect_layout(sd)
    if layout == "hf":
        sd = hf_to_openai_names(sd)
    flat, names, unexpected, _ = rename(sd, _openai_name_to_path, _IGNORED)
    return flat, names, unexpected


def state_dict_to_params(sd: Mapping[str, Any], config: CLIPConfig,
                         layout: str | None = None) -> dict:
    """Convert a PyTorch-layout state dict (NumPy values) to the Flax params pytree.

    Args:
        sd: tensor name -> array (float16/bfloat16/float32; cast to float32).
        config: the architecture the params must fit.
        layout: ``"openai"`` or ``"hf"``; detected from the names when None.

    Raises:
        CheckpointError: a shape mismatch (naming the tensor), or missing / unexpected
            tensors (listing them): :func:`crossgap_jax.models.checkpoint.fit.check_fit`.
    """
    layout = layout or detect_layout(strip_prefixes(sd))
    flat, names, unexpected = state_dict_to_flat(sd, config, layout)
    return check_fit(flat, config, layout=layout, names=names, unexpected=unexpected)


def params_to_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`state_dict_to_params` for the OpenAI layout (float32 NumPy)."""
    return to_state_dict(params, ("resblocks",))
