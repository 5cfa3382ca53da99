r"""Per-device memory of one training step, replicated vs FSDP, from XLA's compiled statistics.

    python benchmarks/fsdp_memory.py [--config=configs/hs2s.py[:ARG]] [--image_size=256x448] \
        [--devices=8] [--batch=8] [--frames=3] [--layouts=replicated,fsdp] \
        [--fsdp_min_size=262144]

Not a test and nothing runs: the project's training step (train_state.jit_train_step: forward
over `frames` frames, loss, backward, Adam update, state donated, BatchNorm in train mode) is
lowered on abstract inputs for a mesh of `devices` devices (fake CPU devices when the host has
fewer: XLA_FLAGS=--xla_force_host_platform_device_count is set before JAX starts), the global
batch split over them, and compiled with XLA's default options. Per layout:

  replicated  every device holds the whole state (config.mesh.fsdp=False, the default);
  fsdp        parameters and Adam state split by sharding.Fsdp (config.mesh.fsdp=True).

`compiled.memory_analysis()` of the SPMD program gives one device's buffers: arguments (its
shard of the state + its slice of the batch), outputs, outputs aliased to donated arguments,
and temporaries (activations kept for the backward pass, gathered parameters, gradients before
their reduce-scatter, scratch). Peak = arguments + outputs - aliased + temp. `state` is the
state's bytes per device from the layout alone (no compiler). The figures depend on the backend
(CPU fusion and buffer assignment differ from TPU and GPU): the device kind is printed.
"""

import argparse
import math
import os
import sys
import time

from rnn_vos_jax.runtime.config_files import load_config


def _force_devices(n: int) -> None:
    """Asks XLA:CPU for `n` devices; must run before JAX initialises its backends."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


MIB = 2**20
LAYOUTS = ("replicated", "fsdp")


def step_memory(config, image_size, batch, frames, mesh, fsdp):
    """Per-device bytes of the compiled training step of `config` on `mesh`.

    Args:
      config: full config (its model and train blocks are used).
      image_size: (H, W).
      batch: global batch (clips), a multiple of the mesh size.
      frames: T, frames per clip.
      mesh: the device mesh.
      fsdp: sharding.Fsdp, or None for the replicated layout.

    Returns:
      dict of ints: params (count), state (bytes per device), argument, output, alias, temp,
      peak (bytes per device), and compile_s (float).
    """
    import jax
    import jax.numpy as jnp

    from rnn_vos_jax import models
    from rnn_vos_jax.training import schedules, sharding, train_state

    model = models.build(config.model)
    h, w = image_size
    schedule = schedules.learning_rate_fn(config.train, 100.0)
    tx = train_state.make_optimizer(config.train, schedule)
    state = train_state.abstract_state(
        lambda: train_state.create_train_state(model, tx, 0, (h, w), mesh, fsdp=fsdp), mesh, fsdp
    )
    layout = jax.tree.map(lambda x: x.sharding, state)
    shapes = {
        "frames": ((batch, frames, h, w, 3), jnp.uint8),
        "masks": ((batch, frames, h, w, 1), jnp.float32),
        "distance": ((batch, frames, h, w), jnp.int32),
        "valid": ((batch, frames), jnp.bool_),
    }
    data = {
        k: jax.ShapeDtypeStruct(s, d, sharding=sharding.batch_sharded(mesh))
        for k, (s, d) in shapes.items()
    }
    step = train_state.jit_train_step(
        model, tx, config.train.loss, schedule, mesh, True, state_sharding=layout
    )
    t0 = time.perf_counter()
    compiled = step.lower(state, data, jax.ShapeDtypeStruct((), jnp.float32)).compile()
    m = compiled.memory_analysis()
    out = {
        "params": sum(x.size for x in jax.tree.leaves(state.params)),
        "state": sum(
            int(jnp.dtype(x.dtype).itemsize) * math.prod(x.sharding.shard_shape(x.shape))
            for x in jax.tree.leaves(state)
        ),
        "argument": m.argument_size_in_bytes,
        "output": m.output_size_in_bytes,
        "alias": m.alias_size_in_bytes,
        "temp": m.temp_size_in_bytes,
        "compile_s": time.perf_counter() - t0,
    }
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/hs2s.py")
    p.add_argument("--image_size", default="256x448")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--batch", type=int, default=8, help="global batch (clips)")
    p.add_argument("--frames", type=int, default=3, help="frames per clip (T; T-1 predicted)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help=f"subset of {LAYOUTS}")
    p.add_argument("--fsdp_min_size", type=int, default=0, help="0 = the config's")
    args = p.parse_args(argv)
    layouts = args.layouts.split(",")
    if set(layouts) - set(LAYOUTS):
        p.error(f"--layouts takes {LAYOUTS}, got {args.layouts}")
    _force_devices(args.devices)
    import jax

    from rnn_vos_jax.training import sharding

    h, w = (int(v) for v in args.image_size.split("x"))
    config = load_config(args.config)
    config.unlock()
    if args.fsdp_min_size:
        config.mesh.fsdp_min_size = args.fsdp_min_size
    mesh = sharding.make_mesh(args.devices)
    print(f"command: python benchmarks/fsdp_memory.py {' '.join(argv or sys.argv[1:])}")
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}) x {args.devices}; "
        f"{args.config} at {h}x{w}, global batch {args.batch}, T={args.frames}, "
        f"fsdp_min_size {config.mesh.fsdp_min_size}; MiB per device"
    )
    for layout in layouts:
        config.mesh.fsdp = layout == "fsdp"
        r = step_memory(
            config, (h, w), args.batch, args.frames, mesh, sharding.fsdp_from_config(config.mesh)
        )
        print(
            f"{layout:10s} {r['params'] / 1e6:.1f}M params | state {r['state'] / MIB:9.1f} | "
            f"XLA peak {r['peak'] / MIB:9.1f} = arguments {r['argument'] / MIB:9.1f} + outputs "
            f"{r['output'] / MIB:9.1f} - aliased {r['alias'] / MIB:9.1f} + temp "
            f"{r['temp'] / MIB:9.1f} (compile {r['compile_s']:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()  # $RNN_VOS_JAX_COMPILATION_CACHE or the user's cache; 'off' for cold
    main()
