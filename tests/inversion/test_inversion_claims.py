"""Two runs into one folder (issue 22, item 7): items are claimed with OS file locks, so
concurrent runs split the work, never compute an item twice and together give the result
of one run; a claim left by a killed process does not block."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from support.shards import assert_identical, random_targets, shard_names

from crossgap_jax.inversion import ExecutionSettings, OTISettings, resumable
from crossgap_jax.inversion.resumable import _Claims, invert_dataset, load_inverted

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, SHARD = 24, 4
S = OTISettings(steps=20, record_steps=(5,))
EX = ExecutionSettings(batch_size=4, progress=False)


@pytest.fixture(scope="module")
def data(tiny):
    return random_targets(tiny, N, seed=3, fmt="x{:02d}")


@pytest.fixture(scope="module")
def single(tiny, data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single"))
    invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    return load_inverted(out)


def test_two_concurrent_runs_split_the_work(tiny, data, single, tmp_path, monkeypatch):
    out = str(tmp_path / "shared")
    computed: list[str] = []
    barrier = threading.Barrier(2, timeout=120)
    first = threading.local()
    real = resumable._invert_chunk

    def counted(clip, names, features, chunk, *args, **kw):
        if not getattr(first, "seen", False):  # both runs hold a claim before either computes
            first.seen = True
            barrier.wait()
        computed.extend(names[i] for i in chunk)
        return real(clip, names, features, chunk, *args, **kw)

    monkeypatch.setattr(resumable, "_invert_chunk", counted)
    summaries, errors = [], []

    def run():
        try:
            summaries.append(invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(computed) == data[0]  # every item computed exactly once
    a, b = summaries
    assert a.inverted > 0 and b.inverted > 0 and a.inverted + b.inverted == N
    assert a.inverted + a.reused == N and b.inverted + b.reused == N
    assert_identical(load_inverted(out), single)  # no duplicates, same values
    assert os.listdir(os.path.join(out, resumable.CLAIMS)) == []  # every claim released


def test_live_claim_is_skipped_and_its_items_taken_over_when_released(tiny, data, single,
                                                                       tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    claims = _Claims(out)
    with claims.lock:
        peer = claims.claim(data[0][4:8])  # another run holds shard 2's items
    done: list = []
    t = threading.Thread(target=lambda: done.append(invert_dataset(
        tiny, *data, out, S, EX, shard_size=SHARD)), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 240
        while len(shard_names(out)) < N - 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert shard_names(out) == data[0][:4] + data[0][8:]
        time.sleep(1.0)
        assert t.is_alive()  # everything else is finished; it waits for the live claim
    finally:
        claims.release(peer)  # the peer stops without writing: the waiting run computes them
    t.join(timeout=240)
    assert not t.is_alive() and (done[0].inverted, done[0].reused) == (N, 0)
    assert_identical(load_inverted(out), single)


def test_stale_claim_of_a_killed_process_does_not_block(tiny, data, single, tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    child = textwrap.dedent("""
        import sys, time
        from crossgap_jax.inversion.resumable import _Claims
        c = _Claims(sys.argv[1])
        with c.lock:
            held = c.claim(sys.argv[2:])  # (a dropped FileLock releases itself)
        print("claimed", flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", child, out, *data[0][:12]], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "claimed"
        with _Claims(out).lock:
            assert list(_Claims(out).live().values()) == [set(data[0][:12])]
    finally:
        p.kill()  # SIGKILL: the claim stays on disk, its OS lock is released
        p.wait()
    assert len(os.listdir(os.path.join(out, resumable.CLAIMS))) == 2  # json + lock left
    s = invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    assert (s.inverted, s.reused) == (N, 0)
    assert_identical(load_inverted(out), single)
    assert os.listdir(os.path.join(out, resumable.CLAIMS)) == []
