"""Bi-HS2S: the backward memory sees the future, teacher forcing with the model's own masks is
its free-running prediction, and the whole-clip predictor's windowed mode for long videos.

(tests/test_contract.py covers the rest: shapes, predict_clip == __call__ with sample_prob 1,
gradients, bfloat16, the checkpoint round trip.) Tiny models at 32x64, one object.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from rnn_vos_jax import api, models
from rnn_vos_jax.configs import bi_hs2s as bi_config
from rnn_vos_jax.inference import predictors

SIZE = (32, 64)
T = 5


@functools.cache
def _tiny(name):
    model = models.build({"name": name, **models.family(name).tiny})
    frames, masks = mt.clip(1, T, *SIZE)
    return model, mt.random_variables(model, frames, masks), frames, masks


@functools.cache
def _predict_clip():
    model = _tiny("bi_hs2s")[0]
    return jax.jit(lambda v, f, m: model.apply(v, f, m, method="predict_clip"))


def _video(n, seed=0):
    """uint8[n, 32, 64, 3] noise frames and the first mask of one object."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, *SIZE, 3), dtype=np.uint8)
    mask = np.zeros(SIZE, bool)
    mask[6:22, 10:40] = True
    return frames, mask


def test_backward_memory_sees_the_future_hs2s_does_not():
    _, variables, frames, masks = _tiny("bi_hs2s")
    changed = frames.at[:, -1].set(255 - frames[:, -1])
    run = _predict_clip()
    before, after = run(variables, frames, masks[:, 0]), run(variables, changed, masks[:, 0])
    scale = float(np.abs(before).max())
    # Every earlier frame moves, the first one too (far above float noise: same program).
    for t in range(T - 2):
        assert float(np.abs(after[:, t] - before[:, t]).max()) > 1e-4 * scale, t
    hs2s, hs_vars, _, _ = _tiny("hs2s")
    forward = jax.jit(lambda v, f: hs2s.apply(v, f, masks, sample_prob=1.0)["logits"])
    hs_before, hs_after = forward(hs_vars, frames), forward(hs_vars, changed)
    np.testing.assert_allclose(hs_after[:, :-1], hs_before[:, :-1], atol=1e-6)
    assert float(np.abs(hs_after[:, -1] - hs_before[:, -1]).max()) > 1e-3


def test_teacher_forcing_with_its_own_predictions_is_the_free_running_prediction():
    """The decode scan feeds masks[:, t] to frame t + 1's previous-frame reference: teacher
    forcing (sample_prob 0) with the sigmoid of predict_clip's logits gives those logits."""
    model, variables, frames, masks = _tiny("bi_hs2s")
    free = _predict_clip()(variables, frames, masks[:, 0])
    # (The last entry, the mask of the last frame, feeds nothing.)
    fed = jnp.concatenate([masks[:, :1], jax.nn.sigmoid(free)], axis=1)
    forward = jax.jit(lambda v, m: model.apply(v, frames, m, sample_prob=0.0)["logits"])
    mt.assert_close(forward(variables, fed), free)
    # The GT masks differ from the predictions, so feeding them changes frames 2.. only.
    gt = forward(variables, masks)
    mt.assert_close(gt[:, 0], free[:, 0])
    assert float(np.abs(gt[:, 1:] - free[:, 1:]).max()) > 1e-4


def test_clip_windows_known_answers_and_errors():
    assert predictors.clip_windows(7, 0, 1) == [(0, 7, 6)]
    assert predictors.clip_windows(7, 7, 3) == [(0, 7, 6)]  # the window covers the clip
    assert predictors.clip_windows(10, 4, 1) == [(0, 4, 3), (3, 7, 6), (6, 10, 9)]
    assert predictors.clip_windows(10, 4, 2) == [(0, 4, 2), (2, 6, 4), (4, 8, 6), (6, 10, 9)]
    # The last window moves back to end on the last frame: the same length, more overlap.
    assert predictors.clip_windows(9, 5, 2) == [(0, 5, 3), (3, 8, 4), (4, 9, 8)]
    for length in range(2, 40):
        for window, overlap in ((2, 1), (5, 2), (8, 7)):
            ws = predictors.clip_windows(length, window, overlap)
            kept = [f for a, _, k in ws for f in range(a + 1, k + 1)]
            assert kept == list(range(1, length)), (length, window, overlap)
            for (a, b, k), (a2, _, _) in itertools.pairwise(ws):
                assert b - a == window and a2 == k and b - a2 >= overlap
    for window, overlap in ((1, 1), (4, 0), (4, 4)):
        with pytest.raises(ValueError, match=f"clip_window={window}, clip_overlap={overlap}"):
            predictors.clip_windows(10, window, overlap)


def test_window_covering_the_clip_is_the_whole_clip():
    model, variables = _tiny("bi_hs2s")[:2]
    frames, mask = _video(T)
    whole = np.stack(
        list(predictors.ClipPredictor(model, variables, SIZE).predict(frames, {1: (0, mask)}))
    )
    covered = predictors.ClipPredictor(model, variables, SIZE, window=T, overlap=2)
    got = np.stack(list(covered.predict(frames, {1: (0, mask)})))
    np.testing.assert_array_equal(got, whole)
    logits = _predict_clip()(
        variables, jnp.asarray(frames[None]), jnp.asarray(mask[None, ..., None], jnp.float32)
    )
    np.testing.assert_allclose(got[1:, 0], jax.nn.sigmoid(logits[0, ..., 0]), atol=1e-6)


def test_windows_on_a_longer_clip_hand_over_the_predicted_mask():
    """9 frames, windows of 5 sharing 2: [0,5) keeps 1..3, [3,8) from frame 3's prediction keeps
    4, [4,9) from frame 4's keeps 5..8 (clip_windows(9, 5, 2))."""
    model, variables = _tiny("bi_hs2s")[:2]
    frames, mask = _video(9, seed=1)
    windowed = predictors.ClipPredictor(model, variables, SIZE, window=5, overlap=2)
    got = np.stack(list(windowed.predict(frames, {1: (0, mask)})))
    assert got.shape == (9, 1, *SIZE)
    np.testing.assert_array_equal(got[0, 0], mask)

    run = predictors._compiled_clip(model)
    first = jnp.asarray(mask[None, ..., None], jnp.float32)
    want, handed = {}, []
    for start, stop, keep in ((0, 5, 3), (3, 8, 4), (4, 9, 8)):
        logits = np.asarray(run(variables, jnp.asarray(frames[None, start:stop]), first))
        for t in range(start + 1, keep + 1):
            want[t] = 1.0 / (1.0 + np.exp(-logits[0, t - start - 1, ..., 0]))
        first = jnp.asarray(logits[:, keep - start - 1] > 0, jnp.float32)
        handed.append(float(first.mean()))
    for t in range(1, 9):
        np.testing.assert_allclose(got[t, 0], want[t], atol=1e-5, err_msg=f"frame {t}")
    assert all(0.0 < m < 1.0 for m in handed[:2]), handed  # real masks were handed over

    # The look-ahead ends at the window: a new last frame leaves frames 1..4 (windows 0 and 1)
    # as they were and changes the last window's.
    changed = frames.copy()
    changed[-1] = 255 - changed[-1]
    again = np.stack(list(windowed.predict(changed, {1: (0, mask)})))
    np.testing.assert_array_equal(again[:5], got[:5])
    assert float(np.abs(again[5:] - got[5:]).max()) > 1e-4

    # api.Segmenter takes the same settings (from_checkpoint reads them from config.eval).
    seg = api.Segmenter(model, variables, SIZE, clip_window=5, clip_overlap=2)
    np.testing.assert_allclose(seg.segment(frames, mask), got[:, 0], atol=1e-6)


def test_window_settings_come_from_config_eval_and_need_a_clip_family():
    config = bi_config.get_config("demo")
    defaults = {"clip_window": 0, "clip_overlap": 1, "feedback": "independent"}
    assert predictors.predictor_options(config) == defaults
    config.eval.clip_window, config.eval.clip_overlap = 40, 8
    assert predictors.predictor_options(config) == {
        **defaults,
        "clip_window": 40,
        "clip_overlap": 8,
    }
    model = models.build(config.model)
    predictor = predictors.predictor_for(model, None, SIZE, **predictors.predictor_options(config))
    assert (predictor.window, predictor.overlap) == (40, 8)
    with pytest.raises(ValueError, match="clip_window=4, clip_overlap=4"):
        predictors.predictor_for(model, None, SIZE, clip_window=4, clip_overlap=4)
    # Bi-HS2S feeds its masks back inside predict_clip: exclusive feedback cannot reach them.
    with pytest.raises(ValueError, match="feedback='exclusive': model family 'bi_hs2s'"):
        predictors.predictor_for(model, None, SIZE, feedback="exclusive")
    hs2s = models.build({"name": "hs2s", **models.family("hs2s").tiny})
    with pytest.raises(ValueError, match="clip_window=4: model family 'hs2s' predicts streaming"):
        predictors.predictor_for(hs2s, None, SIZE, clip_window=4)
    with pytest.raises(ValueError, match=r"config.eval.feedback='merged': expected one of"):
        predictors.predictor_for(hs2s, None, SIZE, feedback="merged")


def test_initializer_needs_a_convlstm_cell():
    model = models.build(
        {"name": "bi_hs2s", **models.family("bi_hs2s").tiny, "skip_cell": "tt_lstm"}
    )
    frames, masks = mt.clip(1, 2, *SIZE)
    with pytest.raises(ValueError, match="config.model.skip_cell='tt_lstm'"):
        mt.variable_shapes(model, frames, masks)
