"""Training-free baselines compared with modality inversion (not inversions themselves).

- :mod:`crossgap_jax.baselines.isoclip`: IsoCLIP exactly as its authors compute it
  (``normalize(x_i U_k U_k^T P_i)`` / ``normalize(x_t V_k V_k^T P_t)``).
- :mod:`crossgap_jax.baselines.window`: the ``isotropic-window`` map, our own heuristic
  (not IsoCLIP).
- :mod:`crossgap_jax.baselines.pca`: PCA projection and per-modality mean-centering (fitted
  on a fit set, e.g. the gallery).

Nearest-class-mean prototypes and the L2 normalisations the maps use live with the metrics
(:mod:`crossgap_jax.retrieval.ncm`, :mod:`crossgap_jax.retrieval.normalize`). See
docs/baselines.md.
"""

from crossgap_jax.baselines.isoclip import (
    IsoCLIPMap,
    ProjectionHead,
    inter_modal_svd,
    isoclip_features,
    isoclip_image_features,
    isoclip_map,
    isoclip_map_for,
    isoclip_similarity,
    isoclip_text_features,
    kept_components,
    projection_heads,
)
from crossgap_jax.baselines.pca import (
    CenterMap,
    PCAMap,
    center_features,
    fit_center,
    fit_pca,
    max_pca_components,
    pca_features,
)
from crossgap_jax.baselines.span import DEFAULT_SPAN_REDUCE, span_basis, span_project
from crossgap_jax.baselines.window import (
    WindowBasis,
    isotropic_window,
    window_basis,
    window_basis_for,
    window_features,
)

__all__ = [
    "isoclip_image_features", "isoclip_text_features", "window_basis_for", "window_features",
    "max_pca_components",
    "CenterMap", "PCAMap", "center_features", "fit_center", "fit_pca", "pca_features",
    "IsoCLIPMap", "ProjectionHead", "WindowBasis", "inter_modal_svd",
    "isoclip_features", "isoclip_map", "isoclip_map_for", "isoclip_similarity",
    "isotropic_window", "kept_components",
    "projection_heads", "window_basis",
    "DEFAULT_SPAN_REDUCE", "span_basis", "span_project",
]
