"""SLIP checkpoints -> the Flax params of :mod:`crossgap_jax.models.slip.model`.

SLIP's released files (``slip_base_100ep.pt``, ...) are ``torch.save`` dicts
``{"epoch", "state_dict", "optimizer", "scaler", "best_acc1", "args"}`` whose
``state_dict`` keys carry DDP's ``module.`` prefix. ``args`` is an
``argparse.Namespace``: the file is read with ``torch.load(weights_only=True)`` and
``argparse.Namespace`` allowed as a safe global (a plain attribute container), so no
arbitrary pickled code runs; ``allow_pickle=True`` falls back to a full unpickling for
other files you trust. The SimCLR projection head (``image_mlp.*``) is dropped (it is
not used by the image-text model); anything else unknown is an error.
"""

from __future__ import annotations

import argparse
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.fit import check_fit
from crossgap_jax.models.checkpoint.formats import read_safetensors, sniff_format
from crossgap_jax.models.checkpoint.hooks import (
    Converted,
    Read,
    Request,
    field_diffs,
    registered_like,
)
from crossgap_jax.models.checkpoint.hub import default_cache_dir, download_url
from crossgap_jax.models.checkpoint.pretrained import (
    SLIP_DEFAULT_TAG,
    SLIP_PRETRAINED,
    resolve_family_tag,
)
from crossgap_jax.models.checkpoint.torch_names import Mapped, rename, to_state_dict, torch_path
from crossgap_jax.models.clip.convert import strip_prefixes
from crossgap_jax.models.configs import TextConfig, VisionConfig
from crossgap_jax.models.slip.model import SLIPConfig

_IGNORED = re.compile(r"^(image_mlp\..*|.*attn_mask|.*position_ids|.*num_batches_tracked)$")
_NORMS = {"norm1", "norm2", "norm", "ln_1", "ln_2", "ln_final"}
_PLAIN = {"cls_token", "pos_embed", "image_projection", "text_projection",
          "positional_embedding", "logit_scale"}


_STACKS = ("blocks", "resblocks")


def _path(name: str) -> Mapped:
    """SLIP tensor name -> (Flax path, transform: none | linear | conv)."""
    return torch_path(name, stacks=_STACKS, norms=_NORMS, embeddings=("token_embedding",),
                      convs=("visual.patch_embed.proj",), plain=_PLAIN)


def state_dict_to_flat(sd: Mapping[str, Any]
                       ) -> tuple[dict[tuple[str, ...], np.ndarray], dict[tuple[str, ...], str],
                                  list[str], list[str]]:
    """SLIP names -> Flax paths (unchecked): ``(flat, names, unexpected, ignored)``."""
    return rename(strip_prefixes(sd), _path, _IGNORED)


def state_dict_to_params(sd: Mapping[str, Any], config: SLIPConfig
                         ) -> tuple[dict, list[str]]:
    """A SLIP state dict (NumPy values) -> ``(Flax params, ignored tensor names)``.

    Raises:
        CheckpointError: shape mismatches (named), missing or unexpected tensors (listed):
            :func:`crossgap_jax.models.checkpoint.fit.check_fit`.
    """
    flat, names, unexpected, ignored = state_dict_to_flat(sd)
    return check_fit(flat, config, layout="slip", names=names, unexpected=unexpected), ignored


def params_to_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`state_dict_to_params` (SLIP names without ``module.``)."""
    return to_state_dict(params, _STACKS)


def infer_config(sd: Mapping[str, Any], name: str = "custom-slip") -> SLIPConfig:
    """Architecture from tensor shapes (heads = width // 64 in both towers, as SLIP's
    timm towers and its 512-wide, 8-head text transformer)."""
    sd = strip_prefixes(sd)
    need = ["visual.cls_token", "visual.pos_embed", "visual.patch_embed.proj.weight",
            "image_projection", "text_projection", "positional_embedding", "ln_final.weight",
            "token_embedding.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"not a SLIP image-text checkpoint: missing {missing}")
    shape = lambda k: tuple(np.shape(sd[k]))
    vw, _, patch, _ = shape("visual.patch_embed.proj.weight")
    grid = int(round((shape("visual.pos_embed")[1] - 1) ** 0.5))
    count = lambda pre: len({k[len(pre):].split(".")[0] for k in sd if k.startswith(pre)})
    tw = shape("ln_final.weight")[0]
    v_mlp = shape("visual.blocks.0.mlp.fc1.weight")[0] if "visual.blocks.0.mlp.fc1.weight" in sd \
        else 4 * vw
    return SLIPConfig(
        name=name, embed_dim=shape("image_projection")[1],
        vision=VisionConfig(image_size=grid * patch, patch_size=patch, width=vw,
                            layers=count("visual.blocks."), heads=vw // 64,
                            mlp_ratio=v_mlp / vw),
        text=TextConfig(context_length=shape("positional_embedding")[0],
                        vocab_size=shape("token_embedding.weight")[0], width=tw,
                        layers=count("transformer.resblocks."), heads=tw // 64),
    )


_TOWER_FIELDS = ("image_size", "patch_size", "width", "layers", "mlp_ratio", "context_length",
                 "vocab_size")


def architecture_diff(a: SLIPConfig, b: SLIPConfig) -> list[str]:
    """``"field: a vs b"`` for every shape difference (the activation is not in the file)."""
    return field_diffs(a, b, ("embed_dim",), {"vision": _TOWER_FIELDS, "text": _TOWER_FIELDS})


def match_registered(config: SLIPConfig, prefer: str | None = None) -> str | None:
    """The first registered SLIP architecture with ``config``'s shapes, or None."""
    del prefer
    return registered_like(lambda c: isinstance(c, SLIPConfig)
                           and not architecture_diff(c, config))


def is_slip_checkpoint(source: str) -> bool:
    """A torch zip file whose pickle names SLIP tensors (read without unpickling)."""
    path = os.path.expanduser(str(source))
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                return False
            head = z.read(pkl[0])
    except (OSError, zipfile.BadZipFile):
        return False
    return b"visual.patch_embed.proj.weight" in head and b"image_projection" in head


def read_slip_file(path: str, allow_pickle: bool = False) -> tuple[dict[str, np.ndarray],
                                                                   dict[str, Any]]:
    """``(state dict as NumPy, extra)`` of a SLIP ``.pt`` file; ``extra`` has the training
    ``args`` (as a dict) and ``epoch`` when the file holds them."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise CheckpointError(f"{path} is a PyTorch file; reading it needs torch") from e
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types here
        if not allow_pickle:
            raise CheckpointError(
                f"torch.load(weights_only=True) refused {path} even with argparse.Namespace "
                f"allowed: {e}. If you trust the file, pass allow_pickle=True.") from e
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found a {type(obj).__name__}")
    extra: dict[str, Any] = {}
    if isinstance(obj.get("args"), argparse.Namespace):
        extra["args"] = {k: v for k, v in vars(obj["args"]).items()
                         if isinstance(v, (str, int, float, bool, type(None)))}
    if "epoch" in obj:
        extra["epoch"] = obj["epoch"]
    sd = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    if not out:
        raise CheckpointError(f"{path}: holds no tensors")
    return out, extra


claims = is_slip_checkpoint
QUICK_GELU = True  # quick_gelu= sets the text tower's activation


def adopt(requested: SLIPConfig, declared: SLIPConfig) -> SLIPConfig:
    """The requested architecture as is (SLIP files state shapes only)."""
    del declared
    return requested


def read(req: Request) -> Read:
    """A SLIP ``.pt`` / safetensors file, or the tag ``"slip"`` (the release, downloaded)."""
    arch = req.arch
    extra: dict[str, Any] = {}
    url = None
    if arch is not None:
        if not isinstance(arch, SLIPConfig):
            raise CheckpointError(f"{arch.name!r} is not a SLIP architecture")
        url = resolve_family_tag(SLIP_PRETRAINED, arch.name, req.source, SLIP_DEFAULT_TAG,
                                 "SLIP")
    if url is not None:
        dest = os.path.join(req.cache_dir or default_cache_dir(), "slip", url.rsplit("/", 1)[1])
        path = download_url(url, dest, progress=req.progress)
        extra.update(origin="url", url=url)
    else:
        path = os.path.expanduser(str(req.source))
        if not os.path.isfile(path):
            raise CheckpointNotFoundError(f"no such SLIP checkpoint file: {req.source}",
                                          target=path)
        extra["origin"] = "local"
    if sniff_format(path) == "safetensors":
        sd, _ = read_safetensors(path)
        fmt = "safetensors"
    else:
        sd, more = read_slip_file(path, allow_pickle=req.allow_pickle)
        extra.update(more)
        fmt = "torch-state-dict"
    extra["tokenizer_file"] = None
    return Read(sd, fmt, [path], "slip", infer_config(sd), path, extra=extra)


def convert_tensors(read: Read, config: SLIPConfig) -> Converted:
    """SLIP tensors -> Flax paths (shapes checked by the loader); ``image_mlp.*`` (the SSL
    head) and buffers are dropped and listed as ``info["ignored"]``."""
    del config
    flat, names, unexpected, ignored = state_dict_to_flat(read.tensors)
    return Converted(flat, names, unexpected, extra={"ignored": ignored})
