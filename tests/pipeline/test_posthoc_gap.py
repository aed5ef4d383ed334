"""I0T's post-hoc standardisation and GR-CLIP's mean removal (feature types ``i0t`` /
``gr-clip``) against NumPy oracles written from their papers' and code's formula:
``normalize(normalize(x) - mu)``, ``mu`` the mean of the normalised embeddings of the
modality (I0T: its test-set embeddings; GR-CLIP: one mean per role: queries / corpus)."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap_jax.pipeline.baselines import apply_fitted
from crossgap_jax.pipeline.settings import BaselineSettings
from crossgap_jax.pipeline.store import FeatureSet


def _unit(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _oracle(x, fit):
    mu = _unit(np.asarray(fit, np.float64)).mean(0)
    return _unit(_unit(np.asarray(x, np.float64)) - mu)


def _fs(x, prefix):
    return FeatureSet([f"{prefix}{i}" for i in range(len(x))], x.astype(np.float32), {})


@pytest.fixture
def sets():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 12)) * 3 + rng.normal(size=12) * 4
    g = rng.normal(size=(15, 12)) * 2 + rng.normal(size=12) * 4
    return q, g


@pytest.mark.parametrize("same_modality", [True, False])
def test_gr_clip_each_role_on_its_own_mean(sets, same_modality):
    q, g = sets
    oq, og = apply_fitted(BaselineSettings(), _fs(q, "q"), _fs(g, "g"), "gr-clip", "gr-clip",
                          same_modality)
    np.testing.assert_allclose(_unit(oq.features), _oracle(q, q), atol=1e-5)
    np.testing.assert_allclose(_unit(og.features), _oracle(g, g), atol=1e-5)
    assert oq.meta["gr_clip"]["fit"] == "queries" and og.meta["gr_clip"]["num_fit"] == 15
    assert og.meta["gr_clip"]["normalize"] == "before and after"


def test_i0t_modality_mean(sets):
    q, g = sets
    # same modality, different sets: the mean over every evaluated embedding of it
    oq, og = apply_fitted(BaselineSettings(), _fs(q, "q"), _fs(g, "g"), "i0t", "i0t", True)
    both = np.concatenate([q, g])
    np.testing.assert_allclose(_unit(oq.features), _oracle(q, both), atol=1e-5)
    np.testing.assert_allclose(_unit(og.features), _oracle(g, both), atol=1e-5)
    assert oq.meta["i0t"]["fit"] == "queries and gallery" and oq.meta["i0t"]["num_fit"] == 22
    # cross-modal (I0T's image-text setting): each modality on its own mean
    oq, og = apply_fitted(BaselineSettings(), _fs(q, "q"), _fs(g, "g"), "i0t", "i0t", False)
    np.testing.assert_allclose(_unit(oq.features), _oracle(q, q), atol=1e-5)
    np.testing.assert_allclose(_unit(og.features), _oracle(g, g), atol=1e-5)
    # all-vs-all (the queries are the gallery): that one set
    same = _fs(g, "g")
    oq, og = apply_fitted(BaselineSettings(), same, same, "i0t", "i0t", True)
    np.testing.assert_allclose(_unit(og.features), _oracle(g, g), atol=1e-5)
    assert og.meta["i0t"]["num_fit"] == 15


def test_posthoc_differs_from_plain_and_ignores_scale(sets):
    q, g = sets
    oq, _ = apply_fitted(BaselineSettings(), _fs(q, "q"), _fs(g, "g"), "gr-clip", "image", True)
    assert not np.allclose(_unit(oq.features), _unit(q), atol=1e-2)  # it does something
    # normalised before: rescaling an embedding changes nothing
    oq2, _ = apply_fitted(BaselineSettings(), _fs(q * np.arange(1, 8)[:, None], "q"),
                          _fs(g, "g"), "gr-clip", "image", True)
    np.testing.assert_allclose(_unit(oq2.features), _unit(oq.features), atol=1e-5)
