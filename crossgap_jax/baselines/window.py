"""The ``isotropic-window`` map: OUR heuristic, not IsoCLIP.

Before IsoCLIP's code was available this package read IsoCLIP's one-paragraph description
as: keep the approximately isotropic part of the spectrum of ``M = W_i W_t^T`` and compare
features there, ``z_i = normalize(x_i @ U_k diag(s_k)^p)``, ``z_t = normalize(x_t @ V_k
diag(s_k)^p)``, with the window chosen automatically (:func:`isotropic_window`: the longest
contiguous run of the descending spectrum whose condition number ``s_first / s_last`` is at
most ``tol``, among directions with at least ``floor`` of the largest singular value).
IsoCLIP itself keeps the projection and uses fixed ``(k_top, k_bottom)``
(:mod:`crossgap_jax.baselines.isoclip`); this variant differs in three ways (no projection
after the subspace, an automatic window, no bias row) and is kept only as a named
alternative (feature type ``isotropic-window``). ``power`` ``p``: 0 (default) weighs the
kept directions alike, 0.5 makes ``z_i . z_t`` the model's own inter-modal similarity
restricted to the subspace.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crossgap_jax.baselines.isoclip import (
    inter_modal_svd,
    preprojection_image_features,
    preprojection_text_features,
)
from crossgap_jax.retrieval import l2_normalize_traceable


class WindowBasis(NamedTuple):
    """The kept subspace and how features map into it.

    Attributes:
        image_map: ``(d_i, k)`` pre-projection image feature -> subspace.
        text_map: ``(d_t, k)`` pre-projection text feature -> subspace.
        singular_values: ``(r,)`` spectrum of ``W_i W_t^T``, descending
            (``r = min(d_i, d_t, D)``).
        start: first kept component.
        stop: one past the last kept component.
        power: the weighting exponent ``p``.
    """

    image_map: np.ndarray
    text_map: np.ndarray
    singular_values: np.ndarray
    start: int
    stop: int
    power: float

    @property
    def num_components(self) -> int:
        return self.stop - self.start

    @property
    def condition_number(self) -> float:
        """``s_start / s_{stop-1}`` of the kept window (1 = exactly isotropic)."""
        s = self.singular_values
        return float(s[self.start] / max(s[self.stop - 1], np.finfo(np.float64).tiny))


def cross_modal_svd(w_image: Any, w_text: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~crossgap_jax.baselines.isoclip.inter_modal_svd` truncated to
    ``r = min(d_i, d_t, D)`` (the directions beyond ``D`` have singular value 0)."""
    u, s, v = inter_modal_svd(w_image, w_text)
    r = min(len(s), np.shape(w_image)[1])
    return u[:, :r], s[:r], v[:, :r]


def isotropic_window(singular_values: Any, tol: float = 2.0, min_components: int = 1,
                     floor: float = 1e-2) -> tuple[int, int]:
    """The longest contiguous window of a descending spectrum with ``s[start] / s[stop-1]
    <= tol`` (ties: the window with the larger singular values).

    Directions whose singular value is below ``floor * s[0]`` carry (almost) no
    cross-modal alignment and are never kept, however flat that tail is.

    Args:
        singular_values: ``(r,)`` descending, non-negative.
        tol: the largest allowed condition number of the window (>= 1).
        min_components: raise if the window is shorter.
        floor: relative threshold below which directions are excluded (0 keeps all
            non-zero ones).

    Returns:
        ``(start, stop)``.

    Raises:
        ValueError: ``tol < 1``, a non-descending spectrum, or a window shorter than
            ``min_components``.
    """
    s = np.asarray(singular_values, np.float64)
    if tol < 1:
        raise ValueError(f"tol must be >= 1, got {tol}")
    if s.ndim != 1 or len(s) == 0 or np.any(np.diff(s) > 1e-12 * max(s[0], 1.0)):
        raise ValueError("singular_values must be a non-empty descending vector")
    best = (0, 0)
    start = 0
    for stop in range(1, len(s) + 1):
        last = s[stop - 1]
        if last <= 0 or last < floor * s[0]:  # (near-)null directions are never kept
            start = stop
            continue
        while s[start] > tol * last:  # ends at start = stop - 1 at the latest (tol >= 1)
            start += 1
        if stop - start > best[1] - best[0]:  # strict: ties keep the larger values
            best = (start, stop)
    if best[1] - best[0] < min_components:
        raise ValueError(f"isotropic window has {best[1] - best[0]} components "
                         f"(< {min_components}); raise tol")
    return best


def window_basis(w_image: Any, w_text: Any, *, tol: float = 2.0,
                 components: tuple[int, int] | None = None, power: float = 0.0,
                 floor: float = 1e-2) -> WindowBasis:
    """The isotropic-window subspace of a pair of projections (no biases).

    Args:
        w_image: ``(d_i, D)`` image projection.
        w_text: ``(d_t, D)`` text projection.
        tol: condition-number bound of the kept window (:func:`isotropic_window`).
        components: explicit ``(start, stop)`` window instead of the automatic one.
        power: weight ``s^power`` on each kept direction (0: isotropic).
        floor: relative singular-value floor of the automatic window.

    Raises:
        ValueError: bad projections or ``components`` outside ``0 <= start < stop <= r``.
    """
    u, s, v = cross_modal_svd(w_image, w_text)
    if components is None:
        start, stop = isotropic_window(s, tol, floor=floor)
    else:
        start, stop = int(components[0]), int(components[1])
        if not 0 <= start < stop <= len(s):
            raise ValueError(f"components must satisfy 0 <= start < stop <= {len(s)}, got "
                             f"{components}")
    w = s[start:stop] ** power
    return WindowBasis(
        image_map=(u[:, start:stop] * w).astype(np.float32),
        text_map=(v[:, start:stop] * w).astype(np.float32),
        singular_values=s, start=start, stop=stop, power=float(power),
    )


def window_features(x: Any, mapping: Any, normalize: bool = True) -> jax.Array:
    """``(N, d)`` pre-projection features @ ``(d, k)`` map -> ``(N, k)`` (L2-normalised)."""
    z = jnp.asarray(x, jnp.float32) @ jnp.asarray(mapping, jnp.float32)
    if normalize:
        z = l2_normalize_traceable(z)
    return z


def window_similarity(queries: Any, gallery: Any, mapping_q: Any, mapping_g: Any | None = None
                      ) -> jax.Array:
    """Cosine similarities ``(Nq, Ng)`` in the window subspace (``mapping_g`` defaults to
    ``mapping_q``, the intra-modal case)."""
    zq = window_features(queries, mapping_q)
    zg = window_features(gallery, mapping_q if mapping_g is None else mapping_g)
    return zq @ zg.T


def window_basis_for(clip: Any, **kw: Any) -> WindowBasis:
    """:func:`window_basis` of a bundle's projection weights (keyword arguments forwarded)."""
    return window_basis(*clip.projection_matrices(), **kw)


def window_image_features(clip: Any, pixels: Any, basis: WindowBasis | None = None,
                          **kw: Any) -> np.ndarray:
    """``(N, H, W, 3)`` pixels -> ``(N, k)`` L2-normalised window image features."""
    basis = basis or window_basis_for(clip)
    return np.asarray(window_features(preprojection_image_features(clip, pixels, **kw),
                                      basis.image_map))


def window_text_features(clip: Any, ids: Any, basis: WindowBasis | None = None,
                         **kw: Any) -> np.ndarray:
    """``(N, L)`` token ids -> ``(N, k)`` L2-normalised window text features."""
    basis = basis or window_basis_for(clip)
    return np.asarray(window_features(preprojection_text_features(clip, ids, **kw),
                                      basis.text_map))


__all__ = [
    "WindowBasis", "cross_modal_svd", "isotropic_window", "window_basis", "window_basis_for",
    "window_features", "window_image_features", "window_similarity", "window_text_features",
]
