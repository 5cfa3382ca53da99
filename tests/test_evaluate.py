"""Streaming inference, PNG writing and checkpoint evaluation on a tiny synthetic set."""

import json
import os
import shutil

import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import models
from rnn_vos_jax.data import annotations, vos_reader
from rnn_vos_jax.data.eval_video import EvalVideo
from rnn_vos_jax.evaluation import job, predict, videos
from rnn_vos_jax.inference import object_merge, png_writer, predictor_inputs, predictors
from rnn_vos_jax.runtime import checkpoints, run_info
from rnn_vos_jax.scoring import folders

TINY_MODEL = {"name": "hs2s", **models.family("hs2s").tiny}
IMAGE_SIZE = (32, 64)


@pytest.fixture(scope="module")
def tiny():
    model = models.build(TINY_MODEL)
    return model, mt.random_variables(model)


def test_merge_probabilities_known_answer():
    probs = np.array(
        [
            [[0.6, 0.4, 0.9], [0.5, 0.7, 0.2]],
            [[0.7, 0.45, 0.9], [0.51, 0.2, 0.1]],
        ],
        np.float32,
    )
    ids = object_merge.merge_probabilities(probs, [3, 7])
    # 0.5 is background; ties go to the earlier entry (background, then lower index).
    np.testing.assert_array_equal(ids, [[7, 0, 3], [7, 3, 0]])
    assert ids.dtype == np.uint8
    # A video without objects merges to background everywhere.
    np.testing.assert_array_equal(object_merge.merge_probabilities(np.zeros((0, 2, 3)), []), 0)
    with pytest.raises(ValueError, match="2 object ids"):
        object_merge.merge_probabilities(probs[:1], [1, 2])


def _video(rng, n=6, size=(30, 44)):
    frames = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    m1 = np.zeros(size, bool)
    m1[5:20, 4:25] = True
    m2 = np.zeros(size, bool)
    m2[12:28, 20:40] = True
    m3 = np.zeros(size, bool)
    m3[2:9, 30:42] = True
    return frames, {1: (0, m1), 4: (2, m2), 9: (5, m3)}


def test_predict_late_objects_and_batching_equivalence(tiny):
    model, variables = tiny
    frames, first = _video(np.random.default_rng(0))
    predictor = predictors.StreamingPredictor(model, variables, IMAGE_SIZE)
    out = np.stack(list(predictor.predict(frames, first)))
    assert out.shape == (6, 3, 30, 44) and out.dtype == np.float32
    # Object 4 starts at frame 2, object 9 at frame 5 (the last frame).
    np.testing.assert_array_equal(out[:2, 1], 0.0)
    np.testing.assert_array_equal(out[2, 1], first[4][1].astype(np.float32))
    np.testing.assert_array_equal(out[:5, 2], 0.0)
    np.testing.assert_array_equal(out[5, 2], first[9][1].astype(np.float32))
    np.testing.assert_array_equal(out[0, 0], first[1][1].astype(np.float32))
    assert 0.0 < out[1:, 0].mean() < 1.0 and np.all((out >= 0) & (out <= 1))
    for k, obj in enumerate(sorted(first)):
        alone = np.stack(list(predictor.predict(frames, {obj: first[obj]})))
        np.testing.assert_allclose(out[:, k], alone[:, 0], atol=1e-5)
    # Iterating frames one by one gives the same result as the stacked array.
    again = np.stack(list(predictor.predict(iter(list(frames)), first)))
    np.testing.assert_allclose(again, out, atol=1e-6)
    with pytest.raises(ValueError, match="object 4"):
        list(predictor.predict(frames, {4: (2, np.zeros((5, 5), bool))}))
    with pytest.raises(ValueError, match="object 4: first mask on frame 2 is empty"):
        list(predictor.predict(frames, {4: (2, np.zeros(frames.shape[1:3], bool))}))
    video = EvalVideo(
        name="vid7",
        frame_names=[f"{5 * t:05d}" for t in range(len(frames))],
        frames=frames,
        annotations=np.zeros(frames.shape[:3], np.uint8),
        annotated=np.ones(len(frames), bool),
        object_ids=np.array([3], np.int32),
        categories=[""],
        first_frame=np.array([1], np.int32),
        height=frames.shape[1],
        width=frames.shape[2],
    )
    with pytest.raises(ValueError, match="video vid7: object 3 has an empty mask .* 00005"):
        next(predict.probabilities(predictor, video, 0))


def test_clip_predictor_equals_streaming_predictor(tiny):
    """Whole-clip prediction (offline families' path) gives the streaming probabilities, with
    objects starting late and one starting on the last frame."""
    model, variables = tiny
    frames, first = _video(np.random.default_rng(0))
    streaming = predictors.StreamingPredictor(model, variables, IMAGE_SIZE)
    clip = predictors.ClipPredictor(model, variables, IMAGE_SIZE)
    want = np.stack(list(streaming.predict(frames, first)))
    got = np.stack(list(clip.predict(iter(list(frames)), first)))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert isinstance(predictors.predictor_for(model, variables, IMAGE_SIZE), type(streaming))
    with pytest.raises(ValueError, match="object 4: first mask on frame 2 is empty"):
        list(clip.predict(frames, {4: (2, np.zeros(frames.shape[1:3], bool))}))
    with pytest.raises(ValueError, match="start outside the video"):
        list(clip.predict(frames, {4: (6, first[4][1])}))


def test_exclusive_masks_known_answer():
    # 3 objects at 4 pixels; object 2 is not live (not started, or padding).
    masks = np.array(
        [[0.9, 0.2, 0.5, 0.1], [0.3, 0.6, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0]], np.float32
    ).reshape(3, 1, 4, 1)
    got = np.asarray(object_merge.exclusive_masks(masks, np.array([True, True, False])))
    want = np.array(
        # Pixel 2 ties (0.5, 0.5): the earlier object keeps it; pixel 3: object 0 wins (0.1 > 0).
        [[0.9, 0.0, 0.5, 0.1], [0.0, 0.6, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]],
        np.float32,
    ).reshape(3, 1, 4, 1)
    np.testing.assert_array_equal(got, want)
    # One live object keeps its whole mask.
    np.testing.assert_array_equal(
        np.asarray(object_merge.exclusive_masks(masks, np.array([False, True, False]))), masks
    )


def _exclusive_reference(model, variables, frames, first):
    """Objects that all start on frame 0, stepped as one batch with the fed-back masks made
    exclusive in numpy: float32[T, K, H0, W0]."""
    small = np.stack([predictor_inputs.resize_frame(f, IMAGE_SIZE) for f in frames])
    ids = sorted(first)
    masks = np.stack([predictor_inputs.resize_mask(first[o][1], IMAGE_SIZE) for o in ids])
    k = len(ids)
    carry = model.apply(
        variables,
        jnp.broadcast_to(small[0], (k, *small[0].shape)),
        jnp.asarray(masks, jnp.float32)[..., None],
        method="init_carry",
    )
    out = [np.stack([first[o][1] for o in ids]).astype(np.float32)]
    for frame in small[1:]:
        p = np.asarray(carry["prev_pred"])
        win = np.argmax(p, axis=0)[None] == np.arange(k).reshape(k, 1, 1, 1)
        carry = dict(carry, prev_pred=jnp.asarray(np.where(win, p, 0.0)))
        carry, logits = model.apply(
            variables, carry, jnp.broadcast_to(frame, (k, *frame.shape)), method="step"
        )
        out.append(np.asarray(predictors._probabilities(logits, frames.shape[1:3])))
    return np.stack(out)


def test_exclusive_feedback_equals_a_reference_loop(tiny):
    """config.eval.feedback='exclusive': three objects (padded to a batch of 4, the padding
    taking no pixels) against a plain loop that zeroes each fed-back mask where another object's
    is larger; and late-starting objects compete only from their first frame."""
    model, variables = tiny
    frames, first = _video(np.random.default_rng(0))
    at0 = {o: (0, m) for o, (_, m) in first.items()}
    exclusive = predictors.predictor_for(model, variables, IMAGE_SIZE, feedback="exclusive")
    independent = predictors.StreamingPredictor(model, variables, IMAGE_SIZE)
    got = np.stack(list(exclusive.predict(frames, at0)))
    np.testing.assert_allclose(got, _exclusive_reference(model, variables, frames, at0), atol=1e-5)
    plain = np.stack(list(independent.predict(frames, at0)))
    # The given masks of objects 1 and 4 overlap: object 4 loses the overlap from frame 1 on.
    np.testing.assert_array_equal(got[0], plain[0])
    assert float(np.abs(got[1, 1] - plain[1, 1]).max()) > 1e-3

    # Object 1 alone until object 4 starts on frame 2: the same as independent up to frame 3,
    # where its input first loses pixels to object 4.
    got = np.stack(list(exclusive.predict(frames, first)))
    plain = np.stack(list(independent.predict(frames, first)))
    np.testing.assert_array_equal(got[:3], plain[:3])
    assert float(np.abs(got[3:, 0] - plain[3:, 0]).max()) > 1e-3
    np.testing.assert_array_equal(got[5, 2], first[9][1].astype(np.float32))


def test_predict_with_tiny_s2s_pp():
    # The S2S family carries initializer states instead of reference features: same contract.
    model = models.build({"name": "s2s_pp", **models.family("s2s_pp").tiny})
    variables = mt.random_variables(model)
    frames, first = _video(np.random.default_rng(1), n=4)
    first = {1: first[1], 4: first[4]}
    out = np.stack(
        list(predictors.StreamingPredictor(model, variables, IMAGE_SIZE).predict(frames, first))
    )
    assert out.shape == (4, 2, 30, 44)
    np.testing.assert_array_equal(out[:2, 1], 0.0)
    np.testing.assert_array_equal(out[2, 1], first[4][1].astype(np.float32))
    assert 0.0 < out[3, 1].mean() < 1.0 and 0.0 < out[1:, 0].mean() < 1.0
    # S2S feeds back no mask: exclusive feedback has nothing to act on.
    with pytest.raises(ValueError, match="model family 's2s_pp' feeds back no mask"):
        predictors.StreamingPredictor(model, variables, IMAGE_SIZE, feedback="exclusive")


def test_png_writer_round_trip_and_errors(tmp_path):
    ids = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with png_writer.PngWriter() as writer:
        writer.write(str(tmp_path / "a" / "00000.png"), ids)
    with Image.open(tmp_path / "a" / "00000.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[:9] == annotations.PALETTE[:3].reshape(-1).tolist()
    np.testing.assert_array_equal(annotations.decode(str(tmp_path / "a" / "00000.png")), ids)
    writer = png_writer.PngWriter()
    writer.write(str(tmp_path / "b.png"), ids.astype(np.int32))  # wrong dtype fails in thread
    with pytest.raises(RuntimeError, match="b.png"):
        writer.close()


def _config(data, **eval_overrides):
    return mt.config_with_model(
        TINY_MODEL,
        **{
            "data.image_size": IMAGE_SIZE,
            "data.eval_dir": data.valid,
            "eval.train_meta": data.train_meta,
            **{f"eval.{k}": v for k, v in eval_overrides.items()},
        },
    )


def _save_checkpoint(workdir, step, variables):
    ckpt = checkpoints.TrainCheckpointer(workdir, save_interval_steps=1, max_to_keep=5)
    ckpt.save(step, dict(variables), force=True)
    ckpt.wait()
    ckpt.close()


def test_evaluate_writes_pngs_and_metrics_and_resumes(tiny, synthetic, tmp_path, monkeypatch):
    _, variables = tiny
    workdir = str(tmp_path / "work")
    _save_checkpoint(workdir, 7, variables)
    config = _config(synthetic, batch_objects=2)
    result = job.run(config, workdir)

    out = os.path.join(workdir, "eval", "valid")
    reader = vos_reader.VOSReader(synthetic.valid)
    for name in reader.video_names():
        info = reader.video(name)
        for frame in info.frames:
            with Image.open(os.path.join(out, "Annotations", name, frame + ".png")) as im:
                assert im.mode == "P" and im.size == (info.width, info.height)
    with open(os.path.join(out, "metrics.json")) as f:
        written = json.load(f)
    assert (
        written["checkpoint"] == "step 7"
        and written["scored"]
        and written["num_videos"] == synthetic.options["num_valid"]
    )
    recomputed = folders.score_directory(
        os.path.join(out, "Annotations"),
        os.path.join(synthetic.valid, "Annotations"),
        os.path.join(synthetic.valid, "meta.json"),
        train_meta=config.eval.train_meta,
        baseline=True,
    )
    assert set(written["per_object"]) == set(recomputed["per_object"])
    for key in ("J_mean", "F_mean", "JF_mean"):
        assert written[key] == pytest.approx(recomputed[key], abs=1e-12)
        assert written["baseline"][key] == pytest.approx(recomputed["baseline"][key], abs=1e-12)
    assert (
        written["seen"]["num_objects"] + written["unseen"]["num_objects"] == written["num_objects"]
    )
    assert result["JF_mean"] == written["JF_mean"]
    # Frames/s per object: every object is predicted on the frames after its first one.
    pairs = 0
    for name in reader.video_names():
        info = reader.video(name)
        pairs += sum(
            len(info.frames) - 1 - info.frames.index(o.frames[0]) for o in info.objects.values()
        )
    assert written["object_frames"] == pairs and written["object_frames_per_sec"] > 0
    assert os.listdir(os.path.join(out, "tensorboard"))

    # Resume: only the video whose marker is gone is predicted again; same numbers.
    loaded = []
    real = videos.reader_video
    monkeypatch.setattr(videos, "reader_video", lambda r, n, *a: loaded.append(n) or real(r, n, *a))
    redo = reader.video_names()[1]
    os.remove(os.path.join(out, "done", redo + ".json"))
    again = job.run(config, workdir)
    assert loaded == [redo]
    assert again["JF_mean"] == pytest.approx(result["JF_mean"])

    # Ground truth only on first appearances (YouTube-VOS valid): PNGs, no scores.
    partial = tmp_path / "partial"
    shutil.copytree(synthetic.valid, partial)
    name = reader.video_names()[0]
    starts = {o.frames[0] for o in reader.video(name).objects.values()}
    for frame in reader.video(name).frames:
        if frame not in starts:
            os.remove(partial / "Annotations" / name / (frame + ".png"))
    for other in reader.video_names()[1:]:
        shutil.rmtree(partial / "Annotations" / other)
        shutil.rmtree(partial / "JPEGImages" / other)
    meta = json.loads((partial / "meta.json").read_text())
    meta["videos"] = {name: meta["videos"][name]}
    (partial / "meta.json").write_text(json.dumps(meta))
    config.data.eval_dir = str(partial)
    no_gt = job.run(config, workdir)
    assert no_gt["scored"] is False and "missing" in no_gt["message"]
    assert len(os.listdir(os.path.join(workdir, "eval", "partial", "Annotations", name))) == len(
        reader.video(name).frames
    )


def test_watch_follows_checkpoints_until_the_final_step(tiny, synthetic, tmp_path):
    _, variables = tiny
    workdir = str(tmp_path / "work")
    _save_checkpoint(workdir, 3, variables)
    config = _config(synthetic, watch=True, watch_timeout_s=0.3, watch_poll_s=0.05)
    first = job.run(config, workdir)  # step 3, then no new checkpoint: timeout
    # What training records in the workdir tells evaluation its final step (no record counting).
    run_info.write(workdir, num_steps=7, steps_per_epoch=1.0)
    assert first["checkpoint"] == "step 3" and first["scored"]
    _save_checkpoint(workdir, 5, variables)
    _save_checkpoint(workdir, 7, variables)
    last = job.run(config, workdir)  # newest pending is the final step: stops after it
    assert last["checkpoint"] == "step 7"
    assert last["JF_mean"] == pytest.approx(first["JF_mean"])  # same weights
    out = os.path.join(workdir, "eval", "valid")
    with open(os.path.join(out, "metrics_history.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [3, 7]
    assert os.path.exists(os.path.join(out, "metrics_7.json"))


def test_evaluate_init_from_keeps_finished_videos_on_error(tiny, synthetic, tmp_path):
    _, variables = tiny
    checkpoints.save_variables(str(tmp_path / "vars"), variables)
    data = tmp_path / "valid"
    shutil.copytree(synthetic.valid, data)
    names = vos_reader.VOSReader(str(data)).video_names()
    bad = data / "JPEGImages" / names[1] / "00005.jpg"
    bad.write_bytes(b"not a jpeg")
    config = _config(synthetic)
    config.init_from = str(tmp_path / "vars")
    config.data.eval_dir = str(data)
    workdir = tmp_path / "work"  # no checkpoints/: evaluates config.init_from
    with pytest.raises(ValueError, match="00005.jpg"):
        job.run(config, str(workdir))
    with open(workdir / "eval" / "valid" / "done" / f"{names[0]}.json") as f:
        assert json.load(f)["checkpoint"].startswith("init ")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        job.run(_config(synthetic), str(tmp_path / "empty"))


def test_evaluate_from_records_matches_raw_folder(tiny, synthetic, tmp_path):
    _, variables = tiny
    raw_work, rec_work = str(tmp_path / "raw"), str(tmp_path / "rec")
    for workdir in (raw_work, rec_work):
        _save_checkpoint(workdir, 1, variables)
    raw = job.run(_config(synthetic), raw_work)
    config = _config(synthetic, train_meta="")
    config.data.eval_dir = ""
    config.data.eval_records = synthetic.valid_records
    config.data.train_records = synthetic.train_records  # seen categories from dataset_info.json
    rec = job.run(config, rec_work)
    assert (
        rec["split"] == "valid"
        and rec["num_videos"] == raw["num_videos"] == synthetic.options["num_valid"]
    )
    assert set(rec["per_object"]) == set(raw["per_object"])
    for key, scores in raw["per_object"].items():
        assert rec["per_object"][key]["J"] == pytest.approx(scores["J"], abs=1e-3)
    assert rec["seen"]["num_objects"] == raw["seen"]["num_objects"]
    assert rec["baseline"]["JF_mean"] == pytest.approx(raw["baseline"]["JF_mean"], abs=1e-12)


def test_feedback_comes_from_config_eval(tiny, synthetic):
    _, variables = tiny
    predictor = predict.predictor(_config(synthetic, feedback="exclusive"), variables)
    assert isinstance(predictor, predictors.StreamingPredictor)
    assert predictor.feedback == "exclusive"
    assert predict.predictor(_config(synthetic), variables).feedback == "independent"
    config = _config(synthetic, feedback="exclusive", batch_objects=2)
    with pytest.raises(ValueError, match="feedback='exclusive' with config.eval.batch_objects=2"):
        predict.predictor(config, variables)
