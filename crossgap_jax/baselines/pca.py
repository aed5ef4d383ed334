"""PCA projection and per-modality mean-centering: two training-free baselines.

Both work on the model's own embeddings (the projected features a user gets from
``encode``), not on pre-projection features, and both are fitted on a *fit set* (the
gallery in retrieval, the labelled support set in few-shot classification; see
docs/baselines.md for why and for the alternatives the pipeline exposes).

PCA projection (Herzog & Wang, CVPR 2026, describe "a minimal PCA projection of the image
features"; PAPER.md, "Related work"; the formula below is the textbook PCA, the choices are
ours and are parameters)::

    e   = x / ||x||                       (normalize_input=True; else e = x)
    mu  = mean of e over the fit set
    E - mu = U diag(S) V^T                (thin SVD of the centred fit set, S descending)
    z   = (e - mu) V_k                    V_k: the first k right singular vectors
    z   = z / sqrt(lambda_k)              only with whiten=True, lambda = S^2 / (n - 1)

Mean-centering per modality (the modality-gap removal of Liang et al. 2022, "Mind the
Gap"): ``z = e - mu`` with ``mu`` the mean of ``e`` over that modality's fit set.

Features are returned un-normalised; every consumer in this package compares them by
cosine similarity (retrieval and NCM L2-normalise), so re-normalising the output changes
nothing there. Fitting runs in float64 NumPy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from crossgap_jax.retrieval import features_numpy, l2_normalize


def _prepare(x: Any, normalize_input: bool, name: str) -> np.ndarray:
    a = features_numpy(x, name, np.float64)
    if normalize_input:
        a = l2_normalize(a, name=name)
    return a


@dataclasses.dataclass(frozen=True)
class CenterMap:
    """Mean-centering fitted on one modality's fit set.

    Attributes:
        mean: ``(D,)`` float64 mean of the (normalised) fit features.
        normalize_input: inputs are L2-normalised before subtracting ``mean``.
        num_fit: number of fit samples.
    """

    mean: np.ndarray
    normalize_input: bool = True
    num_fit: int = 0

    def __call__(self, x: Any) -> np.ndarray:
        return center_features(x, self)

    def info(self) -> dict:
        return {"normalize_input": self.normalize_input, "num_fit": self.num_fit}


@dataclasses.dataclass(frozen=True)
class PCAMap:
    """A PCA projection fitted on a fit set.

    Attributes:
        mean: ``(D,)`` float64 mean of the (normalised) fit features.
        components: ``(k, D)`` principal directions (rows, orthonormal, by decreasing
            variance; the sign of each is fixed so its largest-magnitude entry is positive).
        explained_variance: ``(k,)`` variances ``S^2 / (n - 1)`` along them.
        whiten: divide each coordinate by ``sqrt(explained_variance)``.
        normalize_input: inputs are L2-normalised first.
        num_fit: number of fit samples.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    whiten: bool = False
    normalize_input: bool = True
    num_fit: int = 0

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, x: Any) -> np.ndarray:
        return pca_features(x, self)

    def info(self) -> dict:
        return {"k": self.k, "whiten": self.whiten, "normalize_input": self.normalize_input,
                "num_fit": self.num_fit}


def fit_center(x: Any, *, normalize_input: bool = True) -> CenterMap:
    """Fit mean-centering on ``x`` (``(N, D)``, one modality).

    Raises:
        ValueError: not a non-empty finite ``(N, D)`` matrix, or an all-zero row when
            ``normalize_input``.
    """
    e = _prepare(x, normalize_input, "fit features")
    return CenterMap(mean=e.mean(axis=0), normalize_input=normalize_input, num_fit=len(e))


def center_features(x: Any, m: CenterMap) -> np.ndarray:
    """``(N, D)`` -> ``(N, D)`` float32 ``normalize(x) - mean`` (see the module docstring).

    Raises:
        ValueError: bad input or a dimension other than ``len(m.mean)``.
    """
    e = _prepare(x, m.normalize_input, "features")
    if e.shape[1] != m.mean.shape[0]:
        raise ValueError(f"features have dimension {e.shape[1]}, the centering was fitted on "
                         f"{m.mean.shape[0]}")
    return (e - m.mean).astype(np.float32)


def max_pca_components(num_fit: int, dim: int) -> int:
    """The largest ``k`` a fit set of ``num_fit`` samples in ``dim`` dimensions supports:
    ``min(num_fit - 1, dim)`` (centring removes one degree of freedom)."""
    return max(0, min(num_fit - 1, dim))


def fit_pca(x: Any, k: int, *, whiten: bool = False, normalize_input: bool = True) -> PCAMap:
    """Fit a ``k``-component PCA on ``x``.

    Args:
        x: ``(N, D)`` fit features (the gallery, or the support set).
        k: number of principal directions kept, ``1 <= k <= min(N - 1, D)``.
        whiten: scale each coordinate to unit variance on the fit set.
        normalize_input: L2-normalise rows before fitting (and before transforming).

    Returns:
        :class:`PCAMap`.

    Raises:
        ValueError: bad ``x``; ``k`` outside ``[1, min(N - 1, D)]`` (the message gives the
            bound: beyond it the directions are not determined by the data); with
            ``whiten``, a kept direction of zero variance.
    """
    e = _prepare(x, normalize_input, "fit features")
    kmax = max_pca_components(*e.shape)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= kmax:
        raise ValueError(f"PCA k must be an integer in [1, {kmax}] for {e.shape[0]} fit "
                         f"samples of dimension {e.shape[1]} (min(N - 1, D)), got {k!r}")
    mean = e.mean(axis=0)
    _, s, vt = np.linalg.svd(e - mean, full_matrices=False)
    vt = vt[:k]
    # deterministic signs: the largest-magnitude entry of each direction is positive
    flip = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
    vt = vt * flip[:, None]
    var = s[:k] ** 2 / (e.shape[0] - 1)
    if whiten and np.any(var <= np.finfo(np.float64).eps * max(var[0], 1e-300)):
        raise ValueError(f"PCA whitening: a kept direction has zero variance on the fit set "
                         f"(k={k}); lower k")
    return PCAMap(mean=mean, components=vt, explained_variance=var, whiten=bool(whiten),
                  normalize_input=normalize_input, num_fit=int(e.shape[0]))


def pca_features(x: Any, m: PCAMap) -> np.ndarray:
    """``(N, D)`` -> ``(N, k)`` float32 PCA coordinates ``(normalize(x) - mean) V_k``
    (divided by ``sqrt(explained_variance)`` when ``m.whiten``).

    Raises:
        ValueError: bad input or a dimension other than the fitted one.
    """
    e = _prepare(x, m.normalize_input, "features")
    if e.shape[1] != m.mean.shape[0]:
        raise ValueError(f"features have dimension {e.shape[1]}, the PCA was fitted on "
                         f"{m.mean.shape[0]}")
    z = (e - m.mean) @ m.components.T
    if m.whiten:
        z = z / np.sqrt(m.explained_variance)
    return z.astype(np.float32)


__all__ = ["CenterMap", "PCAMap", "center_features", "fit_center", "fit_pca",
           "max_pca_components", "pca_features"]
