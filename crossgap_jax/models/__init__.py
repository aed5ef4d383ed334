"""Flax CLIP towers, architecture registry, checkpoint conversion, tokenizer, preprocessing."""

from crossgap_jax.models.bundle import CLIP, create_clip, load_clip, resolve_dtype
from crossgap_jax.models.configs import (
    CLIPConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_architectures,
    register_architecture,
)
from crossgap_jax.models.preprocess import (
    ImageDecodeError,
    load_image,
    preprocess_image,
    preprocess_images,
)
from crossgap_jax.models.tokenizer import CLIPTokenizer, eot_indices, get_tokenizer

__all__ = [
    "CLIP", "CLIPConfig", "CLIPTokenizer", "ImageDecodeError", "TextConfig", "VisionConfig",
    "create_clip", "eot_indices", "get_config", "get_tokenizer", "list_architectures",
    "load_clip", "load_image", "preprocess_image", "preprocess_images", "register_architecture",
    "resolve_dtype",
]

# Register the SigLIP, SLIP and DINOv2 architectures (their modules call
# register_architecture).
from crossgap_jax.models import dinov2 as _dinov2  # noqa: E402,F401
from crossgap_jax.models import siglip as _siglip  # noqa: E402,F401
from crossgap_jax.models import slip as _slip  # noqa: E402,F401
