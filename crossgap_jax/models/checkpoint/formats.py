"""Weights file readers: safetensors, torch ``.pt`` / ``.bin`` (optional torch), ``.npz``.

Each reader returns plain NumPy arrays keyed by the file's own tensor names; the formats
are detected from the file contents (:func:`sniff_format`), not the extension. ``torch``
is imported only for the torch formats: reading safetensors, native or ``.npz`` files
never imports it. Errors name the file and the fix (:class:`CheckpointError`).
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import safe_open

from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError

#: ``format`` value in the safetensors metadata of files written by ``native.save_native``.
NATIVE_FORMAT = "crossgap_jax.clip"


def sniff_format(path: str) -> str:
    """``"safetensors"``, ``"torchscript"``, ``"torch-zip"``, ``"torch-pickle"`` or
    ``"unknown"``, from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if any("/code/" in n or n.startswith("code/") for n in names):
            return "torchscript"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch-zip"
        return "unknown"
    if head[:1] == b"\x80":  # pickle protocol marker: torch's legacy serialisation
        return "torch-pickle"
    if len(head) == 9 and head[8:9] == b"{":
        n = struct.unpack("<Q", head[:8])[0]
        if 2 <= n <= os.path.getsize(path) - 8:
            return "safetensors"
        if 2 <= n < _MAX_HEADER and path.endswith(".safetensors"):
            return "safetensors"  # cut inside its header: let the reader say "truncated"
    return "unknown"


_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header (100 MB)


def safetensors_header(path: str) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the byte offset where the data starts.

    Raises:
        CheckpointError: the file is cut short or its header is damaged (names the file,
            the sizes involved and the fix).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, shorter "
                                  f"than the 8-byte header length); {_REFETCH}")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CheckpointError(
                f"{path}: truncated safetensors file: its header declares {n:,} bytes of "
                f"JSON but the file has only {size:,} bytes; {_REFETCH}")
        blob = f.read(n)
    try:
        header = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: damaged safetensors header (not valid JSON: {e}); "
                              f"{_REFETCH}") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged safetensors header (not a JSON object); "
                              f"{_REFETCH}")
    return header, 8 + n


_REFETCH = "the download or copy was probably interrupted: fetch or copy the file again"


def _safetensors_metadata(path: str) -> dict[str, str]:
    return safetensors_header(path)[0].get("__metadata__") or {}


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as NumPy arrays, and its metadata. Torch-free.

    bfloat16 tensors (which NumPy cannot hold) are widened to float32 exactly.
    """

    header, base = safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    size = os.path.getsize(path)
    try:
        end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: damaged safetensors header (a tensor entry has no "
                              f"valid data_offsets); {_REFETCH}") from e
    if base + end > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file: its {len(header)} tensors need "
            f"{base + end:,} bytes but the file has {size:,} ({base + end - size:,} missing); "
            f"{_REFETCH}")
    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="numpy") as f:
            for name, entry in header.items():
                if entry["dtype"] == "BF16":
                    start, stop = entry["data_offsets"]
                    raw = np.fromfile(path, dtype="<u2", count=(stop - start) // 2,
                                      offset=base + start)
                    out[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(
                        entry["shape"])
                else:
                    out[name] = f.get_tensor(name)
    except Exception as e:  # noqa: BLE001 - safetensors' own errors name no file
        raise CheckpointError(f"{path}: cannot read the safetensors file "
                              f"({type(e).__name__}: {e}); {_REFETCH}") from e
    return out, dict(metadata)


def torch_to_numpy(obj: Any) -> tuple[dict[str, np.ndarray], bool]:
    """A loaded torch object (state dict, wrapper dict, module) -> (name -> NumPy array,
    whether it was a ``{"state_dict": ...}`` training-checkpoint wrapper)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict, the file holds a {type(obj).__name__}")
    wrapped = isinstance(obj.get("state_dict"), Mapping)
    if wrapped:
        obj = obj["state_dict"]
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    if not out:
        raise CheckpointError("the file holds no tensors")
    return out, wrapped


def read_torch(path: str, *, allow_pickle: bool = False
               ) -> tuple[dict[str, np.ndarray], str, bool]:
    """State dict (NumPy values) of a torch file, its format name, and whether the state
    dict was wrapped as ``{"state_dict": ...}`` (open_clip training checkpoints).

    TorchScript archives (OpenAI's releases) go through ``torch.jit.load``; other files
    through ``torch.load(weights_only=True)`` unless ``allow_pickle``.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency here
        raise CheckpointError(
            f"{path} is a PyTorch file; reading it needs torch (pip install "
            f"'crossgap-jax[torch]'), or convert it once to the native format with save_native"
        ) from e
    kind = sniff_format(path)
    if kind == "torchscript":
        with warnings.catch_warnings():  # torch >= 2.9 deprecates jit.load; still the reader
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is")
            module = torch.jit.load(path, map_location="cpu")
        sd, _ = torch_to_numpy(module.state_dict())
        return sd, "openai-torchscript", False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle,
                         mmap=kind == "torch-zip")
    except Exception as e:
        if not allow_pickle and "weights_only" in str(e):
            raise CheckpointError(
                f"torch.load(weights_only=True) refused {path}: it holds Python objects beyond "
                f"tensors. If you trust the file, pass allow_pickle=True (this runs its "
                f"pickled code). Original error: {e}") from e
        raise CheckpointError(f"cannot read {path} with torch.load: {e}") from e
    sd, wrapped = torch_to_numpy(obj)
    return sd, "torch-state-dict", wrapped


def read_state_dict(path: str, *, allow_pickle: bool = False
                    ) -> tuple[dict[str, np.ndarray], str, bool]:
    """``(state dict, format, wrapped)`` of one weights file in any format (``wrapped``: a
    ``{"state_dict": ...}`` training checkpoint)."""
    kind = sniff_format(path)
    if kind == "safetensors":
        sd, meta = read_safetensors(path)
        return sd, ("native" if meta.get("format") == NATIVE_FORMAT else "safetensors"), False
    if kind in ("torchscript", "torch-zip", "torch-pickle"):
        return read_torch(path, allow_pickle=allow_pickle)
    raise unrecognised_file(path)


def unrecognised_file(path: str) -> CheckpointError:
    """The error for a weights file of no known format; a zip archive whose index cannot be
    read (a ``torch.save`` file cut short: the index sits at the end) is named as such."""
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if zipped and not zipfile.is_zipfile(path):
        return CheckpointError(f"{path}: damaged zip archive (torch.save files are zips; its "
                               f"index at the end is missing): {_REFETCH}")
    return CheckpointError(f"{path}: unrecognised checkpoint file (not safetensors, a "
                           f"TorchScript archive or a torch.save file)")


def read_index(index_path: str, fetch=None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Merge the shards listed in a ``*.index.json``; ``fetch(name)`` gives a shard's path."""
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    shards = sorted(set(weight_map.values()))
    folder = os.path.dirname(index_path)
    sd: dict[str, np.ndarray] = {}
    paths = []
    for shard in shards:
        p = fetch(shard) if fetch else os.path.join(folder, shard)
        if not os.path.isfile(p):
            raise CheckpointNotFoundError(f"shard {shard} listed in {index_path} is missing",
                                          target=p)
        paths.append(p)
        sd.update(read_state_dict(p)[0])
    return sd, paths


def safetensors_metadata(path: str) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only, no tensors read)."""
    return _safetensors_metadata(path)


def is_npz(path: str) -> bool:
    """Whether ``path`` is a NumPy ``.npz`` archive (a zip of ``.npy`` members)."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith(".npy") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def npz_names(path: str) -> list[str]:
    """Member names of an ``.npz`` archive (without ``.npy``), read from the zip index."""
    with zipfile.ZipFile(path) as z:
        return [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]


def read_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles: ``allow_pickle=False``).

    Raises:
        CheckpointError: the archive is damaged or holds object arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: cannot read the .npz archive ({e}); {_REFETCH}") from e


def read_json(path: str) -> dict:
    """A JSON file as a dict."""
    with open(path) as f:
        return json.load(f)
