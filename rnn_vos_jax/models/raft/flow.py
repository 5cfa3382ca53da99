"""RAFT's iterative refinement: correlation pyramid + update block, flow from frame 1 to frame 2.

    coords1 = coords0 (flow 0)
    repeat iters times:
      coords1 = stop_gradient(coords1)                      RAFT's coords1.detach()
      net, mask, delta = update_block(net, inp, lookup(coords1), coords1 - coords0)
      coords1 = coords1 + delta
      flows += convex_upsample(coords1 - coords0, mask)      x8, full resolution

so each iteration's loss reaches only its own update (and, through the correlation and the hidden
state, the features), as in princeton-vl/RAFT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_vos_jax.models.raft import correlation
from rnn_vos_jax.models.raft.update import UPSAMPLE, BasicUpdateBlock
from rnn_vos_jax.models.raft.upsample import convex_upsample


def estimate_flow(
    update_block: BasicUpdateBlock,
    fmap1: jax.Array,
    fmap2: jax.Array,
    net: jax.Array,
    inp: jax.Array,
    *,
    iters: int,
    levels: int,
    radius: int,
) -> tuple[jax.Array, jax.Array]:
    """Flow from the frame of fmap1 to the frame of fmap2, refined `iters` times.

    Args:
      update_block: a bound BasicUpdateBlock (its parameters are shared by the iterations).
      fmap1, fmap2: [N, h, w, C] matching features of the source and target frames (1/8).
      net: [N, h, w, hidden] initial hidden state (tanh of the context; float32).
      inp: [N, h, w, hidden] context input (ReLU of the context).
      iters: refinement iterations (>= 1).
      levels, radius: correlation pyramid levels and lookup radius.

    Returns:
      (flows float32 [N, iters, 8h, 8w, 2]: the upsampled flow after each iteration, in pixels
      (x, y) of the full-resolution frame; coarse float32 [N, h, w, 2], the last coarse flow).
    """
    if iters < 1:
        raise ValueError(f"flow_iters must be >= 1, got {iters}")
    corr = correlation.pyramid(fmap1, fmap2, levels)
    n, h, w, _ = fmap1.shape
    coords0 = correlation.coords_grid(n, h, w)
    coords1 = coords0
    net = net.astype(jnp.float32)
    flows = []
    for _ in range(iters):
        coords1 = jax.lax.stop_gradient(coords1)
        window = correlation.lookup(corr, coords1, radius)
        net, mask, delta = update_block(net, inp, window, coords1 - coords0)
        coords1 = coords1 + delta
        flows.append(convex_upsample(coords1 - coords0, mask, UPSAMPLE))
    return jnp.stack(flows, axis=1), coords1 - coords0
