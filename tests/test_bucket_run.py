"""Two processes sharing a workdir in a bucket equal the same on local disk (a real GCS emulator).

launch/local_multiprocess.sh runs the demo config twice at once, into a local workdir and into a
bucket: process 0 makes the synthetic data and converts it, process 1 waits for it, both train
and evaluate. The two runs give the same shards, losses, evaluation PNGs and J&F.

Orbax's arrays go to the emulator through tensorstore, the rest through gcsfs
(runtime.storage.emulator_env points both at it). Training alone in a bucket, stopped by SIGTERM
and resumed, is in test_train.py; segment, score and submission in test_bucket_outputs.py.
"""

import json
import os
import signal
import subprocess

import bucket_testing
import pytest
import tiny_run

from rnn_vos_jax.runtime import metric_writer, storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local_multiprocess.sh")
CONFIG = "configs/s2s.py:demo"  # half the tiny HS2S's compile time
TIMEOUT_S = 420
DEMO = {
    "demo.num_train": 2,
    "demo.num_valid": 2,
    "demo.frame_size": (32, 64),
    "demo.num_frames": (4, 5),
    "demo.num_objects": (1, 2),
    "demo.num_shards": 2,
    "data.file_splits": 2,
    "mesh.num_devices": -1,
    "train.num_steps": 2,
    "train.bn_freeze_after_epoch": -1,
    "train.tensorboard": False,
}


def _finish(proc, what, log):
    try:
        return proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{what} did not finish in {TIMEOUT_S} s; see {log}")


def _demo(workdir, env, logs):
    args = [f"--config.{k}={v}" for k, v in {**tiny_run.OVERRIDES, **DEMO}.items()]
    return subprocess.Popen(
        [LAUNCHER, CONFIG, workdir, "2", *args],
        cwd=REPO,
        env=dict(env, DEVICES_PER_PROCESS="1", KILL_AFTER="20", LOG_DIR=str(logs)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_demo_two_processes_in_a_bucket_equal_local_disk(gcs_emulator, tmp_path):
    local = str(tmp_path / "local")
    bucket = storage.join(gcs_emulator.bucket("demo"), "demo")
    logs = {k: tmp_path / f"logs_{k}" for k in ("local", "bucket")}
    procs = {"local": _demo(local, os.environ, logs["local"])}
    procs["bucket"] = _demo(bucket, os.environ, logs["bucket"])
    for k, proc in procs.items():
        rc = _finish(proc, f"{k} demo", logs[k])
        text = "".join(p.read_text()[-2000:] for p in sorted(logs[k].glob("*.log")))
        assert rc == 0, f"{k} demo exited {rc}: {text}"
    for k in procs:  # process 1 waited for process 0's data
        assert "waits for process 0 (demo_data_ready)" in (logs[k] / "process_1.log").read_text()
    for split in ("train", "valid"):  # the same shards (the info files name their folders)
        got, want = (
            bucket_testing.tree(storage.join(w, "data/records", split)) for w in (bucket, local)
        )
        shards = sorted(k for k in want if k.endswith(".tfrecord"))
        assert len(shards) == 2 and [got[k] for k in shards] == [want[k] for k in shards]
    got, want = metric_writer.read_metrics(bucket), metric_writer.read_metrics(local)
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2]
    for a, b in zip(got, want):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    a, b = (
        json.loads(storage.read_text(storage.join(w, "demo_summary.json"))) for w in (bucket, local)
    )
    assert a["JF_mean"] == pytest.approx(b["JF_mean"], abs=1e-9)
    # Evaluation (split over the two processes) wrote the same PNGs into the bucket.
    got, want = (bucket_testing.tree(storage.join(w, "eval")) for w in (bucket, local))
    pngs = sorted(k for k in want if k.endswith(".png"))
    assert pngs and sorted(k for k in got if k.endswith(".png")) == pngs
    assert all(got[k] == want[k] for k in pngs)
