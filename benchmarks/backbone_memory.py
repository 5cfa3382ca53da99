r"""Memory of one jitted training step, from XLA's compiled memory statistics (not a test).

    python benchmarks/backbone_memory.py --config=configs/hs2s.py:backbone=axial_s \
        [--config=hs2s:demo_base,backbone=axial_s ...] [--image_sizes=96x96,256x448] \
        [--remat=off,encoder,blocks] [--batch=1] [--frames=3] [--scan_unroll=0]

For each config (a file of configs/ or its module name, with its argument) and image size, the
project's training step (train_state.jit_train_step: forward over `frames` frames, loss,
backward, Adam update; state replicated and donated, BatchNorm in train mode) is lowered on
abstract inputs and compiled with XLA's default options (nothing runs), and
`compiled.memory_analysis()` gives the sizes of its arguments (state + batch), outputs, the
outputs aliased to donated arguments, and temporaries (activations kept for the backward pass
and scratch). Peak = argument + output - alias + temp, the buffers live at once in XLA's
assignment. The default sizes are the HS2S demo's 96x96 and the paper's 256x448.

`residuals` is backend-independent: the bytes of what the backward pass keeps from the forward
(the residuals of jax.vjp of the same loss over the parameters, under jax.eval_shape, before
XLA's optimisations; they include parameters the backward reads, the same in every mode).
XLA:CPU may expand rematerialisation's optimisation barriers and CSE the recomputation away: on
CPU (2026-12-01) the demo's temp at 96x96 did not move with remat while its residuals fell
12-fold; at 256x448 the full axial_s model's temp fell from 15,204 to 8,291 MiB (encoder remat).

Rematerialisation modes:
  off       config.model.remat = 'none'
  encoder   config.model.remat = 'encoders' (HS2S: each encoder call rematerialised as a whole)
  steps     config.model.remat = 'steps' (HS2S: each whole time step rematerialised)
  blocks    the backbone's own `remat` field (axial_s: every AxialBlock), encoders not; HS2S has
            no config key for it, so the run sets it through hs2s_encoder.BACKBONE_FIELDS.
            Skipped for backbones without the field.
The memory figures depend on the backend (fusion and buffer assignment differ between CPU, GPU
and TPU): the device is printed.
"""

import argparse
import contextlib
import sys
import time

import jax
import jax.numpy as jnp

from rnn_vos_jax import models
from rnn_vos_jax.models import backbones, hs2s_encoder
from rnn_vos_jax.runtime.config_files import load_config
from rnn_vos_jax.training import schedules, sharding, train_state

MODES = ("off", "encoder", "steps", "blocks")
REMAT = {"off": "none", "encoder": "encoders", "steps": "steps", "blocks": "none"}
MIB = 2**20


@contextlib.contextmanager
def backbone_remat(backbone: str):
    """HS2S encoders build `backbone` with remat=True inside the block."""
    saved = dict(hs2s_encoder.BACKBONE_FIELDS)
    hs2s_encoder.BACKBONE_FIELDS[backbone] = {**saved.get(backbone, {}), "remat": True}
    try:
        yield
    finally:
        hs2s_encoder.BACKBONE_FIELDS.clear()
        hs2s_encoder.BACKBONE_FIELDS.update(saved)


def _residual_bytes(model, config, state, data) -> int:
    """Bytes of the forward residuals the training step's backward pass keeps (see above)."""
    loss_fn = models.family_of(model).loss

    def objective(params, stats, batch):
        out, _ = model.apply(
            {"params": params, "batch_stats": stats},
            batch["frames"],
            batch["masks"],
            sample_prob=0.0,
            train=True,
            rngs={"sample": jax.random.key(0)},
            mutable=["batch_stats"],
        )
        return loss_fn(out, batch, **config.train.loss)[0]

    vjp = jax.eval_shape(
        lambda p, s, b: jax.vjp(lambda q: objective(q, s, b), p)[1],
        state.params,
        state.batch_stats,
        data,
    )
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(vjp))


def step_memory(config, image_size, batch, frames, mode, compile_step=True):
    """Compiled memory statistics (bytes) of the training step of `config`, or None when
    `mode` does not apply to its backbone."""
    config.model.remat = REMAT[mode]
    backbone = config.model.get("backbone", "")
    blocks = mode == "blocks"
    # Registry lookups of unknown names raise ValueError, so Mapping.get would not default.
    cls = backbones.REGISTRY[backbone] if backbone in backbones.REGISTRY else None  # noqa: SIM401
    if blocks and "remat" not in getattr(cls, "__dataclass_fields__", {}):
        return None
    with backbone_remat(backbone) if blocks else contextlib.nullcontext():
        model = models.build(config.model)
        h, w = image_size
        mesh = sharding.make_mesh(1)
        schedule = schedules.learning_rate_fn(config.train, 100.0)
        tx = train_state.make_optimizer(config.train, schedule)
        state = train_state.abstract_state(
            lambda: train_state.create_train_state(model, tx, 0, (h, w), mesh), mesh
        )
        shapes = {
            "frames": ((batch, frames, h, w, 3), jnp.uint8),
            "masks": ((batch, frames, h, w, 1), jnp.float32),
            "distance": ((batch, frames, h, w), jnp.int32),
            "valid": ((batch, frames), jnp.bool_),
        }
        data = {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in shapes.items()}
        out = {
            "params": sum(x.size for x in jax.tree.leaves(state.params)),
            "residuals": _residual_bytes(model, config, state, data),
        }
        if not compile_step:
            return out
        step = train_state.jit_train_step(model, tx, config.train.loss, schedule, mesh, True)
        t0 = time.perf_counter()
        compiled = step.lower(state, data, jax.ShapeDtypeStruct((), jnp.float32)).compile()
        out["compile_s"] = time.perf_counter() - t0
    m = compiled.memory_analysis()
    out.update(
        argument=m.argument_size_in_bytes,
        output=m.output_size_in_bytes,
        alias=m.alias_size_in_bytes,
        temp=m.temp_size_in_bytes,
    )
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", help="configs/NAME.py[:ARG]; repeatable")
    p.add_argument("--image_sizes", default="96x96,256x448")
    p.add_argument("--remat", default="off,encoder,blocks", help=f"subset of {MODES}")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=3, help="frames per clip (T; T-1 predicted)")
    p.add_argument("--scan_unroll", type=int, default=0, help="0 = the config's own")
    p.add_argument(
        "--no_compile", action="store_true", help="residuals only (seconds, no XLA compile)"
    )
    args = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.image_sizes.split(",")]
    modes = args.remat.split(",")
    if set(modes) - set(MODES):
        p.error(f"--remat takes {MODES}, got {args.remat}")
    print(f"command: python benchmarks/backbone_memory.py {' '.join(argv or sys.argv[1:])}")
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); batch {args.batch}, "
        f"T={args.frames}, train step with BatchNorm in train mode; MiB"
    )
    for spec in args.config or ["configs/hs2s.py:backbone=axial_s"]:
        for size in sizes:
            for mode in modes:
                config = load_config(spec)
                config.unlock()
                if args.scan_unroll:
                    config.model.scan_unroll = args.scan_unroll
                r = step_memory(config, size, args.batch, args.frames, mode, not args.no_compile)
                head = f"{spec:36s} {size[0]}x{size[1]:<4d} remat={mode:8s}"
                if r is None:
                    print(f"{head} n/a (the backbone has no remat field)", flush=True)
                    continue
                line = (
                    f"{head} {r['params'] / 1e6:6.1f}M params | residuals "
                    f"{r['residuals'] / MIB:9.1f}"
                )
                if "peak" in r:
                    line += (
                        f" | XLA peak {r['peak'] / MIB:9.1f} = arguments "
                        f"{r['argument'] / MIB:8.1f} + outputs {r['output'] / MIB:8.1f} - aliased "
                        f"{r['alias'] / MIB:8.1f} + temp {r['temp'] / MIB:9.1f} "
                        f"(compile {r['compile_s']:.0f} s)"
                    )
                print(line, flush=True)


if __name__ == "__main__":
    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()  # $RNN_VOS_JAX_COMPILATION_CACHE or the user's cache; 'off' for cold
    main()
