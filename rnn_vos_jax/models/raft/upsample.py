"""RAFT's convex upsampling of a 1/8 flow field to full resolution.

Each full-resolution pixel (sub-position (i, j) of its coarse cell) is a convex combination of
the 3x3 coarse neighbours of its cell, scaled by the factor: weights = softmax over the 9
neighbours of the mask head's output. Mask channel c is read as (neighbour k, i, j) =
(c // f^2, (c // f) % f, c % f) and neighbours are ordered row major (k = 3 * dy + dx), as
princeton-vl/RAFT's `upsample_flow` reads its (9, 8, 8) mask and F.unfold orders the 3x3 patch;
neighbours outside the map are zero (F.unfold's zero padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def convex_upsample(flow: jax.Array, mask: jax.Array, factor: int = 8) -> jax.Array:
    """Upsamples flow by `factor` with learned convex weights.

    Args:
      flow: [N, h, w, 2] coarse flow in coarse pixels.
      mask: [N, h, w, 9 * factor^2] logits of the combination weights.
      factor: upsampling factor (8 in RAFT).

    Returns:
      float32 [N, factor*h, factor*w, 2] flow in full-resolution pixels.
    """
    n, h, w, _ = flow.shape
    if mask.shape != (n, h, w, 9 * factor * factor):
        raise ValueError(
            f"mask shape {mask.shape} must be {(n, h, w, 9 * factor * factor)} for flow {flow.shape}"
        )
    weights = jax.nn.softmax(mask.astype(jnp.float32).reshape(n, h, w, 9, factor, factor), axis=3)
    padded = jnp.pad(factor * flow.astype(jnp.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
    neighbours = jnp.stack(
        [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=3
    )  # [N, h, w, 9, 2]
    up = jnp.einsum("nyxkij,nyxkc->nyixjc", weights, neighbours)
    return up.reshape(n, factor * h, factor * w, 2)
