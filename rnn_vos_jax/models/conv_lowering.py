"""How a 2-D convolution is computed: XLA's convolution, or shifted windows and one matmul.

XLA:CPU's own convolution kernels reach 50-100 GFLOP/s on this project's deep layers (the skip
memory's 5x5 conv over 2048 channels at 16x28, the bottleneck memory's 3x3 over 3072 at 8x14)
on a 2-core AVX-512 box, where a matmul of the same size reaches 170-180 GFLOP/s
(benchmarks/conv_lowering.py). So on CPU a deep convolution is written as one matmul over the
kh*kw shifted windows of the padded input ('patches'): the same sums in another order (float32:
agrees to ~1e-6 relative). Shallow convolutions at high resolution stay native: there building
the windows (kh*kw copies of the input) costs more than the matmul gains. On GPU and TPU XLA's
native convolution (cuDNN, the MXU) is the fast one.

Shallow convolutions over many positions (the decoder's and the encoders' high-resolution
layers at 256x448) keep XLA's forward convolution, but their kernel gradient, a sum over every
output position, runs at 13-46 GFLOP/s in XLA:CPU's convolution. There ('row_grads') it is
computed by a loop over output rows: each iteration builds the kh*kw windows of one row (small
enough to stay in cache) and adds their product with that row's output gradient, one matmul,
to the kernel gradient (3-5x faster at 256x448; benchmarks/conv_lowering.py). The input
gradient is the NHWC convolution of 'nhwc_grads' below.

Other shallow convolutions keep XLA's convolution. Inside a while loop (a scan that is not fully
unrolled) XLA:CPU runs JAX's own gradient convolutions several times slower, and those of 1x1
convolutions as naive loops, so there on CPU every shallow convolution gets its gradients
written as NHWC convolutions of transposed operands ('nhwc_grads').
Straight-line code keeps XLA's convolution, which XLA rewrites itself, so its arithmetic is
unchanged.

The choice never changes parameters or their layout, only the arithmetic order.

Selection, read when a model is traced: the environment variable RNN_VOS_JAX_CONV =
  'auto' (default): on the CPU backend 'patches' for convolutions whose window depth
      kh * kw * Cin is at least PATCHES_MIN_DEPTH; 'row_grads' for unit-stride, undilated
      kh*kw > 1 convolutions with at least ROW_GRADS_MIN_POSITIONS output positions (N * H' *
      W') and Cin * Cout >= ROW_GRADS_MIN_CHANNELS; inside a loop (`traced_in_loop`)
      'nhwc_grads' for the others; XLA's otherwise. On other backends always XLA's
      convolution with JAX's gradients;
  'xla': always XLA's convolution with JAX's gradients;  'patches': windows and a matmul for
      every kh*kw > 1 conv;  'nhwc_grads': XLA's convolution with NHWC gradients for every one;
      'row_grads': row-loop kernel gradients for every unit-stride, undilated kh*kw > 1 conv
      ('nhwc_grads' for the others).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import jax
import jax.numpy as jnp

LOWERINGS = ("xla", "patches", "nhwc_grads", "row_grads")
ENV = "RNN_VOS_JAX_CONV"
# Window depth from which windows + matmul beat XLA:CPU's convolution (benchmarks/
# conv_lowering.py): the two ConvLSTM gate convs (27,648 and 51,200) and the decoder's deepest
# 3x3 are above it; ResNet's 3x3s (<= 4,608) and the decoder's high-resolution convs below.
PATCHES_MIN_DEPTH = 8192
# From where the row loop's kernel gradient beats XLA:CPU's (benchmarks/conv_lowering.py): at
# 2 x 64 x 112 (14,336 positions) 64 -> 64 it is 2x faster; below a few thousand positions or at
# the demo's 8-16 channels the two are within noise of each other, and the loop's iterations
# cost more than they save.
ROW_GRADS_MIN_POSITIONS = 8192
ROW_GRADS_MIN_CHANNELS = 1024  # Cin * Cout
# Whether the convolutions being traced run inside a while loop (a scan that is not fully
# unrolled): set by models/recurrent.py while it traces a scan body.
_IN_LOOP = contextvars.ContextVar("rnn_vos_jax_conv_in_loop", default=False)


@contextlib.contextmanager
def traced_in_loop(in_loop: bool):
    """Convolutions traced inside this context are (or are not) inside a while loop."""
    token = _IN_LOOP.set(bool(in_loop))
    try:
        yield
    finally:
        _IN_LOOP.reset(token)


def lowering(kernel_shape: tuple[int, ...], positions: int = 0, unit_stride: bool = False) -> str:
    """One of LOWERINGS for a kernel [kh, kw, Cin, Cout] (module docstring).

    Args:
      kernel_shape: [kh, kw, Cin, Cout].
      positions: output positions N * H' * W' of the convolution (0: unknown).
      unit_stride: whether the convolution has stride 1 and dilation 1 ('row_grads' needs it).
    """
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto",) + LOWERINGS:
        raise ValueError(f"{ENV}={choice!r}: expected one of {('auto',) + LOWERINGS}")
    kh, kw, cin, cout = kernel_shape[:4]
    if choice == "auto":
        if jax.default_backend() != "cpu":
            return "xla"
        if kh * kw > 1 and kh * kw * cin >= PATCHES_MIN_DEPTH:
            return "patches"
        if (
            kh * kw > 1
            and unit_stride
            and positions >= ROW_GRADS_MIN_POSITIONS
            and cin * cout >= ROW_GRADS_MIN_CHANNELS
        ):
            return "row_grads"
        if not _IN_LOOP.get():
            return "xla"  # straight-line code: XLA rewrites JAX's gradients itself
        # In a loop: the same forward convolution (bit for bit that of the streaming step),
        # with NHWC gradients, which also keeps 1x1 gradients off XLA's naive loop code.
        return "nhwc_grads"
    if kh * kw == 1 and choice == "patches":
        return "xla"  # 'patches' for every kh*kw > 1 conv: the deep-layer rule alone
    if choice == "row_grads" and (kh * kw == 1 or not unit_stride):
        return "nhwc_grads"
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
      method: one of LOWERINGS; None: `lowering` of this convolution.

    Returns:
      [N, H', W', Cout], H' = (H + 2 ph - dilation (kh - 1) - 1) // sh + 1 (likewise W').
    """
    kh, kw = kernel.shape[:2]
    unit_stride = tuple(strides) == (1, 1) and int(dilation) == 1
    if method is None:
        ho = x.shape[1] + 2 * padding[0] - dilation * (kh - 1) - 1
        wo = x.shape[2] + 2 * padding[1] - dilation * (kw - 1) - 1
        positions = x.shape[0] * (ho // strides[0] + 1) * (wo // strides[1] + 1)
        method = lowering(kernel.shape, positions, unit_stride)
    geometry = (tuple(strides), tuple(padding), int(dilation), precision)
    if method == "xla":
        return _xla_conv(x, kernel, *geometry)
    if method == "nhwc_grads":
        return _nhwc_grads_conv(x, kernel, *geometry)
    if method == "row_grads":
        if not unit_stride:
            raise ValueError(
                f"conv2d method 'row_grads' needs stride 1 and dilation 1: strides {strides}, "
                f"dilation {dilation}"
            )
        return _row_grads_conv(x, kernel, tuple(padding), precision)
    if method != "patches":
        raise ValueError(f"conv2d method {method!r}: expected one of {LOWERINGS}")
    return _patches_conv(x, kernel, *geometry)


def _xla_conv(x, kernel, strides, padding, dilation, precision, lhs_dilation=(1, 1), pads=None):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=pads or ((padding[0], padding[0]), (padding[1], padding[1])),
        lhs_dilation=lhs_dilation,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )


# XLA's convolution with both gradients written as NHWC x HWIO convolutions of transposed
# operands. JAX's own transpose rules give convolutions with other dimension orders (kernel
# gradient 'f01b_i01o->01bf', input gradient '01oi'); XLA:CPU rewrites those into this form in
# straight-line code but not inside a while loop, where they run several times slower
# (benchmarks/RESULTS.md, "Convolution gradients in loops"). Same sums, same result to float
# rounding.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _nhwc_grads_conv(x, kernel, strides, padding, dilation, precision):
    return _xla_conv(x, kernel, strides, padding, dilation, precision)


def _nhwc_grads_fwd(x, kernel, strides, padding, dilation, precision):
    return _xla_conv(x, kernel, strides, padding, dilation, precision), (x, kernel)


def _nhwc_grads_bwd(strides, padding, dilation, precision, res, dy):
    """dy [N, Ho, Wo, Cout] -> (dx [N, H, W, Cin], dkernel [kh, kw, Cin, Cout])."""
    x, kernel = res
    dx = _nhwc_input_grad(x.shape, kernel, strides, padding, dilation, precision, dy)
    # dkernel[a, b, i, o] = sum_{n,y,x} xpad[n, s y + d a, s x + d b, i] dy[n, y, x, o]: a
    # convolution of x as [Cin, H, W, N] with dy as the kernel [Ho, Wo, N, Cout].
    dk = jax.lax.conv_general_dilated(
        jnp.transpose(x, (3, 1, 2, 0)),
        jnp.transpose(dy, (1, 2, 0, 3)),
        window_strides=(dilation, dilation),
        padding=((padding[0], padding[0]), (padding[1], padding[1])),
        rhs_dilation=strides,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )  # [Cin, >= kh, >= kw, Cout]
    kh, kw = kernel.shape[:2]
    dk = jnp.transpose(dk[:, :kh, :kw], (1, 2, 0, 3))
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


def _nhwc_input_grad(x_shape, kernel, strides, padding, dilation, precision, dy):
    """dy [N, Ho, Wo, Cout] -> dx [N, H, W, Cin] as one NHWC x HWIO convolution."""
    kh, kw = kernel.shape[:2]
    pads = []
    for axis, (k, s, p) in enumerate(zip((kh, kw), strides, padding)):
        span = dilation * (k - 1)
        # Rows of the padded input past the last window (strided convs): padded back in dx.
        rest = (x_shape[1 + axis] + 2 * p - span - 1) % s
        pads.append((span - p, span - p + rest))
    # The full correlation of the stride-dilated dy with the flipped, io-swapped kernel.
    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # [kh, kw, Cout, Cin]
    return _xla_conv(dy, flipped, (1, 1), None, dilation, precision, strides, tuple(pads))


_nhwc_grads_conv.defvjp(_nhwc_grads_fwd, _nhwc_grads_bwd)


# XLA's convolution (stride 1, no dilation) whose kernel gradient is a loop over output rows.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _row_grads_conv(x, kernel, padding, precision):
    return _xla_conv(x, kernel, (1, 1), padding, 1, precision)


def _row_grads_fwd(x, kernel, padding, precision):
    return _xla_conv(x, kernel, (1, 1), padding, 1, precision), (x, kernel)


def _row_grads_bwd(padding, precision, res, dy):
    """dy [N, Ho, Wo, Cout] -> (dx [N, H, W, Cin], dkernel [kh, kw, Cin, Cout])."""
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    dx = _nhwc_input_grad(x.shape, kernel, (1, 1), padding, 1, precision, dy)
    (ph, pw), wo = padding, dy.shape[2]
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))

    def row(acc, r):
        # dkernel += windows(row r)^T dy[:, r]: [Cout, N Wo] x [N Wo, kh kw Cin], in cache
        band = jax.lax.dynamic_slice_in_dim(xp, r, kh, axis=1)  # [N, kh, Wp, Cin]
        taps = [band[:, i, j : j + wo] for i in range(kh) for j in range(kw)]
        windows = jnp.concatenate(taps, axis=-1)  # [N, Wo, kh * kw * Cin], HWIO order
        dy_row = jax.lax.dynamic_index_in_dim(dy, r, axis=1, keepdims=False)  # [N, Wo, Cout]
        part = jnp.einsum(
            "nwo,nwk->ok",
            dy_row,
            windows,
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        return acc + part, None

    zero = jnp.zeros((cout, kh * kw * cin), jnp.float32)
    dk, _ = jax.lax.scan(row, zero, jnp.arange(dy.shape[1]))
    dk = dk.T.reshape(kh, kw, cin, cout)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_row_grads_conv.defvjp(_row_grads_fwd, _row_grads_bwd)


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
