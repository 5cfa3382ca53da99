r"""XLA:CPU's convolution against windows + one matmul, per layer shape, and the machine's
matmul rate (not a test).

    python benchmarks/conv_lowering.py [--shapes=H,W,CIN,COUT,K[,N];...] [--repeats=5] [--torch] \
        [--grads]

For each convolution shape (batch 1, stride 1, 'same' padding; defaults: HS2S's skip-memory
gate conv 16x28 2048->4096 5x5, its bottleneck memory 8x14 3072->4096 3x3, the decoder's 3x3 at
32x56 and its 5x5 at full 256x448 resolution), the best of `repeats` calls of each lowering of
rnn_vos_jax.models.conv_lowering, measured alternately in one process, in ms and GFLOP/s
(2 * N * H * W * Cin * Cout * k * k; batch N, default 1); `--torch` adds
torch.nn.functional.conv2d with torch.set_num_threads(os.cpu_count()). `--grads` times the
backward pass instead (input and kernel gradients for a given output gradient, twice the
FLOPs; torch's torch.nn.grad.conv2d_input and conv2d_weight). Last line: a float32 matmul
[448, 51200] x [51200, 4096] (the skip-memory conv's matmul), XLA and (with --torch) torch, as
the machine's attainable rate.
"""

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax.models import conv_lowering

SHAPES = "16,28,2048,4096,5;8,14,3072,4096,3;32,56,512,256,3;256,448,64,64,5"


def _best(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=SHAPES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--torch", action="store_true")
    p.add_argument("--grads", action="store_true", help="time the backward pass")
    args = p.parse_args(argv)
    print(f"command: python benchmarks/conv_lowering.py {' '.join(argv or sys.argv[1:])}")
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPUs"
    )
    if args.torch:
        import torch

        torch.set_num_threads(os.cpu_count())
        torch.set_grad_enabled(False)
    rng = np.random.default_rng(0)
    for spec in args.shapes.split(";"):
        _shape_row(spec, args.repeats, args.torch, rng, args.grads)
    m_, k_, n_ = 448, 51200, 4096
    a = jnp.asarray(rng.standard_normal((m_, k_), np.float32))
    b = jnp.asarray(rng.standard_normal((k_, n_), np.float32))
    dot = jax.jit(jnp.matmul)
    rates = {"xla": 2 * m_ * k_ * n_ / 1e9 / _best(lambda: dot(a, b).block_until_ready(), 3)}
    if args.torch:
        at, bt = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
        rates["torch"] = 2 * m_ * k_ * n_ / 1e9 / _best(lambda: at @ bt, 3)
    print(
        f"matmul [{m_},{k_}]x[{k_},{n_}] float32: "
        + ", ".join(f"{s} {r:.0f} GFLOP/s" for s, r in rates.items())
    )


def _shape_row(spec, repeats, with_torch, rng, grads=False):
    h, w, cin, cout, k, n = ([int(v) for v in spec.split(",")] + [1])[:6]
    x = rng.standard_normal((n, h, w, cin), np.float32)
    kernel = rng.standard_normal((k, k, cin, cout), np.float32) * 0.01
    dy = rng.standard_normal((n, h, w, cout), np.float32)
    gflop = 2 * n * h * w * cin * cout * k * k / 1e9 * (2 if grads else 1)
    xj, kj, dyj = jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(dy)
    calls = {}
    for m in conv_lowering.LOWERINGS:
        conv = functools.partial(_conv, k=k, method=m)
        if grads:
            f = jax.jit(lambda x, kernel, dy, conv=conv: jax.vjp(conv, x, kernel)[1](dy))
            calls[m] = functools.partial(lambda f: jax.block_until_ready(f(xj, kj, dyj)), f)
        else:
            f = jax.jit(conv)
            calls[m] = functools.partial(lambda f: jax.block_until_ready(f(xj, kj)), f)
    if with_torch:
        import torch

        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        kt = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()
        dyt = torch.from_numpy(dy).permute(0, 3, 1, 2).contiguous()
        if grads:

            def torch_grads():
                torch.nn.grad.conv2d_input(xt.shape, kt, dyt, padding=k // 2)
                torch.nn.grad.conv2d_weight(xt, kt.shape, dyt, padding=k // 2)

            calls["torch"] = torch_grads
        else:
            calls["torch"] = functools.partial(torch.nn.functional.conv2d, xt, kt, padding=k // 2)
    for f in calls.values():
        f()  # compile / warm up
    best = {m: float("inf") for m in calls}
    for _ in range(repeats):  # alternate, so a slowdown of the machine hits every side
        for m, f in calls.items():
            best[m] = min(best[m], _time(f))
    print(
        f"{'backward ' if grads else ''}{n}x{h}x{w} {cin}->{cout} {k}x{k} ({gflop:.1f} GFLOP): "
        + ", ".join(f"{m} {t * 1e3:.0f} ms ({gflop / t:.0f} GFLOP/s)" for m, t in best.items()),
        flush=True,
    )


def _conv(x, kernel, k, method):
    return conv_lowering.conv2d(x, kernel, (1, 1), (k // 2, k // 2), 1, method=method)


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    from rnn_vos_jax.runtime import host_memory

    host_memory.reexec_with_huge_pages()  # benchmarks/RESULTS.md: CPU figures use it
    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()  # $RNN_VOS_JAX_COMPILATION_CACHE or the user's cache; 'off' for cold
    main()
