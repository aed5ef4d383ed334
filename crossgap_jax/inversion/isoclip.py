"""Deprecated: IsoCLIP moved to :mod:`crossgap_jax.baselines` (it is not an inversion).

The names that used to live here implemented an automatically chosen "isotropic window"
(``x @ U_k``), which is *not* IsoCLIP; they are re-exported unchanged from
:mod:`crossgap_jax.baselines.window` (our heuristic, feature type ``isotropic-window``).
IsoCLIP as its authors compute it is :mod:`crossgap_jax.baselines.isoclip`
(``isoclip_map``, ``isoclip_features``). Importing this module warns
(``DeprecationWarning``); it will be removed.
"""

from __future__ import annotations

import warnings

from crossgap_jax.baselines.isoclip import (
    preprojection_image_features,
    preprojection_text_features,
)
from crossgap_jax.baselines.window import WindowBasis as IsoCLIPBasis
from crossgap_jax.baselines.window import cross_modal_svd, isotropic_window
from crossgap_jax.baselines.window import window_basis as isoclip_basis
from crossgap_jax.baselines.window import window_basis_for as isoclip_basis_for
from crossgap_jax.baselines.window import window_features as isoclip_features
from crossgap_jax.baselines.window import window_image_features as isoclip_image_features
from crossgap_jax.baselines.window import window_similarity as isoclip_similarity
from crossgap_jax.baselines.window import window_text_features as isoclip_text_features

warnings.warn(
    "crossgap_jax.inversion.isoclip is deprecated: its functions are the 'isotropic-window' "
    "heuristic (now crossgap_jax.baselines.window), not IsoCLIP; IsoCLIP as its authors "
    "compute it is crossgap_jax.baselines.isoclip",
    DeprecationWarning, stacklevel=2)


def projection_matrices(clip):
    """``(W_i, W_t)`` of a bundle (``clip.projection_matrices()``; biases: see
    :func:`crossgap_jax.baselines.isoclip.projection_heads`)."""
    return clip.projection_matrices()


__all__ = [
    "IsoCLIPBasis", "cross_modal_svd", "isoclip_basis", "isoclip_basis_for", "isoclip_features",
    "isoclip_image_features", "isoclip_similarity", "isoclip_text_features",
    "isotropic_window", "preprojection_image_features", "preprojection_text_features",
    "projection_matrices",
]
