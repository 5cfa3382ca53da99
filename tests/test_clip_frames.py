"""Which listed frames form a training clip: consecutive (authors) or every s-th (max_frame_skip)."""

import ml_collections
import numpy as np
import tensorflow as tf

from rnn_vos_jax.data import pipeline


def _chosen(n, length, u, index, skip):
    data = ml_collections.ConfigDict({"max_frame_skip": skip})
    frames = tf.range(100, 100 + n, dtype=tf.int32)
    key = tf.constant([3, index], tf.int64)
    chosen, count = pipeline.clip_frames(frames, tf.constant(length), tf.constant(u), key, data)
    return chosen.numpy() - 100, int(count)


def test_consecutive_frames_as_the_authors():
    # start = floor(u * (n - L)), L + 1 frames.
    np.testing.assert_array_equal(_chosen(10, 3, 0.5, 0, 1)[0], [3, 4, 5, 6])
    np.testing.assert_array_equal(_chosen(10, 3, 0.999, 0, 1)[0], [6, 7, 8, 9])
    # Fewer listed frames than L + 1: all of them.
    chosen, count = _chosen(3, 5, 0.7, 0, 1)
    np.testing.assert_array_equal(chosen, [0, 1, 2])
    assert count == 3


def test_frame_skip_strides_fit_and_vary():
    strides = set()
    for index in range(60):
        for u in (0.0, 0.5, 0.999):
            chosen, count = _chosen(12, 3, u, index, 3)
            assert count == 4 and chosen.min() >= 0 and chosen.max() < 12
            gaps = set(np.diff(chosen).tolist())
            assert len(gaps) == 1 and gaps <= {1, 2, 3}
            strides |= gaps
    assert strides == {1, 2, 3}
    # The stride is lowered until the clip fits: 7 frames, L = 3 -> stride <= 2.
    for index in range(30):
        chosen, _ = _chosen(7, 3, 0.999, index, 3)
        assert chosen.max() < 7 and np.diff(chosen).max() <= 2
