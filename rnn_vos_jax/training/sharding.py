"""One device mesh for training: batch split over the 'data' axis; parameters replicated or FSDP.

Every process feeds its own slice of the global batch (its host batch); `global_batch` assembles
the slices into global `jax.Array`s laid out on the mesh, so the jitted train step sees the whole
batch and BatchNorm statistics are taken over the global batch without any explicit collective.

Parameters and optimizer state are replicated by default. With `config.mesh.fsdp=True` (fully
sharded data parallel, ZeRO-3 style) they are split over the same 'data' axis as the batch, by
one rule that looks only at an array's shape (`Fsdp.spec`):

  * an array with >= 2 dims, >= `config.mesh.fsdp_min_size` elements (default 2**18 = 1 MiB in
    float32) and a last axis divisible by the device count is split on its last axis: the
    output channels of Flax Conv kernels (kh, kw, in, out) and Dense kernels (in, out);
  * everything else (biases, BatchNorm scales and statistics, small or indivisible kernels, the
    step and the rng) is replicated.

Because the rule depends on shape only, Adam's mu and nu get the layout of their parameter. The
train step gathers the parameters to full copies for the forward and backward pass and
constrains the gradients back to the sharded layout (XLA turns the gradient all-reduce into a
reduce-scatter), so the computation stays data parallel and gives the replicated step's numbers.
For the full HS2S (396M parameters) the rule shards 83 of 402 leaves, 99.0% of the parameters.
"""

from __future__ import annotations

import dataclasses
import math
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


@dataclasses.dataclass(frozen=True)
class Fsdp:
    """The FSDP layout rule (see the module docstring).

    Attributes:
      min_size: arrays with fewer elements stay replicated (gathering them would cost more in
        collective latency than their copies cost in memory).
    """

    min_size: int  # config.mesh.fsdp_min_size

    def __post_init__(self):
        if not isinstance(self.min_size, int) or self.min_size < 1:
            raise ValueError(f"config.mesh.fsdp_min_size={self.min_size!r}: need an int >= 1")

    def spec(self, shape: Sequence[int], num_shards: int) -> PartitionSpec:
        """PartitionSpec of an array of `shape` over a 'data' axis of `num_shards` devices."""
        shape = tuple(shape)
        if len(shape) >= 2 and math.prod(shape) >= self.min_size and shape[-1] % num_shards == 0:
            return PartitionSpec(*([None] * (len(shape) - 1)), DATA_AXIS)
        return PartitionSpec()


def fsdp_from_config(mesh_config: Mapping[str, Any]) -> Fsdp | None:
    """`Fsdp` from config.mesh (keys fsdp, fsdp_min_size), or None when FSDP is off."""
    if not mesh_config["fsdp"]:
        return None
    return Fsdp(min_size=mesh_config["fsdp_min_size"])


def state_shardings(tree: Any, mesh: Mesh, fsdp: Fsdp | None = None) -> Any:
    """A `NamedSharding` for every array leaf of `tree` (arrays or ShapeDtypeStructs).

    Args:
      tree: e.g. a TrainState or its abstract form.
      mesh: the training mesh.
      fsdp: the FSDP rule, or None: every leaf replicated.

    Returns:
      a pytree of `NamedSharding` with the structure of `tree`.
    """
    if fsdp is None:
        rep = replicated(mesh)
        return jax.tree.map(lambda _: rep, tree)
    n = mesh.shape[DATA_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp.spec(x.shape, n)), tree)


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
