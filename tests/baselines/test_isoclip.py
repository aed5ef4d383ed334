"""IsoCLIP exactly as its authors compute it (PAPER.md, "IsoCLIP, exactly"), NCM, the
isotropic-window heuristic, and the ``retrieve``/``classify`` runs recomputed independently.

The references here are written from the formula alone: projectors ``U_k U_k^T`` /
``V_k V_k^T`` from an eigendecomposition of ``M M^T`` / ``M^T M`` (a different algorithm from
the package's SVD), metrics and NCM by brute-force loops; no import of the package's
IsoCLIP, NCM or metric code in the recomputations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support.run_oracles import (
    cli_args,
    record_results,
    ref_apply,
    ref_isoclip,
    ref_retrieval,
    ref_side,
    unit,
)
from support.tiny_models import tiny_clip

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
from crossgap_jax.baselines.window import isotropic_window, window_basis
from crossgap_jax.retrieval import class_means
from crossgap_jax.retrieval.ncm import ncm_accuracy

# --- the reference ---------------------------------------------------------------------


# ViT-B/32 sizes: d_i = 768, d_t = 512, D = 512 (random weights at OpenAI's init scales).
RNG = np.random.default_rng(0)
P_I = RNG.standard_normal((768, 512)) * 768 ** -0.5
P_T = RNG.standard_normal((512, 512)) * 512 ** -0.5
X_I = RNG.standard_normal((12, 768))
X_T = RNG.standard_normal((12, 512))
HEADS = (ProjectionHead(P_I.astype(np.float32)), ProjectionHead(P_T.astype(np.float32)))
_CACHE: dict = {}  # decompositions are slow on a shared CPU: one of each per module


def b32_map(side, k_top, k_bottom):
    if "svd" not in _CACHE:
        _CACHE["svd"] = inter_modal_svd(*(h.augmented() for h in HEADS))
    return isoclip_map(*HEADS, side, k_top, k_bottom, svd=_CACHE["svd"])


def b32_ref(side):
    if side not in _CACHE:
        _CACHE[side] = ref_side(*(h.weight for h in HEADS), side)
    return _CACHE[side]


@pytest.mark.parametrize("k", [(150, 50), (20, 100), (0, 0), (300, 0), (0, 400), (200, 311)])
@pytest.mark.parametrize("side", ["image", "text"])
def test_isoclip_matches_the_formula_at_vitb32_size(k, side):
    m = b32_map(side, *k)
    x = X_I if side == "image" else X_T
    got = np.asarray(isoclip_features(x, m))
    np.testing.assert_allclose(got, ref_apply(x, b32_ref(side), *k), atol=2e-5)
    assert got.shape == (12, 512) and (m.rank, m.num_kept) == (512, 512 - sum(k))
    assert not m.append_one and m.in_dim == x.shape[1]


def test_isoclip_keeps_the_projection_and_differs_from_it():
    # k = (0, 0): every direction kept, so U U^T P_i = P_i (P_t is invertible): the model's
    # own normalised features. Dropping directions changes them: the test above can fail.
    for side, x, p in (("image", X_I, P_I), ("text", X_T, P_T)):
        full = np.asarray(isoclip_features(x, b32_map(side, 0, 0)))
        np.testing.assert_allclose(full, unit(x @ p), atol=2e-5)
        cut = np.asarray(isoclip_features(x, b32_map(side, 150, 50)))
        assert np.abs(cut - full).max() > 0.05
    # Image and text k values select different directions.
    a = np.asarray(isoclip_features(X_I, b32_map("image", 150, 50)))
    b = np.asarray(isoclip_features(X_I, b32_map("image", 20, 100)))
    assert np.abs(a - b).max() > 0.05
    # Off by one direction is detectable at the tolerance used above.
    c = np.asarray(isoclip_features(X_I, b32_map("image", 151, 49)))
    assert np.abs(a - c).max() > 1e-3


def test_similarity_is_cosine_of_features():
    m = b32_map("image", 150, 50)
    sim = np.asarray(isoclip_similarity(X_I[:5], X_I, m))
    want = ref_apply(X_I[:5], b32_ref("image"), 150, 50) @ \
        ref_apply(X_I, b32_ref("image"), 150, 50).T
    np.testing.assert_allclose(sim, want, atol=5e-5)


def test_k_leaving_nothing_is_an_error_naming_the_limit():
    with pytest.raises(ValueError, match=r"r = min\(d_i, d_t\) = 512.*at most 511"):
        b32_map("image", 256, 256)
    with pytest.raises(ValueError, match="at most 511"):
        b32_map("text", 512, 0)
    assert b32_map("text", 511, 0).num_kept == 1  # the limit itself is fine
    assert kept_components(10, 3, 2) == slice(3, 8)
    for bad in ((-1, 0), (0, 1.5), (True, 0)):
        with pytest.raises(ValueError, match="non-negative integer"):
            kept_components(10, *bad)
    with pytest.raises(ValueError, match="side"):
        isoclip_map(*HEADS, "audio", 1, 1)
    m = b32_map("image", 1, 1)
    with pytest.raises(ValueError, match=r"\(N, 768\) pre-projection"):
        isoclip_features(X_I[:, :512], m)


def test_bias_is_an_extra_row_and_a_constant_one():
    rng = np.random.default_rng(5)
    d_i, d_t, d = 96, 80, 64
    p_i, p_t = rng.standard_normal((d_i, d)) / 10, rng.standard_normal((d_t, d)) / 9
    b_i, b_t = rng.standard_normal(d), rng.standard_normal(d)
    x_i, x_t = rng.standard_normal((7, d_i)), rng.standard_normal((7, d_t))
    for bias_i in (None, b_i):
        heads = (ProjectionHead(p_i, bias_i), ProjectionHead(p_t, b_t))
        for side, x, k in (("image", x_i, (5, 20)), ("text", x_t, (10, 3)), ("text", x_t, (0, 0))):
            m = isoclip_map(*heads, side, *k)
            assert m.append_one == (side == "text" or bias_i is not None)
            assert m.rank == min(d_i + (bias_i is not None), d_t + 1)
            np.testing.assert_allclose(np.asarray(isoclip_features(x, m)),
                                       ref_isoclip(x, p_i, p_t, *k, side, bias_i, b_t),
                                       atol=2e-5)
    # With every direction kept the text map is the head with its bias, x @ P_t + b_t; the
    # bias matters (dropping it gives other features).
    heads = (ProjectionHead(p_i), ProjectionHead(p_t, b_t))
    full = np.asarray(isoclip_features(x_t, isoclip_map(*heads, "text", 0, 0)))
    np.testing.assert_allclose(full, unit(x_t @ p_t + b_t), atol=2e-5)
    assert np.abs(full - unit(x_t @ p_t)).max() > 0.05
    with pytest.raises(ValueError, match="bias must be"):
        ProjectionHead(p_t, b_t[:5])


# --- NCM ---------------------------------------------------------------------------------
def test_ncm_against_brute_force():
    rng = np.random.default_rng(1)
    n, c, d = 60, 7, 16
    x = rng.standard_normal((n, d)) + 0.8 * rng.standard_normal((c, d))[np.arange(n) % c]
    y = np.arange(n) % c
    means = class_means(x, y, c)
    for k in range(c):
        want = sum(x[i] for i in range(n) if y[i] == k) / sum(1 for i in range(n) if y[i] == k)
        np.testing.assert_allclose(means[k], want, rtol=1e-5, atol=1e-6)
    q = rng.standard_normal((25, d)) + means[np.arange(25) % c]
    yq = (np.arange(25) + rng.integers(0, 2, 25)) % c  # some wrong labels
    correct1 = correct3 = 0
    for i in range(25):
        cos = [q[i] @ means[k] / np.linalg.norm(q[i]) / np.linalg.norm(means[k])
               for k in range(c)]
        correct1 += int(np.argmax(cos) == yq[i])
        correct3 += int(sorted(range(c), key=lambda k: -cos[k]).index(yq[i]) < 3)
    acc = ncm_accuracy(q, yq, means, ks=(1, 3))
    assert acc["num_samples"] == 25
    assert acc["top1"] == pytest.approx(100 * correct1 / 25, abs=1e-9)
    assert acc["top3"] == pytest.approx(100 * correct3 / 25, abs=1e-9)
    assert 0 < correct1 < 25  # the case discriminates


def test_ncm_refuses_a_class_without_samples():
    with pytest.raises(ValueError, match=r"2 of 5 classes have none \(first: \[1, 3\]\)"):
        class_means(np.ones((3, 2)), np.array([0, 2, 4]), 5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        class_means(np.ones((3, 2)), np.array([0, 1, 2]), 2)


# --- the isotropic-window heuristic (ours, not IsoCLIP) -------------------------------------
def test_isotropic_window_heuristic_still_works():
    s = np.array([10.0, 8.0, 6.0, *np.linspace(1.04, 0.96, 20), *np.full(9, 0.01)])
    assert isotropic_window(s, tol=1.5) == (3, 23)
    assert isotropic_window(s, tol=1.0, floor=0.0) == (23, 32)
    q_i, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((48, 32)))
    q_t, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((40, 32)))
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((32, 32)))
    b = window_basis((q_i * np.sqrt(s)) @ q, (q_t * np.sqrt(s)) @ q, tol=1.5)
    assert (b.start, b.stop) == (3, 23)
    np.testing.assert_allclose(b.image_map @ b.image_map.T, q_i[:, 3:23] @ q_i[:, 3:23].T,
                               atol=1e-5)


# --- bundle helpers: heads of every family reproduce the model's own features -----------
# SigLIP and SLIP run in CI only (make test): ~10 CPU-s each of model building/compiling.
@pytest.fixture(scope="module", params=["tiny", pytest.param("siglip-tiny", marks=pytest.mark.slow),
                                        pytest.param("slip-tiny", marks=pytest.mark.slow)])
def bundle(request, tmp_path_factory):
    from crossgap_jax.models import create_clip

    b = create_clip(request.param, seed=2)
    if b.config.family == "siglip":
        from support import family_factories as F

        sp = F.train_spiece(str(tmp_path_factory.mktemp("sp") / "spiece.model"))
        b = dataclasses.replace(b, tokenizer_file=sp)
    return b


def test_heads_of_every_family_reproduce_the_embeddings(bundle):
    s = bundle.config.vision.image_size
    pixels = np.random.default_rng(3).standard_normal((3, s, s, 3)).astype(np.float32)
    ids = bundle.tokenize(["a dog", "two cats on a bench", "a red car"])
    head_i, head_t = projection_heads(bundle)
    assert head_i.bias is None
    assert (head_t.bias is not None) == (bundle.config.family == "siglip")
    # With nothing dropped, IsoCLIP's maps give the model's own (normalised) embeddings:
    # this checks the heads and the bias rule against the real forward pass.
    zi = isoclip_image_features(bundle, pixels, isoclip_map_for(bundle, "image", 0, 0))
    zt = isoclip_text_features(bundle, ids, isoclip_map_for(bundle, "text", 0, 0))
    np.testing.assert_allclose(zi, unit(bundle.encode_image(pixels)), atol=1e-4)
    np.testing.assert_allclose(zt, unit(bundle.encode_text(ids)), atol=1e-4)
    # And against the reference with directions dropped.
    wi, wt = bundle.projection_matrices()
    bt = None if head_t.bias is None else np.asarray(head_t.bias, np.float64)
    xt = bundle.encode_text(ids, project=False)
    m = isoclip_map_for(bundle, "text", 2, 3)
    assert isinstance(m, IsoCLIPMap)
    np.testing.assert_allclose(np.asarray(isoclip_features(xt, m)),
                               ref_isoclip(xt, wi, wt, 2, 3, "text", None, bt), atol=1e-4)
    with pytest.raises(ValueError, match="text map"):
        isoclip_text_features(bundle, ids, isoclip_map_for(bundle, "image", 0, 0))


# --- end to end: retrieve / classify on a tiny model, recomputed from the run's cache ------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from crossgap_jax.models.checkpoint.native import save_native

    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    clip = tiny_clip(3)
    save_native(path, clip.config, clip.params)
    wi, wt = (np.asarray(a, np.float64) for a in clip.projection_matrices())
    return path, wi, wt


def _cached(run_dir, split, projected):
    from crossgap_jax.pipeline.store import load_features

    out = [fs for fs in (load_features(str(p)) for p in run_dir.rglob(f"{split}-image-*.npz"))
           if fs.meta["projected"] is projected]
    assert len(out) == 1, [fs.meta for fs in out]
    return out[0]


def _labels(shared_data, split, items):
    from crossgap_jax.data import get_dataset

    ds = get_dataset("caltech101", str(shared_data), split)
    pos = {it: i for i, it in enumerate(ds.items)}
    return np.array([ds.labels[pos[i]] for i in items])


def test_retrieve_isoclip_recomputed(tiny, shared_data, tmp_path, capsys):
    from crossgap_jax.cli import main

    path, wi, wt = tiny
    run_dir = tmp_path / "run"
    common = cli_args(path, shared_data, run_dir, "--max-queries", "10", "--max-gallery", "40")
    # The tiny model has no published (k_top, k_bottom): a clear error, never a guess.
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "isoclip",
                 "--gallery-type", "isoclip", *common]) == 2
    assert "--isoclip-k TOP,BOTTOM" in capsys.readouterr().err
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "isoclip",
                 "--gallery-type", "isoclip", "--isoclip-k", "4,40", *common]) == 0
    out = record_results(run_dir, "retrieve", query_type="isoclip", gallery_type="isoclip")
    assert out["query_isoclip"]["k_top"] == 4 and out["query_isoclip"]["source"] == "--isoclip-k"
    q, g = _cached(run_dir, "test", False), _cached(run_dir, "train", False)
    assert q.features.shape == (10, 128) and g.features.shape == (40, 128)
    want = ref_retrieval(ref_isoclip(q.features, wi, wt, 4, 40, "image"),
                          ref_isoclip(g.features, wi, wt, 4, 40, "image"),
                          _labels(shared_data, "test", q.items),
                          _labels(shared_data, "train", g.items))
    for k, v in want.items():
        assert out[k] == pytest.approx(v, abs=1e-6), k
    # The automatic window is a separately named variant.
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type",
                 "isotropic-window", "--gallery-type", "isotropic-window", *common]) == 0
    win = record_results(run_dir, "retrieve", query_type="isotropic-window")
    assert "query_isotropic_window" in win and "query_isoclip" not in win


def test_classify_ncm_recomputed(tiny, shared_data, tmp_path):
    from crossgap_jax.cli import main

    path, wi, wt = tiny
    run_dir = tmp_path / "run"
    assert main(["--quiet", "classify", "--dataset", "caltech101", "--variants",
                 "ncm,isoclip-ncm", "--isoclip-k", "3,40",
                 *cli_args(path, shared_data, run_dir, "--max-queries", "12",
                       "--max-gallery", "200")]) == 0
    res = record_results(run_dir, "classify")
    te, tr = _cached(run_dir, "test", False), _cached(run_dir, "train", False)
    yte, ytr = _labels(shared_data, "test", te.items), _labels(shared_data, "train", tr.items)
    assert len(tr.items) == res["ncm_train"]["num_images"] == 200  # 2 per class
    assert np.bincount(ytr, minlength=100).tolist() == [2] * 100
    means = np.stack([tr.features[ytr == c].astype(np.float64).mean(0) for c in range(100)])
    maps = {"ncm": lambda x: np.asarray(x, np.float64) @ wi,
            "isoclip-ncm": lambda x: ref_isoclip(x, wi, wt, 3, 40, "image")}
    for variant, fn in maps.items():
        sims = unit(fn(te.features)) @ unit(fn(means)).T
        top1 = 100 * np.mean([np.argmax(sims[i]) == yte[i] for i in range(len(yte))])
        top5 = 100 * np.mean([(sims[i] > sims[i, yte[i]]).sum() < 5 for i in range(len(yte))])
        assert res[variant]["top1"] == pytest.approx(top1, abs=1e-6), variant
        assert res[variant]["top5"] == pytest.approx(top5, abs=1e-6), variant
        assert res[variant]["num_samples"] == 12
    assert res["isoclip-ncm"]["isoclip"]["k_bottom"] == 40
