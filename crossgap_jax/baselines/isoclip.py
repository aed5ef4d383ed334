"""IsoCLIP (CVPR 2026), exactly as its authors compute it: a training-free intra-modal map.

Source: the IsoCLIP paper and its reference code (facts in ``PAPER.md``, "IsoCLIP, exactly").
Not an inversion: no per-query optimisation, one SVD per model.

Notation (row vectors, ``x @ P`` as the encoders apply their heads):

- ``x_i (d_i,)``, ``x_t (d_t,)``: the features *before* the projection heads;
- ``P_i (d_i, D)``, ``P_t (d_t, D)``: the heads (OpenAI ``visual.proj`` and
  ``text_projection``). A head with a bias ``b (D,)`` (SigLIP's text ``head``) is used as
  the augmented matrix ``[P; b] (d + 1, D)`` with a constant 1 appended to ``x``, so
  ``[x, 1] @ [P; b] = x @ P + b`` (:func:`augmented_projection`, :func:`append_one`);
- ``P_i P_t^T = U diag(s) V^T`` (``U (d_i, r)``, ``V (d_t, r)``, ``r = min(d_i, d_t)``, ``s``
  descending; dimensions after augmentation);
- ``U_k``, ``V_k``: columns ``k_top .. r - k_bottom - 1`` (the ``k_top`` largest and
  ``k_bottom`` smallest directions dropped).

IsoCLIP features: image ``normalize(x_i U_k U_k^T P_i)``, text ``normalize(x_t V_k V_k^T P_t)``,
compared by cosine similarity. Both are ``D``-dimensional. ``k_top + k_bottom >= r`` keeps
nothing and is an error.

What ``P_i`` / ``P_t`` / the biases are for each family of this package
(:func:`projection_heads`; the pre-projection features are the family hooks
``encode_image_preproj`` / ``encode_text_preproj``):

============  ==================================  =====================================
family        image head ``P_i`` (bias)           text head ``P_t`` (bias)
============  ==================================  =====================================
CLIP          ``visual.proj`` after ``ln_post``   ``text_projection`` after ``ln_final``
(OpenAI and   (none)                              at the EOT token (none)
OpenCLIP)
SigLIP        identity ``(width, D)``: the MAP    ``text_model.head`` kernel after the
              head output *is* the embedding      final LayerNorm at the last position
              (none)                              (bias: ``text_model.head.bias``)
SLIP          ``image_projection`` after the      ``text_projection`` after ``ln_final``
              class token's final norm (none)     at the EOT token (none)
============  ==================================  =====================================

Everything above the "bundle helpers" line is a pure function of arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossgap_jax.models import family_of
from crossgap_jax.retrieval import l2_normalize_traceable

SIDES = ("image", "text")


@dataclasses.dataclass(frozen=True, eq=False)
class ProjectionHead:
    """A linear head ``x -> x @ weight (+ bias)``.

    Attributes:
        weight: ``(d, D)`` pre-projection -> joint space.
        bias: ``(D,)`` or ``None``.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 2:
            raise ValueError(f"a projection weight must be (d, D), got shape {w.shape}")
        if self.bias is not None and np.shape(self.bias) != (w.shape[1],):
            raise ValueError(f"a projection bias must be ({w.shape[1]},) for a {w.shape} "
                             f"weight, got shape {np.shape(self.bias)}")

    @property
    def in_dim(self) -> int:
        return int(np.shape(self.weight)[0])

    @property
    def out_dim(self) -> int:
        return int(np.shape(self.weight)[1])

    def augmented(self) -> np.ndarray:
        """The float64 ``(d (+1), D)`` matrix IsoCLIP factorises (:func:`augmented_projection`)."""
        return augmented_projection(self.weight, self.bias)

    def __call__(self, x: Any) -> jax.Array:
        """``(N, d)`` -> ``(N, D)`` ``x @ weight + bias`` (float32, not normalised)."""
        x = _check_features(x, self.in_dim, "features")
        z = x @ jnp.asarray(self.weight, jnp.float32)
        return z if self.bias is None else z + jnp.asarray(self.bias, jnp.float32)


def augmented_projection(weight: Any, bias: Any | None = None) -> np.ndarray:
    """``weight (d, D)``, or ``[weight; bias] (d + 1, D)`` when there is a bias (float64).

    With :func:`append_one` on the features, ``[x, 1] @ [P; b] = x @ P + b``: IsoCLIP's rule
    for heads with a bias (PAPER.md).
    """
    w = np.asarray(weight, np.float64)
    if w.ndim != 2:
        raise ValueError(f"a projection weight must be (d, D), got shape {w.shape}")
    if bias is None:
        return w
    b = np.asarray(bias, np.float64)
    if b.shape != (w.shape[1],):
        raise ValueError(f"a projection bias must be ({w.shape[1]},), got shape {b.shape}")
    return np.concatenate([w, b[None, :]], axis=0)


def append_one(x: Any) -> jax.Array:
    """``(N, d)`` -> ``(N, d + 1)`` with a constant 1 in the last column."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1), x.dtype)], axis=-1)


def inter_modal_svd(p_image: Any, p_text: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD of the inter-modal operator ``P_i P_t^T`` (float64 NumPy).

    Args:
        p_image: ``(d_i, D)`` image head (augmented when it has a bias).
        p_text: ``(d_t, D)`` text head (augmented when it has a bias).

    Returns:
        ``(U (d_i, r), s (r,) descending, V (d_t, r))``, ``r = min(d_i, d_t)``,
        ``P_i P_t^T = U diag(s) V^T``. When ``D < r`` the last ``r - D`` singular values are
        zero (their directions are an arbitrary basis of the null space).

    Raises:
        ValueError: not 2-D, or the two heads map to different ``D``.
    """
    pi, pt = np.asarray(p_image, np.float64), np.asarray(p_text, np.float64)
    if pi.ndim != 2 or pt.ndim != 2 or pi.shape[1] != pt.shape[1]:
        raise ValueError(f"projections must be (d_i, D) and (d_t, D) with the same D, got "
                         f"{pi.shape} and {pt.shape}")
    u, s, vt = np.linalg.svd(pi @ pt.T, full_matrices=False)
    return u, s, vt.T


def kept_components(rank: int, k_top: int, k_bottom: int) -> slice:
    """The columns IsoCLIP keeps: ``k_top .. rank - k_bottom - 1``.

    Raises:
        ValueError: a negative or non-integer ``k``, or ``k_top + k_bottom >= rank`` (nothing
            left; the message names ``rank`` and the largest allowed sum ``rank - 1``).
    """
    for name, k in (("k_top", k_top), ("k_bottom", k_bottom)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"IsoCLIP {name} must be a non-negative integer, got {k!r}")
    if k_top + k_bottom >= rank:
        raise ValueError(
            f"IsoCLIP keeps no direction: k_top + k_bottom = {k_top} + {k_bottom} = "
            f"{k_top + k_bottom} but r = min(d_i, d_t) = {rank}; k_top + k_bottom must be at "
            f"most {rank - 1} (pass a smaller --isoclip-k TOP,BOTTOM)")
    return slice(int(k_top), int(rank - k_bottom))


@dataclasses.dataclass(frozen=True, eq=False)
class IsoCLIPMap:
    """One side's IsoCLIP map ``x -> normalize([x, 1?] @ matrix)``.

    Attributes:
        side: ``"image"`` (``matrix = U_k U_k^T P_i``) or ``"text"`` (``V_k V_k^T P_t``).
        matrix: ``(d (+1), D)`` float32; the extra row when the head has a bias.
        append_one: whether a constant 1 is appended to the features first.
        k_top: largest directions dropped.
        k_bottom: smallest directions dropped.
        singular_values: ``(r,)`` the whole spectrum of ``P_i P_t^T``, descending.
    """

    side: str
    matrix: np.ndarray
    append_one: bool
    k_top: int
    k_bottom: int
    singular_values: np.ndarray

    @property
    def rank(self) -> int:
        """``r = min(d_i, d_t)`` (augmented dimensions)."""
        return len(self.singular_values)

    @property
    def num_kept(self) -> int:
        return self.rank - self.k_top - self.k_bottom

    @property
    def in_dim(self) -> int:
        """Dimension of the pre-projection features this map takes (before the 1)."""
        return self.matrix.shape[0] - int(self.append_one)

    def info(self) -> dict:
        """JSON-able summary (recorded with results)."""
        return {"side": self.side, "k_top": self.k_top, "k_bottom": self.k_bottom,
                "rank": self.rank, "num_kept": self.num_kept, "bias_row": self.append_one}

    def __call__(self, x: Any) -> jax.Array:
        return isoclip_features(x, self)


def isoclip_map(image_head: ProjectionHead, text_head: ProjectionHead, side: str, k_top: int,
                k_bottom: int, *, svd: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                ) -> IsoCLIPMap:
    """IsoCLIP's map for one side.

    Args:
        image_head: ``P_i`` (and its bias, if any).
        text_head: ``P_t`` (and its bias, if any).
        side: ``"image"``: ``U_k U_k^T P_i``; ``"text"``: ``V_k V_k^T P_t``.
        k_top: number of largest singular directions dropped.
        k_bottom: number of smallest singular directions dropped.
        svd: a precomputed :func:`inter_modal_svd` of the augmented heads (saves the SVD
            when both sides are built).

    Returns:
        :class:`IsoCLIPMap`.

    Raises:
        ValueError: unknown side, bad ``k`` (:func:`kept_components`), mismatched heads.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    pi, pt = image_head.augmented(), text_head.augmented()
    u, s, v = svd if svd is not None else inter_modal_svd(pi, pt)
    keep = kept_components(len(s), k_top, k_bottom)
    basis, head = (u, pi) if side == "image" else (v, pt)
    bk = basis[:, keep]
    matrix = bk @ (bk.T @ head)
    bias = (image_head if side == "image" else text_head).bias
    return IsoCLIPMap(side=side, matrix=matrix.astype(np.float32), append_one=bias is not None,
                      k_top=int(k_top), k_bottom=int(k_bottom), singular_values=s)


def _check_features(x: Any, dim: int, what: str) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must be (N, {dim}) pre-projection features, got shape "
                         f"{tuple(x.shape)} (projected features cannot be mapped)")
    return x


def isoclip_features(x: Any, m: IsoCLIPMap, normalize: bool = True) -> jax.Array:
    """``(N, d)`` pre-projection features -> ``(N, D)`` IsoCLIP features.

    ``normalize([x, 1?] @ m.matrix)`` (L2, rows; zero rows stay zero).

    Raises:
        ValueError: ``x`` is not ``(N, m.in_dim)``.
    """
    x = _check_features(x, m.in_dim, f"{m.side} features")
    if m.append_one:
        x = append_one(x)
    z = x @ jnp.asarray(m.matrix, jnp.float32)
    if normalize:
        z = l2_normalize_traceable(z)
    return z


def isoclip_similarity(queries: Any, gallery: Any, query_map: IsoCLIPMap,
                       gallery_map: IsoCLIPMap | None = None) -> jax.Array:
    """Cosine similarities ``(Nq, Ng)`` of IsoCLIP features (``gallery_map`` defaults to
    ``query_map``: the intra-modal case)."""
    zq = isoclip_features(queries, query_map)
    zg = isoclip_features(gallery, query_map if gallery_map is None else gallery_map)
    return zq @ zg.T


# --- bundle helpers ------------------------------------------------------------------------
def projection_heads(clip: Any) -> tuple[ProjectionHead, ProjectionHead]:
    """``(image head, text head)`` of a loaded bundle (see the table in the module docstring).

    Weights come from the family's ``projection_matrices`` hook, biases from its optional
    ``projection_biases`` hook (SigLIP: the text head's bias).
    """

    wi, wt = clip.projection_matrices()
    hook = getattr(family_of(clip.config), "projection_biases", None)
    bi, bt = hook(clip.params, clip.config) if hook is not None else (None, None)

    def _np(b):
        return None if b is None else np.asarray(b, np.float32)

    return ProjectionHead(wi, _np(bi)), ProjectionHead(wt, _np(bt))


def isoclip_map_for(clip: Any, side: str, k_top: int, k_bottom: int) -> IsoCLIPMap:
    """:func:`isoclip_map` of a bundle's heads."""
    return isoclip_map(*projection_heads(clip), side, k_top, k_bottom)


def preprojection_image_features(clip: Any, pixels: Any, *, batch_size: int | None = None
                                 ) -> np.ndarray:
    """``(N, H, W, 3)`` preprocessed pixels -> ``(N, d_i)`` features before the image head."""
    return clip.encode_image(pixels, batch_size=batch_size, project=False)


def preprojection_text_features(clip: Any, ids: Any, *, batch_size: int | None = None
                                ) -> np.ndarray:
    """``(N, L)`` token ids -> ``(N, d_t)`` features before the text head."""
    return clip.encode_text(ids, batch_size=batch_size, project=False)


def _check_side(m: IsoCLIPMap, side: str) -> None:
    if m.side != side:
        raise ValueError(f"this is IsoCLIP's {m.side} map; {side} features need the {side} "
                         f"map (isoclip_map(..., side={side!r}, ...))")


def isoclip_image_features(clip: Any, pixels: Any, m: IsoCLIPMap, **kw: Any) -> np.ndarray:
    """``(N, H, W, 3)`` pixels -> ``(N, D)`` IsoCLIP image features (``m.side == "image"``)."""
    _check_side(m, "image")
    return np.asarray(isoclip_features(preprojection_image_features(clip, pixels, **kw), m))


def isoclip_text_features(clip: Any, ids: Any, m: IsoCLIPMap, **kw: Any) -> np.ndarray:
    """``(N, L)`` token ids -> ``(N, D)`` IsoCLIP text features (``m.side == "text"``)."""
    _check_side(m, "text")
    return np.asarray(isoclip_features(preprojection_text_features(clip, ids, **kw), m))


__all__ = [
    "IsoCLIPMap", "ProjectionHead", "SIDES", "append_one", "augmented_projection",
    "inter_modal_svd", "isoclip_features", "isoclip_image_features", "isoclip_map",
    "isoclip_map_for", "isoclip_similarity", "isoclip_text_features", "kept_components",
    "preprojection_image_features", "preprojection_text_features", "projection_heads",
]
