"""How a 2-D convolution is computed: XLA's convolution, or shifted windows and one matmul.

XLA:CPU's own convolution kernels reach 50-100 GFLOP/s on this project's deep layers (the skip
memory's 5x5 conv over 2048 channels at 16x28, the bottleneck memory's 3x3 over 3072 at 8x14)
on a 2-core AVX-512 box, where a matmul of the same size reaches 170-180 GFLOP/s
(benchmarks/conv_lowering.py). So on CPU a deep convolution is written as one matmul over the
kh*kw shifted windows of the padded input ('patches'): the same sums in another order (float32:
agrees to ~1e-6 relative). Shallow convolutions at high resolution stay native: there building
the windows (kh*kw copies of the input) costs more than the matmul gains. On GPU and TPU XLA's
native convolution (cuDNN, the MXU) is the fast one.

The choice never changes parameters or their layout, only the arithmetic order.

Selection, read when a model is traced: the environment variable RNN_VOS_JAX_CONV =
  'auto' (default): on the CPU backend 'patches' for convolutions whose window depth
      kh * kw * Cin is at least PATCHES_MIN_DEPTH, XLA's convolution otherwise; on other
      backends always XLA's;
  'xla': always XLA's convolution;  'patches': windows and a matmul for every kh*kw > 1 conv.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

LOWERINGS = ("xla", "patches")
ENV = "RNN_VOS_JAX_CONV"
# Window depth from which windows + matmul beat XLA:CPU's convolution (benchmarks/
# conv_lowering.py): the two ConvLSTM gate convs (27,648 and 51,200) and the decoder's deepest
# 3x3 are above it; ResNet's 3x3s (<= 4,608) and the decoder's high-resolution convs below.
PATCHES_MIN_DEPTH = 8192


def lowering(kernel_shape: tuple[int, ...]) -> str:
    """'xla' or 'patches' for a kernel [kh, kw, Cin, Cout] (module docstring)."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto",) + LOWERINGS:
        raise ValueError(f"{ENV}={choice!r}: expected one of {('auto',) + LOWERINGS}")
    kh, kw, cin = kernel_shape[:3]
    if kh * kw == 1:
        return "xla"  # a 1x1 convolution is a matmul already
    if choice == "auto":
        deep = kh * kw * cin >= PATCHES_MIN_DEPTH
        return "patches" if deep and jax.default_backend() == "cpu" else "xla"
    return choice


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int],
    padding: tuple[int, int],
    dilation: int,
    precision=None,
    method: str | None = None,
) -> jax.Array:
    """Cross-correlation with symmetric zero padding, as torch's conv2d.

    Args:
      x: [N, H, W, Cin].
      kernel: [kh, kw, Cin, Cout] (HWIO), same dtype as x.
      strides: (sh, sw). padding: (ph, pw), on both sides. dilation: of the kernel.
      precision: lax precision of the products.
      method: 'xla' | 'patches'; None: `lowering(kernel.shape)`.

    Returns:
      [N, H', W', Cout], H' = (H + 2 ph - dilation (kh - 1) - 1) // sh + 1 (likewise W').
    """
    method = method or lowering(kernel.shape)
    if method == "xla":
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=strides,
            padding=((padding[0], padding[0]), (padding[1], padding[1])),
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=precision,
        )
    if method != "patches":
        raise ValueError(f"conv2d method {method!r}: expected one of {LOWERINGS}")
    return _patches_conv(x, kernel, tuple(strides), tuple(padding), int(dilation), precision)


def _windows(x, kh, kw, strides, padding, dilation):
    """x [N, H, W, C] -> [N, H', W', kh * kw * C]: the shifted windows, tap-major (HWIO order)."""
    (ph, pw), (sh, sw) = padding, strides
    n, h, w, c = x.shape
    ho = (h + 2 * ph - dilation * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dilation * (kw - 1) - 1) // sw + 1
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return x
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
    taps = []
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dilation, j * dilation, 0)
            limit = (n, i * dilation + (ho - 1) * sh + 1, j * dilation + (wo - 1) * sw + 1, c)
            taps.append(jax.lax.slice(xp, start, limit, (1, sh, sw, 1)))
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _patches_conv(x, kernel, strides, padding, dilation, precision):
    kh, kw, cin, cout = kernel.shape

    # Under jax.checkpoint the windows (kh * kw times the input) are not kept for the backward
    # pass but rebuilt from x there (a few copies; the matmul itself is not recomputed), so
    # training memory stays that of the native convolution.
    @jax.checkpoint
    def conv(x, kernel):
        cols = _windows(x, kh, kw, strides, padding, dilation)
        return jnp.einsum(
            "nhwk,ko->nhwo", cols, kernel.reshape(kh * kw * cin, cout), precision=precision
        )

    return conv(x, kernel)
