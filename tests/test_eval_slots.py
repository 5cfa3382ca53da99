"""Object slots (config.eval.object_slots, inference/slots.py): objects of several videos stepped
together, with continuous batching, give the results of video-at-a-time inference."""

import json
import os

import model_testing as mt
import numpy as np
import pytest
import test_eval_protocols as protocols

from rnn_vos_jax import models
from rnn_vos_jax.evaluation import job, predict
from rnn_vos_jax.inference import predictors, slots

TINY_MODEL, IMAGE_SIZE = protocols.TINY_MODEL, protocols.IMAGE_SIZE
tiny = protocols.tiny  # the same fixture: the tiny HS2S, its variables and their folder


def _videos(seed=0):
    """Videos of different lengths and sizes; late objects; one video without objects."""
    rng = np.random.default_rng(seed)
    plan = [
        (5, (36, 52), {1: 0, 2: 2}),
        (3, (40, 60), {3: 0}),
        (4, (40, 60), {}),
        (2, (40, 60), {2: 0}),
        (6, (36, 52), {1: 0, 4: 1, 5: 4}),
        (4, (36, 52), {7: 0, 8: 0}),
    ]
    out = []
    for n, size, objects in plan:
        frames = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
        first = {}
        for o, t in objects.items():
            mask = np.zeros(size, bool)
            y, x = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
            mask[y : y + 12, x : x + 16] = True
            first[o] = (t, mask)
        out.append((frames, first))
    return out


@pytest.mark.parametrize("feedback", ["independent", "exclusive"])
def test_slot_runner_equals_video_at_a_time(tiny, feedback):
    """3 slots for videos of 0-3 objects: every frame of every video comes out once, in order,
    within 1e-5 of video-at-a-time inference (first frames exactly the given masks); while a
    3-object video runs nothing else fits, and a video with too many objects is refused."""
    model, variables, _ = tiny
    predictor = predictors.StreamingPredictor(model, variables, IMAGE_SIZE, feedback=feedback)
    videos = _videos()
    runner = slots.SlotRunner(predictor, 3)
    got, steps = {}, []
    for step in runner.run(slots.SlotVideo(i, f, m) for i, (f, m) in enumerate(videos)):
        steps.append(sorted(f.key for f in step))
        assert len({f.key for f in step}) == len(step)  # a video at most once per step
        for f in step:
            frames = got.setdefault(f.key, [])
            assert f.index == len(frames) and f.last == (f.index == len(videos[f.key][0]) - 1)
            frames.append(f.probs)
    assert sorted(got) == list(range(len(videos)))
    # Continuous batching: videos 0 and 1 start together (video 2 has no objects and comes out
    # at once); video 3 takes video 1's slot while video 0 runs on; video 4 (3 objects) runs
    # alone, then video 5.
    assert steps == [[2]] * 4 + [[0, 1]] * 3 + [[0, 3]] * 2 + [[4]] * 6 + [[5]] * 4
    for i, (frames, first) in enumerate(videos):
        assert len(got[i]) == len(frames)
        if not first:
            assert all(p.shape == (0, *frames.shape[1:3]) for p in got[i])
            continue
        for t, (want, have) in enumerate(zip(predictor.predict(frames, first), got[i])):
            np.testing.assert_allclose(have, want, atol=1e-5, err_msg=f"video {i} frame {t}")
            for j, o in enumerate(sorted(first)):
                if first[o][0] == t:
                    np.testing.assert_array_equal(have[j], first[o][1])

    with pytest.raises(ValueError, match="video big has 3 objects but there are 2 object slots"):
        list(slots.SlotRunner(predictor, 2).run([slots.SlotVideo("big", *videos[4])]))


def _config(tiny, synthetic, **eval_overrides):
    return mt.config_with_model(
        TINY_MODEL,
        **{
            "init_from": tiny[2],
            "data.image_size": IMAGE_SIZE,
            "data.eval_dir": synthetic.valid,
            "eval.all_frames_dir": synthetic.valid_all_frames,
            **{f"eval.{k}": v for k, v in eval_overrides.items()},
        },
    )


def test_slotted_evaluation_writes_what_video_at_a_time_writes(tiny, synthetic, tmp_path):
    """Evaluation with 3 object slots on the synthetic split (videos of different lengths, 1-3
    objects, late objects; all-frames protocol; exclusive feedback): the same PNGs, byte for
    byte, and the same metrics.json but the measured speed; it counts the same object-frames."""
    results = {}
    for slots_ in (0, 3):
        config = _config(tiny, synthetic, feedback="exclusive", object_slots=slots_)
        results[slots_] = job.evaluate_checkpoint(config, str(tmp_path / str(slots_)))
    one, many = (tmp_path / str(s) / "eval" / "valid" for s in (0, 3))
    pngs = sorted(p.relative_to(one) for p in one.glob("Annotations/*/*.png"))
    assert pngs and pngs == sorted(p.relative_to(many) for p in many.glob("Annotations/*/*.png"))
    for png in pngs:
        assert (many / png).read_bytes() == (one / png).read_bytes(), png
    written = [json.loads((d / "metrics.json").read_text()) for d in (one, many)]
    for metrics in written:
        assert metrics.pop("object_frames_per_sec") > 0
    assert written[0] == written[1] and written[0]["scored"]
    for name in os.listdir(one / "done"):
        a, b = (json.loads((d / "done" / name).read_text()) for d in (one, many))
        assert a["speed"]["object_frames"] == b["speed"]["object_frames"]
        assert a.pop("speed") and b.pop("speed") and a == b


def test_object_slots_config_is_checked(tiny, synthetic):
    with pytest.raises(ValueError, match="object_slots=2 with config.eval.batch_objects=1"):
        predict.predictor(_config(tiny, synthetic, object_slots=2, batch_objects=1), tiny[1])
    offline = mt.config_with_model(
        {"name": "bi_hs2s", **models.family("bi_hs2s").tiny},
        **{"data.image_size": IMAGE_SIZE, "eval.object_slots": 2},
    )
    with pytest.raises(ValueError, match="'bi_hs2s' segments whole clips"):
        predict.predictor(offline, None)
