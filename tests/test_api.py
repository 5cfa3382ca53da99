"""api.Segmenter: loading an orbax checkpoint, boolean and id first masks, input errors; the
tracking state (api.Tracker): stepping, objects joining and leaving, corrections, saving and
loading bit for bit, states of other models or checkpoints refused."""

import json
import os

import model_testing
import numpy as np
import pytest

from rnn_vos_jax import api, models
from rnn_vos_jax.inference import object_merge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "configs/s2s.py:demo")
MODEL_SIZE = (64, 64)
VIDEO_SIZE = (48, 80)  # not the model size: frames and probabilities are resized


def _config(width_divisor=16):
    c = api.load_config(SPEC)
    c.data.image_size = MODEL_SIZE
    c.model.width_divisor = width_divisor
    return c


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("api") / "variables")
    return model_testing.save_random_checkpoint(path, _config().model)


def _video(t=3):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (t, *VIDEO_SIZE, 3), dtype=np.uint8)
    ids = np.zeros(VIDEO_SIZE, np.uint8)
    ids[5:30, 10:40] = 5
    ids[20:45, 50:75] = 2
    return frames, ids


@pytest.fixture(scope="module")
def seg(checkpoint_dir):
    return api.Segmenter.from_checkpoint(checkpoint_dir, _config())


def test_bool_mask_gives_per_frame_probabilities(seg):
    frames, ids = _video()
    mask = ids == 5
    probs = seg.segment(frames, mask)
    assert probs.shape == (3, *VIDEO_SIZE) and probs.dtype == np.float32
    np.testing.assert_array_equal(probs[0], mask.astype(np.float32))
    assert np.all((probs >= 0) & (probs <= 1))
    assert probs[1:].std() > 0  # a real prediction, not a constant fill
    assert api.Segmenter.object_ids(mask) == [1]


def test_id_mask_equals_objects_segmented_one_by_one(seg):
    frames, ids = _video()
    probs = seg.segment(frames, ids)
    assert api.Segmenter.object_ids(ids) == [2, 5]
    assert probs.shape == (3, 2, *VIDEO_SIZE)
    np.testing.assert_array_equal(probs[0, 0], (ids == 2).astype(np.float32))
    np.testing.assert_array_equal(object_merge.merge_probabilities(probs[0], [2, 5]), ids)
    # Objects do not interact: batched == one at a time.
    for k, obj in enumerate((2, 5)):
        alone = seg.segment(frames, ids == obj)
        np.testing.assert_allclose(probs[:, k], alone, atol=1e-5, rtol=0)


def test_segment_many_equals_segment_video_by_video(seg):
    """Three videos (2, 1 and 2 objects, different lengths) in 3 object slots: each video's
    probabilities are segment's, frame by frame, to float rounding of the batch size."""
    frames, ids = _video(t=5)
    videos = [("a", frames, ids), ("b", frames[:3, ::-1], ids[::-1] == 5), ("c", frames[1:], ids)]
    got = {}
    inputs = []
    for key, f, m in videos:
        objects = api.Segmenter.object_ids(m)
        first = {o: (0, m if m.dtype == bool else m == o) for o in objects}
        inputs.append((key, f, first))
    for frame in seg.segment_many(inputs, object_slots=3):
        got.setdefault(frame.key, []).append(frame.probs)
        assert frame.index == len(got[frame.key]) - 1
    for key, f, m in videos:
        want = seg.segment(f, m)
        have = np.stack(got[key])
        np.testing.assert_allclose(have[:, 0] if m.dtype == bool else have, want, atol=1e-5)


def test_input_errors_are_named(seg):
    frames, ids = _video(2)
    with pytest.raises(ValueError, match="first_mask is empty"):
        seg.segment(frames, np.zeros(VIDEO_SIZE, bool))
    with pytest.raises(ValueError, match="first_mask is empty"):
        seg.segment(frames, np.zeros(VIDEO_SIZE, np.int32))
    with pytest.raises(ValueError, match="bool .* or integer object ids, got float32"):
        seg.segment(frames, ids.astype(np.float32))
    with pytest.raises(ValueError, match="ids must be >= 0"):
        seg.segment(frames, -ids.astype(np.int32))
    with pytest.raises(ValueError, match=r"frames must be uint8\[T,H,W,3\], got float32"):
        seg.segment(frames.astype(np.float32), ids)
    with pytest.raises(ValueError, match=r"frames must be uint8\[T,H,W,3\]"):
        seg.segment(frames[0], ids)
    with pytest.raises(ValueError, match=r"first_mask must be \[H,W\] = \(48, 80\)"):
        seg.segment(frames, ids[:-1])


def test_from_checkpoint_refuses_weights_of_another_config(checkpoint_dir, tmp_path):
    by_spec = api.Segmenter.from_checkpoint(checkpoint_dir, SPEC)  # config file spec string
    assert by_spec.image_size == tuple(api.load_config(SPEC).data.image_size)
    with pytest.raises(ValueError, match="(?s)does not fit the model \\(S2S\\):.*mis-shaped"):
        api.Segmenter.from_checkpoint(checkpoint_dir, _config(width_divisor=8))
    with pytest.raises(FileNotFoundError):
        api.Segmenter.from_checkpoint(str(tmp_path / "nothing"), _config())
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="orbax checkpoint directory or a PyTorch"):
        api.Segmenter.from_checkpoint(str(other), _config())
    with pytest.raises(FileNotFoundError, match="config file not found"):
        api.load_config(str(tmp_path / "nope.py:demo"))


def test_tracker_steps_saves_and_loads_bit_for_bit(seg, checkpoint_dir, tmp_path):
    frames, ids = _video(5)
    want = seg.segment(frames, ids)
    tracker = seg.start(frames[0], ids)
    assert tracker.object_ids == [2, 5] and tracker.frame_index == 1
    np.testing.assert_array_equal(tracker.probabilities, want[0])
    for t in (1, 2):
        np.testing.assert_array_equal(tracker.step(frames[t]), want[t])
    state = str(tmp_path / "state")
    tracker.save(state, info={"note": "mine"})
    with open(os.path.join(state, "tracker.json")) as f:
        record = json.load(f)
    assert record["object_ids"] == [2, 5] and record["frame_index"] == 3
    assert record["frame_size"] == list(VIDEO_SIZE) and record["checkpoint"] == checkpoint_dir
    assert record["config"]["model"]["name"] == "s2s" and record["family"] == "s2s"
    loaded = seg.load_tracker(state)
    assert loaded.info == {"note": "mine"} and loaded.frame_index == 3
    for t in (3, 4):  # the saved state goes on exactly as the one that never stopped
        np.testing.assert_array_equal(loaded.step(frames[t]), want[t])
        np.testing.assert_array_equal(tracker.step(frames[t]), want[t])

    # Objects join and leave at any frame; bad requests change nothing.
    tracker = seg.start(frames[0], ids == 5)  # a bool mask is object 1
    with pytest.raises(ValueError, match="frame 1: object 1 is already tracked"):
        tracker.step(frames[1], add={1: ids == 2})
    with pytest.raises(ValueError, match="frame 1: object 4 is not tracked"):
        tracker.step(frames[1], correct={4: ids == 2})
    with pytest.raises(ValueError, match="frame 1 is 40x80 but the tracked frames are 48x80"):
        tracker.step(frames[1, :40])
    assert tracker.frame_index == 1
    # Object 5 alone: as in the two-object batch, up to float reassociation (batch of 1).
    np.testing.assert_allclose(tracker.step(frames[1]), want[1, 1:], atol=1e-5, rtol=0)
    probs = tracker.step(frames[2], add={7: ids == 2})
    assert tracker.object_ids == [1, 7] and probs.shape == (2, *VIDEO_SIZE)
    np.testing.assert_array_equal(probs[1], (ids == 2).astype(np.float32))
    tracker.remove(1)
    assert tracker.step(frames[3]).shape == (1, *VIDEO_SIZE) and tracker.object_ids == [7]


def test_a_correction_restarts_a_model_that_feeds_back_no_mask(seg):
    """S2S sees a mask only in init_carry: a correction starts the object afresh from it."""
    frames, ids = _video(5)
    want = seg.segment(frames, ids)
    fixed = np.zeros(VIDEO_SIZE, bool)
    fixed[10:40, 30:70] = True
    tracker = seg.start(frames[0], ids)
    got = [tracker.probabilities, tracker.step(frames[1])]
    got.append(tracker.step(frames[2], correct={5: fixed}))
    got += [tracker.step(f) for f in frames[3:]]
    for t in (0, 1):  # before the correction: as without it
        np.testing.assert_array_equal(got[t], want[t])
    np.testing.assert_array_equal(got[2][1], fixed.astype(np.float32))  # the given mask
    np.testing.assert_array_equal(got[2][0], want[2][0])  # the other object is untouched
    fresh = seg.segment(frames[2:], fixed)  # object 5 as if it started on frame 2
    np.testing.assert_allclose(np.stack(got[3:])[:, 1], fresh[1:], atol=1e-5, rtol=0)


def test_a_state_of_another_model_or_checkpoint_is_refused(seg, checkpoint_dir, tmp_path):
    frames, ids = _video(2)
    state = str(tmp_path / "state")
    seg.start(frames[0], ids).save(state)
    other = model_testing.save_random_checkpoint(str(tmp_path / "other"), _config().model, seed=1)
    with pytest.raises(ValueError, match=f"weights of checkpoint {checkpoint_dir} .* {other} "):
        api.Segmenter.from_checkpoint(other, _config()).load_tracker(state)
    wider = model_testing.save_random_checkpoint(str(tmp_path / "wider"), _config(8).model)
    with pytest.raises(ValueError, match=r"another model: config.model.width_divisor=16 \(this"):
        api.Segmenter.from_checkpoint(wider, _config(8)).load_tracker(state)
    with pytest.raises(FileNotFoundError, match="no saved tracker state"):
        seg.load_tracker(str(tmp_path / "nothing"))
    fam = models.family("bi_hs2s")
    offline = api.Segmenter(models.build({"name": "bi_hs2s", **fam.tiny}), {}, MODEL_SIZE)
    with pytest.raises(ValueError, match="family 'bi_hs2s' predicts whole clips"):
        offline.start(frames[0], ids)
