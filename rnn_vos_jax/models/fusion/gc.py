"""Global-convolution fusion (Peng et al. 2017), as HS2S takes it from RGMP.

fused = ReLU(left + right) of x = cat[reference, query] (the authors' channel order), with
left = conv(k x 1) -> conv(1 x k) and right = conv(1 x k) -> conv(k x 1), k = 7, middle width
256. All four convs have a bias and no normalisation or nonlinearity between them. Submodule names
are the authors' torch keys conv_l1, conv_l2, conv_r1, conv_r2 (inits N(0, sqrt(2 / (kh*kw*out))),
zero bias), so `decoder.GC.conv_l1.weight` converts to decoder/GC/conv_l1/kernel.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv

MID = 256


class GC(nn.Module):
    """The GC fusion block (registry 'gc').

    Attributes:
      features: output channels.
      width_divisor: divides the middle width 256.
      dtype: compute dtype.
      k: the long kernel side.
    """

    features: int
    width_divisor: int = 1
    dtype: Any = jnp.float32
    k: int = 7

    @nn.compact
    def __call__(self, query: jax.Array, reference: jax.Array, train: bool = False) -> jax.Array:
        """query [N,h,w,Cq], reference [N,h,w,Cr] -> [N,h,w,features] (ReLU'd)."""
        del train  # no BatchNorm
        x = jnp.concatenate([reference.astype(self.dtype), query.astype(self.dtype)], axis=-1)
        k, p, mid = self.k, self.k // 2, MID // self.width_divisor
        conv = {"kernel_init": "he_fan_out", "bias_init": "zeros", "dtype": self.dtype}
        left = Conv(mid, (k, 1), padding=(p, 0), name="conv_l1", **conv)(x)
        left = Conv(self.features, (1, k), padding=(0, p), name="conv_l2", **conv)(left)
        right = Conv(mid, (1, k), padding=(0, p), name="conv_r1", **conv)(x)
        right = Conv(self.features, (k, 1), padding=(p, 0), name="conv_r2", **conv)(right)
        return nn.relu(left + right)
