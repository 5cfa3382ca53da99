"""The scan-over-time wrapper every family runs its per-frame step with.

A family's step is `(module, carry, x_t, ...) -> (carry, y_t)`, so the same code runs as one
streaming step at inference and inside `nn.scan` in training. The cells it holds are in
models/cells/.
"""

from typing import Any

import flax.linen as nn

from rnn_vos_jax.models import conv_lowering


def scan_over_time(
    target,
    train: bool,
    *,
    in_axes: Any = 1,
    out_axes: Any = 1,
    unroll: int = 1,
    length: int | None = None,
):
    """Lifts a per-step module or method `(module, carry, x_t, ...) -> (carry, y_t)` over time.

    Parameters are shared across steps (broadcast). In train mode the BatchNorm running
    statistics are carried from step to step, so they are updated once per step exactly as the
    authors' sequential torch loop updates them; in eval mode they are broadcast (read-only).
    The 'sample' rng (scheduled sampling) is split per step.

    Flax needs the batch_stats to exist before a scan that carries them: at init, call the step
    once unscanned (see DESIGN.md, "Known pitfalls").

    Args:
      target: a Module class, or a function/method taking the module first.
      train: whether BatchNorm is in train mode inside the step.
      in_axes: time axis of the scanned inputs (nn.broadcast for extra constant arguments).
      out_axes: time axis of the outputs.
      unroll: steps per loop iteration (`jax.lax.scan`'s unroll; results are the same). XLA's CPU
        backend runs convolutions inside a while loop several times slower than unrolled ones
        (benchmarks/RESULTS.md), so CPU runs unroll short clips fully; on TPU/GPU 1 keeps
        compile time and code size low.
      length: the number of steps, when known: with unroll >= length the scan is straight-line
        code, otherwise a loop, whose convolutions conv_lowering writes for loops (None: a loop
        unless unroll > 1). A function target is traced inside the returned call; a Module class
        target is traced when its instance is called, outside that context.

    Returns:
      The lifted class or function: (module,) carry, xs, ... -> (carry, ys).
    """
    lifted = nn.scan(
        target,
        variable_broadcast="params" if train else ["params", "batch_stats"],
        variable_carry="batch_stats" if train else False,
        split_rngs={"params": False, "sample": True},
        in_axes=in_axes,
        out_axes=out_axes,
        unroll=unroll,
    )
    in_loop = unroll < length if length else unroll == 1

    def scan(*args, **kwargs):
        # The body is traced during this call, so its convolutions see the context.
        with conv_lowering.traced_in_loop(in_loop):
            return lifted(*args, **kwargs)

    return scan
