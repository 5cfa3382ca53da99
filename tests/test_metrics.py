"""Known-answer tests of the DAVIS J and F measures and the per-object protocol."""

import cv2
import numpy as np
import pytest

from rnn_vos_jax.scoring import metrics


def _square(h, w, r0, c0, size):
    m = np.zeros((h, w), bool)
    m[r0 : r0 + size, c0 : c0 + size] = True
    return m


def test_perfect_mask_scores_one():
    gt = _square(30, 40, 5, 7, 10)
    assert metrics.jaccard(gt, gt) == 1.0
    assert metrics.boundary_f(gt, gt) == 1.0


def test_empty_masks():
    empty = np.zeros((20, 20), bool)
    full = _square(20, 20, 3, 3, 6)
    assert metrics.jaccard(empty, empty) == 1.0
    assert metrics.boundary_f(empty, empty) == 1.0
    for a, b in ((empty, full), (full, empty)):
        assert metrics.jaccard(a, b) == 0.0
        assert metrics.boundary_f(a, b) == 0.0


def test_shifted_square_hand_computed():
    gt = _square(20, 20, 5, 5, 10)
    pred = _square(20, 20, 5, 8, 10)
    # 10x10 squares overlapping in 10x7 pixels: 70 / 130.
    assert metrics.jaccard(gt, pred) == pytest.approx(7 / 13)
    # 20x20 frame: tolerance ceil(0.008 * 28.3) = 1 pixel (a plus-shaped disk). Each boundary
    # is the 40-pixel outline of an 11x11 box; shifted by 3 columns, 9 of the 11 pixels of the
    # top and of the bottom row lie within 1 pixel of the other outline, and of the inner side
    # only its two pixels next to those rows: P = R = 20 / 40.
    assert metrics.boundary_f(gt, pred) == pytest.approx(20 / 40)
    # A one-column shift is within tolerance everywhere.
    assert metrics.boundary_f(gt, _square(20, 20, 5, 6, 10)) == 1.0


def test_seg2bmap_outline_and_disk():
    bmap = metrics.seg2bmap(_square(8, 8, 2, 2, 3))
    expected = np.zeros((8, 8), bool)
    expected[1, 1:5] = expected[4, 2:5] = True  # top row sits above, bottom row on the mask
    expected[1:5, 1] = expected[2:5, 4] = True  # left column left of it, right column on it
    np.testing.assert_array_equal(bmap, expected)
    np.testing.assert_array_equal(metrics.disk(1.0), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    d2 = metrics.disk(2.0)
    assert d2.shape == (5, 5) and d2.sum() == 13 and d2[0, 2] == 1 and d2[0, 1] == 0


def test_void_pixels_ignored():
    gt = _square(30, 30, 5, 5, 10)
    pred = gt.copy()
    pred[20:25, 20:25] = True
    void = np.zeros_like(gt)
    void[18:27, 18:27] = True
    assert metrics.jaccard(gt, pred) == pytest.approx(100 / 125)
    assert metrics.boundary_f(gt, pred) < 1.0
    assert metrics.jaccard(gt, pred, void) == 1.0
    assert metrics.boundary_f(gt, pred, void) == 1.0
    ids_gt = gt.astype(np.uint8)
    ids_gt[void] = metrics.VOID_LABEL
    ids_pred = pred.astype(np.uint8)
    # Default: void is background, as the toolkit's semi-supervised driver counts it.
    as_bg = metrics.score_video([ids_pred] * 3, [ids_gt] * 3, {1: 0}, include_first_last=True)
    np.testing.assert_allclose(as_bg[1].j, 100 / 125)
    np.testing.assert_allclose(as_bg[1].f, metrics.boundary_f(gt, pred))
    ignored = metrics.score_video(
        [ids_pred] * 3, [ids_gt] * 3, {1: 0}, include_first_last=True, ignore_void=True
    )
    np.testing.assert_array_equal(ignored[1].j, [1.0, 1.0, 1.0])


def _late_object_video():
    """6 frames; object 1 everywhere, object 2 from frame 3; predictions wrong in known places."""
    h = w = 24
    gts, preds = [], []
    for t in range(6):
        gt = np.zeros((h, w), np.uint8)
        gt[_square(h, w, 2, 2, 6)] = 1
        if t >= 3:
            gt[_square(h, w, 12, 12, 6)] = 2
        pred = gt.copy()
        if t in (1, 2):
            pred[_square(h, w, 12, 12, 6)] = 2  # before object 2 exists: must not count
        if t == 4:
            pred[pred == 2] = 0  # object 2 missed on its only scored frame
        gts.append(gt)
        preds.append(pred)
    return preds, gts


def test_late_object_scored_from_first_appearance_and_first_last_excluded():
    preds, gts = _late_object_video()
    scores = metrics.score_video(preds, gts, {1: 0, 2: 3}, categories={1: "cat", 2: None})
    np.testing.assert_array_equal(scores[1].offsets, [1, 2, 3, 4])
    np.testing.assert_array_equal(scores[1].j, [1, 1, 1, 1])
    np.testing.assert_array_equal(scores[2].offsets, [1])  # frame 4 only: 3 is given, 5 is last
    np.testing.assert_array_equal(scores[2].j, [0.0])
    assert scores[1].category == "cat"
    full = metrics.score_video(preds, gts, {1: 0, 2: 3}, include_first_last=True)
    np.testing.assert_array_equal(full[1].offsets, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(full[2].offsets, [0, 1, 2])
    np.testing.assert_array_equal(full[2].j, [1.0, 0.0, 1.0])
    assert metrics.scored_frames(2, [True, False, True, True, True, False]) == [3]


def test_baseline_copies_first_mask():
    _preds, gts = _late_object_video()
    gts[4] = np.roll(gts[4], 3, axis=1)  # moved square: copying frame 0 no longer fits
    base = metrics.score_video(None, gts, {1: 0, 2: 3}, include_first_last=True)
    np.testing.assert_array_equal(base[1].j, [1, 1, 1, 1, 3 / 9, 1])
    assert base[1].j[0] == 1.0 and base[2].offsets.tolist() == [0, 1, 2]


def test_missing_ground_truth_frames_and_errors():
    preds, gts = _late_object_video()
    gts[2] = None
    scores = metrics.score_video(preds, gts, {1: 0}, include_first_last=True)
    np.testing.assert_array_equal(scores[1].offsets, [0, 1, 3, 4, 5])
    gts[3] = None
    with pytest.raises(ValueError, match="object 2"):
        metrics.score_video(preds, gts, {2: 3})
    with pytest.raises(ValueError, match="must be equal"):
        metrics.jaccard(np.zeros((3, 4)), np.zeros((4, 3)))


def _obj(j, f, offsets=None, category=None):
    offsets = np.arange(1, len(j) + 1) if offsets is None else np.asarray(offsets)
    return metrics.ObjectScores(offsets, np.asarray(j, float), np.asarray(f, float), category)


def test_summarize_schema_seen_unseen_temporal():
    videos = {
        "a": {1: _obj([1.0, 0.5], [0.5, 0.5], [5, 12], "dog"), 2: _obj([], [], [], "dog")},
        "b": {3: _obj([0.2], [0.4], [1], "cat")},
    }
    base = {"a": {1: _obj([0.1, 0.1], [0.1, 0.1])}, "b": {3: _obj([0.0], [0.0])}}
    out = metrics.summarize(videos, seen_categories={"dog"}, with_baseline=base)
    assert out["num_objects"] == 2 and out["unscored_objects"] == ["a/2"]
    assert out["J_mean"] == pytest.approx((0.75 + 0.2) / 2)
    assert out["F_mean"] == pytest.approx((0.5 + 0.4) / 2)
    assert out["JF_mean"] == pytest.approx((out["J_mean"] + out["F_mean"]) / 2)
    assert out["per_object"]["a/1"] == {
        "J": 0.75,
        "F": 0.5,
        "JF": 0.625,
        "J_recall": 0.5,  # 1.0 > 0.5, 0.5 is not
        "J_decay": 0.5,  # two frames: bins [1.0], [1.0, 0.5], [0.5], [0.5]
        "F_recall": 0.0,
        "F_decay": 0.0,
        "num_frames": 2,
        "category": "dog",
    }
    assert out["J_recall"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["J_decay"] == pytest.approx((0.5 + 0.0) / 2)  # one frame: no decay
    assert out["seen"]["J_recall"] == 0.5 and out["unseen"]["J_decay"] == 0.0
    assert "J_recall" not in out["temporal"]["t<10"]
    assert out["per_video"]["b"]["JF"] == pytest.approx(0.3)
    early, late = out["temporal"]["t<10"], out["temporal"]["t>=10"]
    assert early["num_objects"] == 2 and early["J_mean"] == pytest.approx((1.0 + 0.2) / 2)
    assert late["num_objects"] == 1 and late["JF_mean"] == pytest.approx(0.5)
    assert out["seen"]["J_mean"] == 0.75 and out["unseen"]["F_mean"] == 0.4
    assert out["overall"] == pytest.approx((0.75 + 0.5 + 0.2 + 0.4) / 4)
    assert out["baseline"]["J_mean"] == pytest.approx(0.05)
    assert "JF_mean" in metrics.format_table(out)


@pytest.mark.parametrize(
    ("values", "mean", "recall", "decay"),
    [
        # T=5: bin edges 0,1,2,3,4 -> bins [1, .2], [.2, .6], [.6, .4], [.4, .9].
        ([1.0, 0.2, 0.6, 0.4, 0.9], 0.62, 0.6, 0.6 - 0.65),
        # T=10: edges round(1, 3.25, 5.5, 7.75, 10) - 1 = 0, 2, 5, 7, 9 (5.5 rounds up);
        # bin 0 = frames 0..2, bin 3 = frames 7..9; 0.5 itself is not recalled.
        (np.arange(10) / 10, 0.45, 0.4, 0.1 - 0.8),
        # T=2: edges 0, 0, 1, 1, 1 (1.5 rounds up): bin 0 = [.9], bin 3 = [.3].
        ([0.9, 0.3], 0.6, 0.5, 0.6),
        ([0.7], 0.7, 1.0, 0.0),
    ],
)
def test_statistics_known_answers(values, mean, recall, decay):
    """Mean, recall and decay as the DAVIS toolkit's db_statistics defines them."""
    got = metrics.statistics(values)
    assert got == pytest.approx((mean, recall, decay), abs=1e-12)


def test_statistics_errors_and_object_statistics():
    with pytest.raises(ValueError, match="non-empty"):
        metrics.statistics([])
    s = _obj([1.0, 0.2, 0.6, 0.4, 0.9], [0.9, 0.9, 0.9, 0.3, 0.3])
    stats = s.statistics()
    assert stats["J_recall"] == pytest.approx(0.6) and stats["F_decay"] == pytest.approx(0.6)


def _boundary_f_whole_frame(gt, pred, bound_pix):
    """F on the whole frame, the toolkit's steps without the bounding-box shortcut."""
    fg, gb = metrics.seg2bmap(pred), metrics.seg2bmap(gt)
    n_fg, n_gt = fg.sum(), gb.sum()
    if n_fg == 0 or n_gt == 0:
        return 1.0 if n_fg == n_gt else 0.0
    kernel = metrics.disk(float(bound_pix))
    fg_dil = cv2.dilate(fg.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gb.astype(np.uint8), kernel).astype(bool)
    p, r = (fg & gt_dil).sum() / n_fg, (gb & fg_dil).sum() / n_gt
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_boundary_f_inside_the_box_equals_whole_frame():
    """F computed inside the masks' bounding box equals the whole-frame computation, also for
    masks touching every image edge and corner, single pixels and empty masks."""
    rng = np.random.default_rng(0)
    h, w = 37, 53
    bound_pix = np.ceil(metrics.BOUND_TH * np.linalg.norm((h, w)))
    cases = []
    for _ in range(150):
        masks = []
        for _ in range(2):
            m = np.zeros((h, w), bool)
            for _ in range(rng.integers(0, 4)):
                r0, c0 = rng.integers(-5, h), rng.integers(-5, w)
                m[max(r0, 0) : r0 + rng.integers(1, 20), max(c0, 0) : c0 + rng.integers(1, 20)] = 1
            if rng.random() < 0.2:
                m[rng.integers(h), rng.integers(w)] = True
            masks.append(m)
        cases.append(masks)
    full = np.ones((h, w), bool)
    corner = np.zeros((h, w), bool)
    corner[-1, -1] = True
    cases += [[full, corner], [corner, corner], [full, full], [np.zeros((h, w), bool), corner]]
    for gt, pred in cases:
        want = _boundary_f_whole_frame(gt, pred, bound_pix)
        assert metrics.boundary_f(gt, pred) == pytest.approx(want, abs=1e-15)
