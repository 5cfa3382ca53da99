"""Convolutional tensor-train LSTM (Su et al., NeurIPS 2020), registry 'tt_lstm'.

The gates see a low-rank (tensor-train) summary of the last S hidden states instead of h_{t-1}
[PAPER]. With order N, steps S, rank r and lags = S - N + 1, Hbuf = (h_{t-S}, ..., h_{t-1}):

    P_l = conv_kxk(cat[Hbuf[l], ..., Hbuf[l + lags - 1]])    lags*F -> r,  l = 0 .. N-1
    t_0 = P_0,   t_l = P_l + conv_kxk(t_{l-1})               r -> r
    i, f, o, g = split(conv_kxk(cat[x, t_{N-1}]))            Cin + r -> 4F, gate order i, f, o, g
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g),   h' = sigmoid(o) * tanh(c')
    Hbuf' = (Hbuf[1], ..., Hbuf[S-1], h')

The window conv P_l is NVlabs' Conv3d with depth kernel `lags` over the stacked window [REF:
NVlabs/conv-tt-lstm ConvTTLSTMCell]: kernel[:, :, j*F + c, r] = torch_w[r, c, :, :, j], j = 0 the
oldest state of the window. Their ring buffer with its pointer at the oldest slot is our tuple
ordered oldest -> newest, so window l starts l states after the oldest.

Carry: (Hbuf, c) with Hbuf a tuple of S float32 [N, H, W, F] (oldest first) and c float32
[N, H, W, F]; zeros at t = 0. x [N, H, W, Cin] -> y = h' float32 [N, H, W, F]. Because
window 0 reads the oldest state, its kernel only sees non-zero input from step S on (3 frames
of warm-up at the defaults).

Biases and init [REF]: every conv has a bias (NVlabs' bias=True) with torch's default inits
(layers.Conv 'torch'); the Conv3d's fan_in F*k*k*lags equals the flattened conv's, so the
distributions match. Defaults order 3, steps 3, rank 8 are NVlabs'; kernel = the cell's
kernel_size (3 in HS2S; NVlabs default 5).

Flax names: window_{l} (torch layers_.{l}), chain_{l} for l < N-1 (torch layers.{l}), gates
(torch layers.{N-1}).
Parameters at F = Cin = 1024, r = 8, k = 3 (defaults): windows 3 * (9*1024*8 + 8) = 221,208,
chain 2 * (9*8*8 + 8) = 1,168, gates 9*1032*4096 + 4096 = 38,047,744: 38,270,120 in all.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv

Carry = tuple[tuple[jax.Array, ...], jax.Array]


class ConvTTLSTM(nn.Module):
    """Conv-TT-LSTM cell.

    Attributes:
      features: hidden channels F.
      kernel_size: k of every conv (padding k // 2).
      dtype: compute dtype of the convs (gates and state in float32).
      order: N, the number of tensor-train cores (>= 1).
      steps: S, the number of past hidden states kept (>= order).
      rank: r, channels of the tensor-train chain.
    """

    features: int
    kernel_size: int = 3
    dtype: Any = jnp.float32
    order: int = 3
    steps: int = 3
    rank: int = 8

    def _check(self) -> None:
        if self.order < 1:
            raise ValueError(f"ConvTTLSTM: order must be >= 1, got order={self.order}")
        if self.steps < self.order:
            raise ValueError(
                f"ConvTTLSTM: steps must be >= order, got steps={self.steps}, order={self.order}"
            )

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array, train: bool = False) -> tuple[Carry, jax.Array]:
        """One step: ((Hbuf, c), x [N,H,W,Cin]) -> ((Hbuf', c'), h' float32 [N,H,W,F])."""
        del train  # no BatchNorm
        self._check()
        hbuf, c = carry
        if len(hbuf) != self.steps:
            raise ValueError(f"ConvTTLSTM: buffer has {len(hbuf)} states, steps={self.steps}")
        lags = self.steps - self.order + 1

        def conv(features, inputs, name):
            return Conv(features, self.kernel_size, dtype=self.dtype, name=name)(inputs)

        hs = [h.astype(self.dtype) for h in hbuf]
        t = None
        for l in range(self.order):
            p = conv(self.rank, jnp.concatenate(hs[l : l + lags], axis=-1), f"window_{l}")
            t = p if l == 0 else p + conv(self.rank, t, f"chain_{l - 1}")
        z = conv(4 * self.features, jnp.concatenate([x.astype(self.dtype), t], axis=-1), "gates")
        zi, zf, zo, zg = jnp.split(z.astype(jnp.float32), 4, axis=-1)
        c_new = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
        h_new = jax.nn.sigmoid(zo) * jnp.tanh(c_new)
        return ((*hbuf[1:], h_new), c_new), h_new

    def initialize_carry(self, batch: int, height: int, width: int) -> Carry:
        """Zero state: (S zero hidden states, zero c), each float32 [batch, height, width, F]."""
        self._check()
        zeros = jnp.zeros((batch, height, width, self.features), jnp.float32)
        return (zeros,) * self.steps, zeros
