"""DeepRNN: a stack of context-bridge modules (Pang et al., CVPR 2019), registry 'deep_rnn'.

One context-bridge module (CBM) layer l with input x_l and state c_l [PAPER]:

    R = tanh(BN(conv_kxk(x_l)))                  representation flow
    T = sigmoid(BN(conv_kxk(cat[x_l, c_l])))     temporal flow (concat order x, then c)
    x_{l+1} = R * T,   c_l' = T

`layers` CBMs (5) are stacked, every one with `features` channels (layer 0 maps Cin -> F), and a
shortcut closes the stack: y = x_{L+1} + ReLU(BN(conv_1x1(x_1))), x_1 the cell input [REF: Pang's
code adds one 1x1 conv-BN-ReLU shortcut every 5 layers; here one around the whole stack, which
is the same for the default 5 layers, CHOSEN for other depths].

Carry: tuple of `layers` float32 [N, H, W, F] (c_1 .. c_L, zeros at t = 0). x [N, H, W, Cin] ->
y float32 [N, H, W, F]. Gates and state are float32; convs run in `dtype`.

Init [REF, Pang's init_weight]: CBM convs Xavier-normal with gain `init_gain` = 3.0 (1.0 is the
fallback if training diverges), the shortcut conv Xavier-normal gain 1; BN scale 1, bias 0.
Biases [CHOSEN]: none. Pang's convs have biases zeroed at init, but the BatchNorm that follows
every conv cancels a bias exactly, so it would be a dead parameter.
Not implemented [CHOSEN]: Pang's "detach-out" (stop the gradient of x into the temporal flow
with some probability), whose default is 0.

Parameters at F = Cin = 1024, k = 3: per layer conv_r 9*1024*1024 + conv_t 9*2048*1024 =
28,311,552 (x5 = 141,557,760, the spec's 141.6M), shortcut 1024*1024 = 1,048,576 (142.6M), plus
BN scale/bias 11 * 2 * 1024 = 22,528: 142,628,864 in all.

Flax names: layer_{l}/{conv_r, bn_r, conv_t, bn_t}, shortcut, shortcut_bn (Pang's torch keys:
RNN.{l}.conv_data.{0,1}, RNN.{l}.conv_ctrl.{0,1}, ShortCut.0.{0,1}).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import BatchNorm, Conv

Carry = tuple[jax.Array, ...]


def xavier_normal(gain: float):
    """torch.nn.init.xavier_normal_(w, gain): N(0, gain^2 * 2 / (fan_in + fan_out)), untruncated."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal")


class ContextBridge(nn.Module):
    """One CBM layer: (c, x [N,H,W,Cin]) -> (c' = T, x' = R * T), both float32 [N,H,W,F]."""

    features: int
    kernel_size: int = 3
    init_gain: float = 3.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, c: jax.Array, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        def conv(inputs, name):
            return Conv(
                self.features,
                self.kernel_size,
                use_bias=False,
                kernel_init=xavier_normal(self.init_gain),
                dtype=self.dtype,
                name=name,
            )(inputs)

        x = x.astype(self.dtype)
        r = jnp.tanh(BatchNorm(name="bn_r")(conv(x, "conv_r"), train))
        xc = jnp.concatenate([x, c.astype(self.dtype)], axis=-1)
        t = jax.nn.sigmoid(BatchNorm(name="bn_t")(conv(xc, "conv_t"), train))
        return t, r * t


class DeepRNN(nn.Module):
    """`layers` stacked CBMs with a 1x1 shortcut from the input to the output.

    Attributes:
      features: channels F of every layer and of the output.
      kernel_size: k of the CBM convs (padding k // 2).
      dtype: compute dtype of the convs (BatchNorm, gates and states in float32).
      layers: number of CBM layers L.
      init_gain: Xavier-normal gain of the CBM convs (Pang: 3.0).
    """

    features: int
    kernel_size: int = 3
    dtype: Any = jnp.float32
    layers: int = 5
    init_gain: float = 3.0

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array, train: bool = False) -> tuple[Carry, jax.Array]:
        """One step: (carry, x [N,H,W,Cin]) -> (carry', y float32 [N,H,W,F])."""
        if len(carry) != self.layers:
            raise ValueError(f"DeepRNN: carry has {len(carry)} states, layers={self.layers}")
        h, states = x, []
        for l, c in enumerate(carry):
            c, h = ContextBridge(
                self.features, self.kernel_size, self.init_gain, self.dtype, name=f"layer_{l}"
            )(c, h, train)
            states.append(c)
        s = Conv(
            self.features,
            1,
            use_bias=False,
            kernel_init=xavier_normal(1.0),
            dtype=self.dtype,
            name="shortcut",
        )(x)
        y = h + jax.nn.relu(BatchNorm(name="shortcut_bn")(s, train))
        return tuple(states), y

    def initialize_carry(self, batch: int, height: int, width: int) -> Carry:
        """Zero states c_1 .. c_L, each float32 [batch, height, width, features]."""
        if self.layers < 1:
            raise ValueError(f"DeepRNN: layers must be >= 1, got {self.layers}")
        zeros = jnp.zeros((batch, height, width, self.features), jnp.float32)
        return (zeros,) * self.layers
