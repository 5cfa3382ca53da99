"""A run that lives in a bucket equals the same run on local disk (a real GCS emulator server).

`bucket_runs` trains the tiny S2S twice at once: records and workdir on local disk, and records
and workdir in a bucket, the bucket run stopped by SIGTERM after a step and rerun to the end. Both
read the same shards, one record of which has a flipped byte, with data.on_corrupt=skip: the
damaged video is skipped and counted in metrics.jsonl. Then both evaluate (--mode=eval) into their
workdirs. The runs agree: losses, skip counts, checkpoints, metrics.json and every PNG.

`test_demo_two_processes_...` runs launch/local_multiprocess.sh with the demo config twice at
once, into a local workdir and into a bucket: process 0 makes the data, process 1 waits for it,
and both runs give the same data, losses and J&F.

Orbax's arrays go to the emulator through tensorstore, the rest through gcsfs, TensorBoard's
events through google-cloud-storage (runtime.storage.emulator_env points all three at it).
"""

import json
import os
import signal
import subprocess
import sys
import time

import bucket_testing
import jax
import numpy as np
import pytest
import tiny_run

from rnn_vos_jax.runtime import checkpoints, metric_writer, storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local_multiprocess.sh")
CONFIG = "configs/s2s.py:demo"  # half the tiny HS2S's compile time
TIMEOUT_S = 420
CHANGES = {
    "demo.enabled": False,
    "mesh.num_devices": -1,
    "train.bn_freeze_after_epoch": -1,  # one step function to compile
    "data.on_corrupt": "skip",
    "data.max_corrupt_fraction": 0.5,
}
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


def _main(workdir, *flags, env=None, log=None):
    """`python -m rnn_vos_jax.main` with 2 CPU devices, started; its output goes to `log`."""
    env = dict(env or os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=2"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "rnn_vos_jax.main", f"--config={CONFIG}", f"--workdir={workdir}"]
        + list(flags),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _finish(proc, what, log):
    try:
        rc = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{what} did not finish in {TIMEOUT_S} s; see {log}")
    return rc


def _damaged_copy(src: str, dst: str) -> None:
    """Copies the record folder `src` to `dst` (local or a bucket), flipping one byte inside the
    first record of the first shard (its data checksum then fails)."""
    for name in storage.listdir(src):
        if not storage.isfile(storage.join(src, name)):
            continue  # the converter's resume state
        data = bytearray(storage.read_bytes(storage.join(src, name)))
        if name.endswith("00000-of-00002.tfrecord"):
            data[40] ^= 0xFF
        storage.write_bytes(storage.join(dst, name), bytes(data))


@pytest.fixture(scope="module")
def bucket_runs(synthetic, gcs_emulator, tmp_path_factory):
    """(local workdir, bucket workdir, log folder): trained (the bucket one stopped by SIGTERM
    after step 3 and rerun) and evaluated."""
    local = tmp_path_factory.mktemp("local")
    logs = tmp_path_factory.mktemp("logs")
    bucket = gcs_emulator.bucket("run")
    where = {"local": str(local), "bucket": bucket}
    for root in where.values():
        _damaged_copy(synthetic.train_records, storage.join(root, "records"))
        for name in storage.listdir(synthetic.valid_records):
            if name.startswith("."):
                continue  # the converter's resume state
            storage.copy(
                storage.join(synthetic.valid_records, name),
                storage.join(root, "valid_records", name),
            )

    def flags(root, **more):
        return tiny_run.command_line(
            **{
                **CHANGES,
                "data.train_records": storage.join(root, "records"),
                "data.eval_records": storage.join(root, "valid_records"),
                **more,
            }
        )

    workdirs = {k: storage.join(root, "run") for k, root in where.items()}
    with open(logs / "local.log", "w") as f:
        local_run = _main(workdirs["local"], *flags(where["local"]), log=f)
    # The bucket run: SIGTERM once step 3 is logged, then the rerun.
    with open(logs / "bucket.log", "w") as f:
        proc = _main(workdirs["bucket"], *flags(where["bucket"]), log=f)
    deadline = time.time() + TIMEOUT_S
    while "step 3/" not in (logs / "bucket.log").read_text():
        assert proc.poll() is None and time.time() < deadline, (logs / "bucket.log").read_text()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc, "bucket run", logs) == 143, (logs / "bucket.log").read_text()[-3000:]
    with open(logs / "bucket_rerun.log", "w") as f:
        rerun = _main(workdirs["bucket"], *flags(where["bucket"]), log=f)
        assert _finish(rerun, "bucket rerun", logs) == 0, (logs / "bucket_rerun.log").read_text()
    assert _finish(local_run, "local run", logs) == 0, (logs / "local.log").read_text()[-3000:]
    evals = {}
    for k, root in where.items():
        with open(logs / f"{k}_eval.log", "w") as f:
            evals[k] = _main(workdirs[k], "--mode=eval", *flags(root), log=f)
    for k, proc in evals.items():
        assert _finish(proc, f"{k} eval", logs) == 0, (logs / f"{k}_eval.log").read_text()[-3000:]
    return workdirs["local"], workdirs["bucket"], logs


def test_training_in_a_bucket_equals_training_on_local_disk(bucket_runs):
    local, bucket, logs = bucket_runs
    assert f"Resuming from {bucket}/checkpoints/" in (logs / "bucket_rerun.log").read_text()
    got, want = metric_writer.read_metrics(bucket), metric_writer.read_metrics(local)
    losses = {r["step"]: r["loss"] for r in want}
    assert sorted(losses) == list(range(1, tiny_run.STEPS + 1))
    for row in got:
        assert row["loss"] == pytest.approx(losses[row["step"]], rel=1e-5), row["step"]
    # The damaged record was skipped, named, and counted in both.
    skipped = {r["step"]: r["skipped_records"] for r in want}
    assert skipped[tiny_run.STEPS] >= 1
    assert {r["step"]: r["skipped_records"] for r in got}[tiny_run.STEPS] >= 1
    assert "corrupt record in" in (logs / "bucket.log").read_text()
    # Checkpoints: the same committed steps and parameters.
    assert checkpoints.committed_steps(bucket) == checkpoints.committed_steps(local)
    a, b = checkpoints.load_variables(bucket), checkpoints.load_variables(local)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    for name in ("config.json", "run.json"):
        assert storage.read_text(storage.join(bucket, name)) == storage.read_text(
            storage.join(local, name)
        ).replace(os.path.dirname(local), os.path.dirname(bucket))


def test_evaluation_into_a_bucket_equals_local(bucket_runs):
    local, bucket, _ = bucket_runs
    got, want = (
        bucket_testing.tree(storage.join(bucket, "eval")),
        bucket_testing.tree(storage.join(local, "eval")),
    )
    assert sorted(got) == sorted(want)
    pngs = [k for k in want if k.endswith(".png")]
    assert pngs and all(got[k] == want[k] for k in pngs)
    metrics = [k for k in want if k.endswith("metrics.json")]
    for k in metrics:
        a, b = json.loads(got[k]), json.loads(want[k])
        assert a["JF_mean"] == pytest.approx(b["JF_mean"], abs=1e-9)
        assert a["per_video"] == b["per_video"]


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
