"""A full disk and a read-only disk stop a run with one line naming the path; a rerun resumes.

The disk is real: a small tmpfs mounted in a private mount namespace (`unshare -r -m`, or a plain
mount when the test runs as root without user namespaces), so the kernel itself answers ENOSPC and
EROFS. A namespace's mounts end with its shell, so each scenario is one shell script in it; it
copies what the test inspects out before it ends.
"""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import tiny_run

from rnn_vos_jax.runtime import metric_writer, storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = [sys.executable, "-m", "rnn_vos_jax.main", "--config=configs/s2s.py:demo"]
FLAGS = [
    "--config.demo.enabled=False",
    "--config.train.tensorboard=False",
    "--config.train.bn_freeze_after_epoch=-1",
    "--config.train.checkpoint.use_async=False",
]


def _namespace_prefix():
    """argv prefix running a command where it may mount a tmpfs; None when nothing allows it."""
    for prefix in (["unshare", "-r", "-m"], ["unshare", "-m"]):
        probe = subprocess.run(
            [*prefix, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return prefix
    return None


# Room for one checkpoint of the tiny S2S (about KIB_PER_CHECKPOINT) and the run's small files,
# not for two.
KIB_PER_CHECKPOINT = 8700  # du -sk of checkpoints/2 (2026-12-06)
FREE_KIB = KIB_PER_CHECKPOINT * 3 // 2
PREFIX = _namespace_prefix() if shutil.which("unshare") else None
pytestmark = pytest.mark.skipif(
    PREFIX is None, reason="no mount namespace here (unshare -r -m and unshare -m both refused)"
)


def _in_namespace(script: str, disk: str, size: str, env=None) -> subprocess.CompletedProcess:
    """Runs bash `script` with a fresh tmpfs of `size` mounted at `disk` (an existing folder)."""
    full = f"set -u\nmount -t tmpfs -o size={size} tmpfs {disk}\n{script}"
    return subprocess.run(
        [*PREFIX, "bash", "-c", full],
        check=False,
        cwd=REPO,
        env=env or os.environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tail(path) -> str:
    return path.read_text()[-3000:] if path.exists() else f"(no {path.name})"


def _fill_leaving(path: str, free_kib: int) -> str:
    """Shell lines that fill the disk of `path` until `free_kib` KiB are left."""
    return (
        f"avail=$(df -k --output=avail {path} | tail -1)\n"
        f"dd if=/dev/zero of={path}/filler bs=1k count=$((avail - {free_kib})) status=none\n"
    )


def test_full_disk_stops_training_with_one_line_and_the_rerun_resumes(synthetic, tmp_path):
    """The disk has room for config.json, the logs and one checkpoint (step 2) but not a second:
    the step-4 save stops the run with one line naming the checkpoint folder, exit 74. With the
    space back the rerun resumes from step 2 (step 4 never committed) and finishes."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    run = f"{disk}/run"
    # One record of the training shards is damaged and skipped (data.on_corrupt=skip): the runs
    # count it in metrics.jsonl.
    records = tmp_path / "records"
    shutil.copytree(synthetic.train_records, records)
    first = records / "train-00000-of-00002.tfrecord"
    data = bytearray(first.read_bytes())
    data[40] ^= 0xFF  # inside the first record's data: its checksum fails
    first.write_bytes(bytes(data))
    damaged = {"data.on_corrupt": "skip", "data.max_corrupt_fraction": 0.5}
    args = shlex.join(
        [
            *MAIN,
            f"--workdir={run}",
            *tiny_run.command_line(**{"data.train_records": str(records), **damaged}),
            *FLAGS,
        ]
    )
    evaluate = args + f" --mode=eval --config.data.eval_records={synthetic.valid_records}"
    script = (
        _fill_leaving(str(disk), FREE_KIB)
        + f"{args} > {out}/full.log 2> {out}/full.err; echo $? > {out}/full.rc\n"
        f"rm {disk}/filler\n"
        f"{args} > {out}/rerun.log 2>&1; echo $? > {out}/rerun.rc\n"
        # Evaluation on a full disk: no room for its first PNG (or anything else).
        + _fill_leaving(str(disk), 0)
        + f"{evaluate} > {out}/eval_full.log 2> {out}/eval_full.err; echo $? > {out}/eval_full.rc\n"
        f"rm {disk}/filler\n"
        f"{evaluate} > {out}/eval.log 2>&1; echo $? > {out}/eval.rc\n"
        f"cp -r {run} {out}/run\n"
    )
    done = _in_namespace(script, disk, "64m")
    assert done.returncode == 0, done.stderr
    err = (out / "full.err").read_text().strip().splitlines()
    assert (out / "full.rc").read_text().strip() == str(storage.EXIT_STORAGE), err[-20:]
    # One line, naming the folder and the cause, and no traceback of ours. (Orbax's writer
    # threads may print their own as the failed save unwinds.)
    assert err[-1] == f"error: cannot write checkpoint {run}/checkpoints: No space left on device"
    assert not any(f'File "{REPO}/rnn_vos_jax/' in line for line in err)
    assert (out / "rerun.rc").read_text().strip() == "0", _tail(out / "rerun.log")
    assert f"Resuming from {run}/checkpoints/2" in (out / "rerun.log").read_text()
    steps = sorted(int(n) for n in os.listdir(out / "run" / "checkpoints") if n.isdigit())
    assert steps[-1] == tiny_run.STEPS and 2 in steps
    rows = metric_writer.read_metrics(str(out / "run"))
    assert sorted({r["step"] for r in rows}) == list(range(1, tiny_run.STEPS + 1))
    assert all(r["skipped_records"] >= 1 for r in rows)
    assert "corrupt record in" in (out / "rerun.log").read_text()
    # Evaluation: one line naming what it could not write, exit 74; with room, it finishes.
    err = (out / "eval_full.err").read_text().strip().splitlines()
    assert (out / "eval_full.rc").read_text().strip() == str(storage.EXIT_STORAGE), err[-20:]
    assert err[-1].startswith(f"error: cannot write {run}/eval/"), err[-1]
    assert err[-1].endswith(": No space left on device")
    assert (out / "eval.rc").read_text().strip() == "0", _tail(out / "eval.log")
    pngs = list((out / "run" / "eval").rglob("*.png"))
    frames = [f for _, _, names in os.walk(f"{synthetic.valid}/JPEGImages") for f in names]
    assert len(pngs) == len(frames) and (out / "run/eval/valid/metrics.json").exists()


def test_full_and_read_only_disks_stop_conversion_with_one_line(synthetic, tmp_path):
    """The converter on a full disk names the shard it could not write; the rerun with space
    keeps the finished shards and writes the rest; a read-only disk is named as such."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    convert = f"{sys.executable} data_prep/convert.py --input_dir={synthetic.train} --num_shards=2"
    script = (
        f"{convert} --output_dir={disk}/records > {out}/ok.log 2>&1 || exit 90\n"
        f"cp -r {disk}/records {out}/want\n"
        f"rm -r {disk}/records\n"
        # Room for the first shard but not for both.
        f"first=$(du -k {out}/want/train-00000-of-00002.tfrecord | cut -f1)\n"
        + _fill_leaving(str(disk), "$((first + 16))")
        + f"{convert} --output_dir={disk}/records > {out}/full.log 2> {out}/full.err;"
        f" echo $? > {out}/full.rc\n"
        f"ls {disk}/records > {out}/kept.txt\n"
        f"rm {disk}/filler\n"
        f"{convert} --output_dir={disk}/records > {out}/rerun.log 2>&1; echo $? > {out}/rerun.rc\n"
        f"cp -r {disk}/records {out}/got\n"
        f"mount -o remount,ro {disk}\n"
        f"{convert} --output_dir={disk}/more > {out}/ro.log 2> {out}/ro.err; echo $? > {out}/ro.rc\n"
    )
    done = _in_namespace(script, disk, "16m")
    assert done.returncode == 0, done.stderr + _tail(out / "ok.log")
    err = (out / "full.err").read_text().strip().splitlines()
    assert (out / "full.rc").read_text().strip() == str(storage.EXIT_STORAGE), err[-20:]
    assert err[-1] == (
        f"error: cannot write {disk}/records/train-00001-of-00002.tfrecord: No space left on device"
    )
    assert "train-00000-of-00002.tfrecord" in (out / "kept.txt").read_text().split()
    assert (out / "rerun.rc").read_text().strip() == "0", (out / "rerun.log").read_text()[-3000:]
    shards = sorted(n for n in os.listdir(out / "want") if n.endswith(".tfrecord"))
    assert len(shards) == 2 and (out / "got" / "dataset_info.json").exists()
    for name in shards:
        assert (out / "got" / name).read_bytes() == (out / "want" / name).read_bytes(), name
    ro = (out / "ro.err").read_text().strip().splitlines()
    assert (out / "ro.rc").read_text().strip() == str(storage.EXIT_STORAGE), ro[-20:]
    assert ro[-1].startswith("error: cannot ") and ro[-1].endswith(": Read-only file system")
    assert f"{disk}/more" in ro[-1]
