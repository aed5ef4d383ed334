"""Device-mesh helpers: shard the example axis over ``"data"``, replicate the params."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: this process's local devices) named ``"data"``."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Shard the leading (example) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_examples(tree: Any, mesh: Mesh) -> Any:
    """Split the leading axis of every leaf of ``tree`` over the mesh's devices."""
    return jax.device_put(tree, data_sharding(mesh))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def process_shard(num_items: int, process_index: int | None = None,
                  process_count: int | None = None) -> slice:
    """The contiguous slice of ``num_items`` this host handles in a multi-host run."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    per = -(-num_items // pc)
    return slice(min(pi * per, num_items), min((pi + 1) * per, num_items))
