"""Recurrent cells and the scan-over-time wrapper every model uses.

A cell is `cell(carry, x) -> (carry, y)`, so the same module runs as one streaming step and
inside `nn.scan`. Carries stay float32 whatever the compute dtype: the cell state accumulates
over the whole video and bfloat16 would drift.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv

CELL_ACTIVATIONS = ("authors", "tanh")


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM (one conv over cat[x, h], gates in the order i, f, o, g).

    activation='authors' is the variant both papers' code trains and ships: g = sigmoid (not
    tanh) and h = o * ReLU(c). With c >= 0 at the start (zeros, or ReLU'd initializer states),
    c stays >= 0, so h = o * c; the released checkpoints depend on it. activation='tanh' is the
    standard ConvLSTM (g = tanh, h = o * tanh(c)) for ablations.

    Torch key: `conv.weight` (4*F, Cin+F, k, k), `conv.bias`; flax: conv/kernel, conv/bias.

    Attributes:
      features: hidden channels F.
      kernel_size: k (padding k // 2).
      activation: 'authors' | 'tanh'.
      kernel_init, bias_init: as layers.Conv (torch defaults in the authors' code).
      dtype: compute dtype of the conv.
    """

    features: int
    kernel_size: int = 3
    activation: str = "authors"
    kernel_init: str = "torch"
    bias_init: str = "torch"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, carry: tuple[jax.Array, jax.Array], x: jax.Array
    ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        """One step.

        Args:
          carry: (h, c), each float32 [N, H, W, F].
          x: [N, H, W, Cin].

        Returns:
          ((h', c'), h') with h', c' float32 [N, H, W, F].
        """
        if self.activation not in CELL_ACTIVATIONS:
            raise ValueError(
                f"Unknown ConvLSTM activation {self.activation!r}; expected one of "
                f"{CELL_ACTIVATIONS}"
            )
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
        i, f, o = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jax.nn.sigmoid(zo)
        if self.activation == "authors":
            g = jax.nn.sigmoid(zg)
            c_new = f * c + i * g
            h_new = o * jax.nn.relu(c_new)
        else:
            g = jnp.tanh(zg)
            c_new = f * c + i * g
            h_new = o * jnp.tanh(c_new)
        return (h_new, c_new), h_new

    @staticmethod
    def initialize_carry(batch: int, height: int, width: int, features: int):
        """Zero state (h, c), each float32 [batch, height, width, features]."""
        zeros = jnp.zeros((batch, height, width, features), jnp.float32)
        return zeros, zeros


def scan_over_time(target, train: bool, *, in_axes: Any = 1, out_axes: Any = 1, unroll: int = 1):
    """Lifts a per-step module or method `(module, carry, x_t, ...) -> (carry, y_t)` over time.

    Parameters are shared across steps (broadcast). In train mode the BatchNorm running
    statistics are carried from step to step, so they are updated once per step exactly as the
    authors' sequential torch loop updates them; in eval mode they are broadcast (read-only).
    The 'sample' rng (scheduled sampling) is split per step.

    Flax needs the batch_stats to exist before a scan that carries them: at init, call the step
    once unscanned (see DESIGN.md, "Known pitfalls").

    Args:
      target: a Module class, or a function/method taking the module first.
      train: whether BatchNorm is in train mode inside the step.
      in_axes: time axis of the scanned inputs (nn.broadcast for extra constant arguments).
      out_axes: time axis of the outputs.
      unroll: steps per loop iteration (`jax.lax.scan`'s unroll; results are the same). XLA's CPU
        backend runs convolutions inside a while loop several times slower than unrolled ones
        (benchmarks/RESULTS.md), so CPU runs unroll short clips fully; on TPU/GPU 1 keeps
        compile time and code size low.

    Returns:
      The lifted class or function: (module,) carry, xs, ... -> (carry, ys).
    """
    return nn.scan(
        target,
        variable_broadcast="params" if train else ["params", "batch_stats"],
        variable_carry="batch_stats" if train else False,
        split_rngs={"params": False, "sample": True},
        in_axes=in_axes,
        out_axes=out_axes,
        unroll=unroll,
    )
