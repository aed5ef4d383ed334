"""OTI / OVI sharded over 8 (fake CPU) devices equal the single-device run.

The check runs in a subprocess because the device count must be fixed (through
``XLA_FLAGS=--xla_force_host_platform_device_count=8``) before JAX is imported. The
subprocess reports numbers as JSON; the assertions and their tolerances are here:
outputs within 1e-5 of the single-device run (losses, tokens; features relative to their
norm), a ragged N (13 examples, batch 8: the last batch is padded) returning exactly 13
rows, and evidence that the examples were really split: the compiled program's inputs and
outputs are sharded over all 8 devices, each device holds one example, and the program
contains no collective (each example is computed where it lives), also with the progress
bar's per-step callback, which reports every step once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# A subprocess with 8 fake devices compiling every variant: minutes on 2 cores.
pytestmark = pytest.mark.slow

TOL = 1e-5

SCRIPT = textwrap.dedent(r"""
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from crossgap_jax.inversion import oti, ovi, oti_fn, ovi_fn, prepare_template, HParams
    from crossgap_jax.inversion import sharding as shd
    from crossgap_jax.models.bundle import CLIP, create_clip

    out = {"devices": len(jax.devices())}
    clip = create_clip("tiny", 0)
    rng = np.random.default_rng(0)
    t = rng.normal(size=(13, clip.config.embed_dim)).astype(np.float32)
    d0 = [jax.devices()[0]]

    def rel(a, b):
        s = np.linalg.norm(b, axis=-1, keepdims=True)
        return float(np.abs(a / s - b / s).max())

    def diffs(a, b):
        return {"losses": float(np.abs(a.losses - b.losses).max()),
                "tokens": float(np.abs(a.pseudo_tokens - b.pseudo_tokens).max()),
                "features": rel(a.features, b.features),
                "recorded": rel(a.recorded_features, b.recorded_features)}

    for name, fn in (("oti", oti), ("ovi", ovi)):
        kw = dict(steps=8, record_steps=(3,), progress=False)
        sharded = fn(clip, t, batch_size=8, **kw)              # all 8 devices, 2 batches
        single = fn(clip, t, batch_size=8, devices=d0, **kw)   # same batches, 1 device
        unpadded = fn(clip, t, batch_size=13, devices=d0, **kw)  # one batch, no padding
        out[name] = {
            "devices_used": sharded.hparams["devices"],
            "single_devices_used": single.hparams["devices"],
            "rows": [len(sharded.features), len(sharded.losses[0]),
                     len(sharded.pseudo_tokens), sharded.recorded_features.shape[1]],
            "vs_single": diffs(sharded, single),
            "vs_unpadded": diffs(sharded, unpadded),
            "finite": bool(np.isfinite(sharded.losses).all()),
        }

    # Params committed to one device still work when sharding over 8 (replicated first).
    committed = CLIP(clip.config, jax.device_put(clip.params, jax.devices()[0]))
    res = oti(committed, t, steps=8, record_steps=(3,), batch_size=8, progress=False)
    out["committed_params_ok"] = len(res.features) == 13

    # The progress bar over 8 devices: one report per step of each batch, the same numbers.
    from crossgap_jax.inversion import driver
    bars = []

    class Bar:
        def __init__(self, *a, total=None, **k):
            self.total, self.updates = total, []
            bars.append(self)

        postfix = ""

        def update(self, k):
            self.updates.append(k)

        def set_postfix_str(self, s="", refresh=True):
            self.postfix = s

        def close(self):
            pass

    driver.tqdm = Bar
    from crossgap_jax.inversion import progress
    progress.REPORT_SECONDS = 0.0  # every step of every batch reported
    for name, fn in (("oti", oti), ("ovi", ovi)):
        kw = dict(steps=8, record_steps=(3,), batch_size=8)
        quiet = fn(clip, t, progress=False, **kw)
        shown = fn(clip, t, progress=True, **kw)
        out[name]["progress_updates"] = bars[-1].updates
        out[name]["progress_identical"] = all(
            np.array_equal(getattr(quiet, k), getattr(shown, k))
            for k in ("pseudo_tokens", "features", "losses", "recorded_features"))

    # The compiled program: sharded inputs -> sharded outputs, one example per device,
    # no collectives.
    mesh = shd.make_mesh()
    tpl = prepare_template("a photo of {}", 1, clip.tokenizer)
    base = clip.params["token_embedding"]["embedding"][jnp.asarray(tpl.ids[:6])]
    params, base, h = shd.replicate((clip.params, base, HParams().as_arrays()), mesh)
    x0 = 0.02 * rng.normal(size=(8, 1, clip.config.text.width)).astype(np.float32)
    xv = 0.02 * rng.normal(size=(8, 1, clip.config.vision.width)).astype(np.float32)
    tt, x0, xv = shd.shard_examples((t[:8], x0, xv), mesh)
    programs = {
        "oti": (oti_fn, (params, tt, x0, base, h),
                dict(config=clip.config, placeholder_index=4, eot_index=5, steps=3,
                     record_steps=(2,))),
        "ovi": (ovi_fn, (params, tt, xv, h), dict(config=clip.config, steps=3,
                                                  record_steps=(2,))),
    }
    for name, (core, args, kw) in programs.items():
        compiled = core.lower(*args, **kw).compile()
        hlo = compiled.as_text()
        raw = compiled(*args)
        out[name]["collectives"] = sorted(set(re.findall(
            r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)", hlo)))
        shown = core.lower(*args, None, np.asarray([1, 1], np.int32), **kw).compile().as_text()
        out[name]["collectives_with_progress"] = sorted(set(re.findall(
            r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)", shown)))
        out[name]["out_specs"] = {
            k: list(getattr(compiled.output_shardings, k).spec)
            for k in ("tokens", "features", "losses")}
        out[name]["feature_shards"] = sorted(
            (s.device.id, s.data.shape[0]) for s in raw.features.addressable_shards)
        out[name]["feature_devices"] = len(raw.features.sharding.device_set)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    script = tmp_path_factory.mktemp("multidevice") / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=900, cwd=os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"subprocess failed:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_eight_devices_visible(report):
    assert report["devices"] == 8


@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_sharded_equals_single_device(report, method):
    r = report[method]
    assert r["devices_used"] == 8 and r["single_devices_used"] == 1
    assert r["rows"] == [13, 13, 13, 13]  # ragged N: padding rows are dropped
    assert r["finite"]
    for other in ("vs_single", "vs_unpadded"):
        for key, diff in r[other].items():
            assert diff <= TOL, (method, other, key, diff)


@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_examples_really_sharded(report, method):
    r = report[method]
    assert r["collectives"] == [], r["collectives"]
    assert r["out_specs"] == {"tokens": ["data"], "features": ["data"],
                              "losses": [None, "data"]}
    assert r["feature_devices"] == 8
    assert r["feature_shards"] == [[i, 1] for i in range(8)]  # (device id, rows)


@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_progress_over_devices(report, method):
    """With the bar, 2 batches of 8 steps report 16 single steps; the same numbers; the
    program with the callback still has no collective."""
    r = report[method]
    assert r["progress_updates"] == [1] * 16
    assert r["progress_identical"]
    assert r["collectives_with_progress"] == [], r["collectives_with_progress"]


def test_committed_params(report):
    assert report["committed_params_ok"]
