"""Fusion blocks by name (`config.model.fusion`): how a memory output meets a reference frame.

Every fusion block is a Flax module with this interface:

    block = REGISTRY[name](features, width_divisor=1, dtype=jnp.float32)   # more fields may
                                                                            # follow, with defaults
    fused = block(query, reference, train=False)
        query [N,h,w,Cq] (a memory output), reference [N,h,w,Cr] (reference-frame features)
        -> fused [N,h,w,features], after its final nonlinearity

`width_divisor` divides the block's own inner widths (tiny variants); `features` is already
divided by the caller. `train` selects the BatchNorm mode of blocks that have one. Adding a
block: one file in this folder and one line below.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rnn_vos_jax.models.registry import Registry

REGISTRY = Registry(
    "config.model.fusion",
    {
        "gc": "rnn_vos_jax.models.fusion.gc:GC",
        "cosine": "rnn_vos_jax.models.fusion.cosine:Cosine",
        "axial": "rnn_vos_jax.models.fusion.axial:Axial",
    },
)


def build(
    fusion: str, features: int, width_divisor: int = 1, dtype: Any = jnp.float32, **fields
) -> nn.Module:
    """The fusion block registered as `fusion`, e.g. build('gc', 512, name='GC')."""
    return REGISTRY[fusion](features, width_divisor=width_divisor, dtype=dtype, **fields)
