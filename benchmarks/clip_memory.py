r"""Training memory against clip length, with and without rematerialisation (not a test).

    python benchmarks/clip_memory.py [--config=configs/hs2s.py] [--frames=3,5,8,11] \
        [--remat=off,encoder,steps] [--batch=2] [--image_size=256x448] [--scan_unroll=1] \
        [--run=5:off,11:steps] [--run_steps=2]

For each clip length and config.model.remat policy ('off' False, 'encoder' True, 'steps'),
XLA's compiled memory statistics of the training step (benchmarks/backbone_memory.py:
arguments + outputs - aliased + temporaries; nothing runs). `--run=T:MODE,...` also runs
`--run_steps` steps of those settings (`--frames=` empty: only those), each in a fresh process,
and prints the process's peak resident memory (ru_maxrss: what the operating system saw,
allocator slack included) and the step time.

The scan stays a loop (`--scan_unroll=1`, the default here): the forward and backward loops keep
per frame only what the policy saves, which is what bounds memory in the clip length; an
unrolled scan lets XLA schedule across frames. The authors' PyTorch code needs 13.6 GiB for 2
clips x 5 frames at 256x448 (issue 15's measurement; benchmarks/vs_authors.py --what=train).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
from backbone_memory import step_memory

from rnn_vos_jax.runtime.config_files import load_config

GIB = 2**30


def _run_once(spec, size, batch, frames, mode, unroll, steps=2) -> dict:
    """`steps` real training steps in this process: seconds of the first and the last call, and
    the peak RSS (with steps=1 the first call, compilation included, is the only timing)."""
    import jax.numpy as jnp
    from backbone_memory import REMAT
    from train_step import host_batch

    from rnn_vos_jax import models
    from rnn_vos_jax.training import schedules, sharding, train_state

    config = load_config(spec)
    config.unlock()
    config.model.remat = REMAT[mode]
    config.model.scan_unroll = unroll
    model = models.build(config.model)
    h, w = size
    mesh = sharding.make_mesh(1)
    schedule = schedules.learning_rate_fn(config.train, 100.0)
    tx = train_state.make_optimizer(config.train, schedule)
    state = train_state.create_train_state(model, tx, 0, (h, w), mesh)
    host = host_batch(batch, frames, h, w)
    data = sharding.global_batch(host, mesh)
    step = train_state.jit_train_step(model, tx, config.train.loss, schedule, mesh, True)
    times = []
    for _ in range(max(1, steps)):
        t0 = time.perf_counter()
        state, metrics = step(state, data, jnp.float32(0.0))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"step_s": times[-1], "first_s": times[0], "peak_rss": peak, "steps": len(times)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/hs2s.py")
    p.add_argument("--frames", default="3,5,8,11")
    p.add_argument("--remat", default="off,encoder,steps")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--image_size", default="256x448")
    p.add_argument("--scan_unroll", type=int, default=1)
    p.add_argument("--run", default="", help="T:MODE,... settings to also run once")
    p.add_argument("--run_steps", type=int, default=2, help="steps per --run (1: the first only)")
    p.add_argument("--_one", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.image_size.split("x"))
    if args._one:
        frames, mode = args._one.split(":")
        r = _run_once(
            args.config, size, args.batch, int(frames), mode, args.scan_unroll, args.run_steps
        )
        print("RESULT " + json.dumps(r), flush=True)
        return
    print(f"command: python benchmarks/clip_memory.py {' '.join(argv or sys.argv[1:])}")
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); {args.config}, "
        f"batch {args.batch}, {size[0]}x{size[1]}, scan_unroll {args.scan_unroll}; GiB"
    )
    for frames in (int(v) for v in filter(None, args.frames.split(","))):
        for mode in args.remat.split(","):
            config = load_config(args.config)
            config.unlock()
            config.model.scan_unroll = args.scan_unroll
            r = step_memory(config, size, args.batch, frames, mode)
            print(
                f"T={frames:2d} remat={mode:8s} XLA peak {r['peak'] / GIB:6.2f} (arguments "
                f"{r['argument'] / GIB:5.2f}, temp {r['temp'] / GIB:6.2f}; residuals "
                f"{r['residuals'] / GIB:6.2f}; compile {r['compile_s']:.0f} s)",
                flush=True,
            )
    for item in filter(None, args.run.split(",")):
        cmd = [sys.executable, os.path.abspath(__file__), f"--_one={item}"]
        cmd += [f"--config={args.config}", f"--batch={args.batch}"]
        cmd += [f"--image_size={args.image_size}", f"--scan_unroll={args.scan_unroll}"]
        cmd += [f"--run_steps={args.run_steps}"]
        # Off in the run: its process peak includes the compilation, as recorded in RESULTS.md.
        env = dict(os.environ, RNN_VOS_JAX_COMPILATION_CACHE="off")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            print(f"run {item}: failed (exit {out.returncode})\n{out.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(lines[-1][len("RESULT ") :])
        timing = f"step {r['step_s']:.1f} s (first call {r['first_s']:.0f} s)"
        if r["steps"] == 1:
            timing = f"one step, compilation included, {r['first_s']:.0f} s"
        print(f"run T={item}: process peak {r['peak_rss'] / GIB:6.2f} GiB, {timing}", flush=True)


if __name__ == "__main__":
    from rnn_vos_jax.runtime import host_memory

    host_memory.reexec_with_huge_pages()  # benchmarks/RESULTS.md: CPU figures use it
    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()  # $RNN_VOS_JAX_COMPILATION_CACHE or the user's cache; 'off' for cold
    main()
