"""crossgap_jax: modality inversion (OTI/OVI) exposing CLIP's intra-modal misalignment, in JAX.

Curated public API (everything else is reachable through the sub-packages)::

    import crossgap_jax as cg
    clip = cg.load_clip("ViT-B/32", checkpoint=PATH_OR_HUB_ID)
    res = cg.oti(clip, image_features)            # cg.ovi(clip, text_features)
    cg.retrieval.evaluate(res.features, gallery, (q_labels, g_labels))
"""

import lazy_loader

# The faces load on first use (SPEC 1 lazy loading: ``import crossgap_jax`` does not import
# JAX, so the command line answers an argument error at once); ``cg.oti`` etc. work as usual.
__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submodules=["baselines", "data", "inversion", "models", "retrieval"],
    submod_attrs={
        "inversion": ["InversionResult", "oti", "oti_fn", "ovi", "ovi_fn"],
        "models": ["CLIP", "CLIPConfig", "create_clip", "get_config", "list_architectures",
                   "load_clip"],
    },
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
