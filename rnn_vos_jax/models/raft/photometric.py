"""The unsupervised photometric loss of RAFT-HS2S (paper B eq. 13 form; details spec §6).

For a flow F from frame t-1 to frame t, frame t is warped backwards onto frame t-1 by sampling it
at p + F(p) (bilinear, align_corners=True pixel coordinates, zeros outside), and the L1 error
against frame t-1 is averaged over the RGB channels ([0, 1], not ImageNet-normalised) and over
the valid pixels: those whose sample point lies inside frame t. No occlusion masking (the paper
mentions none). Every refinement iteration is penalised, weighted by gamma^(iters-1-i) normalised
to sum 1 (RAFT's sequence weights, normalised).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bilinear_sample(image: jax.Array, coords: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Samples image at real-valued pixel coordinates.

    Args:
      image: [N, H, W, C].
      coords: [N, h, w, 2] (x, y) pixel coordinates (centres at integers).

    Returns:
      (samples float32 [N, h, w, C], differentiable in image and coords, zeros outside;
       inside bool [N, h, w]: 0 <= x <= W-1 and 0 <= y <= H-1, so every tap is in the image).
    """
    n, hi, wi, c = image.shape
    img = jnp.asarray(image, jnp.float32)
    x, y = coords[..., 0].astype(jnp.float32), coords[..., 1].astype(jnp.float32)
    x0, y0 = jax.lax.stop_gradient(jnp.floor(x)), jax.lax.stop_gradient(jnp.floor(y))
    batch = jnp.arange(n).reshape(n, 1, 1)
    out = jnp.zeros((*coords.shape[:-1], c), jnp.float32)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1.0 - jnp.abs(x - xi)) * (1.0 - jnp.abs(y - yi))
            ok = (xi >= 0) & (xi <= wi - 1) & (yi >= 0) & (yi <= hi - 1)
            xc = jnp.clip(xi, 0, wi - 1).astype(jnp.int32)
            yc = jnp.clip(yi, 0, hi - 1).astype(jnp.int32)
            out = out + jnp.where(ok, wgt, 0.0)[..., None] * img[batch, yc, xc]
    inside = (x >= 0) & (x <= wi - 1) & (y >= 0) & (y <= hi - 1)
    return out, jax.lax.stop_gradient(inside)


def backward_warp(image: jax.Array, flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """image [N,H,W,C] sampled at p + flow(p), flow [N,H,W,2] (x, y): (warped, inside)."""
    h, w = flow.shape[1:3]
    ys, xs = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    return bilinear_sample(image, jnp.stack([xs, ys], axis=-1) + flow)


def photometric_error(
    prev: jax.Array, nxt: jax.Array, flow: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-sample sum of the L1 error and count of valid pixels.

    Args:
      prev: [N, H, W, 3] frame t-1, RGB in [0, 1].
      nxt: [N, H, W, 3] frame t, RGB in [0, 1].
      flow: [N, H, W, 2] flow from t-1 to t (pixels, (x, y)).

    Returns:
      (error_sum float32 [N]: sum over valid pixels of the channel-mean |prev - warp(nxt)|,
       count float32 [N]: the number of valid pixels).
    """
    warped, inside = backward_warp(nxt, flow)
    err = jnp.mean(jnp.abs(prev.astype(jnp.float32) - warped), axis=-1)
    valid = inside.astype(jnp.float32)
    return jnp.sum(err * valid, axis=(1, 2)), jnp.sum(valid, axis=(1, 2))


def photometric_loss(prev: jax.Array, nxt: jax.Array, flow: jax.Array) -> jax.Array:
    """Mean L1 photometric error over the valid pixels of a batch (0 if none is valid).

    Args: as `photometric_error`. Returns: float32 scalar.
    """
    total, count = photometric_error(prev, nxt, flow)
    return jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0)


def iteration_weights(iters: int, gamma: float) -> jax.Array:
    """float32 [iters]: gamma^(iters-1-i), normalised to sum 1 (the last iteration weighs most)."""
    w = jnp.asarray([gamma ** (iters - 1 - i) for i in range(iters)], jnp.float32)
    return w / jnp.sum(w)


def sequence_photometric_loss(
    frames: jax.Array, flows: jax.Array, valid: jax.Array, gamma: float = 0.8
) -> jax.Array:
    """Photometric loss of a batch of clips, every iteration, frames weighted as the HS2S loss.

    Per predicted frame t and iteration i the error is pooled over the batch's valid samples
    (sum of errors / number of valid pixels, as the segmentation loss pools its statistics over
    the batch); frames without a valid sample are left out of the mean over frames.

    Args:
      frames: uint8 or float in [0, 255], [B, T, H, W, 3].
      flows: float [B, T-1, iters, H, W, 2]: flows[:, t-1, i] from frame t-1 to frame t.
      valid: bool [B, T] real (not padded) frames.
      gamma: RAFT's iteration decay.

    Returns:
      float32 scalar.
    """
    b, t1, iters, h, w, _ = flows.shape
    if frames.shape[:2] != (b, t1 + 1) or frames.shape[2:4] != (h, w):
        raise ValueError(f"frames {frames.shape} do not match flows {flows.shape}")
    x = frames.astype(jnp.float32) / 255.0
    prev = jnp.broadcast_to(x[:, :-1, None], (b, t1, iters, h, w, 3)).reshape(-1, h, w, 3)
    nxt = jnp.broadcast_to(x[:, 1:, None], (b, t1, iters, h, w, 3)).reshape(-1, h, w, 3)
    err, count = photometric_error(prev, nxt, flows.reshape(-1, h, w, 2))
    pair_ok = (valid[:, :-1] & valid[:, 1:]).astype(jnp.float32)[..., None]  # [B, T-1, 1]
    err = jnp.sum(err.reshape(b, t1, iters) * pair_ok, axis=0)
    count = jnp.sum(count.reshape(b, t1, iters) * pair_ok, axis=0)
    per_frame = (err / jnp.maximum(count, 1.0)) @ iteration_weights(iters, gamma)  # [T-1]
    used = (jnp.sum(pair_ok[..., 0], axis=0) > 0).astype(jnp.float32)
    return jnp.sum(per_frame * used) / jnp.maximum(jnp.sum(used), 1.0)
