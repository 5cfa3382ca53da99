"""Layers shared by every model, with PyTorch semantics so the authors' weights load unchanged.

Layout is NHWC throughout. Parameters are float32; `dtype` is the compute dtype.

Torch -> Flax naming used by the weight converter:
  Conv:      weight (O, I, kh, kw) -> kernel (kh, kw, I, O); bias -> bias
  BatchNorm: weight -> params.scale; bias -> params.bias;
             running_mean -> batch_stats.mean; running_var -> batch_stats.var
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax.models import conv_lowering

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Initialisers by the name the authors' code uses them under.
KERNEL_INITS = {
    # nn.Conv2d's default: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
    "torch": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    # m.weight.data.normal_(0, sqrt(2 / (kh * kw * out))), untruncated.
    "he_fan_out": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    "xavier": nn.initializers.xavier_uniform(),
}


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _torch_bias_init(fan_in: int):
    """nn.Conv2d's default bias: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def normalize_frames(frames: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """ImageNet normalisation of RGB frames given in [0, 255].

    Args:
      frames: uint8 or float [..., 3] with values in [0, 255].
      dtype: output dtype.

    Returns:
      [..., 3] array of (frames / 255 - mean) / std in `dtype`.
    """
    x = jnp.asarray(frames, jnp.float32) / 255.0
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return ((x - mean) / std).astype(dtype)


class Conv(nn.Module):
    """2-D convolution with PyTorch's explicit, symmetric padding.

    Flax's 'SAME' pads stride-2 convolutions on even sizes asymmetrically, which shifts every
    ported feature map by a pixel; torch pads (p, p) on both sides.

    Attributes:
      features: output channels.
      kernel_size: k or (kh, kw).
      strides: s or (sh, sw).
      padding: p or (ph, pw); None means (kh // 2, kw // 2) * dilation.
      dilation: kernel dilation.
      use_bias: whether the conv has a bias.
      kernel_init: 'torch' | 'he_fan_out' | 'xavier' (see KERNEL_INITS), or an initializer
        (key, shape, dtype) -> array for inits with a parameter (e.g. a gain).
      bias_init: 'torch' (U(+-1/sqrt(fan_in))) | 'zeros'.
      dtype: compute dtype.
      precision: lax precision; float32 parity with torch on TPU needs 'highest'.
    """

    features: int
    kernel_size: Any = 3
    strides: Any = 1
    padding: Any = None
    dilation: int = 1
    use_bias: bool = True
    kernel_init: Any = "torch"
    bias_init: str = "torch"
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H', W', features]."""
        kh, kw = _pair(self.kernel_size)
        if self.padding is None:
            ph, pw = (kh // 2) * self.dilation, (kw // 2) * self.dilation
        else:
            ph, pw = _pair(self.padding)
        cin = x.shape[-1]
        kinit = self.kernel_init
        kinit = KERNEL_INITS[kinit] if isinstance(kinit, str) else kinit
        kernel = self.param("kernel", kinit, (kh, kw, cin, self.features), jnp.float32)
        y = conv_lowering.conv2d(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            strides=_pair(self.strides),
            padding=(ph, pw),
            dilation=self.dilation,
            precision=self.precision,
        )
        if self.use_bias:
            if self.bias_init == "torch":
                binit = _torch_bias_init(kh * kw * cin)
            elif self.bias_init == "zeros":
                binit = nn.initializers.zeros
            else:
                raise ValueError(
                    f"Unknown bias_init {self.bias_init!r}; expected 'torch' or 'zeros'"
                )
            bias = self.param("bias", binit, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class BatchNorm(nn.Module):
    """BatchNorm2d with torch's semantics.

    Train mode normalises with the biased batch variance and updates the running variance with
    the unbiased one (flax.linen.BatchNorm keeps the biased one, which drifts from torch). Eval
    mode uses the running statistics. Statistics are computed in float32 over every axis but the
    last, i.e. over the global batch when the input is a sharded global array.

    Attributes:
      momentum: torch's momentum (weight of the new batch statistic).
      epsilon: added to the variance.
      dtype: compute dtype of the output.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [..., C] -> [..., C]; train selects batch vs running statistics."""
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axes)
            var = jnp.mean(jnp.square(xf - mean), axes)
            n = int(np.prod(x.shape[:-1]))
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (xf - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
        return y.astype(self.dtype)


def _interp_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """[n_out, n_in] linear-interpolation weights matching torch F.interpolate (bilinear)."""
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(out)
    else:
        # Half-pixel centres; torch clamps negative source coordinates to 0.
        src = np.maximum((out + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    w = np.zeros((n_out, n_in), np.float64)
    np.add.at(w, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(w, (np.arange(n_out), i1), frac)
    return w.astype(np.float32)


def resize_bilinear(x: jax.Array, size: tuple[int, int], align_corners: bool) -> jax.Array:
    """Bilinear resize with torch F.interpolate semantics (no antialiasing).

    Written as two small matrix products so it maps onto the MXU/tensor cores and is exact.

    Args:
      x: [N, H, W, C].
      size: (H', W').
      align_corners: torch's flag (S2S++ code: True; HS2S code: False, torch's default).

    Returns:
      [N, H', W', C] in x's dtype.
    """
    wh = jnp.asarray(_interp_matrix(x.shape[1], size[0], align_corners), x.dtype)
    ww = jnp.asarray(_interp_matrix(x.shape[2], size[1], align_corners), x.dtype)
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,nhwc->nowc", wh, x, precision=hi)
    return jnp.einsum("pw,nowc->nopc", ww, y, precision=hi)


def upsample2x(x: jax.Array, align_corners: bool) -> jax.Array:
    """F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=...): [N,H,W,C]->[N,2H,2W,C]."""
    return resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]), align_corners)


def scaled(channels: int, width_divisor: int) -> int:
    """channels // width_divisor, refusing divisors that do not divide it exactly."""
    if width_divisor < 1 or channels % width_divisor:
        raise ValueError(
            f"width_divisor={width_divisor} must be a positive divisor of every channel count "
            f"(here {channels}); use a power of two <= 64"
        )
    return channels // width_divisor


def check_spatial(shape: tuple[int, ...], what: str) -> None:
    """Raise if an [N,H,W,C] input's H or W is not a multiple of 32 (five stride-2 stages)."""
    if len(shape) != 4 or shape[1] % 32 or shape[2] % 32:
        raise ValueError(f"{what} must be [N,H,W,C] with H, W multiples of 32, got shape {shape}")


def max_pool2x2(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(2, 2): [N, H, W, C] -> [N, H//2, W//2, C] (VALID, floor)."""
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
