"""Multi-host, proven with real processes: ``jax.distributed`` on this machine's CPU.

Two processes (2 fake CPU devices each) join a localhost coordinator, as the hosts of a TPU
pod or a multi-GPU cluster would (docs/pipeline.md, "Multi-host runs"), and write into one
shared folder:

- the resumable inversion (:func:`invert_dataset`): every item inverted exactly once, by the
  process :func:`process_shard` gives it; results equal a single-process run to 1e-6; one
  process killed mid-run (with the job, as a scheduler does) and restarted resumes: its
  finished shards are kept, the rest is done once;
- a bounded ``crossgap-jax reproduce --distributed`` (coordinator, process count and id given
  as options): the same metrics as a single-process run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from crossgap_jax.inversion import load_inverted, process_shard

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(REPO, "tests", "support", "multihost_worker.py")
N_ITEMS, STEPS = 16, 600


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _spawn(cmds: list[list[str]]) -> list[subprocess.Popen]:
    return [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(), cwd=REPO) for c in cmds]


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _workers(out_dir: str, nproc: int, steps: int = STEPS) -> list[subprocess.Popen]:
    port = str(_free_port()) if nproc > 1 else "0"
    return _spawn([[sys.executable, WORKER, port, str(i), str(nproc), out_dir, str(N_ITEMS),
                    str(steps)] for i in range(nproc)])


def _summaries(outs: list[str]) -> list[dict]:
    """Each worker's ``SUMMARY {json}``. The JSON object is decoded up to its closing brace:
    the collectives' C++ logging (``[Gloo] Rank 0 is connected ...``) writes to the same
    stdout and can land on the summary's line."""
    decode = json.JSONDecoder().raw_decode
    return [decode(o.split("SUMMARY ")[-1])[0] for o in outs]


def _shard_names(out_dir: str) -> list[list[str]]:
    files = sorted(f for f in os.listdir(out_dir) if f.startswith("shard-"))
    return [np.load(os.path.join(out_dir, f))["names"].tolist() for f in files]


@pytest.mark.slow
def test_distributed_inversion_killed_and_resumed_equals_single_process(tmp_path):
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    ref_proc = _workers(single, 1)
    # Run 1: two processes; once process 1 has written a shard, the job is killed.
    procs = _workers(multi, 2)
    mine_1 = {f"item{i:03d}" for i in range(N_ITEMS)[process_shard(N_ITEMS, 1, 2)]}
    deadline, written_by_1 = time.time() + 400, 0
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if os.path.isdir(multi):
            written_by_1 = sum(bool(set(n) & mine_1) for n in _shard_names(multi))
            if written_by_1:
                break
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.communicate()
    before = _shard_names(multi)
    written_by_1 = sum(bool(set(n) & mine_1) for n in before)
    per_process = N_ITEMS // 2 // 2  # shards of 2 items
    assert 1 <= written_by_1 < per_process, "the kill should land mid-run of process 1"
    # Run 2: the same job restarted (a new coordinator port) resumes.
    (s0, s1) = _summaries(_finish(_workers(multi, 2)))
    assert (s0["process_count"], s0["local_devices"], s0["global_devices"]) == (2, 2, 4)
    assert (s0["process_index"], s1["process_index"]) == (0, 1)
    assert s0["num_items"] == s1["num_items"] == N_ITEMS // 2
    assert s1["already_done"] == 2 * written_by_1
    assert s0["inverted"] + s1["inverted"] + sum(map(len, before)) == N_ITEMS
    # every item exactly once; finished shards were kept, not rewritten
    after = _shard_names(multi)
    flat = [n for names in after for n in names]
    assert sorted(flat) == [f"item{i:03d}" for i in range(N_ITEMS)]
    assert all(b in after for b in before)
    # equal to the single-process run
    _finish(ref_proc)
    names_m, a = load_inverted(multi)
    names_s, b = load_inverted(single)
    assert names_m == names_s
    for key in ("pseudo_tokens", "features", "losses"):
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    for i, name in enumerate(names_m):  # each item by the process its share names
        owner = 0 if int(name[4:]) < N_ITEMS // 2 else 1
        assert json.loads(str(_meta_of(multi, name)))["process_index"] == owner, (i, name)


def _meta_of(out_dir: str, name: str) -> str:
    for f in os.listdir(out_dir):
        if f.startswith("shard-"):
            z = np.load(os.path.join(out_dir, f))
            if name in z["names"].tolist():
                return str(z["meta"])
    raise KeyError(name)




@pytest.mark.slow
def test_reproduce_distributed_equals_single_process(tiny_ckpt, shared_data, tmp_path):
    common = ["--quiet", "reproduce", "--datasets", "caltech101", "--model", "tiny",
              "--checkpoint", tiny_ckpt, "--data-root", str(shared_data), "--batch-size", "2",
              "--shard-size", "2", "--oti-steps", "5", "--max-queries", "8",
              "--max-gallery", "24"]
    cli = [sys.executable, "-m", "crossgap_jax.cli"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    port = _free_port()
    procs = _spawn([[*cli, *common, "--run-dir", str(multi), "--distributed",
                     "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
                     "--process-id", str(i)] for i in range(2)]
                   + [[*cli, *common, "--run-dir", str(single)]])
    outs = _finish(procs)
    assert all("OTI->image" in o for o in outs)  # every process printed the written table
    got = json.loads((multi / "metrics.json").read_text())["datasets"]["caltech101"]
    want = json.loads((single / "metrics.json").read_text())["datasets"]["caltech101"]
    for side in ("baseline", "inverted"):
        for k, v in want[side].items():
            if isinstance(v, float):
                assert got[side][k] == pytest.approx(v, abs=1e-6), (side, k)
    (inv_dir,) = {p.parent for p in multi.rglob("shard-*.npz")}
    names, _ = load_inverted(str(inv_dir))
    flat = [n for names_ in _shard_names(str(inv_dir)) for n in names_]
    assert len(flat) == len(set(flat)) == len(names) == 8
    owners = {json.loads(_meta_of(str(inv_dir), n))["process_index"] for n in names}
    assert owners == {0, 1}


def test_distributed_options_validated(capsys):
    from crossgap_jax.cli import main

    rc = main(["--quiet", "reproduce", "--datasets", "x", "--distributed",
               "--num-processes", "2", "--process-id", "2"])
    assert rc == 2
    assert "--process-id must be in 0..1" in capsys.readouterr().err
