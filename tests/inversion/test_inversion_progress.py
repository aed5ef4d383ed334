"""The step-level progress bar of OTI/OVI: a host callback inside the one compiled loop.

Checked: the results are bit-identical with and without the bar; the bar advances every
step of the first batch and at the measured interval after it; the compiled program with
the callback has exactly the array operations of the program without it (plus a conditional
host callback and scalar bookkeeping); a second call with another channel, interval or
hyper-parameters compiles nothing; the channel registry (intervals, closed channels,
out-of-order reports, threads).
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.compile_counter import CompileCounter  # the project's compile-logging helper
from support.tiny_models import tiny_clip

from crossgap_jax.bench.hlo import array_ops, opcodes
from crossgap_jax.inversion import HParams, driver, oti, ovi, ovi_fn, progress

FIELDS = ("pseudo_tokens", "features", "losses", "recorded_tokens", "recorded_features")


@pytest.fixture(scope="module")
def tiny():
    return tiny_clip(1)


@pytest.fixture(scope="module")
def targets():
    return np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32)


class _Bar:
    """Stands in for tqdm: records each update (from whichever thread calls it)."""

    instances: list = []

    def __init__(self, *a, total=None, disable=False, **kw):
        self.total, self.updates, self.postfixes = total, [], []
        _Bar.instances.append(self)

    postfix = ""

    def update(self, k):
        self.updates.append(k)

    def set_postfix_str(self, s="", refresh=True):
        self.postfix = s
        self.postfixes.append(s)

    def close(self):
        pass


@pytest.mark.parametrize("method,kw", [
    ("oti", dict(steps=12, record_steps=(3, 7, 12))),
    pytest.param("ovi", dict(steps=9, record_steps=(2, 5)), marks=pytest.mark.slow)])
@pytest.mark.parametrize("report_seconds", [0.0, pytest.param(1e9, marks=pytest.mark.slow)])
def test_bar_moves_and_changes_nothing(tiny, targets, method, kw, report_seconds,
                                       monkeypatch):
    fn = oti if method == "oti" else ovi
    plain = fn(tiny, targets, batch_size=4, progress=False, **kw)
    monkeypatch.setattr(driver, "tqdm", _Bar)
    monkeypatch.setattr(progress, "REPORT_SECONDS", report_seconds)
    _Bar.instances = []
    shown = fn(tiny, targets, batch_size=4, progress=True, **kw)
    for k in FIELDS:
        a, b = getattr(plain, k), getattr(shown, k)
        assert a.shape == b.shape and a.dtype == b.dtype, k
        np.testing.assert_array_equal(a, b, err_msg=k)
    (bar,) = _Bar.instances
    steps = kw["steps"]
    # 3 batches of 4 (10 examples). The first reports every step; the later ones every
    # REPORT_SECONDS at the measured speed: 0 s -> every step, 1e9 s -> the last step only.
    later = [1] * steps if report_seconds == 0 else [steps]
    assert bar.total == 3 * steps and bar.updates == [1] * steps + later * 2
    # "compiling" while the first batch compiles, cleared by its first report
    assert bar.postfixes == ["compiling / step 1", ""]


@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_other_channels_and_intervals_do_not_recompile(tiny, targets, method, monkeypatch):
    fn = oti if method == "oti" else ovi
    monkeypatch.setattr(driver, "tqdm", _Bar)
    kw = dict(steps=6, batch_size=4, record_steps=(2,), progress=True)
    fn(tiny, targets, **kw)  # warm: compiles the program with the callback once
    _Bar.instances = []
    monkeypatch.setattr(progress, "REPORT_SECONDS", 1e9)  # other intervals after batch 1
    with CompileCounter() as c:  # new channels, intervals and values: no compilation
        fn(tiny, targets, learning_rate=0.05, seed=2, **kw)
    assert c.events == [] and c.compiles == 0, c.logs
    assert _Bar.instances[0].updates == [1] * 6 + [6, 6]


def test_compiled_program_is_the_quiet_one_plus_the_callback(tiny):
    """What the bar adds to the optimised program: a conditional host callback and scalar
    bookkeeping; every operation on an array (fusions, dots, loops, copies) is unchanged."""
    cfg = tiny.config
    rng = np.random.default_rng(0)
    t = jnp.asarray(rng.standard_normal((4, cfg.embed_dim)), jnp.float32)
    x0 = jnp.asarray(0.02 * rng.standard_normal((4, 1, cfg.vision.width)), jnp.float32)
    h = HParams().as_arrays()
    kw = dict(config=cfg, steps=5, record_steps=(2,))
    quiet = ovi_fn.lower(tiny.params, t, x0, h, None, None, **kw).compile().as_text()
    handle = np.asarray([7, 1], np.int32)
    shown = ovi_fn.lower(tiny.params, t, x0, h, None, handle, **kw).compile().as_text()
    assert sum(array_ops(quiet).values()) > 100
    assert array_ops(quiet) == array_ops(shown)
    q, s = opcodes(quiet), opcodes(shown)
    assert q["custom-call"] == 0 and s["custom-call"] == 1
    assert s["conditional"] == q["conditional"] + 1 and not q - s


def test_report_interval_follows_the_measured_step_time(monkeypatch):
    """A simulated clock: reports at steps 1..5, 0.2 s apart -> 0.2 s per step; the next
    batch reports every REPORT_SECONDS / 0.2 s = 2 steps (0.5 s), at least every step."""
    clock = {"t": 0.0}
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock["t"])
    with progress.channel(lambda k: None) as ch:
        for done in range(1, 6):
            clock["t"] += 30.0 if done == 1 else 0.2  # the first includes compilation
            progress._report(np.asarray([ch.id, done], np.int32))
    assert ch.seconds_per_step() == pytest.approx(0.2)
    assert ch.next_every() == 2 and ch.next_every(target=0.05) == 1
    assert progress.Channel(lambda k: None, 4).next_every() == 4  # nothing measured: kept


def test_closed_channel_drops_reports_and_steps_never_go_back():
    got = []
    with progress.channel(got.append) as ch:
        for done in (1, 3, 2):  # 3: two steps in one report; 2: late, out of order: ignored
            progress._report(np.asarray([ch.id, done], np.int32))
    progress._report(np.asarray([ch.id, 4], np.int32))  # after close: dropped
    assert got == [1, 2] and ch.id not in progress._channels


@pytest.mark.slow  # the demo==reproduce test runs the concurrent demo too
def test_concurrent_calls_report_to_their_own_bars(tiny, targets, monkeypatch):
    """The demo runs OVI in a second thread beside OTI: each call's steps reach its own bar."""
    monkeypatch.setattr(driver, "tqdm", _Bar)
    _Bar.instances = []
    errors = []

    def run(fn, steps):
        try:
            fn(tiny, targets[:4], steps=steps, batch_size=4, progress=True)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(oti, 7)),
               threading.Thread(target=run, args=(ovi, 5))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert sorted(b.updates for b in _Bar.instances) == [[1] * 5, [1] * 7]


@pytest.mark.parametrize("every,expected", [(1, [1] * 7), (3, [3, 3, 1]), (10, [7])])
def test_emit_reports_every_kth_and_the_last_step(every, expected):
    """The traced side in a plain loop: reports at multiples of ``every`` and the last step,
    ``every`` a traced argument (one program for all three)."""
    seen = []

    @jax.jit
    def loop(handle):
        def body(c, _):
            c = c + 1
            progress.emit(handle, c, 7)
            return c, None
        return jax.lax.scan(body, jnp.int32(0), None, length=7)[0]

    with progress.channel(seen.append, every) as ch:
        assert int(jax.block_until_ready(loop(ch.handle))) == 7
    assert seen == expected
