"""Flax CLIP-family towers, the architecture registry, checkpoint loading, tokenizers.

Layout: one folder per family (``clip/``, ``siglip/``, ``slip/``, ``dinov2/``, ``dinov3/``: model,
converter / reader, tokenizer), one :class:`Family` entry per family in :data:`FAMILIES`,
shared blocks in ``layers/``, checkpoint I/O and the one loader in ``checkpoint/``.

This face exports every name other packages use; import from here
(``from crossgap_jax.models import load_clip, family_of``), not from the sub-modules.
Loading: :func:`load_clip` (a bundle) / :func:`load` (``(config, params, info)``), one
pipeline for every family (:mod:`crossgap_jax.models.checkpoint.loader`).
"""

from crossgap_jax.models.bundle import CLIP, create_clip, load_clip, resolve_dtype
from crossgap_jax.models.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ChecksumError,
)
from crossgap_jax.models.checkpoint.fingerprint import model_fingerprint, params_fingerprint
from crossgap_jax.models.checkpoint.hub import HUB_ID, default_cache_dir
from crossgap_jax.models.checkpoint.loader import detect_family, load
from crossgap_jax.models.checkpoint.native import is_native, load_native, native_config, save_native
from crossgap_jax.models.checkpoint.pretrained import (
    OPENAI_RELEASES,
    list_pretrained,
    openai_release,
    resolve_clip_tag,
)
from crossgap_jax.models.clip.tokenizer import CLIPTokenizer, eot_indices, get_tokenizer
from crossgap_jax.models.configs import (
    ARCHITECTURE_ALIASES,
    OPENAI_MEAN,
    OPENAI_STD,
    SMALL_ARCHITECTURES,
    CLIPConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_aliases,
    list_architectures,
    register_architecture,
    register_small_architectures,
    vit_config,
)
from crossgap_jax.models.families import (
    FAMILIES,
    Family,
    family_module,
    family_of,
    has_text_tower,
    register_families,
    register_family,
    require_text_tower,
)
from crossgap_jax.models.inputs import check_text_inputs

__all__ = [
    "has_text_tower", "require_text_tower",
    "detect_family",
    "SMALL_ARCHITECTURES", "register_small_architectures",
    "ARCHITECTURE_ALIASES", "CLIP", "CLIPConfig", "CLIPTokenizer", "CheckpointError",
    "CheckpointNotFoundError", "ChecksumError", "HUB_ID", "OPENAI_MEAN",
    "OPENAI_RELEASES", "OPENAI_STD", "TextConfig", "VisionConfig",
    "check_text_inputs", "create_clip", "default_cache_dir", "eot_indices",
    "family_module", "family_of", "get_config", "get_tokenizer", "is_native", "list_aliases",
    "list_architectures", "list_pretrained", "load", "load_clip",
    "load_native", "model_fingerprint", "native_config", "openai_release",
    "params_fingerprint", "register_architecture", "register_family",
    "FAMILIES", "Family",
    "resolve_clip_tag", "resolve_dtype", "save_native", "vit_config",
]

# The built-in families and their architectures (each model module's ARCHITECTURES).
register_families()
