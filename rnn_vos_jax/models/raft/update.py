"""RAFT's update block (princeton-vl/RAFT `BasicUpdateBlock`), re-implemented in Flax.

    motion = MotionEncoder(flow, corr)          cat[ReLU(conv(cat[cor, flo])), flow]
    net = SepConvGRU(net, cat[inp, motion])      a 1x5 GRU pass, then a 5x1 pass
    delta_flow = FlowHead(net)                   3x3 -> ReLU -> 3x3 to 2 channels
    mask = 0.25 * mask_2(ReLU(mask_0(net)))      9 * 8 * 8 convex-upsampling logits

At width_divisor 1 the widths are RAFT's (hidden 128, context 128, motion 128, mask head 256,
3,120,960 parameters with the 4-level radius-4 correlation); width_divisor divides every width
but the 2 flow channels and the 576 mask logits (tiny and demo variants). Module names mirror
RAFT's torch modules (update_block.encoder.convc1, update_block.gru.convz1, update_block.mask.0,
...; the nn.Sequential children mask.0 / mask.2 are named mask_0 / mask_2), so a RAFT state dict
converts by renaming leaves only (raft/weights.py). Concatenation orders are RAFT's. Every conv
has torch's default init (U(+-1/sqrt(fan_in)) weights and biases), as RAFT leaves them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv, scaled

UPSAMPLE = 8  # convex upsampling factor: the flow is estimated at 1/8


def _conv(features, kernel, padding, dtype, name):
    return Conv(features, kernel, padding=padding, dtype=dtype, name=name)


class MotionEncoder(nn.Module):
    """RAFT's BasicMotionEncoder: correlation and flow features -> `hidden` channels (incl. flow)."""

    width_divisor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, flow: jax.Array, corr: jax.Array) -> jax.Array:
        """flow [N,h,w,2], corr [N,h,w,L*(2r+1)^2] -> [N,h,w,128/d] (last 2 channels = flow)."""
        d, dt = self.width_divisor, self.dtype
        cor = nn.relu(_conv(scaled(256, d), 1, 0, dt, "convc1")(corr))
        cor = nn.relu(_conv(scaled(192, d), 3, 1, dt, "convc2")(cor))
        flo = nn.relu(_conv(scaled(128, d), 7, 3, dt, "convf1")(flow))
        flo = nn.relu(_conv(scaled(64, d), 3, 1, dt, "convf2")(flo))
        out = nn.relu(
            _conv(scaled(128, d) - 2, 3, 1, dt, "conv")(jnp.concatenate([cor, flo], axis=-1))
        )
        return jnp.concatenate([out, flow.astype(out.dtype)], axis=-1)


class SepConvGRU(nn.Module):
    """RAFT's SepConvGRU: a GRU with (1x5) gate convs, then one with (5x1) convs."""

    hidden: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        """h [N,h,w,hidden] (float32), x [N,h,w,Cx] -> new h [N,h,w,hidden] (float32)."""
        for suffix, kernel, pad in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            convs = {
                g: _conv(self.hidden, kernel, pad, self.dtype, f"conv{g}{suffix}") for g in "zrq"
            }
            hx = jnp.concatenate([h.astype(self.dtype), x.astype(self.dtype)], axis=-1)
            z = jax.nn.sigmoid(convs["z"](hx).astype(jnp.float32))
            r = jax.nn.sigmoid(convs["r"](hx).astype(jnp.float32))
            rhx = jnp.concatenate([(r * h).astype(self.dtype), x.astype(self.dtype)], axis=-1)
            q = jnp.tanh(convs["q"](rhx).astype(jnp.float32))
            h = (1.0 - z) * h + z * q
        return h


class FlowHead(nn.Module):
    """RAFT's FlowHead: hidden state -> flow update (2 channels: x, y)."""

    width_divisor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(_conv(scaled(256, self.width_divisor), 3, 1, self.dtype, "conv1")(x))
        return _conv(2, 3, 1, self.dtype, "conv2")(y)


class BasicUpdateBlock(nn.Module):
    """One RAFT refinement step.

    Attributes:
      width_divisor: divides RAFT's widths (hidden = context = 128 / d); 1 = RAFT's.
      dtype: compute dtype (the hidden state and outputs stay float32).
    """

    width_divisor: int = 1
    dtype: Any = jnp.float32

    def setup(self):
        d = self.width_divisor
        if d < 1 or 128 % d or 128 // d < 4:
            raise ValueError(f"raft_width_divisor must divide 128 and be <= 32, got {d}")
        self.encoder = MotionEncoder(d, self.dtype)
        self.gru = SepConvGRU(scaled(128, d), self.dtype)
        self.flow_head = FlowHead(d, self.dtype)
        self.mask_0 = Conv(scaled(256, d), 3, padding=1, dtype=self.dtype)
        self.mask_2 = Conv(9 * UPSAMPLE * UPSAMPLE, 1, padding=0, dtype=self.dtype)

    def __call__(
        self, net: jax.Array, inp: jax.Array, corr: jax.Array, flow: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One update.

        Args:
          net: [N, h, w, 128/d] hidden state (float32).
          inp: [N, h, w, 128/d] context features.
          corr: [N, h, w, L*(2r+1)^2] correlation lookup.
          flow: [N, h, w, 2] current flow (stop-gradient'ed by the caller).

        Returns:
          (net float32 [N,h,w,128/d], mask float32 [N,h,w,576] (already x0.25),
           delta_flow float32 [N,h,w,2]).
        """
        motion = self.encoder(flow.astype(self.dtype), corr.astype(self.dtype))
        net = self.gru(net, jnp.concatenate([inp.astype(self.dtype), motion], axis=-1))
        delta = self.flow_head(net.astype(self.dtype)).astype(jnp.float32)
        # RAFT scales the mask logits by 0.25 "to balance gradients".
        mask = 0.25 * self.mask_2(nn.relu(self.mask_0(net.astype(self.dtype))))
        return net, mask.astype(jnp.float32), delta
