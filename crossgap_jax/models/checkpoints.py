"""Pretrained weights: the documented face of checkpoint loading (kept for its import path).

The work is split by job; this module re-exports the public names of each:

==========================  ============================================================
module                      job
==========================  ============================================================
``models.loader``           :func:`load`: the one pipeline, family hook registry
``models.hub``              download cache, offline mode, URL downloads, the HF hub
``models.formats``          file readers: safetensors, torch ``.pt`` / ``.bin``, ``.npz``
``models.native``           our own format (params + architecture config, torch-free)
``models.pretrained``       (architecture, tag) -> hub id / URL / sha256 tables
``models.clip_reader``      the CLIP family's hooks (HF / open_clip / OpenAI sources)
``models.clip_declared``    configs CLIP files declare (``config.json``, open_clip)
``models.fit``              the one fit check (converted params vs the module's shapes)
``models.fingerprint``      the one content fingerprint of a params pytree
``models.errors``           :class:`CheckpointError`, :class:`CheckpointNotFoundError`
==========================  ============================================================

:func:`load_checkpoint` turns a name, a file, a directory or a hub id into
``(config, params, info)`` for any registered family (CLIP, SigLIP, SLIP). Formats,
detected from the file contents: ``openai-torchscript`` (torch), ``torch-state-dict``
(torch), ``safetensors``, ``native`` (:func:`save_native`), sharded HF checkpoints, big_vision
``.npz`` (SigLIP). ``torch`` is imported only for the torch formats.

Nothing is fetched when the network is unavailable or ``HF_HUB_OFFLINE`` /
``CROSSGAP_JAX_OFFLINE`` is set: a missing file raises :class:`CheckpointNotFoundError`,
whose message says which file to fetch (URL, or hub repo and filenames) and where to
put it.
"""

from __future__ import annotations

import urllib.request  # noqa: F401 (tests patch checkpoints.urllib.request.urlopen)
from typing import Any

from crossgap_jax.models.clip_declared import (
    architecture_diff as _architecture_diff,
)
from crossgap_jax.models.clip_declared import (
    config_from_hf,
    config_from_open_clip,
    match_registered,
)
from crossgap_jax.models.configs import CLIPConfig
from crossgap_jax.models.errors import CheckpointError, CheckpointNotFoundError, ChecksumError
from crossgap_jax.models.formats import (
    NATIVE_FORMAT,
    read_safetensors,
    read_state_dict,
    read_torch,
    sniff_format,
)
from crossgap_jax.models.hub import (
    HUB_ID as _HUB_ID,
)
from crossgap_jax.models.hub import (
    OFFLINE_VARS,
    PROBE_TIMEOUT,
    default_cache_dir,
    download_url,
    host_reachable,
    hub_client_offline,
    hub_offline_reason,
    is_offline,
    sha256_file,
)
from crossgap_jax.models.loader import load
from crossgap_jax.models.native import (
    NATIVE_VERSION,
    is_native,
    load_native,
    native_config,
    save_native,
)
from crossgap_jax.models.pretrained import (
    OPENAI_RELEASES,
    PRETRAINED,
    fetch_openai,
    list_pretrained,
    openai_release,
)
from crossgap_jax.models.pretrained import (
    resolve_clip_tag as _resolve_named,
)

Params = Any


def load_checkpoint(name_or_path: str | CLIPConfig, checkpoint: str | None = None, *,
                    pretrained: str | None = None, quick_gelu: bool | None = None,
                    allow_pickle: bool = False, cache_dir: str | None = None,
                    progress: bool = True, tokenizer: str | None = None
                    ) -> tuple[CLIPConfig, Params, dict[str, Any]]:
    """Load weights as a Flax params pytree: :func:`crossgap_jax.models.loader.load`.

    Args:
        name_or_path: a registered architecture name (``"ViT-B/32"``, ``"ViT-L-14"``,
            ``"SigLIP-ViT-B-16"`` or open_clip's ``"ViT-B-16-SigLIP"``) or config, whose
            shapes the checkpoint must fit; or, with no checkpoint, a file / directory /
            hub id / ``"hf-hub:<repo>"`` whose architecture is inferred from its config
            file or tensor shapes.
        checkpoint: with an architecture name: a file, directory, hub id,
            ``"hf-hub:<repo>"``, ``"openai"`` or a pretrained tag
            (``"datacomp_xl_s13b_b90k"``, ``"webli"``, ``"slip"``); None means the
            architecture's default release (OpenAI's for OpenAI names).
        pretrained: open_clip's name for ``checkpoint`` (give one of the two).
        quick_gelu: force the activation (``x * sigmoid(1.702 x)`` when True, erf GELU when
            False). Needed only for bare open_clip state dicts of ``-quickgelu`` models.
        allow_pickle: allow ``torch.load(weights_only=False)`` (runs pickled code; only for
            trusted files).
        cache_dir: where release files are downloaded (default :func:`default_cache_dir`).
            Hub files use the Hugging Face cache.
        progress: show a download progress bar.
        tokenizer: SigLIP's ``spiece.model`` (default: the one beside the checkpoint).

    Returns:
        ``(config, params, info)``: params are float32 ``jax.Array`` leaves; ``info`` has
        ``source``, ``path``, ``format`` (``openai-torchscript``, ``torch-state-dict``,
        ``safetensors``, ``sharded-safetensors``, ``sharded-torch-state-dict``,
        ``native``, ``big_vision-npz``), ``layout``, ``origin`` (``local``,
        ``openai-url``, ``hf-hub``, ``open_clip-hub``, ``url``), ``sha256`` (of the file:
        verified or from the hub cache; None for other local files), ``params_sha256``
        (content fingerprint), ``checkpoint_dtype``, ``config_source`` and
        ``activation_source``.

    Raises:
        KeyError: an unknown architecture name (the message lists the known ones).
        CheckpointNotFoundError: the weights are not local and cannot be fetched; the
            message says what to fetch and where to put it.
        CheckpointError: the file is unreadable, or does not fit the architecture
            (mismatched shapes are named; missing / unexpected tensors listed).
    """
    return load(name_or_path, checkpoint, pretrained=pretrained, quick_gelu=quick_gelu,
                allow_pickle=allow_pickle, cache_dir=cache_dir, progress=progress,
                tokenizer=tokenizer)


__all__ = [
    "NATIVE_FORMAT", "NATIVE_VERSION", "OFFLINE_VARS", "OPENAI_RELEASES", "PRETRAINED",
    "PROBE_TIMEOUT", "CheckpointError", "CheckpointNotFoundError", "ChecksumError",
    "_HUB_ID", "_architecture_diff", "_resolve_named", "config_from_hf",
    "config_from_open_clip", "default_cache_dir", "download_url", "fetch_openai",
    "host_reachable", "hub_client_offline", "hub_offline_reason", "is_native", "is_offline",
    "list_pretrained", "load", "load_checkpoint", "load_native", "match_registered",
    "native_config", "openai_release", "read_safetensors", "read_state_dict", "read_torch",
    "save_native", "sha256_file", "sniff_format",
]
