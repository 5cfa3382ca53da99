"""The README's main command, shrunk: main -> synthetic data -> convert -> train -> eval -> table."""

import json
import os
import subprocess
import sys

import pytest
import tiny_run

from rnn_vos_jax.runtime import metric_writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = {
    "demo.num_train": 3,
    "demo.num_valid": 2,
    "demo.frame_size": (32, 64),
    "demo.num_frames": (4, 6),
    "demo.num_objects": (1, 2),
    "demo.num_shards": 1,
    "train.num_steps": 2,
}


def _main(workdir):
    # tiny_run's training step: test_train's, so one of the two loads it from the session's
    # compilation cache (conftest) when both run in one pytest worker.
    cmd = [
        sys.executable,
        "-m",
        "rnn_vos_jax.main",
        "--config=configs/hs2s.py:demo",
        f"--workdir={workdir}",
        *tiny_run.command_line(**DEMO),
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("demo"))
    return workdir, _main(workdir)


def test_demo_runs_end_to_end(demo_run):
    workdir, stdout = demo_run
    assert "copy-first-mask" in stdout and "JF_mean" in stdout
    for split in ("train", "valid"):
        assert os.path.exists(os.path.join(workdir, "data", "raw", split, "meta.json"))
        info = os.path.join(workdir, "data", "records", split, "dataset_info.json")
        with open(info) as f:
            assert json.load(f)["num_videos"] == DEMO[f"demo.num_{split}"]
    assert sorted(r["step"] for r in metric_writer.read_metrics(workdir)) == [1, 2]
    with open(os.path.join(workdir, "eval", "valid", "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("J_mean", "F_mean", "JF_mean"):
        assert 0.0 <= metrics[key] <= 1.0
        assert 0.0 <= metrics["baseline"][key] <= 1.0
    assert metrics["num_objects"] == len(metrics["per_object"]) >= 2
    assert set(metrics["per_video"]) == set(
        os.listdir(os.path.join(workdir, "data", "raw", "valid", "JPEGImages"))
    )
    with open(os.path.join(workdir, "demo_summary.json")) as f:
        summary = json.load(f)
    assert summary["JF_mean"] == pytest.approx(metrics["JF_mean"])
    assert summary["baseline_JF_mean"] == pytest.approx(metrics["baseline"]["JF_mean"])
    pngs = os.path.join(workdir, "eval", "valid", "Annotations")
    assert sorted(os.listdir(pngs)) == sorted(metrics["per_video"])


def test_rerun_skips_finished_stages(demo_run):
    workdir, _ = demo_run
    info = os.path.join(workdir, "data", "records", "train", "dataset_info.json")
    before = os.path.getmtime(info)
    rows = len(metric_writer.read_metrics(workdir))
    stdout = _main(workdir)
    assert os.path.getmtime(info) == before  # data not remade
    assert len(metric_writer.read_metrics(workdir)) == rows  # no training step redone
    assert "copy-first-mask" in stdout
    with open(os.path.join(workdir, "demo_summary.json")) as f:
        assert json.load(f)["seconds"]["train"] < 60
