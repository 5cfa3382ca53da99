"""Evaluation as the benchmarks define it: YouTube-VOS's all-frames protocol and evaluation
shared over several processes, on tiny synthetic data with a tiny random model."""

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys

import model_testing as mt
import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import models
from rnn_vos_jax.data import vos_reader
from rnn_vos_jax.evaluation import job, predict, videos
from rnn_vos_jax.inference import object_merge, predictors
from rnn_vos_jax.runtime import checkpoints

TINY_MODEL = {"name": "hs2s", **models.family("hs2s").tiny}
IMAGE_SIZE = (32, 64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The model, its variables and a save_variables folder of them (config.init_from)."""
    model = models.build(TINY_MODEL)
    variables = mt.random_variables(model)
    path = str(tmp_path_factory.mktemp("tiny") / "variables")
    checkpoints.save_variables(path, variables)
    return model, variables, path


def _config(tiny, eval_dir, **eval_overrides):
    return mt.config_with_model(
        TINY_MODEL,
        **{
            "init_from": tiny[2],
            "data.image_size": IMAGE_SIZE,
            "data.eval_dir": eval_dir,
            **{f"eval.{k}": v for k, v in eval_overrides.items()},
        },
    )


def _read(path):
    with Image.open(path) as image:
        return np.array(image)


def test_all_frames_protocol(tiny, synthetic, tmp_path):
    """The model runs on every frame of valid_all_frames; the PNGs written and scored are exactly
    valid's frames; a late object starts at its first annotated frame; the recurrent state
    advanced on the frames in between (outputs differ from running on valid's frames alone)."""
    model, variables, _ = tiny
    valid = vos_reader.VOSReader(synthetic.valid)
    dense = vos_reader.VOSReader(synthetic.valid_all_frames)
    predictor = predictors.predictor_for(model, variables, IMAGE_SIZE)
    config = _config(tiny, synthetic.valid, all_frames_dir=synthetic.valid_all_frames)
    result = job.evaluate_checkpoint(config, str(tmp_path / "all"))
    out = tmp_path / "all" / "eval" / "valid" / "Annotations"
    late, scored_frames = 0, {}
    for name in valid.video_names():
        info = valid.video(name)
        assert sorted(p[:-4] for p in os.listdir(out / name)) == info.frames  # valid's frames only
        video = videos.reader_video(valid, name, dense)
        keep = video.output_indices()
        assert [video.frame_names[i] for i in keep] == info.frames
        assert video.frame_names == [f"{t:05d}" for t in range(5 * len(info.frames))]
        for n in (1, 7, len(video.frame_names) - 1):  # valid_all_frames' JPEGs, in order
            np.testing.assert_array_equal(
                video.frames[n], _read(dense.frame_path(name, video.frame_names[n]))
            )
        probs = np.stack([p for p, _ in predict.probabilities(predictor, video, 0)])
        sparse = videos.reader_video(valid, name)
        sparse_probs = np.stack([p for p, _ in predict.probabilities(predictor, sparse, 0)])
        for n, i in enumerate(keep):  # the PNGs are these probabilities merged
            ids = object_merge.merge_probabilities(probs[i], video.object_ids.tolist())
            np.testing.assert_array_equal(_read(out / name / (info.frames[n] + ".png")), ids)
        for k, obj in enumerate(video.object_ids):
            first = int(video.first_frame[k])
            assert video.frame_names[first] == info.objects[int(obj)].frames[0]
            np.testing.assert_array_equal(probs[:first, k], 0.0)  # nothing before its start
            np.testing.assert_array_equal(probs[first, k], video.annotations[first] == obj)
            late += first > 0
            after = [n for n, i in enumerate(keep) if i > first]
            assert after, "every object has a valid frame after its first"
            gap = np.abs(probs[keep[after], k] - sparse_probs[after, k]).max()
            assert gap > 1e-3, f"{name}/{obj}: the in-between frames changed nothing"
            # Scored on valid's frames after its first one, the video's last frame left out.
            scored_frames[f"{name}/{obj}"] = len(after) - 1
    assert late >= 2, "objects that start after frame 0"
    assert result["scored"] and result["num_objects"] == sum(n > 0 for n in scored_frames.values())
    assert {k: o["num_frames"] for k, o in result["per_object"].items()} == {
        k: n for k, n in scored_frames.items() if n > 0
    }
    # A late object given on the last frame but one has nothing left to score.
    assert result["unscored_objects"] == sorted(k for k, n in scored_frames.items() if n == 0)
    assert result["unscored_objects"], "the synthetic valid has such an object"

    # Bad input: a valid frame missing from valid_all_frames; all frames with records.
    broken = tmp_path / "broken"
    shutil.copytree(synthetic.valid_all_frames, broken)
    os.remove(broken / "JPEGImages" / name / "00005.jpg")
    with pytest.raises(ValueError, match=f"video {name}: frames \\['00005'\\] .* not in"):
        videos.reader_video(valid, name, vos_reader.VOSReader(str(broken)))
    records = _config(tiny, "", all_frames_dir=str(broken))
    records.data.eval_records = str(tmp_path / "records")
    with pytest.raises(ValueError, match="all_frames_dir.*needs config.data.eval_dir"):
        videos.EvalSource(records)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tiny, synthetic, tmp_path):
    """Two JAX processes each evaluate a disjoint share of the videos and write their PNGs;
    process 0 merges once: the same metrics.json and PNGs as one process. The two processes
    step their videos in 3 object slots (config.eval.object_slots), the one process a video at
    a time: slots change nothing written either."""
    config = _config(tiny, synthetic.valid)
    # The subprocesses load these compilations from the session's cache (conftest).
    one = job.evaluate_checkpoint(config, str(tmp_path / "one"))
    config.eval.object_slots = 3
    with open(tmp_path / "config.pkl", "wb") as f:
        pickle.dump(config, f)
    port, script = _free_port(), os.path.join(os.path.dirname(__file__), "eval_process.py")
    workdir = str(tmp_path / "two")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(tmp_path / "config.pkl"), workdir, str(port), str(i), "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]

    out_one, out_two = tmp_path / "one" / "eval" / "valid", tmp_path / "two" / "eval" / "valid"
    shares = [
        json.loads((out_two / "shares" / f"process_{i}.json").read_text())["videos"]
        for i in range(2)
    ]
    names = vos_reader.VOSReader(synthetic.valid).video_names()
    assert shares == [names[0::2], names[1::2]]  # disjoint, every video once
    # The same scores; only the measured speed (frames/s of each run) may differ.
    two_metrics, one_metrics = (
        json.loads((d / "metrics.json").read_text()) for d in (out_two, out_one)
    )
    for metrics in (two_metrics, one_metrics):
        assert metrics.pop("object_frames_per_sec") > 0
    assert two_metrics == one_metrics
    assert two_metrics["num_videos"] == len(names) == synthetic.options["num_valid"]
    assert one["scored"] and one["num_objects"] >= 3
    assert all(k in one for k in ("J_recall", "J_decay", "F_recall", "F_decay"))
    for name in names:
        frames = sorted(os.listdir(out_one / "Annotations" / name))
        assert sorted(os.listdir(out_two / "Annotations" / name)) == frames
        for frame in frames:
            a = (out_one / "Annotations" / name / frame).read_bytes()
            assert (out_two / "Annotations" / name / frame).read_bytes() == a
