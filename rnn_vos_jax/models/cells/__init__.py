"""RNN cells by name (`config.model.cell`).

Every cell is a Flax module with this interface (the families rely on nothing else):

    cell = REGISTRY[name](features, kernel_size=3, dtype=jnp.float32)   # more fields may follow,
                                                                         # all with defaults
    carry = cell.initialize_carry(batch, height, width)   # float32 pytree of zeros
    carry, y = cell(carry, x, train=False)                # x [N,H,W,Cin] -> y [N,H,W,features]

The carry is opaque to callers: a tuple (h, c) for a ConvLSTM, a list of per-layer states for a
multi-layer cell, a buffer of past hidden states for a multi-step one. It stays float32 whatever
the compute dtype, since the state accumulates over the whole video. `train` selects the
BatchNorm mode of cells that have one. Adding a cell: one file in this folder and one line below.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rnn_vos_jax.models.registry import Registry

REGISTRY = Registry(
    "config.model.cell",
    {
        "authors": "rnn_vos_jax.models.cells.convlstm:AuthorsConvLSTM",
        "tanh": "rnn_vos_jax.models.cells.convlstm:ConvLSTM",
        "deep_rnn": "rnn_vos_jax.models.cells.deep_rnn:DeepRNN",
        "tt_lstm": "rnn_vos_jax.models.cells.tt_lstm:ConvTTLSTM",
    },
)


def build(
    cell: str, features: int, kernel_size: int, dtype: Any = jnp.float32, **fields
) -> nn.Module:
    """The cell registered as `cell` with `features` hidden channels and a k x k kernel.

    Args:
      cell: registry name, e.g. 'authors'.
      features: hidden channels.
      kernel_size: spatial kernel of the cell's convolutions.
      dtype: compute dtype (the carry stays float32).
      **fields: other module fields, e.g. name='memory'.
    """
    return REGISTRY[cell](features, kernel_size, dtype=dtype, **fields)
