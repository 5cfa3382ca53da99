"""api.Segmenter: loading an orbax checkpoint, boolean and id first masks, input errors."""

import os

import model_testing
import numpy as np
import pytest

from rnn_vos_jax import api
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
