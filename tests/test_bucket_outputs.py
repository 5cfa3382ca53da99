"""Inference, scoring and submission with their inputs and outputs in a bucket (gs:// on a GCS
emulator, through runtime.storage): the same files as a local run, byte for byte, and a stopped
segment run resumes from its state in the bucket.

The segment tests reuse test_segment's tiny model (its checkpoint and compiled Segmenter) and
synthetic video; score and submission reuse test_score's and test_submission's folders.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import bucket_testing
import numpy as np
import pytest
import test_score
import test_segment as own
import test_segment_streams as streams

from rnn_vos_jax import api, score, segment
from rnn_vos_jax.runtime import storage

checkpoint_dir, seg = own.checkpoint_dir, own.seg  # the module-scoped fixtures


def _upload(local: str, url: str) -> str:
    """Copies a local file or folder tree to `url`; returns `url`."""
    if os.path.isfile(local):
        storage.copy(local, url)
        return url
    for folder, _, files in os.walk(local):
        rel = os.path.relpath(folder, local)
        for name in files:
            parts = [name] if rel == "." else [*rel.split(os.sep), name]
            storage.copy(os.path.join(folder, name), storage.join(url, *parts))
    return url


def _record(path: str) -> dict:
    """segment.json without what differs between two equal runs: input paths and timings."""
    record = json.loads(storage.read_text(path))
    for key in ("inputs", "seconds", "frames_per_second", "latency_ms"):
        record.pop(key)
    for entry in [*record["objects"].values(), *record["corrections"]]:
        entry["mask_file"] = storage.basename(entry["mask_file"])
    return record


def test_segment_into_a_bucket_equals_a_local_run(gcs_emulator, checkpoint_dir, seg, tmp_path):
    names = [f"{t:05d}" for t in range(own.T)]
    frames = own._write_folder(tmp_path / "frames", own._frames(), names)
    masks = tmp_path / "masks"
    masks.mkdir()
    own._write_mask(masks / "00000.png", own._ids())
    local = str(tmp_path / "local")
    api.segment_video(None, seg, frames, str(masks), local, "mp4", show_progress=False)

    bucket = gcs_emulator.bucket("segment")
    video = _upload(frames, storage.join(bucket, "in", "frames"))
    masks_url = _upload(str(masks), storage.join(bucket, "in", "masks"))
    out = storage.join(bucket, "out")
    argv = streams._argv(checkpoint_dir, video, masks_url, out, "--overlay=mp4")
    result = segment.main(argv)
    assert result.pngs[0] == f"{out}/Annotations/00000.png"
    assert result.overlay == f"{out}/overlay.mp4" and not result.reused
    assert bucket_testing.tree(out).keys() == bucket_testing.tree(local).keys()
    for name, data in bucket_testing.tree(out).items():
        if name != "segment.json":
            assert data == bucket_testing.tree(local)[name], name  # PNGs and the H.264 overlay
    assert _record(f"{out}/segment.json") == _record(f"{local}/segment.json")
    assert segment.main(argv).reused  # a finished run in the bucket is found again


def test_segment_stopped_resumes_from_its_state_in_the_bucket(
    gcs_emulator, checkpoint_dir, seg, tmp_path
):
    frames = np.concatenate([own._frames()] * 3)  # 18 frames
    folder = own._write_folder(tmp_path / "frames", frames, streams._names(len(frames)))
    first = own._write_mask(tmp_path / "first.png", own._ids())
    whole = str(tmp_path / "whole")
    api.segment_video(None, seg, folder, first, whole, "mp4", show_progress=False)

    out = storage.join(gcs_emulator.bucket("resume"), "out")
    argv = streams._argv(checkpoint_dir, folder, first, out, "--overlay=mp4", "--state_every=1")
    process = subprocess.Popen(
        [sys.executable, "-m", "rnn_vos_jax.segment", *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ann = storage.join(out, "Annotations")
    while process.poll() is None and (not storage.isdir(ann) or len(storage.listdir(ann)) < 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    stopped_at = len(storage.listdir(ann))
    assert 2 <= stopped_at < len(frames)
    assert storage.listdir(out) == ["Annotations", "state"]

    result = segment.main(argv)  # the same command again
    assert result.record_data["resumed"][0]["frame_index"] >= stopped_at - 1
    got, want = bucket_testing.tree(out), bucket_testing.tree(whole)
    assert got.keys() == want.keys()
    for name in want:
        if name != "segment.json":
            assert got[name] == want[name], name


def test_score_from_a_bucket_gives_the_local_metrics(gcs_emulator, tmp_path):
    test_score._write_set(tmp_path)
    bucket = gcs_emulator.bucket("score")
    for name in ("pred", "ann", "meta.json", "train_info.json"):
        _upload(str(tmp_path / name), storage.join(bucket, name))

    def run(root, out):
        proc = subprocess.run(
            [
                sys.executable, "-m", "rnn_vos_jax.score", f"--predictions={root}/pred",
                f"--annotations={root}/ann", f"--meta={root}/meta.json",
                f"--train_meta={root}/train_info.json", f"--output={out}/metrics.json",
                f"--csv_dir={out}/csv", "--baseline",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return bucket_testing.tree(out)

    local = run(str(tmp_path), str(tmp_path / "out"))
    assert run(bucket, f"{bucket}/out") == local
    assert set(local) == {"metrics.json", "csv/global_results-val.csv",
                          "csv/per-sequence_results-val.csv"}  # fmt: skip


@pytest.fixture
def valid(synthetic):
    return synthetic.valid


def test_submission_zips_from_a_bucket_into_the_bucket(gcs_emulator, valid, tmp_path):
    bucket = gcs_emulator.bucket("submission")
    preds = _upload(os.path.join(valid, "Annotations"), f"{bucket}/preds")
    valid_url = _upload(valid, f"{bucket}/valid")

    def entries(preds, valid, out):
        proc = subprocess.run(
            [sys.executable, "-m", "rnn_vos_jax.submission", f"--predictions={preds}",
             f"--meta={valid}/meta.json", f"--output={out}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        with storage.local_file(out) as local, zipfile.ZipFile(local) as archive:
            return {n: archive.read(n) for n in archive.namelist()}

    local = entries(os.path.join(valid, "Annotations"), valid, tmp_path / "submission.zip")
    assert local and entries(preds, valid_url, f"{bucket}/sub/submission.zip") == local


def test_a_full_disk_exits_74_with_one_line(tmp_path, monkeypatch, capsys):
    test_score._write_set(tmp_path)

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)  # the atomic write's rename
    out = tmp_path / "metrics.json"
    with pytest.raises(SystemExit) as stop:
        score.main([f"--predictions={tmp_path}/pred", f"--annotations={tmp_path}/ann",
                    f"--output={out}"])  # fmt: skip
    assert stop.value.code == storage.EXIT_STORAGE
    assert capsys.readouterr().err.splitlines() == [
        f"error: cannot write {out}: No space left on device"
    ]
    assert not out.exists() and not list(tmp_path.glob("metrics.json.tmp*"))
