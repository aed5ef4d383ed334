"""The step-level progress bar of OTI/OVI: chunks of one compiled loop, bit-identical to the
single-program run, no recompilation, and chunk lengths that keep the bar moving."""

from __future__ import annotations

import numpy as np
import pytest
from compile_counter import CompileCounter  # the project's compile-logging helper

from crossgap_jax.inversion import driver, inverters, oti, ovi
from crossgap_jax.models import create_clip

FIELDS = ("pseudo_tokens", "features", "losses", "recorded_tokens", "recorded_features")


@pytest.fixture(scope="module")
def tiny():
    return create_clip("tiny", seed=1)


@pytest.fixture(scope="module")
def targets():
    return np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32)


class _Bar:
    """Stands in for tqdm: records each update."""

    instances: list = []

    def __init__(self, *a, total=None, disable=False, **kw):
        self.total, self.updates = total, []
        _Bar.instances.append(self)

    def update(self, k):
        self.updates.append(k)

    def close(self):
        pass


@pytest.mark.parametrize("method,kw", [("oti", dict(steps=12, record_steps=(3, 7, 12))),
                                       ("ovi", dict(steps=9, record_steps=(2, 5)))])
@pytest.mark.parametrize("seconds", [0.0, 1e9])
def test_chunked_run_is_bit_identical(tiny, targets, method, kw, seconds, monkeypatch):
    fn = oti if method == "oti" else ovi
    plain = fn(tiny, targets, batch_size=4, progress=False, **kw)
    monkeypatch.setattr(driver, "PROGRESS_SECONDS", seconds)
    monkeypatch.setattr(driver, "tqdm", _Bar)
    _Bar.instances = []
    shown = fn(tiny, targets, batch_size=4, progress=True, **kw)
    for k in FIELDS:
        a, b = getattr(plain, k), getattr(shown, k)
        assert a.shape == b.shape and a.dtype == b.dtype, k
        np.testing.assert_array_equal(a, b, err_msg=k)
    (bar,) = _Bar.instances
    steps = kw["steps"]
    assert bar.total == 3 * steps and sum(bar.updates) == 3 * steps  # 3 batches of 4
    # seconds = 0: one step per chunk; 1e9: chunks of 1, 8, then the rest (growth cap 8x).
    per_batch = [1] * steps if seconds == 0 else [1, min(8, steps - 1), steps - 1 - 8][
        :2 + (steps > 9)]
    assert bar.updates == per_batch * 3


@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_chunks_do_not_recompile(tiny, targets, method, monkeypatch):
    fn = oti if method == "oti" else ovi
    chunk = inverters._oti_chunk if method == "oti" else inverters._ovi_chunk
    monkeypatch.setattr(driver, "tqdm", _Bar)
    monkeypatch.setattr(driver, "PROGRESS_SECONDS", 0.0)
    kw = dict(steps=6, batch_size=4, record_steps=(2,), progress=True)
    fn(tiny, targets, **kw)  # warm: compiles init, chunk and finish programs once
    # Other chunk lengths (1, 8, ...), other hyper-parameters: the same programs.
    monkeypatch.setattr(driver, "PROGRESS_SECONDS", 1e9)
    with CompileCounter() as c:
        fn(tiny, targets, learning_rate=0.05, seed=2, **kw)
    assert c.events == [] and c.compiles == 0, c.logs
    assert not [m for m in c.logs if m.startswith(f"Compiling jit({chunk.__name__})")]


def test_chunk_lengths_follow_the_measured_speed(monkeypatch):
    """Simulated clock: compilation takes 30 s, a step 0.5 s. After the first chunk the bar
    moves every <= PROGRESS_SECONDS (2 s), and never waits more than one step longer."""
    clock = {"t": 0.0, "calls": 0}

    def fake_chunk(state, start, count):
        clock["t"] += 0.5 * int(count) + (30.0 if clock["calls"] == 0 else 0.0)
        clock["calls"] += 1
        return state

    monkeypatch.setattr(driver.time, "perf_counter", lambda: clock["t"])
    updates, times = [], []

    def on_steps(k):
        updates.append(k)
        times.append(clock["t"])

    x0 = np.zeros((2, 1, 4), np.float32)
    out = driver.run_batch_chunked(fake_chunk, lambda st: st, x0, 100, 0, on_steps)
    assert out.tokens.shape == (2, 1, 4) and sum(updates) == 100
    gaps = np.diff(times)
    assert updates[:3] == [1, 1, 4] and max(gaps) <= 2.0 and min(updates[2:-1]) == 4
