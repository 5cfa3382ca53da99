"""Axial-attention fusion (registry 'axial'; HS2S_attn of the HS2S paper's Table 5 ablation).

The attention half of an Axial-DeepLab block (Wang et al. 2020) on the joint features:

    x = ReLU(BN(conv1x1(cat[reference, query])))     2C -> features, no bias ('he_fan_out')
    fused = ReLU(width_attention(height_attention(x)))

with 8 heads per attention layer (models/axial_attention.py: q/k 32 and v 64 channels per head
at features 512) and a global span per axis (8 x 14 at 1/32, 16 x 28 at 1/16 for 256x448
input), so each position meets the whole reference frame in two hops. The relative position
tables are sized by the input: the block's parameters are tied to the training resolution.
Channel order of the concatenation is GC's (reference first). Submodule names follow the
reference's AxialBlock (conv_down, bn1; height_block spelled out, torch's `hight_block`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.axial_attention import AxialAttention
from rnn_vos_jax.models.layers import BatchNorm, Conv

HEADS = 8


class Axial(nn.Module):
    """The axial-attention fusion block (registry 'axial').

    Attributes:
      features: output channels, also the attention width (features / 8 even, >= 2).
      width_divisor: unused (the only inner width is `features`, already divided by the caller).
      dtype: compute dtype.
    """

    features: int
    width_divisor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query: jax.Array, reference: jax.Array, train: bool = False) -> jax.Array:
        """query [N,h,w,Cq], reference [N,h,w,Cr] -> [N,h,w,features] (ReLU'd)."""
        x = jnp.concatenate([reference.astype(self.dtype), query.astype(self.dtype)], axis=-1)
        init = {"use_bias": False, "kernel_init": "he_fan_out", "dtype": self.dtype}
        x = Conv(self.features, 1, name="conv_down", **init)(x)
        x = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(x, train))
        attend = {"features": self.features, "heads": HEADS, "dtype": self.dtype}
        x = AxialAttention(axis="height", name="height_block", **attend)(x, train)
        x = AxialAttention(axis="width", name="width_block", **attend)(x, train)
        return nn.relu(x)
