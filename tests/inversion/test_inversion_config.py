"""Typed inversion settings (crossgap_jax.inversion.config): one source of defaults, the
keyword API mapped onto them, validation, the resumable manifest, and the typed ``invert``
equal to the keyword ``oti``/``ovi``; and the compiled loop: one ``while`` in the lowered
program whatever the number of record steps (counted in the StableHLO text)."""

from __future__ import annotations

import inspect
import re

import jax.numpy as jnp
import numpy as np
import pytest

from crossgap_jax.inversion import (
    ExecutionSettings,
    HParams,
    OTISettings,
    OVISettings,
    invert,
    oti,
    oti_fn,
    ovi,
    ovi_fn,
    prepare_template,
)
from crossgap_jax.inversion import config as cfg
from crossgap_jax.inversion.resumable import _hparams


@pytest.mark.parametrize("method,fn", [("oti", oti), ("ovi", ovi)])
def test_keyword_defaults_are_the_dataclass_defaults(method, fn):
    settings, execution = cfg.SETTINGS[method](), ExecutionSettings()
    sig = inspect.signature(fn).parameters
    names = set(cfg.settings_fields(method)) | set(cfg.EXECUTION_OPTIONS[method])
    assert names <= set(sig), sorted(names - set(sig))
    for name in names:
        want = getattr(settings if name in cfg.settings_fields(method) else execution, name)
        got = sig[name].default
        assert (tuple(got) if name == "record_steps" else got) == want, name
    # Paper defaults (PAPER.md): OTI 150 steps, OVI 1000, AdamW 2e-2 / 0.01, R = P = 1.
    assert (OTISettings().steps, OVISettings().steps) == (150, 1000)
    assert (settings.learning_rate, settings.weight_decay, settings.num_tokens) == (2e-2, 0.01, 1)
    assert OTISettings().template == "a photo of {}"


def test_split_kwargs_and_validation():
    s, e = cfg.split_kwargs("oti", dict(steps=5, record_steps=[4, 2, 4], batch_size=3,
                                        template="an image of {}", cache_prefix=False))
    assert s == OTISettings(steps=5, record_steps=(2, 4), template="an image of {}")
    assert e == ExecutionSettings(batch_size=3, cache_prefix=False)
    assert cfg.split_kwargs("oti", cfg.as_kwargs(s, e)) == (s, e)
    with pytest.raises(TypeError, match=r"unknown ovi arguments: \['template'\]"):
        cfg.split_kwargs("ovi", dict(template="a {}"))
    for bad, match in [(dict(steps=0), "steps"), (dict(record_steps=(151,)), "record_steps"),
                       (dict(num_tokens=0), "num_tokens"), (dict(template="no slot"),
                                                            "template"),
                       (dict(loss_reduction="sum"), "loss_reduction")]:
        with pytest.raises(ValueError, match=match):
            OTISettings(**bad)
    for bad, match in [(dict(batch_size=0), "batch_size"), (dict(precision="fp8"), "precision"),
                       (dict(on_nonfinite="ignore"), "on_nonfinite"), (dict(devices=()),
                                                                       "devices")]:
        with pytest.raises(ValueError, match=match):
            ExecutionSettings(**bad)


def test_manifest_keys_match_the_resumable_format():
    """The manifest written by invert_dataset: every setting, the method, no default
    loss_reduction; batch_size only with the batch mean."""
    hp = _hparams(OVISettings(steps=7, learning_rate=0.5), ExecutionSettings(batch_size=4))
    assert hp == dict(steps=7, num_tokens=1, learning_rate=0.5, weight_decay=0.01, seed=0,
                      record_steps=[], b1=0.9, b2=0.999, eps=1e-8, method="ovi")
    hp = _hparams(OTISettings(loss_reduction="mean"), ExecutionSettings(batch_size=4))
    assert hp["loss_reduction"] == "mean" and hp["batch_size"] == 4
    assert hp["template"] == "a photo of {}"


def test_invert_equals_keyword_api(tiny):
    t = np.random.default_rng(0).normal(size=(3, tiny.config.embed_dim)).astype(np.float32)
    a = oti(tiny, t, steps=4, record_steps=(2,), progress=False)
    b = invert(tiny, t, OTISettings(steps=4, record_steps=(2,)),
               ExecutionSettings(progress=False))
    np.testing.assert_array_equal(a.pseudo_tokens, b.pseudo_tokens)
    np.testing.assert_array_equal(a.recorded_features, b.recorded_features)
    assert a.hparams == b.hparams
    with pytest.raises(TypeError, match="OTISettings or OVISettings"):
        invert(tiny, t, cfg.InversionSettings())


def _loops(lowered) -> int:
    return len(re.findall(r"stablehlo\.while", lowered.as_text()))


@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_one_loop_whatever_the_record_steps(tiny, method):
    """Each record step used to add a copy of the scan body (1 -> 2 -> 12 loops for 0/1/11
    record steps); now the snapshots go into a buffer inside the one loop."""
    c, h, n = tiny.config, HParams().as_arrays(), 4
    t = jnp.ones((n, c.embed_dim))
    counts = []
    for rec in [(), (6,), tuple(range(1, 12))]:
        if method == "oti":
            tpl = prepare_template("a photo of {}", 1, tiny.tokenizer)
            base = tiny.params["token_embedding"]["embedding"][jnp.asarray(tpl.ids[:7])]
            low = oti_fn.lower(tiny.params, t, jnp.zeros((n, 1, c.text.width)), base, h,
                               config=c, placeholder_index=tpl.placeholder_index,
                               eot_index=tpl.eot_index, steps=12, record_steps=rec)
        else:
            low = ovi_fn.lower(tiny.params, t, jnp.zeros((n, 1, c.vision.width)), h, config=c,
                               steps=12, record_steps=rec)
        counts.append(_loops(low))
    assert counts == [1, 1, 1]


def test_one_step_and_loss_reduction_check():
    from crossgap_jax.inversion import check_loss_reduction, check_steps

    assert check_steps(10, [5, 1, 5, 10]) == (1, 5, 10)
    for steps in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="oti_steps must be a positive int"):
            check_steps(steps, (), "oti_steps")
    with pytest.raises(ValueError, match=r"record_steps must lie in 1..steps=4; got \[0, 5\]"):
        check_steps(4, (0, 2, 5))
    with pytest.raises(ValueError, match="record_steps must lie in"):
        cfg.OTISettings(steps=3, record_steps=(4,))
    assert check_loss_reduction("mean") == "mean"
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        check_loss_reduction("sum")
