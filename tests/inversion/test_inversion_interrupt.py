"""Ctrl-C during ``invert_dataset`` (issue 22, item 5): the first SIGINT finishes the batch
in flight, writes every finished batch and stops (``InversionInterrupted``); a resumed run
equals an uninterrupted one bit for bit; a second SIGINT aborts at once, before the batch in
flight ends (``InversionAborted``), keeping the shards written before. The signal is sent
from inside the child at a known batch (a hook on the driver's wait), so nothing depends on
timing."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from support.shards import assert_identical, random_targets, shard_names

from crossgap_jax.inversion import ExecutionSettings, OTISettings, interrupt
from crossgap_jax.inversion.resumable import invert_dataset, load_inverted

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, SHARD, BATCH = 24, 8, 4  # 3 shards of 2 batches
S = OTISettings(steps=300, record_steps=(7,))
EX = ExecutionSettings(batch_size=BATCH, progress=False)

CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    import numpy as np
    from crossgap_jax.inversion import ExecutionSettings, OTISettings, driver, interrupt
    from crossgap_jax.inversion.resumable import invert_dataset
    from crossgap_jax.models.bundle import create_clip
    out, at, kills = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    clip = create_clip("tiny", 0)
    f = np.random.default_rng(0).normal(size=({n}, clip.config.embed_dim)).astype(np.float32)
    names = [f"item-{{i:03d}}" for i in range({n})]
    calls, flight = [0], []
    wait = driver.wait_ready
    def hooked(tree):  # batch number `at` is dispatched: SIGINT while it is in flight
        calls[0] += 1
        if calls[0] == at:
            flight.extend(x for x in __import__("jax").tree_util.tree_leaves(tree))
            os.kill(os.getpid(), signal.SIGINT)
            if kills == 2:  # this hook runs on the driver's worker thread: two signals sent
                while not interrupt.active().requested:  # at once would arrive as one
                    time.sleep(0.001)
                os.kill(os.getpid(), signal.SIGINT)
        return wait(tree)
    driver.wait_ready = hooked
    try:
        invert_dataset(clip, names, f, out, {s!r}, {ex!r}, shard_size={shard})
        print(json.dumps({{"result": "finished"}}))
    except interrupt.InversionInterrupted as e:
        s = e.summary
        print(json.dumps({{"result": "interrupted", "inverted": s.inverted,
                          "shards": len(s.shards), "calls": calls[0]}}))
        sys.exit(130)
    except interrupt.InversionAborted:
        busy = not all(x.is_ready() for x in flight)
        print(json.dumps({{"result": "aborted", "batch_still_running": busy,
                          "calls": calls[0]}}), flush=True)
        os._exit(130)
""").format(n=N, shard=SHARD, s=S, ex=EX)


@pytest.fixture(scope="module")
def data(tiny):
    return random_targets(tiny, N, seed=0, fmt="item-{:03d}")


@pytest.fixture(scope="module")
def uninterrupted(tiny, data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("whole"))
    invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    return load_inverted(out)


def _child(out: str, at: int, kills: int, script: str = CHILD) -> tuple[int, dict, str]:
    """Run ``script`` with ``out at kills``: (exit code, its last JSON line, stderr)."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, "-c", script, out, str(at), str(kills)], env=env,
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, p.stdout + p.stderr
    return p.returncode, json.loads(lines[-1]), p.stderr


@pytest.mark.slow
def test_first_ctrl_c_keeps_the_batch_in_flight_and_resumes_bit_identically(
        tiny, data, uninterrupted, tmp_path):
    out = str(tmp_path / "run")
    # SIGINT while batch 3 (the first of shard 2) runs: shard 1 and that batch are written
    rc, res, err = _child(out, at=3, kills=1)
    assert (rc, res["result"]) == (130, "interrupted"), err
    assert (res["inverted"], res["shards"], res["calls"]) == (12, 2, 3)  # no 4th batch
    assert shard_names(out) == data[0][:12]
    assert "stopping after the batch in flight, in about " in err
    assert "Press Ctrl-C again to abort now" in err
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    again = invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    assert (again.already_done, again.inverted) == (12, 12)
    assert_identical(load_inverted(out), uninterrupted)


@pytest.mark.slow
def test_second_ctrl_c_aborts_at_once_and_keeps_the_written_shards(
        tiny, data, uninterrupted, tmp_path):
    out = str(tmp_path / "run")
    rc, res, err = _child(out, at=3, kills=2)
    assert (rc, res["result"], res["calls"]) == (130, "aborted", 3), err
    assert res["batch_still_running"]  # raised before the batch in flight ended
    assert shard_names(out) == data[0][:8]  # shard 1 only; batch 3 is lost
    invert_dataset(tiny, *data, out, S, EX, shard_size=SHARD)
    assert_identical(load_inverted(out), uninterrupted)


def test_handler_installed_only_during_the_run_and_only_on_the_main_thread():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.graceful_stop("OTI") as req:
        assert signal.getsignal(signal.SIGINT) is not before and interrupt.active() is req
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the first Ctrl-C
        assert req.requested
        with pytest.raises(interrupt.InversionAborted):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the second
    assert signal.getsignal(signal.SIGINT) is before and interrupt.active() is None
    seen = {}

    def other():
        with interrupt.graceful_stop("OVI") as r:
            seen["handler"], seen["active"] = signal.getsignal(signal.SIGINT), interrupt.active()
            seen["req"] = r

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen["handler"] is before and seen["active"] is None and not seen["req"].requested


def test_stop_message_names_the_time_left():
    req = interrupt.StopRequest("OVI")
    assert "when it ends (its step time is not measured yet)" in req.message()
    req.eta = lambda: (185.2, "step 158/1000 at 0.22 s/step")
    msg = req.message()
    assert msg.startswith("OVI: interrupt: stopping after the batch in flight, in about "
                          "3 min 5 s (step 158/1000 at 0.22 s/step)")
    assert [interrupt.format_seconds(s) for s in (0.4, 59, 3600 + 240)] == [
        "0 s", "59 s", "1 h 4 min"]


# With the progress bar the program carries a host callback, and the CPU backend then runs
# the whole compiled loop inside the dispatching call: the driver dispatches from a worker
# thread so that the main thread still handles Ctrl-C mid-batch. The signal is sent from the
# progress report of step AT_STEP of batch 3 (while that batch runs).
BAR_CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    import numpy as np
    from crossgap_jax.inversion import ExecutionSettings, OTISettings, interrupt, progress
    from crossgap_jax.inversion.resumable import invert_dataset
    from crossgap_jax.models.bundle import create_clip
    out, at_step, kills = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    clip = create_clip("tiny", 0)
    f = np.random.default_rng(0).normal(size=({n}, clip.config.embed_dim)).astype(np.float32)
    names = [f"item-{{i:03d}}" for i in range({n})]
    steps, seen = {steps}, []
    report = progress._report
    def hooked(msg):  # every step's report (the first batch) or every ~0.5 s (later ones)
        report(msg)
        batch = sum(1 for s in seen if s == steps) + 1  # the batch this report is of
        seen.append(int(msg[1]))
        if (batch == 3 and at_step <= int(msg[1]) < steps
                and not getattr(hooked, "sent", False)):
            hooked.sent = True
            os.kill(os.getpid(), signal.SIGINT)
            if kills == 2:  # a second, separate signal once the first one was handled
                while not interrupt.active().requested:
                    time.sleep(0.001)
                os.kill(os.getpid(), signal.SIGINT)
    progress._report = hooked
    try:
        invert_dataset(clip, names, f, out, {s!r}, {ex!r}, shard_size={shard})
        print(json.dumps({{"result": "finished"}}))
    except interrupt.InversionInterrupted as e:
        print(json.dumps({{"result": "interrupted", "inverted": e.summary.inverted}}))
        sys.exit(130)
    except interrupt.InversionAborted:
        print(json.dumps({{"result": "aborted", "last_report": seen[-1]}}), flush=True)
        os._exit(130)
""").format(n=N, shard=SHARD, s=dataclasses.replace(S, steps=3000),
           ex=dataclasses.replace(EX, progress=True), steps=3000)


@pytest.mark.slow
@pytest.mark.parametrize("kills", [1, 2])
def test_ctrl_c_is_handled_mid_batch_with_the_progress_bar(tmp_path, kills):
    """One Ctrl-C: the message comes while the batch runs (it names a step short of the
    end) and the run stops after it with 3 batches written; two: aborted before the batch
    ended (the last step reported is short of the end), the two earlier batches kept."""
    out = str(tmp_path / "run")
    rc, res, err = _child(out, 5, kills, BAR_CHILD)  # from step 5 of batch 3
    if kills == 1:
        assert (rc, res) == (130, {"result": "interrupted", "inverted": 12}), err
        import re
        (step,) = re.findall(r"stopping after the batch in flight, in about [^(]*\(step "
                             r"(\d+)/3000", err)
        assert int(step) < 3000, err
        assert shard_names(out) == [f"item-{i:03d}" for i in range(12)]
    else:
        assert (rc, res["result"]) == (130, "aborted"), err
        assert res["last_report"] < 3000
        assert shard_names(out) == [f"item-{i:03d}" for i in range(8)]
