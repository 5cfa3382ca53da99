"""How a 2-D convolution is computed: XLA's convolution, or shifted windows and one matmul.

XLA:CPU's own convolution kernels reach 50-100 GFLOP/s on this project's deep layers (the skip
memory's 5x5 conv over 2048 channels at 16x28, the bottleneck memory's 3x3 over 3072 at 8x14)
on a 2-core AVX-512 box, where a matmul of the same size reaches 170-180 GFLOP/s
(benchmarks/conv_lowering.py). So on CPU a deep convolution is written as one matmul over the
kh*kw shifted windows of the padded input ('patches'): the same sums in another order (float32:
agrees to ~1e-6 relative). Shallow convolutions at high resolution stay native: there building
the windows (kh*kw copies of the input) costs more than the matmul gains. On GPU and TPU XLA's
native convolution (cuDNN, the MXU) is the fast one.

Shallow convolutions keep XLA's convolution. Inside a while loop (a scan that is not fully
unrolled) XLA:CPU runs JAX's own gradient convolutions several times slower, and those of 1x1
convolutions as naive loops, so there on CPU every shallow convolution gets its gradients
written as NHWC convolutions of transposed operands ('nhwc_grads').
Straight-line code keeps XLA's convolution, which XLA rewrites itself, so its arithmetic is
unchanged.

The choice never changes parameters or their layout, only the arithmetic order.

Platforms: the rule is for the platform the model is compiled for, which a plain `jax.jit` takes
from `jax.default_backend()`. An export (`jax.export`) traced on one machine for others names
its platforms with `for_platforms` (inference/exported.py does): a convolution whose CPU lowering
differs from XLA's then becomes `jax.lax.platform_dependent` (the CPU lowering for 'cpu', XLA's
convolution for every other platform), resolved when the module is compiled for one platform,
so a module lowered on a CPU machine for 'tpu' or 'cuda' holds XLA's convolutions only. The
platforms are part of jax.jit's cache key (`jax.make_user_context`): a function traced for one
set of platforms is traced again for another.

Selection, read when a model is traced: the environment variable RNN_VOS_JAX_CONV =
  'auto' (default): on the CPU platform 'patches' for convolutions whose window depth
      kh * kw * Cin is at least PATCHES_MIN_DEPTH; inside a loop (`traced_in_loop`)
      'nhwc_grads' for the others; XLA's otherwise. On other platforms
      always XLA's convolution with JAX's gradients;
  'xla': always XLA's convolution with JAX's gradients;  'patches': windows and a matmul for
      every kh*kw > 1 conv;  'nhwc_grads': XLA's convolution with NHWC gradients for every one.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp

LOWERINGS = ("xla", "patches", "nhwc_grads")
ENV = "RNN_VOS_JAX_CONV"
# Window depth from which windows + matmul beat XLA:CPU's convolution (benchmarks/
# conv_lowering.py): the two ConvLSTM gate convs (27,648 and 51,200) and the decoder's deepest
# 3x3 are above it; ResNet's 3x3s (<= 4,608) and the decoder's high-resolution convs below.
PATCHES_MIN_DEPTH = 8192
# Whether the convolutions being traced run inside a while loop (a scan that is not fully
# unrolled): set by models/recurrent.py while it traces a scan body.
_IN_LOOP = contextvars.ContextVar("rnn_vos_jax_conv_in_loop", default=False)
# The platforms the convolutions being traced are compiled for (`for_platforms`); None: the
# default backend. A jax.jit cache key, unlike a contextvar.
_PLATFORMS = jax.make_user_context(default_value=None)


def for_platforms(platforms: Sequence[str]):
    """Context: convolutions traced inside are lowered for each of `platforms` (jax.export's
    names: 'cpu', 'cuda', 'rocm', 'tpu'), each with its own rule (module docstring)."""
    platforms = tuple(sorted({str(p).lower() for p in platforms}))
    if not platforms:
        raise ValueError("for_platforms: name at least one platform")
    return _PLATFORMS(platforms)


def target_platforms() -> tuple[str, ...]:
    """The platforms the convolutions traced now are for: `for_platforms`' or the default
    backend."""
    return _PLATFORMS.value or (jax.default_backend(),)


@contextlib.contextmanager
def traced_in_loop(in_loop: bool):
    """Convolutions traced inside this context are (or are not) inside a while loop."""
    token = _IN_LOOP.set(bool(in_loop))
    try:
        yield
    finally:
        _IN_LOOP.reset(token)


def lowering(kernel_shape: tuple[int, ...], platform: str | None = None) -> str:
    """'xla', 'patches' or 'nhwc_grads' for a kernel [kh, kw, Cin, Cout] (module docstring) on
    `platform` (None: the default backend)."""
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto",) + LOWERINGS:
        raise ValueError(f"{ENV}={choice!r}: expected one of {('auto',) + LOWERINGS}")
    kh, kw, cin = kernel_shape[:3]
    if choice == "auto":
        if (platform or jax.default_backend()) != "cpu":
            return "xla"
        if kh * kw > 1 and kh * kw * cin >= PATCHES_MIN_DEPTH:
            return "patches"
        if not _IN_LOOP.get():
            return "xla"  # straight-line code: XLA rewrites JAX's gradients itself
        # In a loop: the same forward convolution (bit for bit that of the streaming step),
        # with NHWC gradients, which also keeps 1x1 gradients off XLA's naive loop code.
        return "nhwc_grads"
    if kh * kw == 1 and choice == "patches":
        return "xla"  # 'patches' for every kh*kw > 1 conv: the deep-layer rule alone
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
      method: 'xla' | 'patches' | 'nhwc_grads'; None: `lowering(kernel.shape, p)` on each
        platform p of `target_platforms()`.

    Returns:
      [N, H', W', Cout], H' = (H + 2 ph - dilation (kh - 1) - 1) // sh + 1 (likewise W').
    """
    if method is None:
        methods = {p: lowering(kernel.shape, p) for p in target_platforms()}
        if len(set(methods.values())) > 1:
            # Only the CPU's rule departs from XLA's convolution: each platform gets its own.
            conv = functools.partial(conv2d, strides=strides, padding=padding, dilation=dilation)
            conv = functools.partial(conv, precision=precision)
            return jax.lax.platform_dependent(
                x,
                kernel,
                cpu=functools.partial(conv, method=methods["cpu"]),
                default=functools.partial(conv, method="xla"),
            )
        method = methods.popitem()[1]
    geometry = (tuple(strides), tuple(padding), int(dilation), precision)
    if method == "xla":
        return _xla_conv(x, kernel, *geometry)
    if method == "nhwc_grads":
        return _nhwc_grads_conv(x, kernel, *geometry)
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
    kh, kw = kernel.shape[:2]
    pads = []
    for axis, (k, s, p) in enumerate(zip((kh, kw), strides, padding)):
        span = dilation * (k - 1)
        # Rows of the padded input past the last window (strided convs): padded back in dx.
        rest = (x.shape[1 + axis] + 2 * p - span - 1) % s
        pads.append((span - p, span - p + rest))
    # dx: the full correlation of the stride-dilated dy with the flipped, io-swapped kernel.
    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # [kh, kw, Cout, Cin]
    dx = _xla_conv(dy, flipped, (1, 1), None, dilation, precision, strides, tuple(pads))
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
    dk = jnp.transpose(dk[:, :kh, :kw], (1, 2, 0, 3))
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_nhwc_grads_conv.defvjp(_nhwc_grads_fwd, _nhwc_grads_bwd)


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
