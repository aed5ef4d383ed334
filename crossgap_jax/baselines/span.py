"""Herzog & Wang's span projection: project features onto the main span of text features.

Herzog & Wang (CVPR 2026, ``cvpr26-suppl/span_projection.py``; facts in PAPER.md, "Herzog &
Wang, exactly")::

    T  = text features, (n, d)            the model's unnormalised encode_text outputs
    C  = cov(T)                           centred, divided by n - 1 (torch.cov's convention)
    U  = eigenvectors of the d // r largest eigenvalues of C, as rows, (d // r, d)
    x -> U^T U x                          no centring; consumers L2-normalise afterwards

``r`` is the reduce factor (theirs: 2). Only the subspace ``U^T U`` matters: the sign and order
of the eigenvectors do not change the features. Fitting runs in float64 NumPy (theirs: float32
``torch.cov`` / ``torch.linalg.eigh``; the kept subspace agrees to float32 precision unless
the ``d // r``-th and next eigenvalues tie).

The text features of their retrieval script are the model's ``encode_text`` of the raw
ImageNet class names of pytorch/hub's ``imagenet_classes.txt``, shipped here as
``crossgap_jax/assets/imagenet_classes.txt`` (:func:`read_span_classes`; licence notice
beside it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

from crossgap_jax.data import open_text
from crossgap_jax.retrieval import features_numpy

#: The shipped class list (pytorch/hub ``imagenet_classes.txt``, unchanged) and its notice.
IMAGENET_CLASSES_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "assets", "imagenet_classes.txt")
IMAGENET_CLASSES_SOURCE = "imagenet (pytorch/hub imagenet_classes.txt, shipped)"

#: Herzog & Wang's default reduce factor: keep ``d // 2`` directions.
DEFAULT_SPAN_REDUCE = 2


def span_basis(text_features: Any, reduce: int = DEFAULT_SPAN_REDUCE) -> np.ndarray:
    """The span basis ``U``: eigenvectors of the text features' covariance, as rows.

    Args:
        text_features: ``(n, d)`` text embeddings (unnormalised ``encode_text`` outputs in
            Herzog & Wang's retrieval script), ``n >= 2``.
        reduce: keep ``d // reduce`` directions (the largest eigenvalues); ``>= 1``.

    Returns:
        ``(d // reduce, d)`` float64, orthonormal rows ordered by decreasing eigenvalue.

    Raises:
        ValueError: not a finite non-empty matrix, fewer than 2 rows, ``reduce`` outside
            ``1 .. d``, or a covariance of rank below ``d // reduce`` (fewer than
            ``d // reduce + 1`` distinct texts: the basis would not be determined).
    """
    t = features_numpy(text_features, "text_features", np.float64)
    n, d = t.shape
    if n < 2:
        raise ValueError(f"the span needs at least 2 text features for a covariance, got {n}")
    integer = isinstance(reduce, (int, np.integer)) and not isinstance(reduce, bool)
    if not integer or not 1 <= reduce <= d:
        raise ValueError(f"span reduce factor must be an integer in 1..{d}, got {reduce!r}")
    cov = np.cov(t, rowvar=False, ddof=1)
    eigvals, eigvecs = np.linalg.eigh(cov)          # ascending eigenvalues
    keep = d // int(reduce)
    rank = int(np.sum(eigvals > max(eigvals[-1], 0.0) * d * np.finfo(np.float64).eps))
    if rank < keep:  # the last kept directions would be an arbitrary basis of the null space
        raise ValueError(f"the span keeps d // {reduce} = {keep} directions, but the "
                         f"covariance of the {n} text features has rank {rank}: give at least "
                         f"{keep + 1} distinct class names (or a larger span reduce factor)")
    return np.ascontiguousarray(eigvecs[:, ::-1][:, :keep].T)


def span_project(x: Any, basis: Any) -> np.ndarray:
    """``U^T U x`` for each row ``x`` of ``x`` (no centring, no normalisation).

    Args:
        x: ``(N, d)`` features.
        basis: ``(k, d)`` rows from :func:`span_basis`.

    Returns:
        ``(N, d)`` float64 projected features.

    Raises:
        ValueError: shapes disagree or values are not finite.
    """
    a = features_numpy(x, "features", np.float64)
    u = features_numpy(basis, "span basis", np.float64)
    if a.shape[1] != u.shape[1]:
        raise ValueError(f"features have dimension {a.shape[1]} but the span basis "
                         f"{u.shape[1]}: fit the span with the same model")
    return (a @ u.T) @ u


@dataclasses.dataclass(frozen=True)
class SpanClasses:
    """The class names whose text features span the projection.

    Attributes:
        names: the names, one per line of the file, in file order (raw: no template, no
            ``_`` replacement).
        source: :data:`IMAGENET_CLASSES_SOURCE` for the shipped list, else the file's
            absolute path.
        sha256: sha256 of the file's bytes (``sha256sum FILE`` gives the same).
    """

    names: tuple[str, ...]
    source: str
    sha256: str

    def info(self) -> dict:
        return {"classes": self.source, "classes_sha256": self.sha256,
                "num_classes": len(self.names)}


def read_span_classes(path: str | os.PathLike | None = None) -> SpanClasses:
    """The span's class names: ``path`` (one name per line, UTF-8, a byte-order mark
    dropped; the line ends ``\n`` / ``\r\n`` are not part of a name, a last line without
    one is fine), or the shipped ImageNet list when ``path`` is None.

    Raises:
        FileNotFoundError: no such file (named).
        ValueError: not UTF-8, an empty file, a blank line (named by number), or fewer
            than 2 names.
    """
    file = IMAGENET_CLASSES_FILE if path is None else os.path.abspath(
        os.path.expanduser(os.fspath(path)))
    if not os.path.isfile(file):
        raise FileNotFoundError(f"span class list {file}: no such file (--span-classes takes "
                                "a text file with one class name per line)")
    with open(file, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    try:
        with open_text(file, newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"span class list {file}: not UTF-8 text ({e.reason} at byte "
                         f"{e.start})") from None
    if not text.strip():
        raise ValueError(f"span class list {file}: the file is empty; give one class name "
                         "per line")
    text = text[:-1] if text.endswith("\n") else text
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"span class list {file}: line {i} is blank; give one class "
                             "name per line, without empty lines")
    if len(lines) < 2:
        raise ValueError(f"span class list {file}: {len(lines)} name(s); the span's "
                         "covariance needs at least 2")
    source = IMAGENET_CLASSES_SOURCE if path is None else file
    return SpanClasses(tuple(lines), source, digest)
