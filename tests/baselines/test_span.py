"""Herzog & Wang's span projection against an independent torch computation (torch.cov,
torch.linalg.eigh, as their cvpr26-suppl/span_projection.py), and the shipped class list."""

from __future__ import annotations

import fnmatch
import hashlib
import pathlib

import numpy as np
import pytest
import torch

from crossgap_jax.baselines import (
    IMAGENET_CLASSES_FILE,
    IMAGENET_CLASSES_SOURCE,
    read_span_classes,
    span_basis,
    span_project,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


def _torch_span(t: np.ndarray, reduce: int) -> np.ndarray:
    """The eigenvectors of the d // reduce largest eigenvalues of torch.cov(T^T), as rows."""
    tt = torch.tensor(t, dtype=torch.float64)
    vals, vecs = torch.linalg.eigh(torch.cov(tt.T))
    order = torch.sort(vals, descending=True).indices[: t.shape[1] // reduce]
    return vecs[:, order].T.numpy()


@pytest.mark.parametrize("n,d,reduce,seed", [(1000, 32, 2, 0), (300, 64, 2, 1), (200, 48, 3, 2),
                                             (50, 16, 1, 3), (120, 40, 8, 4), (80, 7, 2, 5)])
def test_span_matches_torch(n, d, reduce, seed):
    rng = np.random.default_rng(seed)
    # anisotropic text features with a mean offset (the covariance must centre them)
    t = rng.normal(size=(n, d)) * np.linspace(3.0, 0.2, d) + rng.normal(size=d) * 5
    x = rng.normal(size=(9, d)) * 2 + 1
    u = span_basis(t, reduce)
    ref = _torch_span(t, reduce)
    assert u.shape == ref.shape == (d // reduce, d)
    np.testing.assert_allclose(u @ u.T, np.eye(d // reduce), atol=1e-10)
    # same directions in the same order (eigenvalues distinct here), signs free
    np.testing.assert_allclose(np.abs(np.sum(u * ref, axis=1)), 1.0, atol=1e-8)
    # the projection U^T U x of their transform_pca, no centring
    want = (ref.T @ ref @ x.T).T
    np.testing.assert_allclose(span_project(x, u), want, atol=1e-9)
    if reduce == 1:  # the full span: the identity
        np.testing.assert_allclose(span_project(x, u), x, atol=1e-9)


def test_span_bad_input():
    t = np.random.default_rng(0).normal(size=(10, 6))
    for bad in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match="reduce factor must be an integer in 1..6"):
            span_basis(t, bad)
    with pytest.raises(ValueError, match="at least 2 text features"):
        span_basis(t[:1], 2)
    # 3 texts span a 2-d covariance: 3 directions (6 // 2) would be partly arbitrary
    with pytest.raises(ValueError, match="keeps d // 2 = 3 directions, but the covariance of "
                                         "the 3 text features has rank 2: give at least 4"):
        span_basis(t[:3], 2)
    assert span_basis(t[:4], 2).shape == (3, 6)
    with pytest.raises(ValueError, match="NaN or inf"):
        span_basis(np.full((3, 6), np.nan), 2)
    with pytest.raises(ValueError, match="dimension 5 but the span basis 6"):
        span_project(np.ones((2, 5)), span_basis(t, 2))


def test_shipped_imagenet_classes():
    c = read_span_classes()
    raw = pathlib.Path(IMAGENET_CLASSES_FILE).read_bytes()
    assert len(c.names) == 1000
    assert c.names[:3] == ("tench", "goldfish", "great white shark")
    assert c.names[-1] == "toilet tissue" and c.names.count("crane") == 2
    assert c.sha256 == hashlib.sha256(raw).hexdigest() == (
        "1f386e0d1cb6e28b9c2dac651c3dea6801e98ad1b41a14ce6bb1a093d72069f5")
    assert c.source == IMAGENET_CLASSES_SOURCE
    # their code: response.text.strip().split('\n')
    assert list(c.names) == raw.decode().strip().split("\n")
    notice = pathlib.Path(IMAGENET_CLASSES_FILE).with_name("imagenet_classes_NOTICE.txt")
    text = notice.read_text()
    assert "pytorch/hub" in text and "BSD 3-Clause License" in text and c.sha256 in text
    # both files are package data
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["crossgap_jax"]
    for f in ("assets/imagenet_classes.txt", "assets/imagenet_classes_NOTICE.txt"):
        assert any(fnmatch.fnmatch(f, p) for p in patterns), f


def test_span_classes_file(tmp_path):
    p = tmp_path / "names.txt"
    p.write_bytes("\ufeffred fox\r\nsea lion\r\ncafé\r\n".encode())
    c = read_span_classes(p)
    assert c.names == ("red fox", "sea lion", "café")
    assert c.source == str(p) and c.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    p.write_text("a\nb\n\nc\n")
    with pytest.raises(ValueError, match=r"names.txt: line 3 is blank"):
        read_span_classes(p)
    p.write_text("a\n   \n")
    with pytest.raises(ValueError, match="line 2 is blank"):
        read_span_classes(p)
    for empty in ("", "\n", "\ufeff"):
        p.write_text(empty)
        with pytest.raises(ValueError, match=r"names.txt: the file is empty; give one"):
            read_span_classes(p)
    p.write_text("only\n")
    with pytest.raises(ValueError, match="1 name"):
        read_span_classes(p)
    p.write_bytes(b"a\n\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_span_classes(p)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_span_classes(tmp_path / "missing.txt")
