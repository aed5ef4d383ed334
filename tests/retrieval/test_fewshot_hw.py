"""Herzog & Wang's few-shot protocol: the support sampler against a reimplementation of Dassl's
description (global ``random``, Datum-like records, a defaultdict by label), and the
prototype / gda classifiers (with and without text and span projection) against torch
computations written here from PAPER.md's formulas."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from support.fewshot_reference import dassl_reference, torch_gda, torch_prototype, torch_span

from crossgap_jax.baselines.span import span_basis, span_project
from crossgap_jax.retrieval.fewshot import draw_support, few_shot_sweep, support_sets
from crossgap_jax.retrieval.fewshot_hw import (
    DEGENERATE_GDA,
    class_prototypes,
    gda_fit,
    hw_scores,
    top1_accuracy,
)


# ---------------------------------------------------------------------------------------
# sampler
# ---------------------------------------------------------------------------------------
def _split(seed=0):
    """A train split whose labels are not sorted (first appearance 2, 0, 3, 1) and whose
    class 3 has only 3 images (fewer than 4, 8, 16 shots)."""
    rng = np.random.default_rng(seed)
    labels = [2, 0, 3, 1] + list(rng.permutation([0] * 20 + [1] * 17 + [2] * 25 + [3] * 2))
    return [(f"img{i:03d}.jpg", int(c)) for i, c in enumerate(labels)]


@pytest.mark.parametrize("seed", [1, 2, 3, 7])
@pytest.mark.parametrize("shots", [(1, 2, 4, 8, 16), (16, 1), (4,)])
def test_support_sets_equaldassl_reference(seed, shots):
    records = _split(seed)
    labels = np.array([r[1] for r in records])
    state = random.getstate()
    got = support_sets(labels, shots, seed)
    assert random.getstate() == state  # our generator is private
    want = dassl_reference(records, shots, seed)
    assert list(got) == list(shots)
    for k in shots:
        assert [records[i][0] for i in got[k]] == want[k], k
        # class 3 (3 images) still gets k shots, with repetition, when k > 3
        assert (labels[got[k]] == 3).sum() == k


def test_draw_support_without_repeat_takes_all():
    labels = np.array([0, 0, 1, 1, 1, 0])
    idx = draw_support(labels, 3, random.Random(0), repeat=False)
    assert sorted(idx[labels[idx] == 0].tolist()) == [0, 1, 5]
    with pytest.raises(ValueError, match=">= 1"):
        draw_support(labels, 0, random.Random(0))


def test_sweep_uses_the_sampler_and_skips_empty_classes():
    rng = np.random.default_rng(0)
    ytr = np.array([1, 0, 1, 0, 0, 1, 1])
    xtr = rng.normal(size=(7, 3)) + 3 * np.eye(3)[ytr]
    yq = np.array([0, 1, 1])
    xq = 3 * np.eye(3)[yq] + 0.1

    seen = []

    def feats(idx):
        seen.append(idx.tolist())
        return xtr[idx], xq

    few_shot_sweep(feats, ytr, yq, 2, shots=(1, 2), seeds=(5,))
    draws = support_sets(ytr, (1, 2), 5)
    assert seen == [draws[1].tolist(), draws[2].tolist()]
    res = few_shot_sweep(feats, ytr, yq, 3, shots=(1,), seeds=(5,))
    assert "no training images" in res["skipped"]["1"]


# ---------------------------------------------------------------------------------------
# classifiers
# ---------------------------------------------------------------------------------------
def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _problem(seed, c=5, d=12, n_test=40, k=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d))
    ysup = np.repeat(np.arange(c), k)
    sup = _unit(centers[ysup] + 0.7 * rng.normal(size=(len(ysup), d)))
    yte = rng.integers(0, c, n_test)
    te = _unit(centers[yte] + 0.7 * rng.normal(size=(n_test, d)))
    text = _unit(centers + 0.5 * rng.normal(size=(c, d)))
    span_texts = rng.normal(size=(30, d)) * np.linspace(2, 0.3, d)
    return sup, ysup, te, yte, text, span_texts


ORACLES = {"prototype": torch_prototype, "gda": torch_gda}


@pytest.mark.parametrize("classifier", ["prototype", "gda"])
@pytest.mark.parametrize("use_text", [False, True])
@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize("seed,k", [(1, 2), (2, 4), (3, 8)])
def test_classifiers_match_torch(classifier, use_text, project, seed, k):
    sup, ysup, te, yte, text, span_texts = _problem(seed, k=k)
    if project:  # applied to support and test, not re-normalised
        basis = span_basis(span_texts)
        sup_p, te_p = span_project(sup, basis), span_project(te, basis)
        np.testing.assert_allclose(te_p, torch_span(span_texts, te), atol=1e-10)
        sup, te = sup_p, te_p
    t = text if use_text else None
    got, info = hw_scores(classifier, sup, ysup, te, 5, t)
    want = ORACLES[classifier](sup, ysup, te, t)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
    assert info["degenerate"] is None
    acc = top1_accuracy(got, yte)
    assert acc == pytest.approx(100.0 * np.mean(want.argmax(1) == yte), abs=1e-4)


def test_gda_einsum_form_equals_transpose_form():
    """Their W = einsum('nd,dc->cn', mu, A) used as x @ W equals x @ (mu A)^T (A symmetric)."""
    sup, ysup, te, _, _, _ = _problem(4)
    w, b, _ = gda_fit(sup, ysup, 5)
    x, y = torch.tensor(sup), torch.tensor(ysup)
    mus = torch.stack([x[y == i].mean(0) for i in range(5)])
    z = torch.cat([x[y == i] - mus[i] for i in range(5)])
    a = z.shape[1] * torch.linalg.pinv((z.shape[0] - 1) * z.T.cov()
                                       + z.T.cov().trace() * torch.eye(z.shape[1],
                                                                        dtype=torch.float64))
    w_theirs = torch.einsum("nd, dc -> cn", mus, a)
    b_theirs = -torch.einsum("nd, dc, nc -> n", mus, a, mus) / 2 + np.log(1 / 5)
    np.testing.assert_allclose(te @ w.T + b, (torch.tensor(te) @ w_theirs + b_theirs).numpy(),
                               rtol=1e-9, atol=1e-9)


def test_one_shot_gda_is_degenerate_and_picks_class_zero():
    sup, ysup, te, yte, text, _ = _problem(5, k=1)
    scores, info = hw_scores("gda", sup, ysup, te, 5)
    assert info["degenerate"] == DEGENERATE_GDA
    np.testing.assert_allclose(scores, np.log(1 / 5))  # every class the same score
    assert top1_accuracy(scores, yte) == pytest.approx(100.0 * np.mean(yte == 0), abs=1e-4)
    # with text: the blend is the zero-shot classifier plus a constant, not degenerate
    blended, info3 = hw_scores("gda", sup, ysup, te, 5, text)
    assert info3["degenerate"] is None
    np.testing.assert_allclose(blended, 0.5 * te @ text.T + 0.5 * np.log(1 / 5))


def test_prototypes_and_accuracy_conventions():
    sup, ysup, _, _, _, _ = _problem(6)
    p = class_prototypes(sup, ysup, 5)
    np.testing.assert_allclose(p, _unit(np.stack([sup[ysup == c].mean(0) for c in range(5)])))
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 1.0]])
    assert top1_accuracy(scores, np.array([0, 2, 2])) == float(
        np.float32(100) * np.float32(2) / np.float32(3))  # ties: lowest index
    with pytest.raises(ValueError, match="every class"):
        hw_scores("prototype", sup[ysup < 4], ysup[ysup < 4], sup, 5)
    with pytest.raises(ValueError, match="classifier must be"):
        hw_scores("lda", sup, ysup, sup, 5)
    with pytest.raises(ValueError, match="rows for 5 classes"):
        hw_scores("prototype", sup, ysup, sup, 5, np.ones((4, sup.shape[1])))


def test_augmented_view_matches_manual_crop():
    from PIL import Image

    from crossgap_jax.data.augment import augmented_view, crop_box

    arr = (np.arange(60 * 80 * 3) % 251).astype(np.uint8).reshape(60, 80, 3)
    img = Image.fromarray(arr)
    for seed in range(6):
        top, left, h, w = crop_box(80, 60, np.random.default_rng(seed))
        assert 0 < h <= 60 and 0 < w <= 80 and 0.5 * 4800 * 0.7 <= h * w <= 4800
        ref = Image.fromarray(arr[top:top + h, left:left + w]).resize((16, 16), Image.BICUBIC)
        rng = np.random.default_rng(seed)
        crop_box(80, 60, rng)
        ref_arr = np.asarray(ref, np.float32)
        if rng.uniform() < 0.5:
            ref_arr = ref_arr[:, ::-1]
        got = augmented_view(img, np.random.default_rng(seed), 16, (0, 0, 0), (1, 1, 1))
        np.testing.assert_allclose(got, ref_arr / 255.0, atol=1e-6)
    # a 10:1 strip: no try fits the ratio range, the centre crop clamped to 4:3
    assert crop_box(100, 10, np.random.default_rng(0), scale=(0.99, 1.0)) == (0, 43, 10, 13)
