"""Border-distance classes: known answers, scipy reference on random masks, degenerate masks."""

import ast
import os

import numpy as np
import pytest
from scipy import ndimage

from rnn_vos_jax.data import distance


def _reference(mask, border, bin_size):
    """Straight transcription of the class rules with scipy's exact EDT (floored)."""
    obj = mask != 0
    d_in = np.floor(ndimage.distance_transform_edt(obj)).astype(int)
    d_out = np.floor(ndimage.distance_transform_edt(~obj)).astype(int)
    t = border // bin_size
    out = np.where(obj, 2 * t + 1, 0)
    near_out = ~obj & (d_out <= border)
    near_in = obj & (d_in <= border)
    out[near_out] = t - d_out[near_out] // bin_size
    out[near_in] = t + 1 + d_in[near_in] // bin_size
    return out


def test_num_classes():
    assert distance.num_distance_classes() == 42
    assert distance.num_distance_classes(20, 10) == 6
    assert distance.num_distance_classes(10, 1) == 22
    with pytest.raises(ValueError, match="bin_size"):
        distance.num_distance_classes(5, 6)
    with pytest.raises(ValueError, match="border"):
        distance.num_distance_classes(0, 1)


def test_known_answer_single_pixel():
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = True
    expected = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 1, 4, 1, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(distance.distance_classes(mask, border=2, bin_size=1), expected)


def test_known_answer_row_bin1():
    row = np.zeros((1, 100), np.uint8)
    row[0, 30:80] = 1  # object columns 30..79
    got = distance.distance_classes(row, border=20, bin_size=1)[0]
    # background: d_out = 30 - col; object: d_in = min(col - 29, 80 - col)
    assert got[29] == 19 and got[20] == 10 and got[11] == 1
    assert got[10] == 0 and got[0] == 0  # d = R lands in the far class
    assert got[30] == 22 and got[48] == 40
    assert got[49] == 41 and got[55] == 41  # d_in = R and beyond: far inside
    assert got[79] == 22 and got[99] == 0 and got[80] == 19
    assert 20 not in got and 21 not in got


def test_known_answer_row_bin10():
    row = np.zeros((1, 100), np.uint8)
    row[0, 30:80] = 1
    got = distance.distance_classes(row, border=20, bin_size=10)[0]
    assert [got[c] for c in (29, 21, 20, 11, 10, 5)] == [2, 2, 1, 1, 0, 0]
    assert [got[c] for c in (30, 38, 39, 48, 49, 55)] == [3, 3, 4, 4, 5, 5]
    assert set(np.unique(got)) == {0, 1, 2, 3, 4, 5}


@pytest.mark.parametrize("border,bin_size", [(20, 1), (20, 10), (10, 1), (7, 3)])
def test_random_masks_match_scipy(border, bin_size):
    rng = np.random.default_rng(border * 10 + bin_size)
    for trial in range(25):
        h, w = rng.integers(3, 70, size=2)
        if trial % 3 == 0:
            mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        else:
            yy, xx = np.mgrid[:h, :w]
            mask = np.zeros((h, w), bool)
            for _ in range(rng.integers(1, 4)):
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 35)
                mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        if mask.all() or not mask.any():
            continue
        got = distance.distance_classes(mask, border, bin_size)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, _reference(mask, border, bin_size))


def test_degenerate_and_batch():
    empty = np.zeros((4, 6), np.float32)
    full = np.ones((4, 6), np.float32)
    np.testing.assert_array_equal(distance.distance_classes(empty), 0)
    np.testing.assert_array_equal(distance.distance_classes(full), 41)
    one = np.zeros((4, 6), np.float32)
    one[1, 2] = 1
    stack = np.stack([empty, full, one])[None, ..., None]  # [1, 3, 4, 6, 1]
    got = distance.distance_classes_batch(stack, border=20, bin_size=10)
    assert got.shape == (1, 3, 4, 6) and got.dtype == np.int32
    np.testing.assert_array_equal(got[0, 2], _reference(one, 20, 10))
    np.testing.assert_array_equal(got[0, 1], 5)
    with pytest.raises(ValueError, match="shape"):
        distance.distance_classes(np.zeros((2, 3, 4)))


def test_matches_authors_distance_map():
    """Runs the authors' `distance_map` (RS2S dataloader, read-only checkout) when it is present."""
    path = "/work/ref/RS2S/dataloader.py"
    if not os.path.exists(path):
        pytest.skip("authors' code not checked out")
    with open(path) as f:
        tree = ast.parse(f.read())
    wanted = {"distance_map", "distance_weights", "distance_weights_inv"}
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace = {"np": np, "ndimage": ndimage}
    # only these three pure numpy/scipy functions of the read-only checkout are run
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)  # noqa: S102
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:60, :70]
    for trial in range(12):
        mask = np.zeros((60, 70), np.float32)
        for _ in range(2):
            cy, cx, r = rng.integers(0, 60), rng.integers(0, 70), rng.integers(3, 30)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
        if mask.all() or not mask.any():
            continue
        for border, bin_size in [(20, 1), (20, 10)]:
            theirs = namespace["distance_map"](mask.copy(), border, bin_size, use_bins=True)
            np.testing.assert_array_equal(
                distance.distance_classes(mask, border, bin_size), theirs.astype(np.int32)
            )
