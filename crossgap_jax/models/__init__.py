"""Flax CLIP-family towers, the architecture registry, checkpoint loading, tokenizers.

Layout: one folder per family (``clip/``, ``siglip/``, ``slip/``, ``dinov2/``, ``dinov3/``: model,
converter / reader, tokenizer), one :class:`Family` entry per family in :data:`FAMILIES`,
shared blocks in ``layers/``, checkpoint I/O and the one loader in ``checkpoint/``.

This face exports every name other packages use; import from here
(``from crossgap_jax.models import load_clip, family_of``), not from the sub-modules.
Loading: :func:`load_clip` (a bundle) / :func:`load` (``(config, params, info)``), one
pipeline for every family (:mod:`crossgap_jax.models.checkpoint.loader`).

The names load on first use (``lazy_loader``), and a family's model module on the first
architecture lookup (:func:`get_config`, :func:`list_architectures`) or
:func:`family_of`: importing the face imports no model module.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "bundle": ["CLIP", "create_clip", "load_clip", "resolve_dtype"],
        "checkpoint.errors": ["CheckpointError", "CheckpointNotFoundError", "ChecksumError"],
        "checkpoint.fingerprint": ["model_fingerprint", "params_fingerprint"],
        "checkpoint.hub": ["HUB_ID", "default_cache_dir"],
        "checkpoint.loader": ["detect_family", "load"],
        "checkpoint.native": ["is_native", "load_native", "native_config", "save_native"],
        "checkpoint.pretrained": ["OPENAI_RELEASES", "list_pretrained", "openai_release",
                                  "resolve_clip_tag"],
        "clip.model": ["SMALL_ARCHITECTURES"],
        "clip.tokenizer": ["CLIPTokenizer", "eot_indices", "get_tokenizer"],
        "configs": ["OPENAI_MEAN", "OPENAI_STD", "CLIPConfig", "TextConfig", "VisionConfig",
                    "get_config", "list_aliases", "list_architectures",
                    "register_architecture", "vit_config"],
        "families": ["FAMILIES", "Family", "family_module", "family_of", "has_text_tower",
                     "register_family", "require_text_tower"],
        "inputs": ["check_text_inputs"],
    },
)
