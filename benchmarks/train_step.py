r"""Training-step time and streaming-inference speed of the full-size models (not a test).

    python benchmarks/train_step.py [--configs=hs2s,s2s_pp,s2s] [--batch=1] [--frames=3] \
        [--objects=1] [--repeats=3] [--image_size=256,448] [--scan_unroll=0] [--inference_only]

`--configs` names files of configs/ (optionally with their argument, e.g. hs2s:resnet101).
For each config's default (authors') model at 256x448: the jitted, donated train step
(rnn_vos_jax.train_state.train_step: forward over `frames` frames, loss, backward, Adam update)
on a batch of `batch` clips, and the jitted inference of the family's predictor as frames per
second per object: the streaming step (method 'step': one frame for `objects` objects with the
carry), or for whole-clip families `predict_clip` over the clip, per predicted frame. Compile time is reported
separately; times are medians over `repeats` runs after one warm-up. `scan_unroll` sets
model.scan_unroll (0 = the clip length: XLA:CPU runs looped convolutions several times slower).
`--inference_only` skips the training step (the memory-hungry part at full size).
Parameters are random (speed does not depend on their values). Prints one line per config and
the device it ran on.
"""

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import importlib

import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax import models, schedules, sharding, train_state


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _inference(model, variables, host, objects):
    """(a call running the family's predictor on one clip, frames it predicts): the streaming
    step for one frame, or the whole-clip prediction of frames 1..T-1 for offline families."""
    frames = jnp.asarray(host["frames"][:1].repeat(objects, 0))  # [K, T, H, W, 3]
    mask = jnp.asarray(host["masks"][:1, 0].repeat(objects, 0))
    if models.family_of(model).prediction == "clip":
        clip = jax.jit(lambda v, f, m: model.apply(v, f, m, method="predict_clip"))
        return (lambda: clip(variables, frames, mask)), frames.shape[1] - 1
    init_carry = jax.jit(lambda v, f, m: model.apply(v, f, m, method="init_carry"))
    step = jax.jit(lambda v, c, f: model.apply(v, c, f, method="step"))
    carry = init_carry(variables, frames[:, 0], mask)
    return (lambda: step(variables, carry, frames[:, 1])[1]), 1


def bench(
    name, batch, frames, objects, repeats, image_size, scan_unroll=1, train=True, inference=True
):
    """Returns a dict of timings for configs/<name>.py[:arg] at `image_size` (train=False or
    inference=False: the other part only; the skipped part's entries are then None)."""
    module, _, arg = name.partition(":")
    config = importlib.import_module(f"configs.{module}").get_config(arg or None)
    config.unlock()
    config.model.scan_unroll = scan_unroll
    model = models.build(config.model)
    h, w = image_size
    mesh = sharding.make_mesh(1)
    schedule = schedules.learning_rate_fn(config.train, 100.0)
    tx = train_state.make_optimizer(config.train, schedule)
    t0 = time.perf_counter()
    state = train_state.create_train_state(model, tx, 0, (h, w), mesh)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    n_params = sum(x.size for x in jax.tree.leaves(state.params))

    rng = np.random.default_rng(0)
    masks = np.zeros((batch, frames, h, w, 1), np.float32)
    masks[:, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    host = {
        "frames": rng.integers(0, 256, (batch, frames, h, w, 3), dtype=np.uint8),
        "masks": masks,
        "distance": np.zeros((batch, frames, h, w), np.int32),
        "valid": np.ones((batch, frames), bool),
    }
    compile_s = step_s = None
    if train:
        gbatch = sharding.global_batch(host, mesh)
        step = train_state.jit_train_step(model, tx, config.train.loss, schedule, mesh, True)
        t0 = time.perf_counter()
        state, metrics = step(state, gbatch, jnp.float32(0.0))
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0

        def one_step():
            nonlocal state
            state, m = step(state, gbatch, jnp.float32(0.0))
            return m

        step_s = _median_time(one_step, repeats)

    infer_compile_s = infer_s = None
    if inference:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        infer, frames_per_call = _inference(model, variables, host, objects)
        t0 = time.perf_counter()
        jax.block_until_ready(infer())
        infer_compile_s = time.perf_counter() - t0
        infer_s = _median_time(infer, repeats) / frames_per_call
    return {
        "params_M": n_params / 1e6,
        "init_s": init_s,
        "step_compile_s": compile_s,
        "step_s": step_s,
        "clips_per_s": batch / step_s if step_s else None,
        "infer_compile_s": infer_compile_s,
        "infer_frame_s": infer_s,
        "frames_per_s_per_object": objects / infer_s if infer_s else None,
    }


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
    args = p.parse_args(argv)
    image_size = tuple(int(v) for v in args.image_size.split(","))
    unroll = args.scan_unroll or args.frames - 1
    print(f"command: python benchmarks/train_step.py {' '.join(argv or sys.argv[1:])}")
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}),"
        f" {os.cpu_count()} host CPUs; batch {args.batch}, T={args.frames}, "
        f"{image_size[0]}x{image_size[1]}, float32, scan_unroll {unroll}"
    )
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
        )
        train = "train step skipped"
        if r["step_s"] is not None:
            train = (
                f"train step {r['step_s']:7.2f} s ({r['clips_per_s']:.3f} clips/s; "
                f"compile {r['step_compile_s']:.0f} s)"
            )
        print(
            f"{name:7s} {r['params_M']:7.1f}M params | {train} | inference "
            f"{r['frames_per_s_per_object']:6.2f} frames/s/object ({r['infer_frame_s'] * 1e3:.0f} "
            f"ms/frame for {args.objects}; compile {r['infer_compile_s']:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
