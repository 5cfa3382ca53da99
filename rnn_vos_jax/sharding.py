"""One device mesh for training: batch split over the 'data' axis, parameters replicated.

Every process feeds its own slice of the global batch (its host batch); `global_batch` assembles
the slices into global `jax.Array`s laid out on the mesh, so the jitted train step sees the whole
batch and BatchNorm statistics are taken over the global batch without any explicit collective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int = -1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis 'data' over the first `num_devices` devices (-1: all of them).

    Args:
      num_devices: how many devices to use; -1 = every device of every process.
      devices: explicit device list (overrides `num_devices`).

    Returns:
      `jax.sharding.Mesh` of shape (num_devices,) named ('data',).
    """
    if devices is None:
        all_devices = jax.devices()
        if num_devices == -1:
            devices = all_devices
        elif 0 < num_devices <= len(all_devices):
            devices = all_devices[:num_devices]
        else:
            raise ValueError(
                f"config.mesh.num_devices={num_devices} but {len(all_devices)} devices exist "
                "(use -1 for all)"
            )
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy of an array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis of an array over the 'data' axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """The part of the global batch that this process must feed.

    Raises:
      ValueError: the global batch does not split evenly over the mesh's devices.
    """
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(
            f"config.data.batch_size={global_batch_size} is not divisible by the {n} devices "
            "of the mesh"
        )
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    return global_batch_size // n * local_devices


def global_batch(host_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Host batch (this process's slice, numpy) -> global arrays sharded over 'data'.

    Args:
      host_batch: dict of numpy arrays whose leading axis is this process's batch slice
        (e.g. frames uint8[B_local,T,H,W,3]); non-array entries are dropped.
      mesh: the training mesh.

    Returns:
      dict of `jax.Array` with leading axis B_global = B_local * process count, batch-sharded.
    """
    sharding = batch_sharded(mesh)
    out = {}
    for key, value in host_batch.items():
        if not isinstance(value, np.ndarray | jax.Array):
            continue
        out[key] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    return out
