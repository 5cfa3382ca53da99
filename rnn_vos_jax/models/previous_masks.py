"""Training-time previous-mask inputs of HS2S and Bi-HS2S: scheduled-sampling coins and the
random deformation (erosion / dilation, then shift) of GT previous masks.

Masks are time-major [T, B, H, W, 1]; masks[0] (the first frame's) is always kept exact. Random
draws come from the module's 'sample' rng stream; a function that needs it raises a ValueError
when it is missing, and none needs it when its setting makes it the identity (or a fixed coin).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _sample_key(module: nn.Module, setting: str) -> jax.Array:
    """The next key of the module's 'sample' stream; a ValueError naming `setting` without it."""
    if not module.has_rng("sample"):
        raise ValueError(
            f"{type(module).__name__}: {setting} needs the 'sample' rng stream "
            "(pass rngs={'sample': key} to apply)"
        )
    return module.make_rng("sample")


def sample_coins(module: nn.Module, n: int, sample_prob: Any) -> jax.Array:
    """bool[n]: per step, whether the previous prediction replaces the GT previous mask."""
    if isinstance(sample_prob, (int, float)) and not isinstance(sample_prob, bool):
        if sample_prob <= 0.0:
            return jnp.zeros((n,), bool)
        if sample_prob >= 1.0:
            return jnp.ones((n,), bool)
    key = _sample_key(module, f"sample_prob={sample_prob!r}")
    return jax.random.uniform(key, (n,)) < sample_prob


def jitter(module: nn.Module, masks: jax.Array, pixels: int) -> jax.Array:
    """Moves masks[1:] ([T-1, B, H, W, 1], time-major) by random offsets of up to `pixels`."""
    j = pixels
    if j <= 0 or masks.shape[0] < 2:
        return masks
    key = _sample_key(module, "mask_jitter > 0")
    n, b, h, w, _ = masks.shape
    offsets = jax.random.randint(key, (n - 1, b, 2), 0, 2 * j + 1)
    padded = jnp.pad(masks[1:], ((0, 0), (0, 0), (j, j), (j, j), (0, 0)))

    def crop(m, o):  # m [H + 2j, W + 2j, 1], o = (dy, dx) + j
        return jax.lax.dynamic_slice(m, (o[0], o[1], 0), (h, w, 1))

    moved = jax.vmap(jax.vmap(crop))(padded, offsets)
    return jnp.concatenate([masks[:1], moved], axis=0)


def morph(module: nn.Module, masks: jax.Array, radius: int) -> jax.Array:
    """Erodes or dilates masks[1:] ([T-1, B, H, W, 1], time-major) by a random number of pixels.

    Per sample and step, k ~ U{-radius..radius}: k > 0 dilates the mask by a (2k+1)^2 square
    (max filter), k < 0 erodes it by a (2|k|+1)^2 square (min filter; the frame border does not
    erode), k = 0 leaves it. masks[0] (the first frame's, always exact) is kept.
    """
    r = radius  # short: the index arithmetic below reads better
    if r <= 0 or masks.shape[0] < 2:
        return masks
    key = _sample_key(module, "mask_morph > 0")
    later = masks[1:]
    window, ones = (1, 1, 3, 3, 1), (1, 1, 1, 1, 1)

    def grow(m):  # one 3x3 max filter; outside the frame counts for nothing (-inf padding)
        return jax.lax.reduce_window(m, -jnp.inf, jax.lax.max, window, ones, "SAME")

    dilated, eroded = [later], [later]
    for _ in range(r):
        dilated.append(grow(dilated[-1]))
        eroded.append(-grow(-eroded[-1]))
    # Candidates ordered k = -r..r.
    candidates = jnp.stack(eroded[:0:-1] + dilated, axis=0)  # [2r + 1, T-1, B, H, W, 1]
    k = jax.random.randint(key, later.shape[:2], 0, 2 * r + 1)
    picked = jnp.take_along_axis(candidates, k[None, :, :, None, None, None], axis=0)[0]
    return jnp.concatenate([masks[:1], picked], axis=0)


def perturb_gt_masks(module: nn.Module, masks: jax.Array) -> jax.Array:
    """The training-time deformation of GT previous masks ([T-1, B, H, W, 1], time-major) shared
    by HS2S and Bi-HS2S: erosion / dilation (module.mask_morph), then a shift
    (module.mask_jitter); masks[0] is kept exact."""
    return jitter(module, morph(module, masks, module.mask_morph), module.mask_jitter)
