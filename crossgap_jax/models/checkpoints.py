"""Pretrained CLIP weights: where they come from, how each file format is read.

:func:`load_checkpoint` turns a name, a file, a directory or a hub id into
``(CLIPConfig, params, info)``. Sources:

- a local file or directory (any format below);
- a Hugging Face hub id of a transformers ``CLIPModel`` repo
  (``"openai/clip-vit-base-patch32"``), through ``huggingface_hub`` and its cache;
- ``"hf-hub:<repo>"``: an open_clip repo on the hub (``open_clip_config.json`` plus
  ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``);
- ``"openai"`` (or no checkpoint) with an OpenAI architecture name: OpenAI's release URL,
  downloaded once into the cache directory with its sha256 checked;
- an open_clip pretrained tag (``"datacomp_xl_s13b_b90k"``) with an open_clip name.

Formats, detected from the file contents (not the extension):

========================  ===================================================  ==========
format                    what                                                 needs torch
========================  ===================================================  ==========
``openai-torchscript``    OpenAI's released ``.pt`` (a TorchScript zip archive)  yes
``torch-state-dict``      ``torch.save`` of a state dict (OpenAI, open_clip or   yes
                          HF names; ``{"state_dict": ...}`` wrappers allowed)
``safetensors``           a safetensors state dict (HF or open_clip names)       no
``native``                :func:`save_native`: flattened Flax params + config    no
========================  ===================================================  ==========

Sharded HF checkpoints (``*.safetensors.index.json`` / ``*.bin.index.json``) are read
shard by shard. ``torch`` is imported only for the torch formats; reading safetensors or
native files never imports it.

Nothing is fetched when the network is unavailable or ``HF_HUB_OFFLINE`` /
``CROSSGAP_JAX_OFFLINE`` is set: a missing file raises :class:`CheckpointNotFoundError`,
whose message says which file to fetch (URL, or hub repo and filenames) and where to
put it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import struct
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from crossgap_jax.fileio import OutputWriteError, atomic_open, atomic_path, atomic_write_json
from crossgap_jax.models import convert
from crossgap_jax.models.configs import (
    OPENAI_MEAN,
    OPENAI_STD,
    CLIPConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_architectures,
)
from crossgap_jax.models.convert import CheckpointError

Params = Any

NATIVE_FORMAT = "crossgap_jax.clip"
NATIVE_VERSION = "1"

# OpenAI's release files; the sha256 of each file is the second-to-last URL component.
_OPENAI_BASE = "https://openaipublic.azureedge.net/clip/models"
OPENAI_RELEASES: dict[str, str] = {
    "ViT-B/32": f"{_OPENAI_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    "/ViT-B-32.pt",
    "ViT-B/16": f"{_OPENAI_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    "/ViT-B-16.pt",
    "ViT-L/14": f"{_OPENAI_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
    "/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_OPENAI_BASE}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08"
    "641f02/ViT-L-14-336px.pt",
}

# open_clip architecture names whose "openai" tag means OpenAI's weights (quick_gelu).
_OPEN_CLIP_TO_OPENAI = {
    "ViT-B-32": "ViT-B/32",
    "ViT-B-32-quickgelu": "ViT-B/32",
    "ViT-B-16": "ViT-B/16",
    "ViT-L-14": "ViT-L/14",
    "ViT-L-14-quickgelu": "ViT-L/14",
}

# (architecture, pretrained tag) -> source, for the open_clip weights the paper uses.
PRETRAINED: dict[tuple[str, str], str] = {
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): "hf-hub:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): "hf-hub:laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
    ("ViT-B-32", "laion2b_s34b_b79k"): "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ("ViT-L-14", "laion2b_s32b_b82k"): "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
}

_HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")
_TRUE = ("1", "true", "yes", "on")


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """Weights are not available locally and cannot be fetched (offline, no network, or
    no such file). The message says what to fetch and where to put it.

    Attributes:
        url: the download URL, when there is one.
        repo_id: the hub repo, when the source is the Hugging Face hub.
        filenames: the files to fetch from ``repo_id``.
        target: where the file is expected (cache path), when known.
    """

    def __init__(self, message: str, *, url: str | None = None, repo_id: str | None = None,
                 filenames: tuple[str, ...] = (), target: str | None = None):
        super().__init__(message)
        self.url, self.repo_id, self.filenames, self.target = url, repo_id, filenames, target


class ChecksumError(CheckpointError):
    """A downloaded file's sha256 differs from the published one."""


# ----------------------------------------------------------------------------------------
# Public helpers
# ----------------------------------------------------------------------------------------


def default_cache_dir() -> str:
    """``$CROSSGAP_JAX_CACHE``, else ``$XDG_CACHE_HOME/crossgap_jax`` (``~/.cache/...``)."""
    if os.environ.get("CROSSGAP_JAX_CACHE"):
        return os.path.expanduser(os.environ["CROSSGAP_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "crossgap_jax")


OFFLINE_VARS = ("CROSSGAP_JAX_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")

#: seconds the reachability probe waits (DNS + TCP connect) before calling a host offline.
PROBE_TIMEOUT = 3.0
_REACHABLE: dict[tuple[str, int], bool] = {}


def is_offline() -> bool:
    """True when one of :data:`OFFLINE_VARS` (``CROSSGAP_JAX_OFFLINE``, ``HF_HUB_OFFLINE``,
    ``HF_DATASETS_OFFLINE``) is set to a true value (read at call time)."""
    return _offline_var() is not None


def _offline_var() -> str | None:
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds.

    One probe per host and process (the answer is cached), so that without a network a
    load fails in seconds instead of spending a minute in the hub client's retries. Name
    resolution is bounded too (the probe runs in a thread that is not waited for beyond
    ``timeout``). Behind an HTTP(S) proxy (``HTTPS_PROXY`` / ``ALL_PROXY`` set) the direct
    probe says nothing, so the host is assumed reachable.
    """
    import socket
    import threading
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)
    if not host or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                                   "all_proxy")):
        return True
    key = (host, port)
    if key not in _REACHABLE:
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection(key, timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        t = threading.Thread(target=probe, daemon=True, name=f"probe-{host}")
        t.start()
        t.join(timeout + 0.5)
        _REACHABLE[key] = bool(result and result[0])
    return _REACHABLE[key]


@contextlib.contextmanager
def hub_client_offline(active: bool) -> Iterator[None]:
    """While active, put the ``huggingface_hub`` client itself in offline mode.

    ``local_files_only=True`` alone is not enough: the client reads ``HF_HUB_OFFLINE``
    once, at import, and otherwise still makes requests of its own (e.g. its user-agent
    registry) - a variable set later, or a failed probe, must reach it too.
    """
    if not active:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_offline_reason() -> str | None:
    """Why the Hugging Face hub is not to be contacted (an offline variable, or its host
    did not answer the probe), or None when it may be."""
    var = _offline_var()
    if var is not None:
        return f"offline mode is on ({var}={os.environ[var]})"
    from huggingface_hub import constants

    if not host_reachable(constants.ENDPOINT):
        return (f"{constants.ENDPOINT} cannot be reached (no answer within "
                f"{PROBE_TIMEOUT:g} s: no network?)")
    return None


def list_pretrained() -> list[tuple[str, str]]:
    """``(architecture, tag)`` pairs :func:`load_checkpoint` resolves by itself."""
    pairs = [(arch, "openai") for arch in OPENAI_RELEASES]
    pairs += [(arch, "openai") for arch in _OPEN_CLIP_TO_OPENAI]
    return pairs + list(PRETRAINED)


def openai_release(arch: str) -> tuple[str, str]:
    """``(url, sha256)`` of OpenAI's release for ``arch`` (OpenAI or open_clip spelling)."""
    arch = _OPEN_CLIP_TO_OPENAI.get(arch, arch)
    if arch not in OPENAI_RELEASES:
        raise CheckpointError(
            f"OpenAI released no weights for {arch!r}; releases: {', '.join(OPENAI_RELEASES)}"
        )
    url = OPENAI_RELEASES[arch]
    return url, url.split("/")[-2]


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------


def _sidecar(path: str) -> str:
    return path + ".sha256.json"


def _verified_sha256(path: str, expected: str) -> bool:
    """Whether ``path`` has sha256 ``expected``; remembers a match in a sidecar file keyed by
    size and mtime so that the (large) file is hashed once, not on every load."""
    st = os.stat(path)
    try:
        with open(_sidecar(path)) as f:
            memo = json.load(f)
        if (memo.get("sha256") == expected and memo.get("size") == st.st_size
                and memo.get("mtime_ns") == st.st_mtime_ns):
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(path) != expected:
        return False
    try:
        atomic_write_json(_sidecar(path),
                          {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    except OSError:  # a read-only cache still works, it just hashes again next time
        pass
    return True


def download_url(url: str, dest: str, sha256: str | None = None, *, progress: bool = True,
                 timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest`` (atomically: a temporary file renamed into place).

    A file already at ``dest`` with the right sha256 is reused; one with the wrong sha256
    is downloaded again (with a warning).

    Raises:
        CheckpointNotFoundError: offline mode, or the download failed (no network, HTTP
            error); the message gives the URL and ``dest``.
        ChecksumError: the downloaded bytes do not have ``sha256``.
    """
    if os.path.isfile(dest):
        if sha256 is None or _verified_sha256(dest, sha256):
            return dest
        warnings.warn(f"{dest} exists but its sha256 is not {sha256}; downloading it again",
                      stacklevel=2)
    elif os.path.exists(dest):
        raise CheckpointError(f"{dest} exists and is not a regular file")

    how = (f"Download it yourself ({url}) to {dest}" + (f" (sha256 {sha256})" if sha256 else "")
           + ", or pass checkpoint=PATH to a copy of it.")
    if is_offline():
        raise CheckpointNotFoundError(
            f"checkpoint not in the cache and offline mode is on ({_offline_var()}). {how}",
            url=url, target=dest)

    from tqdm.auto import tqdm

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as src, atomic_open(dest) as out:
            total = src.headers.get("Content-Length") if getattr(src, "headers", None) else None
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=os.path.basename(dest),
                      disable=not progress) as bar:
                while block := src.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            got = h.hexdigest()
            if sha256 is not None and got != sha256:  # raised inside: the file is discarded
                raise ChecksumError(f"downloaded {url} has sha256 {got}, expected {sha256}; "
                                    f"the file was discarded. Try again, or fetch it yourself "
                                    f"to {dest}.")
    except (OutputWriteError, ChecksumError):  # a full / read-only cache folder, bad bytes
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CheckpointNotFoundError(f"could not download {url}: {e}. {how}", url=url,
                                      target=dest) from e
    if sha256 is not None:
        _verified_sha256(dest, sha256)
    return dest


def fetch_openai(arch: str, cache_dir: str | None = None, *, progress: bool = True) -> str:
    """Local path of OpenAI's release for ``arch``, downloading it into ``cache_dir`` if
    needed (default :func:`default_cache_dir`). A copy with the right sha256 in OpenAI's own
    cache (``~/.cache/clip``) is used as is."""
    url, sha = openai_release(arch)
    filename = url.split("/")[-1]
    cache_dir = os.path.expanduser(cache_dir) if cache_dir else default_cache_dir()
    dest = os.path.join(cache_dir, filename)
    if not os.path.isfile(dest):
        other = os.path.join(os.path.expanduser("~"), ".cache", "clip", filename)
        if os.path.isfile(other) and _verified_sha256(other, sha):
            return other
    return download_url(url, dest, sha, progress=progress)


def _hub_split(repo: str) -> tuple[str, str | None]:
    repo_id, _, revision = repo.partition("@")
    return repo_id, (revision or None)


def _hub_fetch(repo: str, candidates: tuple[str, ...], *, required: bool = True,
               optional: bool = False, then: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """Download the first of ``candidates`` that exists in hub repo ``repo`` (``id@rev``).

    Files already in the Hugging Face cache are used without network access in offline
    mode (``HF_HUB_OFFLINE`` / ``CROSSGAP_JAX_OFFLINE``, read at call time).

    Args:
        required: raise when the repo has none of the candidates (else return None).
        then: files needed after this one, named in the offline message so that one
            download fetches everything.
        optional: return None instead of raising in every case where nothing is found
            (unreachable hub included).

    Returns:
        ``(filename, local path)``, or None (see ``required`` / ``optional``).

    Raises:
        CheckpointNotFoundError: the repo does not exist, or the hub is unreachable and no
            candidate is in the cache; the message names the repo and files to fetch.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = _hub_split(repo)
    unreachable: list[str] = []
    cause: Exception | None = None
    offline = hub_offline_reason()  # probed once per process: no minute of retries
    for filename in candidates:
        try:
            with hub_client_offline(offline is not None):
                path = hf_hub_download(repo_id, filename, revision=revision,
                                       local_files_only=offline is not None)
            return filename, path
        except LocalEntryNotFoundError as e:  # offline / no network, not in the cache
            unreachable.append(filename)
            cause = e
        except EntryNotFoundError:  # the repo has no such file: try the next candidate
            continue
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            if optional:
                return None
            raise CheckpointNotFoundError(
                f"Hugging Face hub repo {repo!r} not found (or gated / private): {e}",
                repo_id=repo_id, filenames=candidates) from e
    if optional:
        return None
    if unreachable:
        rev = f" --revision {revision}" if revision else ""
        needed = [" or ".join(unreachable)] + [f for f in then if f not in unreachable]
        first = [unreachable[0]] + [f.split(" or ")[0] for f in then]
        why = offline or "the Hugging Face hub is unreachable"
        raise CheckpointNotFoundError(
            f"{why}, and {unreachable[0]} of {repo_id!r} is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}; HF_HOME / HF_HUB_CACHE choose another). Files needed "
            f"from hub repo {repo_id!r}: {'; '.join(needed)}. Fetch them where there is network "
            f"access, e.g. `hf download {repo_id} {' '.join(first)}{rev}`, and copy the cache "
            f"over; or put the files in one directory and pass checkpoint=DIR.",
            repo_id=repo_id, filenames=tuple(first)) from cause
    if required:
        raise CheckpointNotFoundError(
            f"hub repo {repo!r} has none of {', '.join(candidates)}", repo_id=repo_id,
            filenames=candidates)
    return None


# ----------------------------------------------------------------------------------------
# File formats
# ----------------------------------------------------------------------------------------


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


def _safetensors_header(path: str) -> tuple[dict[str, Any], int]:
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
    return _safetensors_header(path)[0].get("__metadata__") or {}


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as NumPy arrays, and its metadata. Torch-free.

    bfloat16 tensors (which NumPy cannot hold) are widened to float32 exactly.
    """
    from safetensors import safe_open

    header, base = _safetensors_header(path)
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


def _torch_to_numpy(obj: Any) -> tuple[dict[str, np.ndarray], bool]:
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
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location="cpu")
        sd, _ = _torch_to_numpy(module.state_dict())
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
    sd, wrapped = _torch_to_numpy(obj)
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
    raise CheckpointError(
        f"{path}: unrecognised checkpoint file (not safetensors, a TorchScript archive or a "
        f"torch.save file)")


def _read_index(index_path: str, fetch=None) -> tuple[dict[str, np.ndarray], list[str]]:
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


# ----------------------------------------------------------------------------------------
# Configs declared by checkpoints
# ----------------------------------------------------------------------------------------

_HF_TEXT_DEFAULTS = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, vocab_size=49408,
                         hidden_act="quick_gelu", layer_norm_eps=1e-5)
_HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=32,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5)
_ACTIVATIONS = {"quick_gelu": True, "gelu": False}


def config_from_hf(cfg: Mapping[str, Any], name: str = "custom",
                   mean: tuple = OPENAI_MEAN, std: tuple = OPENAI_STD) -> CLIPConfig:
    """A transformers ``CLIPConfig`` dict (``config.json``) -> :class:`CLIPConfig`.

    Keys absent from the file take transformers' defaults (``save_pretrained`` may omit
    them). The EOT id always comes from our tokenizer, not the file's ``eos_token_id``.
    """
    if cfg.get("model_type", "clip") != "clip":
        raise CheckpointError(f"config.json describes a {cfg.get('model_type')!r} model, "
                              f"not a transformers CLIPModel ('clip')")
    t = {**_HF_TEXT_DEFAULTS, **(cfg.get("text_config") or cfg.get("text_config_dict") or {})}
    v = {**_HF_VISION_DEFAULTS,
         **(cfg.get("vision_config") or cfg.get("vision_config_dict") or {})}
    acts = {t["hidden_act"], v["hidden_act"]}
    if len(acts) != 1 or not acts <= set(_ACTIVATIONS):
        raise CheckpointError(f"unsupported hidden_act {sorted(acts)} (text/vision); supported: "
                              f"one of {sorted(_ACTIVATIONS)} for both towers")
    if t["layer_norm_eps"] != v["layer_norm_eps"]:
        raise CheckpointError("different layer_norm_eps in the two towers is not supported")
    return CLIPConfig(
        name=name,
        embed_dim=int(cfg.get("projection_dim", 512)),
        vision=VisionConfig(image_size=int(v["image_size"]), patch_size=int(v["patch_size"]),
                            width=int(v["hidden_size"]), layers=int(v["num_hidden_layers"]),
                            heads=int(v["num_attention_heads"]),
                            mlp_ratio=v["intermediate_size"] / v["hidden_size"]),
        text=TextConfig(context_length=int(t["max_position_embeddings"]),
                        vocab_size=int(t["vocab_size"]), width=int(t["hidden_size"]),
                        layers=int(t["num_hidden_layers"]), heads=int(t["num_attention_heads"]),
                        mlp_ratio=t["intermediate_size"] / t["hidden_size"]),
        quick_gelu=_ACTIVATIONS[acts.pop()],
        layer_norm_eps=float(t["layer_norm_eps"]),
        mean=tuple(mean), std=tuple(std),
    )


# open_clip options that do not change a standard ViT CLIP when at these values.
_OC_NEUTRAL: dict[str, tuple] = {
    "ls_init_value": (None,), "attentional_pool": (False,), "no_ln_pre": (False,),
    "pos_embed_type": ("learnable",), "final_ln_after_pool": (False,), "pool_type": (
        "tok", "argmax"), "output_tokens": (False,), "act_kwargs": (None, {}),
    "norm_kwargs": (None, {}), "timm_model_name": (None,), "input_patchnorm": (False,),
    "hf_model_name": (None,), "proj_type": ("linear",), "embed_cls": (False,),
    "no_causal_mask": (False,), "proj_bias": (False,), "pad_id": (0,), "pooler_type": (
        "argmax",), "output_dim": (None,),
}
_OC_IGNORED = {"patch_dropout", "dropout", "hf_tokenizer_name", "tokenizer_kwargs",
               "emb_dropout", "attn_dropout", "mask_ratio"}  # training-only or tokenizer


def config_from_open_clip(cfg: Mapping[str, Any], name: str = "custom") -> CLIPConfig:
    """An ``open_clip_config.json`` dict -> :class:`CLIPConfig` (standard ViT CLIP only).

    Raises:
        CheckpointError: the config uses an open_clip option this port does not implement.
    """
    model = cfg.get("model_cfg", cfg)
    pre = cfg.get("preprocess_cfg") or {}
    vc, tc = dict(model.get("vision_cfg") or {}), dict(model.get("text_cfg") or {})
    unsupported = []
    for tower, d, known in (("vision_cfg", vc, {"image_size", "layers", "width", "patch_size",
                                                "head_width", "mlp_ratio"}),
                            ("text_cfg", tc, {"context_length", "vocab_size", "width", "heads",
                                              "layers", "mlp_ratio"})):
        for k, val in d.items():
            if k in known or k in _OC_IGNORED or val in _OC_NEUTRAL.get(k, ()):
                continue
            unsupported.append(f"{tower}.{k}={val!r}")
    if model.get("custom_text") and tc.get("hf_model_name"):
        unsupported.append("custom_text with a Hugging Face text tower")
    if unsupported:
        raise CheckpointError("unsupported open_clip options: " + ", ".join(unsupported))
    image_size = vc.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise CheckpointError(f"non-square image_size {image_size} is not supported")
        image_size = image_size[0]
    vw = int(vc.get("width", 768))
    return CLIPConfig(
        name=name,
        embed_dim=int(model.get("embed_dim", 512)),
        vision=VisionConfig(image_size=int(image_size), patch_size=int(vc.get("patch_size", 16)),
                            width=vw, layers=int(vc.get("layers", 12)),
                            heads=vw // int(vc.get("head_width", 64)),
                            mlp_ratio=float(vc.get("mlp_ratio", 4.0))),
        text=TextConfig(context_length=int(tc.get("context_length", 77)),
                        vocab_size=int(tc.get("vocab_size", 49408)),
                        width=int(tc.get("width", 512)), layers=int(tc.get("layers", 12)),
                        heads=int(tc.get("heads", 8)), mlp_ratio=float(tc.get("mlp_ratio", 4.0))),
        quick_gelu=bool(model.get("quick_gelu", False)),
        mean=tuple(pre.get("mean", OPENAI_MEAN)), std=tuple(pre.get("std", OPENAI_STD)),
    )


def _architecture_diff(a: CLIPConfig, b: CLIPConfig) -> list[str]:
    """Field-by-field differences in shape and activation (ignores name, mean, std)."""
    fam_a, fam_b = getattr(a, "family", "clip"), getattr(b, "family", "clip")
    if fam_a != fam_b or type(a) is not type(b) or type(a.vision) is not type(b.vision) \
            or type(a.text) is not type(b.text):
        return [f"family: {fam_a} ({type(a).__name__}) vs {fam_b} ({type(b).__name__})"]
    diffs = []
    for field in ("embed_dim", "quick_gelu", "layer_norm_eps"):
        if getattr(a, field) != getattr(b, field):
            diffs.append(f"{field}: {getattr(a, field)} vs {getattr(b, field)}")
    for tower in ("vision", "text"):
        for f in dataclasses.fields(getattr(a, tower)):
            if f.name in ("eot_token_id", "sot_token_id"):
                continue
            x, y = getattr(getattr(a, tower), f.name), getattr(getattr(b, tower), f.name)
            if x != y:
                diffs.append(f"{tower}.{f.name}: {x} vs {y}")
    return diffs


def match_registered(config: CLIPConfig, prefer: str | None = None) -> str | None:
    """Name of a registered architecture identical to ``config`` in shape and activation,
    or None. ``config.name`` wins if it matches, then names starting with ``prefer``
    (``"ViT-B-32"`` -> ``"ViT-B-32-quickgelu"``), then registry order (OpenAI names first).
    """
    family = getattr(config, "family", "clip")
    names = [n for n in list_architectures()
             if getattr(get_config(n), "family", "clip") == family
             and not _architecture_diff(get_config(n), config)]
    if config.name in names:
        return config.name
    for n in names:
        if prefer and n.startswith(prefer):
            return n
    return names[0] if names else None


# ----------------------------------------------------------------------------------------
# Native format
# ----------------------------------------------------------------------------------------


def save_native(path: str, config: CLIPConfig, params: Params,
                metadata: Mapping[str, Any] | None = None) -> str:
    """Write params + config (any model family) as one safetensors file readable without torch.

    Tensors are the flattened Flax params with ``"/"``-joined paths
    (``visual/conv1/kernel``), float32. The safetensors metadata holds ``format``
    (``"crossgap_jax.clip"``), ``format_version``, ``config`` (JSON of
    :meth:`CLIPConfig.to_dict`) and ``metadata`` (JSON of ``metadata``, e.g. provenance).
    The write is atomic (temporary file, then rename).

    Returns:
        ``path``.
    """
    import flax.traverse_util as traverse_util
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(params, sep="/")
    # np.array(..., order="C"), not np.ascontiguousarray: the latter turns 0-d into (1,).
    tensors = {k: np.array(v, dtype=np.float32, order="C") for k, v in flat.items()}
    meta = {"format": NATIVE_FORMAT, "format_version": NATIVE_VERSION,
            "config": json.dumps(config.to_dict()),
            "metadata": json.dumps(dict(metadata or {}), default=str)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return path


def _check_tree(flat: Mapping[str, np.ndarray], config: CLIPConfig, source: str) -> None:
    import flax.traverse_util as traverse_util

    from crossgap_jax.models.families import family_of

    want = {k: tuple(v.shape) for k, v in
            traverse_util.flatten_dict(family_of(config).param_shapes(config), sep="/").items()}
    got = {k: tuple(v.shape) for k, v in flat.items()}
    problems = [f"{k}: file {got[k]} vs model {want[k]}" for k in sorted(set(want) & set(got))
                if got[k] != want[k]]
    problems += [f"missing {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
    if problems:
        raise CheckpointError(f"{source} does not fit architecture {config.name!r}:\n  "
                              + "\n  ".join(problems))


def is_native(path: str) -> bool:
    """Whether ``path`` is a file written by :func:`save_native`."""
    if not os.path.isfile(path):
        return False
    try:
        return (sniff_format(path) == "safetensors"
                and _safetensors_metadata(path).get("format") == NATIVE_FORMAT)
    except (OSError, ValueError):
        return False


def load_native(path: str) -> tuple[CLIPConfig, Params, dict[str, Any]]:
    """Read a :func:`save_native` file: ``(config, params (NumPy float32), info)``.

    ``info["metadata"]`` is the ``metadata`` given to :func:`save_native`. Torch-free.
    """
    import flax.traverse_util as traverse_util

    if sniff_format(path) != "safetensors":
        raise CheckpointError(f"{path} is not a safetensors file")
    flat, meta = read_safetensors(path)
    if meta.get("format") != NATIVE_FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not in the native format "
                              f"(metadata format={meta.get('format')!r}); use load_checkpoint")
    if meta.get("format_version") != NATIVE_VERSION:
        raise CheckpointError(f"{path}: native format version {meta.get('format_version')!r} "
                              f"is not supported (this version reads {NATIVE_VERSION!r})")
    from crossgap_jax.models.families import family_module

    cfg = json.loads(meta["config"])
    config = family_module(cfg.get("family", "clip")).CONFIG_CLASS.from_dict(cfg)
    _check_tree(flat, config, path)
    params = traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in flat.items()},
                                          sep="/")
    info = {"source": path, "path": path, "format": "native", "layout": "native",
            "sha256": None, "metadata": json.loads(meta.get("metadata", "{}"))}
    return config, params, info


# ----------------------------------------------------------------------------------------
# Resolution: name / path / hub id -> files -> (config, params, info)
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Loaded:
    """What reading a source produced, before it meets the requested architecture."""

    sd: dict[str, np.ndarray] | None  # PyTorch-layout state dict (None for native)
    fmt: str
    paths: list[str]
    declared: CLIPConfig | None = None  # config stated by the files, if any
    declared_by: str | None = None
    open_clip: bool = False  # open_clip-style file (gelu default when nothing declares)
    native: tuple | None = None  # (config, params, info) for native files
    extra: dict = dataclasses.field(default_factory=dict)


def _hub_sha256(path: str) -> str | None:
    """The sha256 of an LFS file in the Hugging Face cache is its blob's name."""
    real = os.path.realpath(path)
    blob = os.path.basename(real)
    if os.path.basename(os.path.dirname(real)) == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    return None


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _hf_mean_std(folder_or_file: str | None) -> tuple[tuple, tuple]:
    if folder_or_file and os.path.isfile(folder_or_file):
        pre = _read_json(folder_or_file)
        return (tuple(pre.get("image_mean", OPENAI_MEAN)), tuple(pre.get("image_std", OPENAI_STD)))
    return OPENAI_MEAN, OPENAI_STD


def _read_file(path: str, allow_pickle: bool) -> _Loaded:
    """A single weights file; a sibling HF ``config.json`` / ``open_clip_config.json`` is
    used when present."""
    kind = sniff_format(path)
    if kind == "safetensors":
        if _safetensors_metadata(path).get("format") == NATIVE_FORMAT:
            cfg, params, info = load_native(path)
            return _Loaded(None, "native", [path], cfg, path, native=(cfg, params, info))
    base = os.path.basename(path)
    folder = os.path.dirname(os.path.abspath(path))
    if base.endswith(".index.json"):
        sd, paths = _read_index(path)
        fmt = "sharded-" + ("safetensors" if ".safetensors" in base else "torch-state-dict")
        wrapped = False
    else:
        sd, fmt, wrapped = read_state_dict(path, allow_pickle=allow_pickle)
        paths = [path]
    # open_clip files: its hub filenames, or a training checkpoint ({"state_dict": ...},
    # DDP "module." prefixes).
    open_clip = (base.startswith("open_clip") or wrapped
                 or any(k.startswith("module.") for k in sd))
    loaded = _Loaded(sd, fmt, paths, open_clip=open_clip)
    layout = convert.detect_layout(convert.strip_prefixes(sd))
    if layout == "hf" and os.path.isfile(os.path.join(folder, "config.json")):
        mean, std = _hf_mean_std(os.path.join(folder, "preprocessor_config.json"))
        loaded.declared = config_from_hf(_read_json(os.path.join(folder, "config.json")),
                                         mean=mean, std=std)
        loaded.declared_by = os.path.join(folder, "config.json")
    elif loaded.open_clip and os.path.isfile(os.path.join(folder, "open_clip_config.json")):
        loaded.declared = config_from_open_clip(
            _read_json(os.path.join(folder, "open_clip_config.json")))
        loaded.declared_by = os.path.join(folder, "open_clip_config.json")
    return loaded


def _read_directory(folder: str, allow_pickle: bool) -> _Loaded:
    """A HF ``CLIPModel`` directory (``save_pretrained``) or an open_clip hub snapshot."""
    has = lambda f: os.path.isfile(os.path.join(folder, f))
    natives = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")
                     and sniff_format(os.path.join(folder, f)) == "safetensors"
                     and _safetensors_metadata(os.path.join(folder, f)).get("format")
                     == NATIVE_FORMAT)
    if len(natives) == 1:
        return _read_file(os.path.join(folder, natives[0]), allow_pickle)
    order = []
    if has("config.json"):
        order += [f for f in _HF_WEIGHT_FILES if f.endswith(".safetensors")
                  or f.endswith("safetensors.index.json")]
    if has("open_clip_config.json"):
        order.append("open_clip_model.safetensors")
    if has("config.json"):
        order += ["pytorch_model.bin", "pytorch_model.bin.index.json"]
    order.append("open_clip_pytorch_model.bin")
    for f in order:
        if has(f):
            return _read_file(os.path.join(folder, f), allow_pickle)
    listing = ", ".join(sorted(os.listdir(folder))[:20]) or "(empty)"
    raise CheckpointNotFoundError(
        f"directory {folder} holds no CLIP weights: expected a transformers CLIPModel "
        f"(config.json + model.safetensors / pytorch_model.bin / sharded index), open_clip "
        f"files ({', '.join(_OPEN_CLIP_WEIGHT_FILES)}) or a native .safetensors; found: "
        f"{listing}", target=folder)


def _read_hf_hub(repo: str, allow_pickle: bool) -> _Loaded:
    """A transformers ``CLIPModel`` repo on the hub (an open_clip-only repo is passed on to
    :func:`_read_open_clip_hub`)."""
    try:
        found = _hub_fetch(repo, ("config.json",), required=False,
                           then=("model.safetensors or pytorch_model.bin",))
    except CheckpointNotFoundError:
        # Unreachable hub: an open_clip repo may still be in the cache.
        if _hub_fetch(repo, ("open_clip_config.json",), optional=True) is not None:
            return _read_open_clip_hub(repo, allow_pickle)
        raise
    if found is None:
        if _hub_fetch(repo, ("open_clip_config.json",), optional=True) is not None:
            return _read_open_clip_hub(repo, allow_pickle)
        raise CheckpointNotFoundError(f"hub repo {repo!r} has neither config.json (transformers) "
                                      f"nor open_clip_config.json (open_clip)",
                                      repo_id=_hub_split(repo)[0])
    cfg_path = found[1]
    filename, path = _hub_fetch(repo, _HF_WEIGHT_FILES)
    pre = _hub_fetch(repo, ("preprocessor_config.json",), optional=True)
    mean, std = _hf_mean_std(pre[1] if pre else None)
    if filename.endswith(".index.json"):
        sd, paths = _read_index(path, fetch=lambda s: _hub_fetch(repo, (s,))[1])
        fmt = "sharded-" + ("safetensors" if ".safetensors" in filename else "torch-state-dict")
    else:
        sd, fmt, _ = read_state_dict(path, allow_pickle=allow_pickle)
        paths = [path]
    return _Loaded(sd, fmt, paths, config_from_hf(_read_json(cfg_path), mean=mean, std=std),
                   f"{repo}/config.json", extra={"origin": "hf-hub", "repo_id": repo})


def _read_open_clip_hub(repo: str, allow_pickle: bool) -> _Loaded:
    found = _hub_fetch(repo, ("open_clip_config.json",), required=False,
                       then=(" or ".join(_OPEN_CLIP_WEIGHT_FILES),))
    _, path = _hub_fetch(repo, _OPEN_CLIP_WEIGHT_FILES)
    sd, fmt, _ = read_state_dict(path, allow_pickle=allow_pickle)
    declared = config_from_open_clip(_read_json(found[1])) if found else None
    return _Loaded(sd, fmt, [path], declared, f"{repo}/open_clip_config.json" if found else None,
                   open_clip=True, extra={"origin": "open_clip-hub", "repo_id": repo})


def _read_source(source: str, *, allow_pickle: bool) -> _Loaded:
    """Any source string except pretrained tags."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        loaded = _read_directory(path, allow_pickle)
        loaded.extra.setdefault("origin", "local")
        return loaded
    if os.path.isfile(path):
        loaded = _read_file(path, allow_pickle)
        loaded.extra.setdefault("origin", "local")
        return loaded
    if source.startswith("hf-hub:"):
        return _read_open_clip_hub(source[len("hf-hub:"):], allow_pickle)
    if _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        try:
            return _read_hf_hub(source, allow_pickle)
        except CheckpointNotFoundError as e:
            hint = (f" ({source!r} is not a local path either; known architecture names: "
                    f"{', '.join(list_architectures())})")
            raise CheckpointNotFoundError(str(e) + hint, repo_id=e.repo_id,
                                          filenames=e.filenames, target=e.target) from e
    raise CheckpointNotFoundError(f"no such checkpoint file or directory: {source}",
                                  target=path)


def _resolve_named(arch: str, checkpoint: str | None) -> tuple[str, str] | None:
    """``(kind, value)`` for a pretrained tag: ``("openai", arch)`` or ``("source", hub)``.
    None when ``checkpoint`` is a path / hub id to read as is."""
    if checkpoint is None or checkpoint == "openai":
        # No checkpoint: OpenAI's release only for OpenAI's own names ("ViT-B/32");
        # open_clip names ("ViT-B-32") have several releases, so the tag is required.
        if arch in OPENAI_RELEASES or (checkpoint == "openai" and arch in _OPEN_CLIP_TO_OPENAI):
            return "openai", arch
        tags = [t for a, t in list_pretrained() if a == arch]
        if checkpoint == "openai":
            raise CheckpointError(f"OpenAI released no weights for {arch!r}; OpenAI releases: "
                                  f"{', '.join(OPENAI_RELEASES)}")
        raise CheckpointError(
            f"no default checkpoint for architecture {arch!r}: pass checkpoint= a file, a "
            f"directory, a hub id" + (f", or a pretrained tag ({', '.join(tags)})" if tags else
                                       " (use create_clip for random weights)"))
    if (arch, checkpoint) in PRETRAINED:
        return "source", PRETRAINED[(arch, checkpoint)]
    if re.fullmatch(r"[a-z0-9_]+", checkpoint) and not os.path.exists(checkpoint):
        tags = [t for a, t in list_pretrained() if a == arch]
        archs = [a for a, t in PRETRAINED if t == checkpoint]
        where = (f"it exists for {', '.join(archs)}, not {arch!r}" if archs
                 else "not a known tag, file or directory")
        raise CheckpointError(f"pretrained tag {checkpoint!r}: {where}. Tags for {arch!r}: "
                              f"{', '.join(tags) or '(none)'}")
    return None


def load_checkpoint(name_or_path: str | CLIPConfig, checkpoint: str | None = None, *,
                    quick_gelu: bool | None = None, allow_pickle: bool = False,
                    cache_dir: str | None = None, progress: bool = True
                    ) -> tuple[CLIPConfig, Params, dict[str, Any]]:
    """Load CLIP weights as a Flax params pytree.

    Args:
        name_or_path: a registered architecture name (``"ViT-B/32"``, ``"ViT-L-14"``) or
            :class:`CLIPConfig`, whose shapes the checkpoint must fit; or, with
            ``checkpoint=None``, a file / directory / hub id / ``"hf-hub:<repo>"`` whose
            architecture is inferred from its config file or tensor shapes.
        checkpoint: with an architecture name: a file, directory, hub id,
            ``"hf-hub:<repo>"``, ``"openai"`` or an open_clip pretrained tag
            (``"datacomp_xl_s13b_b90k"``); None means OpenAI's release for OpenAI names.
        quick_gelu: force the activation (``x * sigmoid(1.702 x)`` when True, erf GELU when
            False). Needed only for bare open_clip state dicts of ``-quickgelu`` models,
            whose activation no file states (their default here is GELU; OpenAI-layout
            ``.pt`` files default to quick GELU).
        allow_pickle: allow ``torch.load(weights_only=False)`` (runs pickled code; only for
            trusted files).
        cache_dir: where OpenAI release files are downloaded (default
            :func:`default_cache_dir`). Hub files always use the Hugging Face cache.
        progress: show a download progress bar.

    Returns:
        ``(config, params, info)``: params are float32 ``jax.Array`` leaves; ``info`` has
        ``source`` (what was asked for), ``path`` (file(s) read), ``format``
        (``openai-torchscript``, ``torch-state-dict``, ``safetensors``,
        ``sharded-safetensors``, ``sharded-torch-state-dict``, ``native``), ``layout``
        (``openai``, ``hf``, ``native``), ``origin`` (``local``, ``openai-url``,
        ``hf-hub``, ``open_clip-hub``), ``sha256`` (verified or from the hub cache; None
        for other local files), ``checkpoint_dtype``, ``config_source`` and
        ``activation_source``.

    Raises:
        KeyError: an unknown architecture name (the message lists the known ones).
        CheckpointNotFoundError: the weights are not local and cannot be fetched; the
            message says what to fetch and where to put it.
        CheckpointError: the file is unreadable, or does not fit the architecture
            (mismatched shapes are named; missing / unexpected tensors listed).
    """
    import jax

    arch_config: CLIPConfig | None = None
    if isinstance(name_or_path, CLIPConfig):
        arch_config = name_or_path
    elif name_or_path in list_architectures():
        arch_config = get_config(name_or_path)
    elif checkpoint is not None:
        get_config(name_or_path)  # raises KeyError listing the known architectures
    if arch_config is not None and getattr(arch_config, "family", "clip") != "clip":
        raise CheckpointError(
            f"{arch_config.name!r} is a {arch_config.family!r} model: load it with "
            f"crossgap_jax.models.load_clip (which uses that family's checkpoint reader)")
    source_label = checkpoint if arch_config is not None else name_or_path

    extra: dict[str, Any] = {}
    if arch_config is not None:
        resolved = _resolve_named(arch_config.name, checkpoint)
        if resolved and resolved[0] == "openai":
            path = fetch_openai(resolved[1], cache_dir, progress=progress)
            loaded = _read_file(path, allow_pickle)
            loaded.extra.update(origin="openai-url", url=openai_release(resolved[1])[0],
                                sha256=openai_release(resolved[1])[1])
            source_label = checkpoint or "openai"
            if not arch_config.quick_gelu and quick_gelu is None:
                # open_clip's "openai" weights always run with OpenAI's activation.
                qg = arch_config.replace(quick_gelu=True)
                arch_config = qg.replace(name=match_registered(qg, prefer=arch_config.name)
                                         or qg.name)
        else:
            src = resolved[1] if resolved else checkpoint
            loaded = _read_source(src, allow_pickle=allow_pickle)
    else:
        loaded = _read_source(name_or_path, allow_pickle=allow_pickle)
    extra.update(loaded.extra)

    # --- decide the config ---------------------------------------------------------------
    sd_layout = ("native" if loaded.native is not None
                 else convert.detect_layout(convert.strip_prefixes(loaded.sd)))
    declared = loaded.declared
    if arch_config is not None:
        config, config_source = arch_config, f"architecture {arch_config.name!r}"
        activation_source = config_source
        if declared is not None:
            diffs = _architecture_diff(config, declared)
            if quick_gelu is not None:
                diffs = [d for d in diffs if not d.startswith("quick_gelu")]
            if diffs:
                raise CheckpointError(
                    f"{loaded.declared_by} declares a different architecture than "
                    f"{config.name!r} (requested vs file): {'; '.join(diffs)}. Load it without "
                    f"an architecture name to use the file's, or pass quick_gelu= for an "
                    f"activation-only difference.")
            config = config.replace(mean=declared.mean, std=declared.std)
    elif declared is not None:
        config = declared.replace(name=match_registered(declared) or declared.name)
        config_source = activation_source = loaded.declared_by
    else:
        assumed_quick = not loaded.open_clip
        try:
            config = convert.infer_config(loaded.sd, name="custom", quick_gelu=assumed_quick,
                                          layout=sd_layout)
        except KeyError as e:
            raise CheckpointError(f"{source_label}: cannot infer the architecture, tensor "
                                  f"{e} is missing") from e
        config = config.replace(name=match_registered(config) or "custom")
        config_source = "tensor shapes"
        activation_source = ("default for open_clip files (GELU)" if loaded.open_clip
                             else "default for OpenAI / HF layouts (quick GELU)")
        if quick_gelu is None:
            warnings.warn(
                f"{source_label}: the checkpoint does not state its activation; assuming "
                f"{'quick GELU' if assumed_quick else 'exact GELU'} ({activation_source}). "
                f"Pass quick_gelu= to choose.", stacklevel=2)
    if quick_gelu is not None:
        activation_source = "argument"
        if bool(quick_gelu) != config.quick_gelu:
            renamed = config.replace(quick_gelu=bool(quick_gelu))
            config = renamed.replace(name=match_registered(renamed, prefer=config.name)
                                     or f"{config.name}-quickgelu={bool(quick_gelu)}")

    # --- convert ------------------------------------------------------------------------
    if loaded.native is not None:
        _, params, ninfo = loaded.native
        _check_tree({"/".join(k): v for k, v in _flatten(params).items()}, config,
                    loaded.paths[0])
        extra["metadata"] = ninfo["metadata"]
        dtype = "float32"
    else:
        params = convert.state_dict_to_params(loaded.sd, config, layout=sd_layout)
        dtypes = sorted({str(v.dtype) for v in loaded.sd.values()
                         if np.issubdtype(v.dtype, np.floating)})
        dtype = dtypes[0] if len(dtypes) == 1 else ",".join(dtypes)
    # device_put copies: jnp.asarray would alias the NumPy buffers on CPU, and those may be
    # memory maps of the checkpoint file (torch.load(mmap=True)).
    params = jax.tree.map(lambda x: jax.device_put(np.asarray(x, np.float32)), params)

    sha = extra.pop("sha256", None)
    if sha is None and len(loaded.paths) == 1:
        sha = _hub_sha256(loaded.paths[0])
    info = {
        "source": source_label,
        "path": loaded.paths[0] if len(loaded.paths) == 1 else list(loaded.paths),
        "format": loaded.fmt,
        "layout": sd_layout,
        "origin": extra.pop("origin", "local"),
        "sha256": sha,
        "checkpoint_dtype": dtype,
        "config_source": config_source,
        "activation_source": activation_source,
        "architecture": config.name,
        **extra,
    }
    return config, params, info


def _flatten(params: Params) -> dict[tuple[str, ...], Any]:
    import flax.traverse_util as traverse_util

    return traverse_util.flatten_dict(params)
