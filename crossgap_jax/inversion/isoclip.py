"""IsoCLIP: training-free intra-modal alignment from the projection matrices.

A training-free alternative to modality inversion (no per-query optimisation). With
pre-projection features ``x_i`` (image, ``d_i``) and ``x_t`` (text, ``d_t``) and the
projections ``W_i (d_i, D)``, ``W_t (d_t, D)``, the model's inter-modal similarity is the
bilinear form ``x_i^T M x_t`` with ``M = W_i W_t^T`` (``W_i^T W_t`` in the column
convention of the paper). Its SVD ``M = U diag(s) V^T`` gives paired directions: ``U[:, j]``
in image space is aligned with ``V[:, j]`` in text space with strength ``s_j``. IsoCLIP
keeps only the part of that spectrum that is approximately isotropic (singular values
within a bounded ratio of each other) and computes intra-modal similarities there:
``z_i = normalize(x_i @ U_k diag(s_k)^p)``, ``z_t = normalize(x_t @ V_k diag(s_k)^p)``.

What "approximately isotropic" means here (our reading of the method's one-paragraph
description, not the authors' code): the longest contiguous run of the descending
spectrum whose condition number ``s_first / s_last`` is at most ``tol``, among the
directions with at least ``floor`` (1%) of the largest singular value
(:func:`isotropic_window`); ``components=(start, stop)`` overrides it. ``power`` ``p``
weights the kept directions: 0 (default) treats them alike (isotropic), 0.5 makes
``z_i . z_t`` the model's own inter-modal similarity restricted to the subspace.

Everything is a pure function of arrays except the bundle helpers at the end, which
compute pre-projection features with a model's family (``encode_image_preproj`` /
``encode_text_preproj`` / ``projection_matrices`` hooks; for the CLIP family, the
outputs of ``ln_post`` / ``ln_final`` captured from the Flax module).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class IsoCLIPBasis(NamedTuple):
    """The kept subspace and how features map into it.

    Attributes:
        image_map: ``(d_i, k)`` pre-projection image feature -> subspace.
        text_map: ``(d_t, k)`` pre-projection text feature -> subspace.
        singular_values: ``(r,)`` the whole spectrum of ``W_i W_t^T``, descending.
        start: first kept component (index into ``singular_values``).
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
    """SVD of ``M = W_i W_t^T`` (float64 NumPy).

    Args:
        w_image: ``(d_i, D)`` image projection (pre-projection -> joint space).
        w_text: ``(d_t, D)`` text projection.

    Returns:
        ``(U (d_i, r), s (r,) descending, V (d_t, r))`` with ``r = min(d_i, d_t, D)`` and
        ``M = U diag(s) V^T`` up to the discarded null space.
    """
    wi, wt = np.asarray(w_image, np.float64), np.asarray(w_text, np.float64)
    if wi.ndim != 2 or wt.ndim != 2 or wi.shape[1] != wt.shape[1]:
        raise ValueError(f"projections must be (d_i, D) and (d_t, D), got {wi.shape}, "
                         f"{wt.shape}")
    u, s, vt = np.linalg.svd(wi @ wt.T, full_matrices=False)
    r = min(wi.shape[0], wt.shape[0], wi.shape[1])
    return u[:, :r], s[:r], vt[:r].T


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


def isoclip_basis(w_image: Any, w_text: Any, *, tol: float = 2.0,
                  components: tuple[int, int] | None = None, power: float = 0.0,
                  floor: float = 1e-2) -> IsoCLIPBasis:
    """The IsoCLIP subspace of a pair of projections.

    Args:
        w_image: ``(d_i, D)`` image projection.
        w_text: ``(d_t, D)`` text projection.
        tol: condition-number bound of the kept window (:func:`isotropic_window`).
        components: explicit ``(start, stop)`` window instead of the automatic one.
        power: weight ``s^power`` on each kept direction (0: isotropic).
        floor: relative singular-value floor of the automatic window.

    Returns:
        :class:`IsoCLIPBasis`.
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
    return IsoCLIPBasis(
        image_map=(u[:, start:stop] * w).astype(np.float32),
        text_map=(v[:, start:stop] * w).astype(np.float32),
        singular_values=s, start=start, stop=stop, power=float(power),
    )


def isoclip_features(x: Any, mapping: Any, normalize: bool = True) -> jax.Array:
    """``(N, d)`` pre-projection features @ ``(d, k)`` map -> ``(N, k)`` (L2-normalised)."""
    z = jnp.asarray(x, jnp.float32) @ jnp.asarray(mapping, jnp.float32)
    if normalize:
        z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return z


def isoclip_similarity(queries: Any, gallery: Any, mapping_q: Any, mapping_g: Any | None = None
                       ) -> jax.Array:
    """Cosine similarities ``(Nq, Ng)`` in the IsoCLIP subspace.

    Args:
        queries: ``(Nq, d_q)`` pre-projection features.
        gallery: ``(Ng, d_g)`` pre-projection features.
        mapping_q: the queries' map (``basis.image_map`` or ``basis.text_map``).
        mapping_g: the gallery's map (default: ``mapping_q``, the intra-modal case).
    """
    zq = isoclip_features(queries, mapping_q)
    zg = isoclip_features(gallery, mapping_q if mapping_g is None else mapping_g)
    return zq @ zg.T


def projection_matrices(clip: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(W_i (d_i, D), W_t (d_t, D))`` of a bundle."""
    return clip.projection_matrices()


def preprojection_image_features(clip: Any, pixels: Any, *, batch_size: int | None = None
                                 ) -> np.ndarray:
    """``(N, H, W, 3)`` preprocessed pixels -> ``(N, d_i)`` features before the projection."""
    return clip.encode_image(pixels, batch_size=batch_size, project=False)


def preprojection_text_features(clip: Any, ids: Any, *, batch_size: int | None = None
                                ) -> np.ndarray:
    """``(N, L)`` token ids -> ``(N, d_t)`` features before the projection."""
    return clip.encode_text(ids, batch_size=batch_size, project=False)


def isoclip_basis_for(clip: Any, **kw: Any) -> IsoCLIPBasis:
    """:func:`isoclip_basis` of a bundle's projections (keyword arguments forwarded)."""
    return isoclip_basis(*projection_matrices(clip), **kw)


def isoclip_image_features(clip: Any, pixels: Any, basis: IsoCLIPBasis | None = None,
                           **kw: Any) -> np.ndarray:
    """``(N, H, W, 3)`` pixels -> ``(N, k)`` L2-normalised IsoCLIP image features."""
    basis = basis or isoclip_basis_for(clip)
    return np.asarray(isoclip_features(preprojection_image_features(clip, pixels, **kw),
                                       basis.image_map))


def isoclip_text_features(clip: Any, ids: Any, basis: IsoCLIPBasis | None = None,
                          **kw: Any) -> np.ndarray:
    """``(N, L)`` token ids -> ``(N, k)`` L2-normalised IsoCLIP text features."""
    basis = basis or isoclip_basis_for(clip)
    return np.asarray(isoclip_features(preprojection_text_features(clip, ids, **kw),
                                       basis.text_map))
