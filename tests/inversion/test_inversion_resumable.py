"""Resumable dataset inversion: a run killed with SIGKILL and restarted equals an
uninterrupted one, loses no finished item and writes none twice; mismatched restarts are
refused. Tolerance: 1e-5 (the restarted run may batch the remaining items differently).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from support.shards import random_targets, shard_names

from crossgap_jax.inversion.config import ExecutionSettings, OTISettings, OVISettings
from crossgap_jax.inversion.resumable import (
    ResumeMismatchError,
    invert_dataset,
    item_init,
    load_inverted,
)
from crossgap_jax.models.bundle import create_clip

TOL = 1e-5
N_ITEMS, SHARD = 64, 8
S = OTISettings(steps=150, record_steps=(17, 50))
EX = ExecutionSettings(batch_size=8, progress=False)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from crossgap_jax.inversion.config import ExecutionSettings, OTISettings
    from crossgap_jax.inversion.resumable import invert_dataset
    from crossgap_jax.models.bundle import create_clip
    clip = create_clip("tiny", 0)
    f = np.random.default_rng(0).normal(size=({n}, clip.config.embed_dim)).astype(np.float32)
    names = [f"item-{{i:03d}}" for i in range({n})]
    invert_dataset(clip, names, f, sys.argv[1], {s!r}, {ex!r}, shard_size={shard})
""").format(n=N_ITEMS, shard=SHARD, s=S, ex=EX)


@pytest.fixture(scope="module")
def data(tiny):
    return random_targets(tiny, N_ITEMS, seed=0, fmt="item-{:03d}")


@pytest.fixture(scope="module")
def uninterrupted(tiny, data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    summary = invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    assert summary.inverted == N_ITEMS and summary.already_done == 0
    return out


def _assert_same(a: dict, b: dict) -> None:
    for key in ("losses", "pseudo_tokens", "recorded_tokens"):
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=TOL, err_msg=key)
    for key in ("features", "recorded_features"):
        scale = np.linalg.norm(b[key], axis=-1, keepdims=True)
        np.testing.assert_allclose(a[key] / scale, b[key] / scale, rtol=0, atol=TOL, err_msg=key)
    np.testing.assert_array_equal(a["targets"], b["targets"])
    np.testing.assert_array_equal(a["index"], b["index"])


@pytest.mark.slow  # > 20 s of the fast lane (issue 14 item 8)
def test_killed_run_resumes_without_loss_or_duplicates(tiny, data, uninterrupted, tmp_path):
    out = str(tmp_path / "killed")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), out], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=REPO),  # this checkout's package
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    try:
        while not glob.glob(os.path.join(out, "shard-*.npz")):
            if child.poll() is not None:
                pytest.fail(f"child exited early ({child.returncode}): "
                            f"{child.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no shard appeared within 600 s")
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    finished = shard_names(out)
    assert 1 <= len(finished) // SHARD < N_ITEMS // SHARD, "the kill did not interrupt the run"
    # A partial temporary file as a kill during a write would leave it.
    with open(os.path.join(out, ".tmp-p0-999999-deadbeef"), "wb") as f:
        f.write(b"PK\x03\x04 truncated")

    summary = invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    assert summary.already_done == len(finished)
    assert summary.inverted == N_ITEMS - len(finished)
    assert not glob.glob(os.path.join(out, ".tmp-*"))
    all_names = shard_names(out)
    assert len(all_names) == N_ITEMS and sorted(all_names) == sorted(data[0])  # no duplicates
    names, got = load_inverted(out)
    ref_names, ref = load_inverted(uninterrupted)
    assert names == ref_names == data[0]
    _assert_same(got, ref)
    np.testing.assert_array_equal(got["record_steps"], [17, 50])
    assert got["losses"].shape == (N_ITEMS, 150)
    assert got["recorded_features"].shape == (N_ITEMS, 2, tiny.config.embed_dim)

    # A third call finds everything done and writes nothing.
    again = invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    assert (again.already_done, again.inverted, again.shards) == (N_ITEMS, 0, [])


# slow (issue 14 item 8): ~20 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_refuses_mismatched_resume(tiny, data, uninterrupted):
    names, f = data
    with pytest.raises(ResumeMismatchError, match="learning_rate"):
        invert_dataset(tiny, names, f, uninterrupted,
                       dataclasses.replace(S, learning_rate=0.1), EX, shard_size=SHARD)
    with pytest.raises(ResumeMismatchError, match="record_steps"):
        invert_dataset(tiny, names, f, uninterrupted,
                       dataclasses.replace(S, record_steps=(17,)), EX, shard_size=SHARD)
    with pytest.raises(ResumeMismatchError, match="params_sha256"):
        invert_dataset(create_clip("tiny", 1), names, f, uninterrupted, S, EX,
                       shard_size=SHARD)
    with pytest.raises(ResumeMismatchError, match="method"):
        invert_dataset(tiny, names, f, uninterrupted,
                       OVISettings(steps=150, record_steps=(17, 50)), EX, shard_size=SHARD)
    changed = f.copy()
    changed[5] += 0.5
    with pytest.raises(ResumeMismatchError, match="item-005"):
        invert_dataset(tiny, names, changed, uninterrupted, S, EX, shard_size=SHARD)
    # Execution options may change: nothing left to do, nothing refused.
    ok = invert_dataset(tiny, names, f, uninterrupted, S,
                        dataclasses.replace(EX, batch_size=16, truncate=False), shard_size=SHARD)
    assert ok.inverted == 0


# slow (issue 14 item 8): ~10 CPU-s here; CI runs it (make test)
@pytest.mark.slow
def test_multi_host_split_and_order(tiny, data, uninterrupted, tmp_path):
    names, f = data
    n = 20
    shared = str(tmp_path / "shared")
    per_host = [str(tmp_path / f"host{i}") for i in range(2)]
    for pi in range(2):
        s = invert_dataset(tiny, names[:n], f[:n], shared, S, EX, shard_size=SHARD,
                           process_index=pi, process_count=2)
        assert s.num_items == 10 and s.inverted == 10
        invert_dataset(tiny, names[:n], f[:n], per_host[pi], S, EX, shard_size=SHARD,
                       process_index=pi, process_count=2)
    ref_names, ref = load_inverted(uninterrupted, names=names[:n])
    for where in (shared, per_host):
        got_names, got = load_inverted(where)
        assert got_names == ref_names
        _assert_same(got, ref)
    # Any requested order; missing items are an error.
    sub = [names[7], names[2], names[15]]
    got_names, got = load_inverted(shared, names=sub)
    assert got_names == sub
    np.testing.assert_array_equal(got["index"], [7, 2, 15])
    with pytest.raises(KeyError, match="item-030"):
        load_inverted(shared, names=[names[30]])


def test_ovi_shards_and_input_checks(tiny, data, tmp_path):
    names, f = data
    out = str(tmp_path / "ovi")
    s = invert_dataset(tiny, names[:5], f[:5], out, OVISettings(steps=6),
                       ExecutionSettings(batch_size=4, progress=False), shard_size=4)
    assert (s.inverted, len(s.shards)) == (5, 2)
    got_names, got = load_inverted(out)
    assert got_names == names[:5]
    assert got["pseudo_tokens"].shape == (5, 1, tiny.config.vision.width)
    assert got["record_steps"].shape == (0,) and got["recorded_features"].shape[1] == 0
    two = OTISettings(steps=2)
    with pytest.raises(ValueError, match="unique"):
        invert_dataset(tiny, ["a", "a"], f[:2], str(tmp_path / "x"), two)
    with pytest.raises(ValueError, match="features"):
        invert_dataset(tiny, names[:3], f[:2], str(tmp_path / "x"), two)
    with pytest.raises(TypeError, match="settings must be OTISettings or OVISettings, got str"):
        invert_dataset(tiny, names[:2], f[:2], str(tmp_path / "x"), "oti")
    with pytest.raises(TypeError, match="execution must be ExecutionSettings, got dict"):
        invert_dataset(tiny, names[:2], f[:2], str(tmp_path / "x"), two, {"batch_size": 2})
    with pytest.raises(FileNotFoundError):
        load_inverted(str(tmp_path / "nothing"))


def test_shards_hold_whole_batches_and_small_runs_are_not_padded(tiny, data, tmp_path,
                                                                  monkeypatch):
    """Shard boundaries fall on batch boundaries (shard_size 3 at batch 2 -> shards of 2),
    every call compiles one batch shape, and a run smaller than one batch is not padded up
    to batch_size (what each inverter call gets is recorded by a spy around ``invert``)."""
    from crossgap_jax.inversion import inverters

    names, f = data
    calls = []
    real = inverters.invert

    def spy(clip, targets, settings, execution, init):
        calls.append((len(targets), execution.pad_to, execution.batch_size))
        return real(clip, targets, settings, execution, init)

    monkeypatch.setattr(inverters, "invert", spy)
    two = OTISettings(steps=2)
    s = invert_dataset(tiny, names[:5], f[:5], str(tmp_path / "a"), two,
                       ExecutionSettings(batch_size=2, progress=False), shard_size=3)
    assert [len(np.load(p)["names"]) for p in s.shards] == [2, 2, 1]
    assert calls == [(2, 2, 2), (2, 2, 2), (1, 2, 2)]
    calls.clear()
    invert_dataset(tiny, names[:2], f[:2], str(tmp_path / "b"), two,
                   ExecutionSettings(batch_size=8, progress=False), shard_size=256)
    assert calls == [(2, 2, 8)]
    # the results are those of one direct call (per-example objective: batching is free)
    got_names, got = load_inverted(str(tmp_path / "a"))
    want = inverters.oti(tiny, f[:5],
                         init=item_init(names[:5], 0, got["pseudo_tokens"].shape[1:]),
                         steps=2, batch_size=2, progress=False)
    order = [got_names.index(n) for n in names[:5]]
    np.testing.assert_allclose(got["features"][order], want.features, rtol=1e-5, atol=1e-6)
