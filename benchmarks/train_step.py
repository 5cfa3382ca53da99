r"""Training-step time and streaming-inference speed of the full-size models (not a test).

    python benchmarks/train_step.py [--configs=hs2s,s2s_pp,s2s] [--batch=1] [--frames=3] \
        [--objects=1] [--repeats=3] [--image_size=256,448] [--scan_unroll=0] [--inference_only] \
        [--dtype=float32|bfloat16]

On a GPU or TPU (benchmarks/gpu_check.sh runs the set of accelerator figures):

    python benchmarks/train_step.py --configs=hs2s --dtype=bfloat16 --batch=4 --objects=4

`--configs` names files of configs/ (optionally with their argument, e.g. hs2s:resnet101).
For each config's default (authors') model at 256x448: the jitted, donated train step
(rnn_vos_jax.training.train_state.train_step: forward over `frames` frames, loss, backward, Adam update)
on a batch of `batch` clips, and the jitted inference of the family's predictor as frames per
second per object: the streaming step (method 'step': one frame for `objects` objects with the
carry), or for whole-clip families `predict_clip` over the clip, per predicted frame. Compile time is reported
separately; times are medians over `repeats` runs after one warm-up. `scan_unroll` sets
model.scan_unroll (0 = the clip length: XLA:CPU runs looped convolutions several times slower).
`--inference_only` skips the training step (the memory-hungry part at full size).
Parameters are random (speed does not depend on their values). `--dtype` sets model.dtype (the
compute dtype; parameters stay float32). Each line also gives the achieved FLOP/s of both parts
(FLOPs from XLA's cost analysis of the compiled call, rnn_vos_jax.runtime.throughput) and, on a TPU or GPU
in throughput.PEAK_BF16_FLOPS, the MFU against the chip's peak bf16 rate. Prints one line per
config and the device it ran on.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.runtime import compile_cache, throughput
from rnn_vos_jax.runtime.config_files import load_config
from rnn_vos_jax.training import schedules, sharding, train_state


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _random_variables(model, image_size):
    """{'params': N(0, 0.02) values, 'batch_stats': ones} of the model's variable shapes."""
    key = jax.random.key(0, impl="rbg")
    shapes = jax.eval_shape(lambda k: models.init_variables(model, k, image_size), key)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: jnp.asarray(0.02 * rng.standard_normal(x.shape), x.dtype), shapes["params"]
    )
    stats = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), shapes["batch_stats"])
    return {"params": params, "batch_stats": stats}


def _inference(model, variables, host, objects):
    """(jitted call, its arguments, frames it predicts) of the family's predictor on one clip of
    `objects` objects: the streaming step for one frame, or the whole-clip prediction of frames
    1..T-1 for offline families."""
    frames = jnp.asarray(host["frames"][:1].repeat(objects, 0))  # [K, T, H, W, 3]
    mask = jnp.asarray(host["masks"][:1, 0].repeat(objects, 0))
    if models.family_of(model).prediction == "clip":
        clip = jax.jit(lambda v, f, m: model.apply(v, f, m, method="predict_clip"))
        return clip, (variables, frames, mask), frames.shape[1] - 1
    init_carry = jax.jit(lambda v, f, m: model.apply(v, f, m, method="init_carry"))
    step = jax.jit(lambda v, c, f: model.apply(v, c, f, method="step"))
    carry = init_carry(variables, frames[:, 0], mask)
    return step, (variables, carry, frames[:, 1]), 1


def host_batch(batch: int, frames: int, h: int, w: int) -> dict[str, np.ndarray]:
    """A training batch of random frames with a centred box mask: frames uint8
    [B, T, H, W, 3], masks f32 [B, T, H, W, 1], distance int32 [B, T, H, W], valid [B, T]."""
    rng = np.random.default_rng(0)
    masks = np.zeros((batch, frames, h, w, 1), np.float32)
    masks[:, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    return {
        "frames": rng.integers(0, 256, (batch, frames, h, w, 3), dtype=np.uint8),
        "masks": masks,
        "distance": np.zeros((batch, frames, h, w), np.int32),
        "valid": np.ones((batch, frames), bool),
    }


def bench(
    name,
    batch,
    frames,
    objects,
    repeats,
    image_size,
    scan_unroll=1,
    train=True,
    inference=True,
    dtype=None,
    remat=None,
):
    """Returns a dict of timings and FLOP rates for configs/<name>.py[:arg] at `image_size`
    (train=False or inference=False: the other part only; the skipped part's entries are then
    None; dtype: model.dtype, remat: model.remat, None = the config's)."""
    config = load_config(name)
    config.unlock()
    config.model.scan_unroll = scan_unroll
    if dtype:
        config.model.dtype = dtype
    if remat is not None:
        config.model.remat = remat
    model = models.build(config.model)
    h, w = image_size
    mesh = sharding.make_mesh(1)
    schedule = schedules.learning_rate_fn(config.train, 100.0)
    tx = train_state.make_optimizer(config.train, schedule)
    t0 = time.perf_counter()
    if train:
        state = train_state.create_train_state(model, tx, 0, (h, w), mesh)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
    else:  # inference alone: random values of the variables' shapes, no init to compile
        variables = _random_variables(model, (h, w))
    jax.block_until_ready(variables)
    init_s = time.perf_counter() - t0
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))

    host = host_batch(batch, frames, h, w)
    compile_s = step_s = step_cost = loaded = loaded_infer = None
    if train:
        gbatch = sharding.global_batch(host, mesh)
        step = train_state.jit_train_step(model, tx, config.train.loss, schedule, mesh, True)
        t0 = time.perf_counter()
        with compile_cache.CacheCounter() as loaded:
            step_cost = throughput.step_cost(step, state, gbatch, jnp.float32(0.0), num_devices=1)
            state, metrics = step(state, gbatch, jnp.float32(0.0))
            jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0

        def one_step():
            nonlocal state
            state, m = step(state, gbatch, jnp.float32(0.0))
            return m

        step_s = _median_time(one_step, repeats)

    infer_compile_s = infer_s = infer_cost = None
    if inference:
        if train:
            variables = {"params": state.params, "batch_stats": state.batch_stats}
        fn, fn_args, frames_per_call = _inference(model, variables, host, objects)
        t0 = time.perf_counter()
        with compile_cache.CacheCounter() as loaded_infer:
            infer_cost = throughput.step_cost(fn, *fn_args, num_devices=1)
            jax.block_until_ready(fn(*fn_args))
        infer_compile_s = time.perf_counter() - t0
        infer_s = _median_time(lambda: fn(*fn_args), repeats) / frames_per_call
    return {
        "params_M": n_params / 1e6,
        "dtype": config.model.dtype,
        "init_s": init_s,
        "step_compile_s": compile_s,
        "step_s": step_s,
        "clips_per_s": batch / step_s if step_s else None,
        "infer_compile_s": infer_compile_s,
        # The compile times are loads from the persistent cache when these hit (a warm run).
        "step_cache_hits": loaded.hits if loaded else 0,
        "infer_cache_hits": loaded_infer.hits if loaded_infer else 0,
        "infer_frame_s": infer_s,
        "frames_per_s_per_object": objects / infer_s if infer_s else None,
        "step_rates": step_cost.rates(1 / step_s) if step_s else {},
        "infer_rates": infer_cost.rates(1 / (infer_s * frames_per_call)) if infer_s else {},
    }


def _cached(hits: int) -> str:
    return " (loaded from the compilation cache)" if hits else ""


def _rates(rates: dict) -> str:
    """'; 1.2 TFLOP/s, MFU 3.4%' (or '' when XLA gave no FLOP count)."""
    if "flops_per_sec" not in rates:
        return ""
    out = f"; {rates['flops_per_sec'] / 1e12:.3g} TFLOP/s"
    return out + (f", MFU {100 * rates['mfu']:.1f}%" if "mfu" in rates else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="", help="configs/ names; default: every family's")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=3, help="frames per clip (T; T-1 predicted)")
    p.add_argument("--objects", type=int, default=1, help="objects segmented together")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image_size", default="256,448")
    p.add_argument("--scan_unroll", type=int, default=0, help="0 = frames - 1 (fully unrolled)")
    p.add_argument("--inference_only", action="store_true", help="skip the training step")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16"), help="model.dtype (default: the config's)"
    )
    args = p.parse_args(argv)
    image_size = tuple(int(v) for v in args.image_size.split(","))
    unroll = args.scan_unroll or args.frames - 1
    dtype = args.dtype or "the configs' dtype"
    print(f"command: python benchmarks/train_step.py {' '.join(argv or sys.argv[1:])}")
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}),"
        f" {os.cpu_count()} host CPUs; batch {args.batch}, T={args.frames}, "
        f"{image_size[0]}x{image_size[1]}, {dtype}, scan_unroll {unroll}"
    )
    peak = throughput.peak_flops_per_chip(jax.devices()[0].device_kind)
    print("peak bf16: " + (f"{peak / 1e12:.0f} TFLOP/s per chip" if peak else "unknown (no MFU)"))
    for name in (args.configs or ",".join(models.FAMILIES)).split(","):
        r = bench(
            name,
            args.batch,
            args.frames,
            args.objects,
            args.repeats,
            image_size,
            unroll,
            train=not args.inference_only,
            dtype=args.dtype,
        )
        train = "train step skipped"
        if r["step_s"] is not None:
            train = (
                f"train step {r['step_s']:7.2f} s ({r['clips_per_s']:.3f} clips/s; "
                f"compile {r['step_compile_s']:.0f} s{_cached(r['step_cache_hits'])}"
                f"{_rates(r['step_rates'])})"
            )
        print(
            f"{name:7s} {r['params_M']:7.1f}M params, {r['dtype']} | {train} | inference "
            f"{r['frames_per_s_per_object']:6.2f} frames/s/object ({r['infer_frame_s'] * 1e3:.0f} "
            f"ms/frame for {args.objects}; compile {r['infer_compile_s']:.0f} s"
            f"{_cached(r['infer_cache_hits'])}"
            f"{_rates(r['infer_rates'])})",
            flush=True,
        )


if __name__ == "__main__":
    from rnn_vos_jax.runtime import host_memory

    host_memory.reexec_with_huge_pages()  # benchmarks/RESULTS.md: CPU figures use it
    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()  # $RNN_VOS_JAX_COMPILATION_CACHE or the user's cache; 'off' for cold
    main()
