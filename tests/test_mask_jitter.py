"""HS2S mask_jitter / mask_morph: training-time random shifts, erosions and dilations of the GT
previous masks (first mask exact)."""

import jax
import numpy as np
from scipy import ndimage

from rnn_vos_jax.models.hs2s import HS2S
from rnn_vos_jax.models.previous_masks import perturb_gt_masks


def _shift(m, dy, dx):
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = m[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_jitter_shifts_later_masks_with_zero_fill_and_keeps_the_first():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(4, 3, 10, 12, 1)) > 0.5).astype(np.float32)  # [T-1, B, H, W, 1]
    j = 2
    out = np.asarray(
        HS2S(mask_jitter=j).apply(
            {}, masks, method=perturb_gt_masks, rngs={"sample": jax.random.PRNGKey(1)}
        )
    )
    np.testing.assert_array_equal(out[0], masks[0])
    moved = 0
    for t in range(1, 4):
        for b in range(3):
            src, got = masks[t, b, ..., 0], out[t, b, ..., 0]
            matches = [
                (dy, dx)
                for dy in range(-j, j + 1)
                for dx in range(-j, j + 1)
                if np.array_equal(_shift(src, dy, dx), got)
            ]
            assert matches, (t, b)
            moved += (0, 0) not in matches
    assert moved > 0  # random offsets, not the identity
    same = HS2S(mask_jitter=0).apply({}, masks, method=perturb_gt_masks)
    np.testing.assert_array_equal(same, masks)


def _morphed(src, k):
    """scipy's binary erosion (k < 0) / dilation (k > 0) by a (2|k|+1)^2 square."""
    if k == 0:
        return src
    square = np.ones((2 * abs(k) + 1,) * 2, bool)
    if k > 0:
        return ndimage.binary_dilation(src, square)
    return ndimage.binary_erosion(src, square, border_value=1)  # the frame edge does not erode


def test_morph_erodes_or_dilates_later_masks_and_keeps_the_first():
    masks = np.zeros((5, 4, 16, 18, 1), np.float32)  # [T-1, B, H, W, 1]
    masks[:, :, 3:12, 4:15] = 1
    masks[:, :, 0:3, 0:2] = 1  # a blob on the frame's corner
    r = 2
    out = np.asarray(
        HS2S(mask_morph=r).apply(
            {}, masks, method=perturb_gt_masks, rngs={"sample": jax.random.PRNGKey(3)}
        )
    )
    np.testing.assert_array_equal(out[0], masks[0])
    radii = set()
    for t in range(1, 5):
        for b in range(4):
            src, got = masks[t, b, ..., 0] > 0, out[t, b, ..., 0]
            assert set(np.unique(got)) <= {0.0, 1.0}
            matches = [k for k in range(-r, r + 1) if np.array_equal(_morphed(src, k), got > 0)]
            assert len(matches) == 1, (t, b, matches)
            radii.add(matches[0])
    assert len(radii) >= 3  # random radii, both signs drawn over 16 masks
    assert min(radii) < 0 < max(radii)
