"""One process of a ``jax.distributed`` run on CPU, for ``tests/inversion/test_multihost.py``.

Usage: python multihost_worker.py PORT PROCESS_ID NUM_PROCESSES OUT_DIR NUM_ITEMS STEPS
(``NUM_PROCESSES`` 1 and ``PORT`` 0: a plain single-process run, the reference).
Prints ``SUMMARY {json}`` with this host's :class:`InvertSummary` counts.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> None:
    port, pid, nproc, out_dir, n, steps = argv
    pid, nproc, n, steps = int(pid), int(nproc), int(n), int(steps)
    import jax

    if nproc > 1:
        jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                                   num_processes=nproc, process_id=pid)
    import numpy as np

    from crossgap_jax.inversion import ExecutionSettings, OTISettings, invert_dataset
    from crossgap_jax.models import create_clip

    clip = create_clip("tiny", seed=3)
    feats = np.random.default_rng(0).standard_normal((n, clip.config.embed_dim))
    names = [f"item{i:03d}" for i in range(n)]
    s = invert_dataset(clip, names, feats.astype(np.float32), out_dir, OTISettings(steps=steps),
                       ExecutionSettings(batch_size=2, progress=False), shard_size=2)
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("multihost_worker:done")
    print("SUMMARY " + json.dumps({
        "process_index": jax.process_index(), "process_count": jax.process_count(),
        "local_devices": len(jax.local_devices()), "global_devices": len(jax.devices()),
        "num_items": s.num_items, "already_done": s.already_done, "inverted": s.inverted}),
        flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
