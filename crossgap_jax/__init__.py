"""crossgap_jax: modality inversion (OTI/OVI) exposing CLIP's intra-modal misalignment, in JAX.

Curated public API (everything else is reachable through the sub-packages)::

    import crossgap_jax as cg
    clip = cg.load_clip("ViT-B/32", checkpoint=PATH_OR_HUB_ID)
    res = cg.oti(clip, image_features)            # cg.ovi(clip, text_features)
    cg.retrieval.evaluate(res.features, gallery, (q_labels, g_labels))
"""

from crossgap_jax import baselines, data, inversion, models, retrieval
from crossgap_jax.inversion import InversionResult, oti, oti_fn, ovi, ovi_fn
from crossgap_jax.models import (
    CLIP,
    CLIPConfig,
    create_clip,
    get_config,
    list_architectures,
    load_clip,
)

__version__ = "0.1.0"

__all__ = [
    "CLIP",
    "CLIPConfig",
    "InversionResult",
    "baselines",
    "create_clip",
    "data",
    "get_config",
    "inversion",
    "list_architectures",
    "load_clip",
    "models",
    "oti",
    "oti_fn",
    "ovi",
    "ovi_fn",
    "retrieval",
]
