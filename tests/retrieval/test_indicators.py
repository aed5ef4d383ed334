"""Misalignment indicators on constructed distributions and hand-built configurations."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap_jax.retrieval.gap import modality_gap
from crossgap_jax.retrieval.indicators import (
    auroc,
    closer_to_other_class_fraction,
    cross_pairs,
    image_image_pairs,
    misalignment_indicators,
    overlap_coefficient,
    plot_indicators,
)


def test_overlap_on_constructed_histograms():
    # bins of width 1/4 on [0, 1]; values at bin centres (dyadic, exact)
    same = [0.125, 0.125, 0.375, 0.375]           # fractions .5 .5 0 0
    diff = [0.375, 0.625, 0.625, 0.875]           # fractions 0 .25 .5 .25
    assert overlap_coefficient(same, diff, bins=4, value_range=(0, 1)) == 0.25
    assert overlap_coefficient(same, same, bins=4, value_range=(0, 1)) == 1.0
    assert overlap_coefficient([0.125], [0.875], bins=4, value_range=(0, 1)) == 0.0
    # clipping: values outside the range land in the end bins
    assert overlap_coefficient([-5.0], [0.1], bins=4, value_range=(0, 1)) == 1.0
    with pytest.raises(ValueError, match="empty"):
        overlap_coefficient([], [0.1])


def test_overlap_of_two_uniforms_is_their_shared_mass():
    # U[0, .5) and U[.25, .75) sampled on a fine dyadic grid: shared mass 1/2
    a = (np.arange(512) + 0.5) / 1024            # [0, .5)
    b = a + 0.25
    assert overlap_coefficient(a, b, bins=256, value_range=(0, 1)) == pytest.approx(0.5)


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    assert auroc([0.125, 0.125, 0.375, 0.375], [0.375, 0.625, 0.625, 0.875]) == 0.0625
    rng = np.random.default_rng(0)
    p = np.round(rng.normal(0.3, 0.2, 300), 2)  # rounding makes many ties
    n = np.round(rng.normal(0.1, 0.2, 500), 2)
    ref = roc_auc_score(np.r_[np.ones(300), np.zeros(500)], np.r_[p, n])
    assert auroc(p, n) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(ValueError, match="at least one positive"):
        auroc([], [1.0])


def _angles(deg):
    r = np.deg2rad(np.asarray(deg, np.float64))
    return np.stack([np.cos(r), np.sin(r)], 1)


def test_closer_fraction_hand_built():
    # class 0 at 0 and 10 degrees, class 1 at 60 and 150 degrees, class 2 alone at 250.
    # 60 (class 1): own class at 150 (90 deg apart), class 0 at 10 (50 deg) -> closer.
    # 150: own class 90 deg away, nearest other (250) 100 deg -> not; 0 and 10: not;
    # 250 is a singleton (left out).
    x = _angles([0, 10, 60, 150, 250])
    y = np.array([0, 0, 1, 1, 2])
    r = closer_to_other_class_fraction(x, y)
    assert r == {"fraction": 0.25, "num_counted": 4, "num_singletons": 1}
    # an exact tie (axis vectors, cosines 0 and 0) is not "closer"
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    r = closer_to_other_class_fraction(x, np.array([0, 0, 1]))
    assert r == {"fraction": 0.0, "num_counted": 2, "num_singletons": 1}


def test_closer_fraction_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 5))
    y = rng.integers(0, 4, 30)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    closer = counted = 0
    for i in range(30):
        same = [xn[i] @ xn[j] for j in range(30) if j != i and y[j] == y[i]]
        diff = [xn[i] @ xn[j] for j in range(30) if y[j] != y[i]]
        if same:
            counted += 1
            closer += max(diff) > max(same)
    r = closer_to_other_class_fraction(x, y)
    assert r["num_counted"] == counted and r["fraction"] == pytest.approx(closer / counted)


def test_pairs_and_indicators_match_brute_force(tmp_path):
    rng = np.random.default_rng(4)
    img = rng.normal(size=(12, 4))
    y = rng.integers(0, 3, 12)
    txt = rng.normal(size=(3, 4))
    oti = img + 0.3 * rng.normal(size=img.shape)
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    ii_same = [cos(img[i], img[j]) for i in range(12) for j in range(i + 1, 12) if y[i] == y[j]]
    ii_diff = [cos(img[i], img[j]) for i in range(12) for j in range(i + 1, 12) if y[i] != y[j]]
    s, d = image_image_pairs(img, y)
    np.testing.assert_allclose(np.sort(s), np.sort(ii_same), atol=1e-6)
    np.testing.assert_allclose(np.sort(d), np.sort(ii_diff), atol=1e-6)
    oi_same = [cos(oti[i], img[j]) for i in range(12) for j in range(12) if i != j and y[i] == y[j]]
    s, d = cross_pairs(oti, y, img, y, exclude_diagonal=True)
    np.testing.assert_allclose(np.sort(s), np.sort(oi_same), atol=1e-6)
    assert len(d) == 12 * 11 - len(oi_same)
    ti_same = [cos(txt[c], img[j]) for c in range(3) for j in range(12) if y[j] == c]
    ti_diff = [cos(txt[c], img[j]) for c in range(3) for j in range(12) if y[j] != c]
    res = misalignment_indicators(img, y, text=txt, text_labels=np.arange(3), inverted=oti,
                                  bins=50)
    t = res["text-image"]
    assert t["same"]["count"] == len(ti_same) and t["different"]["count"] == len(ti_diff)
    assert t["auroc"] == pytest.approx(auroc(ti_same, ti_diff), abs=1e-6)
    assert t["overlap"] == pytest.approx(overlap_coefficient(ti_same, ti_diff, bins=50))
    assert res["image-image"]["auroc"] == pytest.approx(auroc(ii_same, ii_diff), abs=1e-6)
    assert res["modality_gap"]["text-image"] == pytest.approx(modality_gap(txt, img))
    assert res["closer_to_other_class"] == closer_to_other_class_fraction(img, y)
    path = plot_indicators(res, str(tmp_path / "ind.png"), title="toy")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_indicators_image_only_and_bad_input():
    x = _angles([0, 10, 60, 180])
    res = misalignment_indicators(x, np.array([0, 0, 1, 1]))
    assert "text-image" not in res and "modality_gap" not in res
    with pytest.raises(ValueError, match="text_labels"):
        misalignment_indicators(x, np.array([0, 0, 1, 1]), text=x[:2])
    with pytest.raises(ValueError, match="labels must have shape"):
        misalignment_indicators(x, np.array([0, 1]))
