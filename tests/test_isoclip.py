"""IsoCLIP on constructed projections with known aligned subspaces, and the bundle helpers
(pre-projection features of every family)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crossgap_jax.inversion.isoclip import (
    cross_modal_svd,
    isoclip_basis,
    isoclip_basis_for,
    isoclip_features,
    isoclip_image_features,
    isoclip_similarity,
    isoclip_text_features,
    isotropic_window,
    preprojection_image_features,
    preprojection_text_features,
    projection_matrices,
)

RNG = np.random.default_rng(0)
# A spectrum with 3 dominant directions, a flat (isotropic up to +-5%) block of 20 and a
# tail of 9 near-null ones.
S_TRUE = np.sort(np.concatenate([[10.0, 8.0, 6.0], 1 + 0.05 * RNG.uniform(-1, 1, 20),
                                 np.full(9, 0.01)]))[::-1]
D, DI, DT = 32, 48, 40


def _orth(n, k, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))
    return q


U_TRUE, V_TRUE, Q = _orth(DI, D, 1), _orth(DT, D, 2), _orth(D, D, 3)
# W_i W_t^T = U sqrt(S) Q Q^T sqrt(S) V^T = U S V^T.
W_I = (U_TRUE * np.sqrt(S_TRUE)) @ Q
W_T = (V_TRUE * np.sqrt(S_TRUE)) @ Q


def test_svd_recovers_spectrum():
    u, s, v = cross_modal_svd(W_I, W_T)
    np.testing.assert_allclose(s, S_TRUE, rtol=1e-10)
    np.testing.assert_allclose((u * s) @ v.T, W_I @ W_T.T, atol=1e-10)


def test_isotropic_window_finds_flat_block():
    assert isotropic_window(S_TRUE, tol=1.5) == (3, 23)
    # Distinct values: a single one; the flat near-null tail (0.01 = 0.1% of the largest)
    # is below the default floor and never chosen.
    assert isotropic_window(S_TRUE, tol=1.0) == (0, 1)
    assert isotropic_window(S_TRUE, tol=1.0, floor=0.0) == (23, 32)
    # Everything within a factor 1000 is one window (the spectrum spans 10 / 0.01 = 1000).
    assert isotropic_window(S_TRUE, tol=1000.0, floor=0.0) == (0, 32)
    assert isotropic_window(S_TRUE, tol=1000.0) == (0, 23)
    # Ties keep the window with the larger singular values.
    assert isotropic_window([4.0, 3.0, 2.0, 1.5], tol=1.4) == (0, 2)
    # Zero singular values are never kept.
    assert isotropic_window([1.0, 1.0, 0.0, 0.0], tol=10.0) == (0, 2)
    with pytest.raises(ValueError, match="tol"):
        isotropic_window(S_TRUE, tol=0.5)
    with pytest.raises(ValueError, match="descending"):
        isotropic_window([1.0, 2.0])
    with pytest.raises(ValueError, match="raise tol"):
        isotropic_window([8.0, 4.0, 2.0, 1.0], tol=1.5, min_components=2)


def test_basis_spans_the_aligned_isotropic_subspace():
    b = isoclip_basis(W_I, W_T, tol=1.5)
    assert (b.start, b.stop, b.num_components) == (3, 23, 20)
    assert b.condition_number <= 1.5
    # power 0: the maps are orthonormal bases of U[:, 3:23] and V[:, 3:23] (up to signs and
    # rotations within a block of equal singular values): compare projectors.
    for m, true in ((b.image_map, U_TRUE), (b.text_map, V_TRUE)):
        np.testing.assert_allclose(m.T @ m, np.eye(20), atol=1e-5)
        np.testing.assert_allclose(m @ m.T, true[:, 3:23] @ true[:, 3:23].T, atol=1e-5)


def test_features_ignore_the_discarded_directions():
    b = isoclip_basis(W_I, W_T, tol=1.5)
    kept = U_TRUE[:, 3:23] @ RNG.standard_normal(20)
    # Two images that differ only along the dominant and the null directions.
    x1 = (kept + U_TRUE[:, :3] @ RNG.standard_normal(3) * 50
          + U_TRUE[:, 23:] @ RNG.standard_normal(9))
    x2 = kept - U_TRUE[:, :3] @ RNG.standard_normal(3) * 50
    # ... and a component orthogonal to U entirely (the image space is larger than D).
    perp = np.linalg.qr(np.concatenate([U_TRUE, RNG.standard_normal((DI, 1))], 1))[0][:, -1]
    x3 = kept + 7 * perp
    sim = np.asarray(isoclip_similarity(np.stack([x1, x2, x3]), np.stack([x1, x2, x3]),
                                        b.image_map))
    np.testing.assert_allclose(sim, np.ones((3, 3)), atol=1e-5)
    # Whereas in the joint space they differ.
    f = np.stack([x1, x2]) @ W_I
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    assert f[0] @ f[1] < 0.99
    z = np.asarray(isoclip_features(np.stack([x1, x2]), b.image_map))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)


def test_power_half_restricts_the_inter_modal_form():
    b = isoclip_basis(W_I, W_T, components=(3, 23), power=0.5)
    xi, xt = RNG.standard_normal((4, DI)), RNG.standard_normal((5, DT))
    zi = np.asarray(isoclip_features(xi, b.image_map, normalize=False))
    zt = np.asarray(isoclip_features(xt, b.text_map, normalize=False))
    want = xi @ (U_TRUE[:, 3:23] * S_TRUE[3:23]) @ V_TRUE[:, 3:23].T @ xt.T
    np.testing.assert_allclose(zi @ zt.T, want, rtol=1e-4, atol=1e-5)
    # All components: the model's own inter-modal similarity (before normalisation).
    full = isoclip_basis(W_I, W_T, components=(0, 32), power=0.5)
    zi = np.asarray(isoclip_features(xi, full.image_map, normalize=False))
    zt = np.asarray(isoclip_features(xt, full.text_map, normalize=False))
    np.testing.assert_allclose(zi @ zt.T, (xi @ W_I) @ (xt @ W_T).T, rtol=1e-4, atol=1e-4)


def test_basis_argument_errors():
    with pytest.raises(ValueError, match="components"):
        isoclip_basis(W_I, W_T, components=(5, 40))
    with pytest.raises(ValueError, match="projections"):
        isoclip_basis(W_I, W_T[:, :10])


# --- bundle helpers --------------------------------------------------------------------
@pytest.fixture(scope="module", params=["tiny", "siglip-tiny", "slip-tiny"])
def bundle(request, tmp_path_factory):
    from crossgap_jax.models import create_clip

    b = create_clip(request.param, seed=2)
    if b.config.family == "siglip":
        pytest.importorskip("sentencepiece")
        import family_factories as F

        sp = F.train_spiece(str(tmp_path_factory.mktemp("sp") / "spiece.model"))
        b = dataclasses.replace(b, tokenizer_file=sp)
    return b


def test_preprojection_features_project_to_the_embeddings(bundle):
    s = bundle.config.vision.image_size
    pixels = np.random.default_rng(3).standard_normal((3, s, s, 3)).astype(np.float32)
    ids = bundle.tokenize(["a dog", "two cats on a bench", "a red car"])
    wi, wt = projection_matrices(bundle)
    xi = preprojection_image_features(bundle, pixels)
    xt = preprojection_text_features(bundle, ids)
    assert xi.shape == (3, wi.shape[0]) and xt.shape == (3, wt.shape[0])
    np.testing.assert_allclose(xi @ wi, bundle.encode_image(pixels), rtol=1e-4, atol=1e-5)
    text = xt @ wt
    if bundle.config.family == "siglip":  # the text head has a bias
        text = text + np.asarray(bundle.params["text_model"]["head"]["bias"])
    np.testing.assert_allclose(text, bundle.encode_text(ids), rtol=1e-4, atol=1e-5)


def test_bundle_features(bundle):
    basis = isoclip_basis_for(bundle, tol=1e9, floor=0.0)  # every non-zero direction
    s = bundle.config.vision.image_size
    pixels = np.random.default_rng(4).standard_normal((2, s, s, 3)).astype(np.float32)
    zi = isoclip_image_features(bundle, pixels, basis)
    zt = isoclip_text_features(bundle, bundle.tokenize(["a dog", "a cat"]), basis)
    assert zi.shape == (2, basis.num_components) and zt.shape == (2, basis.num_components)
    np.testing.assert_allclose(np.linalg.norm(zi, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(zt, axis=1), 1.0, rtol=1e-5)
