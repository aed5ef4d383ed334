"""PCA projection, mean-centering and few-shot NCM against independent NumPy / sklearn
computations and brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap_jax.baselines.pca import (
    center_features,
    fit_center,
    fit_pca,
    max_pca_components,
    pca_features,
)
from crossgap_jax.retrieval.fewshot import (
    few_shot_ncm_accuracy,
    few_shot_sweep,
    support_sets,
)


def _data(n=40, d=12, seed=0):
    rng = np.random.default_rng(seed)
    # anisotropic, so the principal directions are well separated
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.2, d) + rng.normal(size=d)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("normalize_input", [True, False])
def test_pca_matches_numpy_svd_and_sklearn(normalize_input):
    from sklearn.decomposition import PCA

    g, q = _data(), _data(7, seed=1)
    m = fit_pca(g, 5, normalize_input=normalize_input)
    gi = _unit(g) if normalize_input else g
    qi = _unit(q) if normalize_input else q
    mu = gi.mean(axis=0)
    _, s, vt = np.linalg.svd(gi - mu, full_matrices=False)
    ref = (qi - mu) @ vt[:5].T
    z = pca_features(q, m)
    # directions are defined up to sign: compare |coordinates| and the sign-fixed version
    signs = np.sign(np.sum(ref * z, axis=0))
    np.testing.assert_allclose(z, ref * signs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.explained_variance, s[:5] ** 2 / (len(g) - 1), rtol=1e-10)
    sk = PCA(n_components=5, svd_solver="full").fit(gi)
    sk_z = sk.transform(qi)
    signs = np.sign(np.sum(sk_z * z, axis=0))
    np.testing.assert_allclose(z, sk_z * signs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.explained_variance, sk.explained_variance_, rtol=1e-8)


def test_pca_whiten_matches_sklearn():
    from sklearn.decomposition import PCA

    g, q = _data(), _data(6, seed=2)
    z = pca_features(q, fit_pca(g, 4, whiten=True))
    sk_z = PCA(n_components=4, whiten=True, svd_solver="full").fit(_unit(g)).transform(_unit(q))
    signs = np.sign(np.sum(sk_z * z, axis=0))
    np.testing.assert_allclose(z, sk_z * signs, rtol=1e-5, atol=1e-6)
    # whitened fit set: unit variance along every kept direction
    np.testing.assert_allclose(pca_features(g, fit_pca(g, 4, whiten=True)).var(0, ddof=1),
                               np.ones(4), rtol=1e-5)


def test_pca_signs_are_deterministic():
    g = _data()
    m = fit_pca(g, 3)
    rows = np.arange(3)
    assert np.all(m.components[rows, np.argmax(np.abs(m.components), axis=1)] > 0)
    np.testing.assert_array_equal(m.components, fit_pca(g.copy(), 3).components)


def test_pca_k_bounds():
    g = _data(5, 12)
    assert max_pca_components(5, 12) == 4
    fit_pca(g, 4)
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match=r"PCA k must be an integer in \[1, 4\]"):
            fit_pca(g, bad)
    with pytest.raises(ValueError, match="fitted on 12"):
        pca_features(np.ones((2, 3)), fit_pca(g, 2))
    with pytest.raises(ValueError, match="zero or non-finite vectors"):
        fit_pca(np.zeros((4, 3)), 1)


def test_center_matches_numpy():
    g, q = _data(), _data(5, seed=3)
    m = fit_center(g)
    np.testing.assert_allclose(center_features(q, m), _unit(q) - _unit(g).mean(0), atol=1e-6)
    raw = fit_center(g, normalize_input=False)
    np.testing.assert_allclose(center_features(q, raw), q - g.mean(0), rtol=1e-5, atol=1e-5)
    # the fit set is centred exactly
    np.testing.assert_allclose(center_features(g, m).mean(0), 0, atol=1e-6)


def test_support_sets_deterministic_and_per_class():
    y = np.array([0, 1, 2] * 6 + [2, 2])
    draws = support_sets(y, (1, 2, 4, 7), seed=7)
    again = support_sets(y, (1, 2, 4, 7), seed=7)
    for k in (1, 2, 4, 7):
        np.testing.assert_array_equal(draws[k], again[k])
        # k per class, with repetition where a class has fewer than k images (0 and 1: 6)
        assert np.bincount(y[draws[k]], minlength=3).tolist() == [k, k, k]
    assert len(set(draws[7][y[draws[7]] == 0].tolist())) <= 6
    # the draws of one seed follow each other: a lone 4-shot draw differs from the 4-shot
    # draw after 1 and 2 (the generator has moved on), as in Herzog & Wang's loop
    assert not np.array_equal(support_sets(y, (4,), 7)[4], draws[4])
    assert not np.array_equal(support_sets(y, (4,), 0)[4], support_sets(y, (4,), 1)[4])


def _brute_ncm(sx, sy, qx, qy, c):
    correct = 0
    for x, y in zip(qx, qy, strict=True):
        best, best_c = None, None
        scores = []
        for cls in range(c):
            proto = np.mean([s for s, t in zip(sx, sy, strict=True) if t == cls], axis=0)
            scores.append(float(np.dot(x, proto) / np.linalg.norm(x) / np.linalg.norm(proto)))
        best_c = int(np.argmax(scores))
        best = scores[best_c]
        # ties pessimistic: correct only if the true class is strictly best
        if best_c == y and sum(s >= best for s in scores) == 1:
            correct += 1
    return 100.0 * correct / len(qy)


def test_few_shot_ncm_matches_brute_force():
    rng = np.random.default_rng(0)
    c, d = 4, 6
    centers = rng.normal(size=(c, d))
    ytr = np.repeat(np.arange(c), 10)
    xtr = centers[ytr] + 0.8 * rng.normal(size=(len(ytr), d))
    yq = rng.integers(0, c, 50)
    xq = centers[yq] + 0.8 * rng.normal(size=(50, d))
    for k in (1, 2, 4):
        for seed in (0, 1, 2):
            idx = support_sets(ytr, (k,), seed)[k]
            got = few_shot_ncm_accuracy(xtr[idx], ytr[idx], xq, yq, c)
            assert got == pytest.approx(_brute_ncm(xtr[idx], ytr[idx], xq, yq, c), abs=1e-9)


def test_few_shot_sweep_records():
    rng = np.random.default_rng(1)
    c = 3
    ytr = np.array([0] * 5 + [1] * 5 + [2] * 3)
    xtr = rng.normal(size=(len(ytr), 4)) + 2 * np.eye(4)[ytr]
    yq = np.array([0, 1, 2, 2])
    xq = rng.normal(size=(4, 4)) + 2 * np.eye(4)[yq]

    def feats(idx):
        return xtr[idx], xq

    res = few_shot_sweep(feats, ytr, yq, c, shots=(1, 2, 4), seeds=(0, 1, 2))
    assert sorted(res["shots"]) == ["1", "2", "4"] and res["skipped"] == {}
    for k in (1, 2, 4):  # class 2 has 3 images: 4-shot repeats one (Dassl's choices)
        per = [_brute_ncm(xtr[i], ytr[i], xq, yq, c)
               for i in (support_sets(ytr, (1, 2, 4), s)[k] for s in (0, 1, 2))]
        r = res["shots"][str(k)]
        assert [r["per_seed"][str(s)] for s in (0, 1, 2)] == pytest.approx(per)
        assert r["mean"] == pytest.approx(np.mean(per)) and r["std"] == pytest.approx(np.std(per))


def _fs(x):
    from crossgap_jax.pipeline.store import FeatureSet

    return FeatureSet([f"i{j}" for j in range(len(x))], np.asarray(x, np.float32), {})


@pytest.mark.parametrize("center_fit", ["modality", "gallery"])
@pytest.mark.parametrize("same_modality", [True, False])
def test_apply_fitted_centering_choices(center_fit, same_modality):
    from crossgap_jax.pipeline.baselines import apply_fitted
    from crossgap_jax.pipeline.settings import BaselineSettings

    q, g = _data(6, 5, seed=5), _data(9, 5, seed=6)
    zq, zg = apply_fitted(BaselineSettings(center_fit=center_fit), _fs(q), _fs(g), "centered",
                          "centered", same_modality)
    own = center_fit == "modality" and not same_modality  # each modality its own mean
    mq = _unit(q).mean(0) if own else _unit(g).mean(0)
    np.testing.assert_allclose(zq.features, _unit(q) - mq, atol=1e-6)
    np.testing.assert_allclose(zg.features, _unit(g) - _unit(g).mean(0), atol=1e-6)
    assert zq.meta["centered"]["fit"] == ("own set" if own else "gallery")


@pytest.mark.parametrize("fit", ["gallery", "query", "both"])
def test_apply_fitted_pca_fit_sets(fit):
    from crossgap_jax.pipeline.baselines import apply_fitted
    from crossgap_jax.pipeline.settings import BaselineSettings

    q, g = _data(7, 5, seed=7), _data(9, 5, seed=8)
    zq, zg = apply_fitted(BaselineSettings(pca_k=(3,), pca_fit=fit), _fs(q), _fs(g), "pca",
                          "pca", True)
    x = {"gallery": _unit(g), "query": _unit(q), "both": np.vstack([_unit(q), _unit(g)])}[fit]
    mu = x.mean(0)
    vt = np.linalg.svd(x - mu, full_matrices=False)[2][:3]
    for z, ref in ((zq.features, (_unit(q) - mu) @ vt.T), (zg.features, (_unit(g) - mu) @ vt.T)):
        np.testing.assert_allclose(np.abs(z), np.abs(ref), atol=1e-5)
    assert zq.meta["pca"]["num_fit"] == len(x) and zq.meta["pca"]["fit"] == fit
    with pytest.raises(ValueError, match="exactly one --pca-k"):
        apply_fitted(BaselineSettings(pca_k=(2, 3)), _fs(q), _fs(g),
                     "pca", "pca", True)


# --- the one L2 normalisation, and the one ragged-batch pad ------------------------------
def test_l2_normalize_numpy_and_jax_against_a_loop():
    import jax.numpy as jnp

    from crossgap_jax.retrieval import l2_normalize, l2_normalize_traceable

    x = _data(n=7, d=5, seed=3)
    want = np.array([row / np.sqrt(sum(v * v for v in row)) for row in x])
    np.testing.assert_allclose(l2_normalize(x), want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(l2_normalize(jnp.asarray(x, jnp.float32))), want,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(l2_normalize_traceable(jnp.asarray(x))), want,
                               rtol=1e-5)
    bad = x.copy()
    bad[4] = 0.0
    with pytest.raises(ValueError, match=r"gallery has zero or non-finite .* rows \[4\]"):
        l2_normalize(bad, "gallery")
    with pytest.raises(ValueError, match=r"rows \[4\]"):
        l2_normalize(jnp.asarray(bad))
    np.testing.assert_array_equal(np.asarray(l2_normalize_traceable(jnp.asarray(bad)))[4], 0.0)


def test_pad_rows_repeats_the_last_row():
    from crossgap_jax.data import pad_rows

    x = np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(pad_rows(x, 5), [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    assert pad_rows(x, 3) is x
