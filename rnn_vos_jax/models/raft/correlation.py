"""RAFT's all-pairs correlation volume, its pyramid, and the windowed lookup into it.

Conventions (princeton-vl/RAFT `CorrBlock`): coordinates are (x, y) in pixels of the 1/8 feature
map, pixel centres at integers; sampling is bilinear with the align_corners=True convention
(the value at an integer coordinate is that pixel's) and zeros outside the map. Level l of the
pyramid average-pools the target dims by 2^l (2x2, stride 2, floor); its window is centred on
coords / 2^l. The (2r+1)^2 window channels of a level are ordered x offset major: channel
a * (2r+1) + b samples (x + a - r, y + b - r), as RAFT's meshgrid(dy, dx) stacks them, so RAFT's
motion-encoder weights read the same channels. Levels are concatenated from fine to coarse.

The lookup is written as two small batched matrix products per level (bilinear sampling with
zero padding is separable into 1-D hat weights), which map onto matrix units and need no gather.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def all_pairs(fmap1: jax.Array, fmap2: jax.Array) -> jax.Array:
    """Correlation of every pixel of fmap1 with every pixel of fmap2, scaled by 1/sqrt(C).

    Args:
      fmap1: [N, h, w, C] features of the source frame (t-1).
      fmap2: [N, h, w, C] features of the target frame (t).

    Returns:
      float32 [N, h, w, h, w]: corr[n, i, j, k, l] = <fmap1[n, i, j], fmap2[n, k, l]> / sqrt(C).
    """
    if fmap1.shape != fmap2.shape or fmap1.ndim != 4:
        raise ValueError(f"feature maps must be equal [N,h,w,C], got {fmap1.shape}, {fmap2.shape}")
    f1, f2 = fmap1.astype(jnp.float32), fmap2.astype(jnp.float32)
    corr = jnp.einsum("nijc,nklc->nijkl", f1, f2)
    return corr / jnp.sqrt(jnp.float32(fmap1.shape[-1]))


def _avg_pool_target(corr: jax.Array) -> jax.Array:
    """2x2 / stride-2 average pool of the last two dims (floor, as F.avg_pool2d)."""
    *lead, h, w = corr.shape
    h2, w2 = h // 2, w // 2
    if h2 == 0 or w2 == 0:
        raise ValueError(f"correlation level of {h}x{w} is too small to pool further")
    c = corr[..., : 2 * h2, : 2 * w2].reshape(*lead, h2, 2, w2, 2)
    return c.mean(axis=(-3, -1))


def pyramid(fmap1: jax.Array, fmap2: jax.Array, levels: int) -> list[jax.Array]:
    """The correlation pyramid: `levels` volumes [N, h, w, h / 2^l, w / 2^l], l = 0..levels-1."""
    if levels < 1:
        raise ValueError(f"corr_levels must be >= 1, got {levels}")
    out = [all_pairs(fmap1, fmap2)]
    for _ in range(levels - 1):
        out.append(_avg_pool_target(out[-1]))
    return out


def _hat_weights(pos: jax.Array, size: int) -> jax.Array:
    """Bilinear weights of positions pos [..., K] on the integer grid 0..size-1: [..., K, size].

    max(0, 1 - |pos - i|) is exactly the two-tap linear interpolation, and grid points outside
    0..size-1 simply do not exist, which is the zero padding.
    """
    grid = jnp.arange(size, dtype=jnp.float32)
    return jnp.maximum(0.0, 1.0 - jnp.abs(pos[..., None] - grid))


def lookup(levels: list[jax.Array], coords: jax.Array, radius: int) -> jax.Array:
    """Samples a (2r+1) x (2r+1) window of every pyramid level around each pixel's coordinates.

    Args:
      levels: the pyramid (see `pyramid`), level l of shape [N, h, w, h_l, w_l].
      coords: [N, h, w, 2] (x, y) target coordinates at level 0 (RAFT's coords1); callers pass
        them stop-gradient'ed, as RAFT detaches them at each iteration.
      radius: window radius r.

    Returns:
      float32 [N, h, w, levels * (2r+1)^2], channels ordered as the module docstring says.
    """
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = offsets.shape[0]
    coords = coords.astype(jnp.float32)
    out = []
    for lvl, corr in enumerate(levels):
        n, h, w, hl, wl = corr.shape
        c = coords / (2.0**lvl)
        wx = _hat_weights(c[..., 0:1] + offsets, wl)  # [N, h, w, K, wl]
        wy = _hat_weights(c[..., 1:2] + offsets, hl)  # [N, h, w, K, hl]
        rows = jnp.einsum("nijbh,nijhw->nijbw", wy, corr)  # y offset b, all target columns
        win = jnp.einsum("nijaw,nijbw->nijab", wx, rows)  # x offset a major, as RAFT
        out.append(win.reshape(n, h, w, k * k))
    return jnp.concatenate(out, axis=-1)


def coords_grid(n: int, h: int, w: int) -> jax.Array:
    """float32 [n, h, w, 2]: each pixel's own (x, y) coordinates (RAFT's coords0)."""
    ys, xs = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    return jnp.broadcast_to(jnp.stack([xs, ys], axis=-1), (n, h, w, 2))
