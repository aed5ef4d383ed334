"""Training: losses, augmentation, captions, the jitted step, variants, determinism,
checkpoints and the data mesh (tiny ``crossgap-test`` architecture)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossgap_jax.models.checkpoint.native import load_native
from crossgap_jax.train import (
    AugmentConfig,
    LabelledImages,
    TrainConfig,
    caption_table,
    clip_loss,
    init_params,
    intra_image_loss,
    loss_fn,
    train,
)
from crossgap_jax.train.augment import augment, normalize
from crossgap_jax.train.trainer import load_train_state, make_optimizer, save_train_state

TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "the {}.")
CLASSES = ("cat", "dog", "car", "tree")


def tiny_data(n: int = 16, size: int = 16, seed: int = 0) -> LabelledImages:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    # Class-dependent colour plus noise: learnable, so the loss can go down.
    base = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [200, 200, 40]], np.float32)
    imgs = base[labels][:, None, None, :] + rng.normal(0, 20, (n, size, size, 3))
    return LabelledImages(np.clip(imgs, 0, 255).astype(np.uint8), labels, CLASSES,
                          [f"img{i}" for i in range(n)], "tiny")


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(arch="crossgap-test", variant="clip", steps=3, batch_size=8, learning_rate=3e-3,
                warmup_steps=1, text_length=12, log_every=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


# Jitted once per config (the config is static and hashable); eager would be much slower.
_loss = jax.jit(loss_fn, static_argnums=3)
_value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=3)


def batch_of(data: LabelledImages, cfg: TrainConfig, idx=slice(0, 8)):
    ids, eot = caption_table(data.classnames, TEMPLATES, cfg.text_length)
    labels = data.labels[idx]
    return {"images": jnp.asarray(data.images[idx]), "labels": jnp.asarray(labels),
            "ids": jnp.asarray(ids[labels, 0]), "eot": jnp.asarray(eot[labels, 0])}


# ---------------------------------------------------------------------------------------
# losses
def _np_clip_loss(img, txt, scale, labels):
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    logits = np.exp(scale) * img @ txt.T
    same = (labels[:, None] == labels[None]).astype(np.float64)
    t = same / same.sum(1, keepdims=True)

    def ce(lg):
        lg = lg - lg.max(1, keepdims=True)
        logp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
        return -(t * logp).sum(1).mean()

    return 0.5 * (ce(logits) + ce(logits.T))


def test_clip_loss_matches_numpy_and_reduces_to_clip():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    labels = np.array([0, 1, 0, 2, 3, 1])
    got = float(clip_loss(jnp.asarray(img), jnp.asarray(txt), jnp.log(10.0), jnp.asarray(labels)))
    np.testing.assert_allclose(got, _np_clip_loss(img, txt, np.log(10.0), labels), rtol=1e-5)
    # Distinct labels: identical to CLIP's one-hot diagonal loss.
    distinct = jnp.arange(6)
    np.testing.assert_allclose(float(clip_loss(img, txt, 1.0, distinct)),
                               float(clip_loss(img, txt, 1.0, None)), rtol=1e-6)


def test_intra_loss_prefers_matching_views():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(8, 16)))
    same = float(intra_image_loss(a, a + 0.01, 0.1))
    shuffled = float(intra_image_loss(a, a[::-1], 0.1))
    assert same < 0.1 < shuffled


# ---------------------------------------------------------------------------------------
# augmentation and captions
def test_augment_identity_and_determinism():
    data = tiny_data()
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    ident = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False,
                          brightness=0.0, contrast=0.0)
    x = augment(jax.random.PRNGKey(0), jnp.asarray(data.images), ident, mean, std)
    np.testing.assert_allclose(np.asarray(x), np.asarray(normalize(data.images, mean, std)),
                               atol=1e-4)
    cfg = AugmentConfig()
    a1 = augment(jax.random.PRNGKey(3), jnp.asarray(data.images), cfg, mean, std)
    a2 = augment(jax.random.PRNGKey(3), jnp.asarray(data.images), cfg, mean, std)
    a3 = augment(jax.random.PRNGKey(4), jnp.asarray(data.images), cfg, mean, std)
    assert a1.shape == data.images.shape and np.isfinite(np.asarray(a1)).all()
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    assert not np.allclose(np.asarray(a1), np.asarray(a3))


def test_caption_table():
    ids, eot = caption_table(CLASSES, TEMPLATES, 12)
    assert ids.shape == (4, 3, 12) and eot.shape == (4, 3)
    assert (ids[:, :, 0] == 49406).all()
    assert (np.take_along_axis(ids, eot[..., None], -1)[..., 0] == 49407).all()
    # Different templates give different token rows for the same class.
    assert not np.array_equal(ids[0, 0], ids[0, 1])
    with pytest.raises(ValueError, match="positions"):
        caption_table(CLASSES, ("a very long caption about a {} " + "and more " * 8,), 12)


# ---------------------------------------------------------------------------------------
# the step and the variants
def _steps(cfg, params, batch, n):
    tx = make_optimizer(cfg, params)
    opt = tx.init(params)
    key = jax.random.PRNGKey(0)

    @jax.jit
    def step(p, o):
        (_, m), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, key, cfg)
        u, o = tx.update(g, o, p)
        import optax
        return optax.apply_updates(p, u), o, m

    for _ in range(n):
        params, opt, m = step(params, opt)
    return params, m


@pytest.mark.slow  # > 20 s of the fast lane (issue 14 item 8)
def test_training_lowers_the_loss_on_a_tiny_batch():
    cfg = tiny_cfg(steps=40, augment=AugmentConfig(crop_scale=(0.9, 1.0), flip=False,
                                                   brightness=0.0, contrast=0.0))
    data = tiny_data()
    batch = batch_of(data, cfg)
    params = init_params(cfg)
    key = jax.random.PRNGKey(0)
    before = float(_loss(params, batch, key, cfg)[0])
    params, _ = _steps(cfg, params, batch, 30)
    after = float(_loss(params, batch, key, cfg)[0])
    assert np.isfinite(after) and after < before - 0.1, (before, after)


@pytest.mark.slow  # > 20 s of the fast lane (issue 14 item 8)
def test_variant_c_keeps_temperature_at_one():
    cfg = tiny_cfg(variant="clip-t1")
    res = train(cfg, tiny_data(), TEMPLATES, progress=False)
    assert float(res.clip.params["logit_scale"]) == 0.0
    assert all(h["temperature"] == 1.0 for h in res.history)
    # The learned-temperature variant does move it.
    res_a = train(tiny_cfg(variant="clip"), tiny_data(), TEMPLATES, progress=False)
    assert float(res_a.clip.params["logit_scale"]) != pytest.approx(np.log(1 / 0.07), abs=1e-7)


@pytest.mark.slow  # > 20 s of the fast lane (issue 14 item 8)
def test_intra_term_is_used_only_in_variant_b():
    data = tiny_data()
    key = jax.random.PRNGKey(0)
    cfg_a, cfg_b = tiny_cfg(variant="clip"), tiny_cfg(variant="clip+intra")
    batch = batch_of(data, cfg_a)
    params = init_params(cfg_a)
    (la, ma), ga = _value_and_grad(params, batch, key, cfg_a)
    (lb, mb), gb = _value_and_grad(params, batch, key, cfg_b)
    assert float(ma["intra_loss"]) == 0.0 and float(mb["intra_loss"]) > 0.0
    np.testing.assert_allclose(float(lb), float(mb["clip_loss"]) + float(mb["intra_loss"]),
                               rtol=1e-6)
    # The CLIP term is the same (same first view, same captions) ...
    np.testing.assert_allclose(float(ma["clip_loss"]), float(mb["clip_loss"]), rtol=1e-5)
    # ... and the extra term's gradient reaches the image tower.
    k_a = np.asarray(ga["visual"]["conv1"]["kernel"])
    k_b = np.asarray(gb["visual"]["conv1"]["kernel"])
    assert not np.allclose(k_a, k_b)


@pytest.mark.slow  # > 20 s of the fast lane (issue 14 item 8)
def test_slip_variant_uses_a_head_over_the_trunk():
    from crossgap_jax.models.clip import model as clip_lib
    from crossgap_jax.train.trainer import image_trunk_and_embedding, init_head

    data = tiny_data()
    key = jax.random.PRNGKey(0)
    cfg = tiny_cfg(variant="clip+slip")
    params, head = init_params(cfg), init_head(cfg)
    assert init_head(tiny_cfg(variant="clip+intra")) == {}
    # The trunk output times the projection is exactly the image feature.
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 16, 16, 3)), jnp.float32)
    pooled, emb = image_trunk_and_embedding(params, x, cfg.clip_config)
    assert pooled.shape == (3, cfg.clip_config.vision.width)
    np.testing.assert_allclose(np.asarray(emb), np.asarray(
        clip_lib.encode_image(params, x, config=cfg.clip_config)), rtol=1e-5, atol=1e-6)
    batch = batch_of(data, cfg)
    (loss, m), (g_params, g_head) = jax.jit(
        jax.value_and_grad(lambda p, h: loss_fn(p, batch, key, cfg, h), argnums=(0, 1),
                           has_aux=True))(params, head)
    assert float(m["intra_loss"]) > 0
    assert np.abs(np.asarray(g_head["out"]["kernel"])).sum() > 0
    assert np.abs(np.asarray(g_params["visual"]["conv1"]["kernel"])).sum() > 0
    with pytest.raises(ValueError, match="head"):
        loss_fn(params, batch, key, cfg)
    # Trained end to end; the head is not part of the returned model.
    res = train(cfg, data, TEMPLATES, progress=False)
    assert set(res.clip.params) == set(params)
    assert np.isfinite([h["loss"] for h in res.history]).all()


# slow (issue 14 item 8): ~35 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_same_seed_same_params_different_seed_different(tmp_path):
    from crossgap_jax.models.checkpoint.formats import read_safetensors

    data = tiny_data()
    r1 = train(tiny_cfg(), data, TEMPLATES, progress=False, out_dir=str(tmp_path / "1"))
    r2 = train(tiny_cfg(), data, TEMPLATES, progress=False, out_dir=str(tmp_path / "2"))
    # Same checkpoint content, metadata included (no wall-clock data in it). The bytes may
    # still differ: safetensors writes its metadata map in an unspecified order.
    (t1, m1), (t2, m2) = read_safetensors(r1.checkpoint), read_safetensors(r2.checkpoint)
    assert m1 == m2 and sorted(t1) == sorted(t2)
    assert all(np.array_equal(t1[k], t2[k]) for k in t1)
    r3 = train(tiny_cfg(seed=1), data, TEMPLATES, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(r1.clip.params),
                    jax.tree_util.tree_leaves(r2.clip.params)):
        np.testing.assert_array_equal(a, b)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    diff = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(r1.clip.params),
                                                      jax.tree_util.tree_leaves(r3.clip.params))]
    assert any(diff)


# ---------------------------------------------------------------------------------------
# checkpoints
# slow (issue 14 item 8): ~12 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_checkpoint_roundtrip(tmp_path):
    cfg = tiny_cfg()
    res = train(cfg, tiny_data(), TEMPLATES, out_dir=str(tmp_path), progress=False,
                metadata={"note": "test"})
    assert res.checkpoint and os.path.isfile(res.checkpoint)
    config, params, info = load_native(res.checkpoint)
    assert config == cfg.clip_config
    assert info["metadata"]["train_config"]["variant"] == "clip"
    assert info["metadata"]["note"] == "test"
    for a, b in zip(jax.tree_util.tree_leaves(res.clip.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert os.path.isfile(tmp_path / "history.json")
    assert not os.path.exists(tmp_path / "train_state.npz")  # removed once finished


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    data = tiny_data()
    cfg = tiny_cfg(checkpoint_every=2)
    full = train(cfg, data, TEMPLATES, progress=False)
    params = init_params(cfg)
    tx = make_optimizer(cfg, params)
    # Interrupt a run right after its step-2 checkpoint, then resume from it.
    import crossgap_jax.train.trainer as T

    class Stop(Exception):
        pass

    orig = T.save_train_state

    def save_then_stop(*a, **k):
        orig(*a, **k)
        raise Stop

    T.save_train_state = save_then_stop
    try:
        with pytest.raises(Stop):
            train(cfg, data, TEMPLATES, out_dir=str(tmp_path), progress=False)
    finally:
        T.save_train_state = orig
    assert os.path.isfile(tmp_path / "train_state.npz")
    restored = load_train_state(str(tmp_path / "train_state.npz"), params, tx.init(params), cfg)
    assert restored is not None and restored[2] == 2
    resumed = train(cfg, data, TEMPLATES, out_dir=str(tmp_path), progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(full.clip.params),
                    jax.tree_util.tree_leaves(resumed.clip.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # A state saved for another config is ignored.
    save_train_state(str(tmp_path / "other.npz"), params, tx.init(params), 1, [], cfg)
    assert load_train_state(str(tmp_path / "other.npz"), params, tx.init(params),
                            cfg.replace(seed=5)) is None


# ---------------------------------------------------------------------------------------
# data mesh: 2 fake CPU devices give the same result as 1 (subprocess: device count is
# fixed at JAX start-up).
@pytest.mark.slow
def test_sharded_over_two_devices_matches_one():
    code = textwrap.dedent("""
        import jax, numpy as np, sys
        sys.path.insert(0, %r)
        from test_train import tiny_cfg, tiny_data, TEMPLATES
        from crossgap_jax.train import train
        assert len(jax.devices()) == 2
        cfg = tiny_cfg()
        r2 = train(cfg, tiny_data(), TEMPLATES, progress=False)
        r1 = train(cfg, tiny_data(), TEMPLATES, progress=False, devices=jax.devices()[:1])
        # Same losses (only the reduction order differs) ...
        np.testing.assert_allclose([h["loss"] for h in r1.history],
                                   [h["loss"] for h in r2.history], rtol=1e-5)
        # ... and params: Adam normalises near-zero gradients, which turns reduction-order
        # noise into differences of a small fraction of lr (3e-3) per step.
        for a, b in zip(jax.tree_util.tree_leaves(r1.clip.params),
                        jax.tree_util.tree_leaves(r2.clip.params)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4)
        print("OK")
    """) % os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
