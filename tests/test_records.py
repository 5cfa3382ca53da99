"""TFRecord framing (record_io): TensorFlow's bytes, damage that names itself (training, evaluation,
--verify), on_corrupt=skip with its counter and limit, and conversion to a bucket on the emulator."""

import json
import os
import re
import runpy
import shutil

import numpy as np
import pytest
import tensorflow as tf

from rnn_vos_jax.configs import common
from rnn_vos_jax.data import eval_records, pipeline, record_io, record_schema
from rnn_vos_jax.data.conversion import convert
from rnn_vos_jax.runtime import storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAMAGE = {"truncated": "cut short", "flipped": "data checksum mismatch"}


def _cli(argv):
    """`python data_prep/convert.py ARGV` in this process; its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(REPO, "data_prep", "convert.py"))["main"](argv)
    return exit_info.value.code


def _offsets(path):
    """(offset, data length) of each record of an intact file."""
    out, offset = [], 0
    for data in record_io.read_records(path):
        out.append((offset, len(data)))
        offset += 16 + len(data)
    return out


def _damage(path, kind, index):
    """Cuts the file in the middle of record `index`'s data, or flips a byte in the middle of it.
    Returns the record's byte offset."""
    offset, length = _offsets(path)[index]
    middle = offset + 12 + length // 2
    if kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(middle)
    else:
        with open(path, "r+b") as f:
            f.seek(middle)
            byte = f.read(1)
            f.seek(middle)
            f.write(bytes([byte[0] ^ 0x5A]))
    return offset


def _shards(directory):
    info = json.loads(storage.read_text(storage.join(directory, record_schema.DATASET_INFO)))
    return [storage.join(directory, s["file"]) for s in info["shards"]]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _data(records, **kw):
    data = common.data_config(batch_size=1, curriculum="none")
    data.update(
        {
            "train_records": records,
            "image_size": (32, 64),
            "min_clip_len": 1,
            "max_clip_len": 2,
            "shuffle_buffer": 4,
            "record_shuffle_buffer": 2,
            "augment": False,
        }
    )
    data.update(kw)
    return data


def _where(path, index, offset):
    return re.escape(f"corrupt record in {path}: record {index} at byte {offset}")


def test_writer_bytes_equal_tensorflow_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    records = [b"", b"x", *(rng.bytes(int(n)) for n in rng.integers(1, 70_000, 6))]
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "tf.tfrecord")
    summary = record_io.write_records(ours, records)
    with tf.io.TFRecordWriter(theirs) as writer:
        for data in records:
            writer.write(data)
    assert storage.read_bytes(ours) == storage.read_bytes(theirs)
    assert list(record_io.read_records(theirs)) == records
    assert [r.numpy() for r in tf.data.TFRecordDataset(ours)] == records
    checked = record_io.check_file(ours)
    assert checked.pop("damage") == [] and checked == summary
    assert summary["records"] == len(records) and summary["bytes"] == os.path.getsize(ours)


def test_bad_on_corrupt_value_names_the_key(synthetic):
    with pytest.raises(ValueError, match=r"config\.data\.on_corrupt must be one of stop\|skip"):
        pipeline.train_iterator(_data(synthetic.train_records, on_corrupt="ignore"), seed=0)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_training_shard_stops_naming_file_and_record(synthetic, tmp_path, kind):
    records = _copy(synthetic.train_records, tmp_path / "train")
    shard = _shards(records)[1]
    offset = _damage(shard, kind, 1)
    it = pipeline.train_iterator(_data(records), seed=0)
    with pytest.raises(record_io.CorruptRecordError, match=_where(shard, 1, offset)) as error:
        for _ in range(8):
            next(it)
    assert DAMAGE[kind] in str(error.value) and "\n" not in str(error.value)
    it.close()


def test_skip_counts_damaged_records_and_stops_above_the_fraction(synthetic, tmp_path, caplog):
    records = _copy(synthetic.train_records, tmp_path / "train")
    shard = _shards(records)[0]
    _damage(shard, "flipped", 0)
    before = record_io.skipped_records()
    policy = record_io.Policy("skip", 1.0)
    good = list(policy.records(shard))
    assert len(good) == 1 and (policy.seen, policy.skipped) == (2, 1)
    assert record_io.skipped_records() == before + 1
    assert f"{shard}: record 0 at byte 0" in caplog.text and "on_corrupt=skip" in caplog.text
    # training goes on past it (4 records an epoch, one damaged)
    it = pipeline.train_iterator(
        _data(records, on_corrupt="skip", max_corrupt_fraction=1.0), seed=0
    )
    batches = [next(it) for _ in range(6)]
    it.close()
    assert all(b["frames"].shape[0] == 1 for b in batches)
    assert record_io.skipped_records() >= before + 2
    # a quarter of the records is more than 5%: stop once enough records were read
    data = _data(records, on_corrupt="skip", max_corrupt_fraction=0.05)
    it = pipeline.train_iterator(data, seed=0)
    with pytest.raises(record_io.CorruptRecordError, match=r"max_corrupt_fraction=0\.05") as error:
        for _ in range(40):
            next(it)
    it.close()
    assert "config.data.max_corrupt_fraction" in str(error.value) and shard in str(error.value)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_evaluation_shard_names_file_record_and_video(synthetic, tmp_path, kind):
    records = _copy(synthetic.valid_records, tmp_path / "valid")
    shard = _shards(records)[0]
    names = [
        tf.train.Example.FromString(r).features.feature[record_schema.VIDEO].bytes_list.value[0]
        for r in record_io.read_records(shard)
    ]
    index = len(names) - 1
    offset = _damage(shard, kind, index)
    with pytest.raises(record_io.CorruptRecordError, match=_where(shard, index, offset)) as error:
        list(eval_records.eval_videos(records))
    assert DAMAGE[kind] in str(error.value)
    if kind == "flipped":  # the bytes still parse: the video is named
        assert f"(video {names[index].decode()})" in str(error.value)
    # Evaluation takes the keys from its config (evaluation.videos.EvalSource).
    from rnn_vos_jax.configs import hs2s
    from rnn_vos_jax.evaluation import videos

    config = hs2s.get_config("demo")
    config.data.update(eval_records=records, on_corrupt="skip", max_corrupt_fraction=1.0)
    got = [v.name for v in videos.EvalSource(config).videos(skip=lambda name: False)]
    assert names[index].decode() not in got and len(got) == synthetic.options["num_valid"] - 1


def _damaged_set(synthetic, out):
    """train converted into 4 shards of one record each; shards 1 (cut) and 2 (flipped) damaged."""
    convert.convert(synthetic.train, out, num_shards=4)
    shards = _shards(out)
    _damage(shards[1], "truncated", 0)
    _damage(shards[2], "flipped", 0)
    return shards


def _damaged_lines(text):
    lines = [line for line in text.splitlines() if line.startswith("DAMAGED")]
    return sorted(
        line.split(record_schema.SHARD_SUFFIX + ": ")[0] + record_schema.SHARD_SUFFIX
        for line in lines
    )


def test_verify_lists_exactly_the_damaged_shards(synthetic, tmp_path, capsys):
    assert _cli([f"--verify={synthetic.train_records}"]) == 0
    assert "0 damaged" in capsys.readouterr().out
    out = str(tmp_path / "train")
    shards = _damaged_set(synthetic, out)
    assert _cli([f"--verify={out}"]) == 1
    text = capsys.readouterr().out
    assert _damaged_lines(text) == [f"DAMAGED {shards[1]}", f"DAMAGED {shards[2]}"]
    assert "cut short" in text and "data checksum mismatch" in text and "sha256" in text
    assert "verified 4 shards" in text and "2 damaged" in text


def test_verify_on_a_bucket(synthetic, tmp_path, gcs_emulator, capsys):
    out = str(tmp_path / "train")
    _damaged_set(synthetic, out)
    bucket = gcs_emulator.bucket("verify") + "/train"
    for name in os.listdir(out):
        if os.path.isfile(os.path.join(out, name)):
            storage.copy(os.path.join(out, name), storage.join(bucket, name))
    assert _cli([f"--verify={bucket}"]) == 1
    remote = _shards(bucket)
    assert _damaged_lines(capsys.readouterr().out) == [
        f"DAMAGED {remote[1]}",
        f"DAMAGED {remote[2]}",
    ]


def test_convert_to_a_bucket_equals_local_and_resumes(synthetic, gcs_emulator, monkeypatch):
    out = gcs_emulator.bucket("convert") + "/train"
    info = convert.convert(synthetic.train, out, num_shards=2)
    local = json.loads(
        storage.read_text(os.path.join(synthetic.train_records, "dataset_info.json"))
    )
    assert info["shards"] == local["shards"]
    for remote_shard, local_shard in zip(_shards(out), _shards(synthetic.train_records)):
        assert storage.read_bytes(remote_shard) == storage.read_bytes(local_shard)
    assert all({"records", "bytes", "sha256"} <= set(s) for s in info["shards"])
    # a rerun finds every shard finished (plan, size and checksum) and writes none
    calls = []
    original = convert._convert_shard
    monkeypatch.setattr(
        convert,
        "_convert_shard",
        lambda plan, on_error: calls.append(plan) or original(plan, on_error),
    )
    assert convert.convert(synthetic.train, out, num_shards=2) == info and calls == []
    # evaluation reads the bucket's records through the same reader
    names = [v.name for v in eval_records.eval_videos(out)]
    assert len(names) == synthetic.options["num_train"]


def test_raw_set_in_a_bucket_converts_to_the_same_shards(synthetic, gcs_emulator, tmp_path):
    raw = gcs_emulator.bucket("raw") + "/valid"
    for folder, _, files in os.walk(synthetic.valid):
        for name in files:
            relative = os.path.relpath(os.path.join(folder, name), synthetic.valid)
            storage.copy(os.path.join(folder, name), storage.join(raw, *relative.split(os.sep)))
    out = str(tmp_path / "valid")
    convert.convert(raw, out, num_shards=2)
    for ours, shared in zip(_shards(out), _shards(synthetic.valid_records), strict=True):
        assert storage.read_bytes(ours) == storage.read_bytes(shared)
