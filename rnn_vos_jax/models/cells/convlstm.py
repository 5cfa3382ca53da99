"""Convolutional LSTMs: the standard cell and the variant both papers' code trains and ships.

One conv over cat[x, h] gives the four gates in the order i, f, o, g; c' = f * c + i * g and
h' = o * act(c'). The standard cell (`ConvLSTM`, registry 'tanh') uses g = tanh and act = tanh.
The authors' cell (`AuthorsConvLSTM`, 'authors') uses g = sigmoid and act = ReLU: with c >= 0
at the start (zeros, or ReLU'd initializer states) c stays >= 0, so h = o * c. The released
checkpoints depend on it, so it is the default of every family.

Carry: (h, c), each float32 [N, H, W, features]. Torch key: `conv.weight` (4F, Cin+F, k, k) and
`conv.bias`; Flax: conv/kernel, conv/bias.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv

Carry = tuple[jax.Array, jax.Array]


class ConvLSTM(nn.Module):
    """Standard ConvLSTM (g = tanh, h = o * tanh(c)).

    Attributes:
      features: hidden channels F.
      kernel_size: k (padding k // 2).
      dtype: compute dtype of the conv (gates and state in float32).
      kernel_init, bias_init: as layers.Conv (torch defaults, as in the authors' code).
    """

    features: int
    kernel_size: int = 3
    dtype: Any = jnp.float32
    kernel_init: str = "torch"
    bias_init: str = "torch"

    # Candidate and output activations; subclasses swap them.
    candidate = staticmethod(jnp.tanh)
    output = staticmethod(jnp.tanh)

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array, train: bool = False) -> tuple[Carry, jax.Array]:
        """One step: ((h, c), x [N,H,W,Cin]) -> ((h', c'), h'); h', c' float32 [N,H,W,F]."""
        del train  # no BatchNorm
        h, c = carry
        z = Conv(
            4 * self.features,
            self.kernel_size,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            dtype=self.dtype,
            name="conv",
        )(jnp.concatenate([x.astype(self.dtype), h.astype(self.dtype)], axis=-1))
        zi, zf, zo, zg = jnp.split(z.astype(jnp.float32), 4, axis=-1)
        c_new = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * self.candidate(zg)
        h_new = jax.nn.sigmoid(zo) * self.output(c_new)
        return (h_new, c_new), h_new

    def initialize_carry(self, batch: int, height: int, width: int) -> Carry:
        """Zero state (h, c), each float32 [batch, height, width, features]."""
        zeros = jnp.zeros((batch, height, width, self.features), jnp.float32)
        return zeros, zeros


class AuthorsConvLSTM(ConvLSTM):
    """The authors' ConvLSTM: g = sigmoid, h = o * ReLU(c)."""

    candidate = staticmethod(jax.nn.sigmoid)
    output = staticmethod(jax.nn.relu)
