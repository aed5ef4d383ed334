"""Training-free baselines compared with modality inversion (not inversions themselves).

- :mod:`crossgap_jax.baselines.isoclip`: IsoCLIP exactly as its authors compute it
  (``normalize(x_i U_k U_k^T P_i)`` / ``normalize(x_t V_k V_k^T P_t)``).
- :mod:`crossgap_jax.baselines.window`: the ``isotropic-window`` map, our own heuristic
  (not IsoCLIP).
- :mod:`crossgap_jax.baselines.pca`: PCA projection and per-modality mean-centering (fitted
  on a fit set, e.g. the gallery; also the map of I0T's and GR-CLIP's post-hoc gap removal).
- :mod:`crossgap_jax.baselines.span`: Herzog & Wang's span projection (``U^T U x``, ``U``
  from the covariance of the ImageNet class-name text features).

Nearest-class-mean prototypes and the L2 normalisations the maps use live with the metrics
(:mod:`crossgap_jax.retrieval.ncm`, :mod:`crossgap_jax.retrieval.normalize`). See
docs/baselines.md.

The names load on first use (``lazy_loader``): the command line reads a span class list
(:mod:`~crossgap_jax.baselines.span`, JAX-free) before JAX is imported.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "isoclip": ["IsoCLIPMap", "ProjectionHead", "inter_modal_svd", "isoclip_features",
                    "isoclip_image_features", "isoclip_map", "isoclip_map_for",
                    "isoclip_similarity", "isoclip_text_features", "kept_components",
                    "projection_heads"],
        "pca": ["CenterMap", "PCAMap", "center_features", "fit_center", "fit_pca",
                "max_pca_components", "pca_features"],
        "span": ["DEFAULT_SPAN_REDUCE", "IMAGENET_CLASSES_FILE", "IMAGENET_CLASSES_SOURCE",
                 "SpanClasses", "read_span_classes", "span_basis", "span_project"],
        "window": ["WindowBasis", "isotropic_window", "window_basis", "window_basis_for",
                   "window_features"],
    },
)
