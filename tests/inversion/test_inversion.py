"""OTI / OVI logic on the tiny config: batch invariance, exact truncation, prefix cache and
last-block shortcut, record steps, no recompilation, non-finite handling, input validation.

Tolerances: 1e-5 absolute on losses and pseudo tokens, and on features relative to their
norm (float32 over a 2-layer model; the measured differences are ~3e-7 on losses and
~2e-6 on features of norm ~3).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.compile_counter import CompileCounter

from crossgap_jax.inversion import (
    HParams,
    cosine_loss,
    expand_patch_tokens,
    oti,
    oti_features,
    oti_fn,
    ovi,
    ovi_features,
    ovi_fn,
    prepare_template,
)
from crossgap_jax.models.bundle import CLIP
from crossgap_jax.models.clip import model as clip_lib

TOL = 1e-5
N = 13


@pytest.fixture(scope="module")
def targets(tiny) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, tiny.config.embed_dim)).astype(np.float32)


def _width(clip: CLIP, method: str) -> int:
    return clip.config.text.width if method == "oti" else clip.config.vision.width


def _init(clip: CLIP, method: str, n: int = N, k: int = 1, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.02 * rng.normal(size=(n, k, _width(clip, method)))).astype(np.float32)


def _run(method: str, *args, **kwargs):
    kwargs.setdefault("progress", False)
    return (oti if method == "oti" else ovi)(*args, **kwargs)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def assert_same_result(a, b, rows_a=slice(None), rows_b=slice(None), tol: float = TOL) -> None:
    """Losses, tokens and (relative) features of two results agree within ``tol``."""
    np.testing.assert_allclose(a.losses[:, rows_a], b.losses[:, rows_b], rtol=0, atol=tol)
    np.testing.assert_allclose(a.pseudo_tokens[rows_a], b.pseudo_tokens[rows_b], rtol=0, atol=tol)
    fa, fb = a.features[rows_a], b.features[rows_b]
    scale = np.linalg.norm(fb, axis=-1, keepdims=True)
    np.testing.assert_allclose(fa / scale, fb / scale, rtol=0, atol=tol)


# ---------------------------------------------------------------------------------------
# Template, interpolation, loss
# ---------------------------------------------------------------------------------------
def test_template_placeholder_tokens(tiny):
    tpl = prepare_template("a photo of {}", 1, tiny.tokenizer)
    assert tpl.text == "a photo of  £ "
    np.testing.assert_array_equal(tpl.ids[:7], [49406, 320, 1125, 539, 1950, 49407, 0])
    assert (tpl.placeholder_index, tpl.eot_index) == (4, 5)
    tpl3 = prepare_template("a photo of {} on a table", 3, tiny.tokenizer)
    np.testing.assert_array_equal(tpl3.ids[4:7], [1950, 1950, 1950])
    assert tpl3.placeholder_index == 4 and tpl3.ids[tpl3.eot_index] == 49407
    for bad in ("a photo", "{} and {}", "£ {}"):
        with pytest.raises(ValueError):
            prepare_template(bad, 1, tiny.tokenizer)
    with pytest.raises(ValueError, match="num_tokens"):
        prepare_template("a photo of {}", 0, tiny.tokenizer)


@pytest.mark.parametrize("p,n", [(1, 49), (2, 49), (4, 49), (3, 7), (7, 7), (4, 256), (2, 256)])
def test_expand_patch_tokens_is_torch_nearest(p, n):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, p, 5)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.tensor(x).transpose(1, 2), size=n,
                                          mode="nearest").transpose(1, 2).numpy()
    np.testing.assert_array_equal(np.asarray(expand_patch_tokens(jnp.asarray(x), n)), ref)


@pytest.mark.parametrize("p,n", [(1, 49), (4, 256), (2, 49)])
def test_expand_patch_tokens_gradient_is_the_sum_over_copies(p, n):
    """The broadcast form (P divides n) and the gather form send each position's gradient
    back to the token it copies: d/dx sum(c * expand(x)) = the sum of c over its copies."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, p, 5)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, n, 5)), jnp.float32)
    got = np.asarray(jax.grad(lambda t: jnp.sum(c * expand_patch_tokens(t, n)))(x))
    owner = (np.arange(n) * p) // n
    # Sums of up to 256 float32 terms: the reference in float64, a tolerance for any
    # summation order (float32 rounding of a sum of magnitude ~16 is ~1e-5).
    c64 = np.asarray(c, np.float64)
    ref = np.stack([c64[:, owner == j].sum(1) for j in range(p)], axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_cosine_loss_is_per_example_one_minus_cos():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    f, t = rng.normal(size=(6, 9)).astype(np.float32), rng.normal(size=(6, 9)).astype(np.float32)
    ref = torch.nn.CosineEmbeddingLoss(reduction="none")(
        torch.tensor(f), torch.tensor(t), torch.ones(6)).numpy()
    np.testing.assert_allclose(np.asarray(cosine_loss(jnp.asarray(f), jnp.asarray(t))), ref,
                               rtol=0, atol=1e-6)
    # Scale invariant in both arguments.
    np.testing.assert_allclose(np.asarray(cosine_loss(3 * jnp.asarray(f), 0.1 * jnp.asarray(t))),
                               ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------
# 1. Batch invariance
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["oti", pytest.param("ovi", marks=pytest.mark.slow)])
def test_batch_invariance(tiny, targets, method):
    init = _init(tiny, method)
    ref = _run(method, tiny, targets, steps=12, init=init, batch_size=N)  # one batch of 13
    for bs in (1, 4, 8):  # 4 and 8: ragged last batch, padded
        assert_same_result(_run(method, tiny, targets, steps=12, init=init, batch_size=bs), ref)
    # Other companions, other order, other batch size: examples 3, 7, 12 among 5 new ones.
    rng = np.random.default_rng(5)
    others = rng.normal(size=(5, targets.shape[1])).astype(np.float32)
    mixed_t = np.concatenate([others[:2], targets[[12]], others[2:], targets[[3, 7]]])
    mixed_i = np.concatenate([_init(tiny, method, 2, seed=9), init[[12]],
                              _init(tiny, method, 3, seed=8), init[[3, 7]]])
    mixed = _run(method, tiny, mixed_t, steps=12, init=mixed_i, batch_size=8)
    assert_same_result(mixed, ref, rows_a=[2, 6, 7], rows_b=[12, 3, 7])


@pytest.mark.slow
def test_seeded_init_depends_on_index_not_batch(tiny, targets):
    a = oti(tiny, targets, steps=3, batch_size=N, progress=False)
    b = oti(tiny, targets, steps=3, batch_size=5, progress=False)
    assert_same_result(a, b)
    c = oti(tiny, targets, steps=3, batch_size=5, seed=1, progress=False)
    assert np.abs(c.pseudo_tokens - a.pseudo_tokens).max() > 1e-3  # the seed matters


# ---------------------------------------------------------------------------------------
# 2. Exact truncation (and the exact prefix cache)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("template,r", [
    ("a photo of {}", 1),
    pytest.param("a photo of {} on a table", 3, marks=pytest.mark.slow),
    pytest.param("{} is nice", 2, marks=pytest.mark.slow)])
def test_truncation_and_prefix_cache_are_exact(tiny, targets, template, r):
    init = _init(tiny, "oti", k=r)
    full = oti(tiny, targets, steps=10, num_tokens=r, template=template, init=init,
               truncate=False, cache_prefix=False, progress=False)
    assert full.hparams["truncate"] is False
    combos = ((True, False), (True, True), (False, True)) if r == 1 else ((True, True),)
    for truncate, cache in combos:
        res = oti(tiny, targets, steps=10, num_tokens=r, template=template, init=init,
                  truncate=truncate, cache_prefix=cache, progress=False)
        assert_same_result(res, full)


@pytest.mark.slow
def test_oti_features_equal_encode_text(tiny):
    """With the placeholder's own embedding as pseudo token, every path gives encode_text."""
    p = tiny.params
    tpl = prepare_template("a photo of {} on a table", 2, tiny.tokenizer)
    table = p["token_embedding"]["embedding"]
    ref = np.asarray(clip_lib.encode_text(p, jnp.asarray(tpl.ids[None]),
                                          jnp.asarray([tpl.eot_index]), config=tiny.config))
    tok = table[jnp.asarray(tpl.ids[tpl.placeholder_index:tpl.placeholder_index + 2])][None]
    kw = dict(config=tiny.config, placeholder_index=tpl.placeholder_index,
              eot_index=tpl.eot_index)
    scale = np.linalg.norm(ref)
    plain = jax.jit(lambda p, tok, base: oti_features(p, tok, base, **kw))
    for length in (77, tpl.eot_index + 1):
        got = np.asarray(plain(p, tok, table[jnp.asarray(tpl.ids[:length])]))
        np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=TOL)

    @jax.jit
    def cached(p, tok, base):  # the model's own prefix cache and pooled-only options
        prefix = clip_lib.text_prefix(p, base[None, :tpl.placeholder_index], config=tiny.config)
        return oti_features(p, tok, base, prefix=prefix, pooled_only=True, **kw)

    got = np.asarray(cached(p, tok, table[jnp.asarray(tpl.ids[:tpl.eot_index + 1])]))
    np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=TOL)


@pytest.mark.slow
def test_ovi_last_block_at_cls_only_is_exact(tiny, targets):
    init = _init(tiny, "ovi", n=5, k=3)
    model = ovi(tiny, targets[:5], steps=10, num_tokens=3, init=init, pooled_only=False,
                progress=False)
    fast = ovi(tiny, targets[:5], steps=10, num_tokens=3, init=init, progress=False)
    assert fast.hparams["pooled_only"] and not model.hparams["pooled_only"]
    assert_same_result(fast, model)
    # The functional form equals the model's image encoder on the expanded tokens.
    tok = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, tiny.config.vision.width)),
                      jnp.float32)
    ref = np.asarray(clip_lib.encode_image_tokens(
        tiny.params, expand_patch_tokens(tok, tiny.config.vision.num_patches),
        config=tiny.config))
    got = np.asarray(jax.jit(lambda p, t: ovi_features(p, t, config=tiny.config,
                                                       pooled_only=True))(tiny.params, tok))
    scale = np.linalg.norm(ref, axis=-1, keepdims=True)
    np.testing.assert_allclose(got / scale, ref / scale, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------
# 3. record_steps
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [pytest.param("oti", marks=pytest.mark.slow),
                                    pytest.param("ovi", marks=pytest.mark.slow)])
def test_record_steps_equal_separate_runs(tiny, targets, method):
    t = targets[:5]
    res = _run(method, tiny, t, steps=20, record_steps=(7, 3, 20, 3), seed=4)
    assert res.record_steps == (3, 7, 20)
    assert res.recorded_features.shape == (3, 5, tiny.config.embed_dim)
    assert res.recorded_tokens.shape == (3, 5, 1, _width(tiny, method))
    for j, k in enumerate(res.record_steps):
        short = _run(method, tiny, t, steps=k, seed=4)
        scale = np.linalg.norm(short.features, axis=-1, keepdims=True)
        np.testing.assert_allclose(res.recorded_features[j] / scale, short.features / scale,
                                   rtol=0, atol=TOL)
        np.testing.assert_allclose(res.features_at(k) / scale, short.features / scale,
                                   rtol=0, atol=TOL)
        np.testing.assert_allclose(res.recorded_tokens[j], short.pseudo_tokens, rtol=0, atol=TOL)
        np.testing.assert_allclose(res.losses[:k], short.losses, rtol=0, atol=TOL)
    np.testing.assert_array_equal(res.recorded_features[-1], res.features)
    with pytest.raises(KeyError):
        res.features_at(5)
    with pytest.raises(ValueError, match="record_steps"):
        _run(method, tiny, t, steps=20, record_steps=(21,))
    with pytest.raises(ValueError, match="record_steps"):
        _run(method, tiny, t, steps=20, record_steps=(0,))


# ---------------------------------------------------------------------------------------
# 5. No recompilation
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["oti", pytest.param("ovi", marks=pytest.mark.slow)])
def test_no_recompilation(tiny, targets, method):
    core = oti_fn if method == "oti" else ovi_fn
    kw = dict(steps=4, batch_size=8, record_steps=(2,))
    _run(method, tiny, targets, **kw)  # warm: may compile
    with CompileCounter() as same:
        _run(method, tiny, targets, **kw)
    assert same.events == [] and same.compiles == 0, same.logs
    # Hyper-parameters and the seed are traced values: no recompilation either.
    with CompileCounter() as hp:
        _run(method, tiny, targets, learning_rate=0.1, weight_decay=0.5, b1=0.8, eps=1e-6,
             seed=3, **kw)
    assert hp.events == [] and hp.compiles == 0, hp.logs
    # Control: the counter does see a compilation (a new number of steps is a new program).
    # Exactly one new program of the inverter itself (counted by name in JAX's log).
    with CompileCounter(core.__name__) as other:
        _run(method, tiny, targets, steps=5, batch_size=8, record_steps=(2,))
    assert len(other.events) >= 1 and other.compiles == 1, other.logs


# ---------------------------------------------------------------------------------------
# 6. Non-finite values and invalid inputs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_nonfinite_reported_per_example(tiny, targets, method):
    init = _init(tiny, method, n=5)
    init[2] = 1e38  # LayerNorm's variance overflows: this example's loss is NaN
    with pytest.warns(RuntimeWarning, match=r"1 of 5 examples .*indices \[2\]"):
        res = _run(method, tiny, targets[:5], steps=3, init=init)
    np.testing.assert_array_equal(res.nonfinite, [False, False, True, False, False])
    assert np.isnan(res.losses[:, 2]).all()
    assert np.isfinite(res.losses[:, [0, 1, 3, 4]]).all()  # no leak to the other examples
    with pytest.raises(FloatingPointError, match=r"indices \[2\]"):
        _run(method, tiny, targets[:5], steps=3, init=init, on_nonfinite="raise")


def test_nonfinite_from_huge_learning_rate_and_inf_params(tiny, targets):
    with pytest.warns(RuntimeWarning, match=r"5 of 5 examples"):
        res = oti(tiny, targets[:5], steps=3, learning_rate=1e30, progress=False)
    assert res.nonfinite.all()
    params = jax.tree_util.tree_map(lambda x: x, tiny.params)
    params["visual"]["proj"] = params["visual"]["proj"].at[0, 0].set(jnp.inf)
    broken = CLIP(tiny.config, params)
    with pytest.raises(FloatingPointError, match="non-finite"):
        ovi(broken, targets[:4], steps=2, on_nonfinite="raise", progress=False)


def test_invalid_inputs(tiny, targets):
    d = tiny.config.embed_dim
    bad_targets = {
        "nan": np.where(np.arange(d) == 3, np.nan, 1.0)[None].astype(np.float32),
        "inf": np.full((2, d), np.inf, np.float32),
        "zero": np.zeros((2, d), np.float32),
        "wrong dim": np.ones((2, d + 1), np.float32),
        "1-D": np.ones((d,), np.float32),
        "empty": np.ones((0, d), np.float32),
    }
    for method in ("oti", "ovi"):
        for what, t in bad_targets.items():
            with pytest.raises(ValueError):
                _run(method, tiny, t, steps=2)
            del what
        with pytest.raises(ValueError, match="init"):
            _run(method, tiny, targets[:2], steps=2, init=np.zeros((2, 2, 3), np.float32))
        nan_init = _init(tiny, method, n=2)
        nan_init[0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="init"):
            _run(method, tiny, targets[:2], steps=2, init=nan_init)
        with pytest.raises(ValueError, match="steps"):
            _run(method, tiny, targets[:2], steps=0)
        with pytest.raises(ValueError, match="on_nonfinite"):
            _run(method, tiny, targets[:2], steps=2, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="num_tokens"):
        ovi(tiny, targets[:2], steps=2, num_tokens=tiny.config.vision.num_patches + 1)


# ---------------------------------------------------------------------------------------
# The optimisation itself
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_loss_decreases(tiny, targets, method):
    res = _run(method, tiny, targets[:6], steps=40, learning_rate=5e-2)
    assert res.losses.shape == (40, 6)
    assert (res.losses[-1] < res.losses[0] - 0.05).all(), res.losses[[0, -1]]
    # The reported loss at a step is the loss of the tokens entering it.
    final = np.asarray(cosine_loss(jnp.asarray(res.features), jnp.asarray(targets[:6])))
    assert (final <= res.losses[-1] + 1e-3).all()


# slow (issue 14 item 8): ~15 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_functional_core_matches_api(tiny, targets):
    """oti_fn called directly (as a user who shards themselves would) equals oti()."""
    init = _init(tiny, "oti", n=4)
    tpl = prepare_template("a photo of {}", 1, tiny.tokenizer)
    base = tiny.params["token_embedding"]["embedding"][jnp.asarray(tpl.ids[:tpl.eot_index + 1])]
    raw = oti_fn(tiny.params, jnp.asarray(targets[:4]), jnp.asarray(init), base,
                 HParams().as_arrays(), config=tiny.config,
                 placeholder_index=tpl.placeholder_index, eot_index=tpl.eot_index, steps=5)
    res = oti(tiny, targets[:4], steps=5, init=init, progress=False)
    np.testing.assert_allclose(np.asarray(raw.losses), res.losses, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(raw.tokens), res.pseudo_tokens, rtol=0, atol=TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean run warns about nothing
        oti(tiny, targets[:4], steps=2, progress=False)
