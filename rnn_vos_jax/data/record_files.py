"""Which TFRecord files a process reads, and how many training samples they hold (TensorFlow)."""

import json
import os

import tensorflow as tf

from rnn_vos_jax.data import record_schema

AUTOTUNE = tf.data.AUTOTUNE


def record_files(spec) -> list[str]:
    """Sorted TFRecord files from a directory, a glob pattern, or a comma-separated list/sequence.

    Paths go through tf.io.gfile, so gs:// buckets work. A directory with dataset_info.json
    gives the shards it lists; otherwise its *.tfrecord files.

    Raises:
        FileNotFoundError: naming the spec when nothing matches or a listed shard is missing.
    """
    gfile = tf.io.gfile
    if isinstance(spec, (list, tuple)):
        files = [str(f) for f in spec]
    elif spec and gfile.isdir(spec):
        info_path = os.path.join(spec, record_schema.DATASET_INFO)
        if gfile.exists(info_path):
            with gfile.GFile(info_path) as f:
                files = [os.path.join(spec, s["file"]) for s in json.load(f)["shards"]]
        else:
            files = gfile.glob(os.path.join(spec, "*" + record_schema.SHARD_SUFFIX))
    else:
        files = [g for part in str(spec).split(",") if part for g in gfile.glob(part)]
    files = sorted(set(files))
    missing = [f for f in files if not gfile.exists(f)]
    if not files or missing:
        raise FileNotFoundError(f"no TFRecord files found for {spec!r} (missing: {missing[:3]})")
    return files


def split_files(files: list[str], process_index: int, process_count: int) -> list[str]:
    """This process's files: files[process_index::process_count]; every file goes to one process.

    Raises:
        ValueError: if there are fewer files than processes or the index is out of range.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if len(files) < process_count:
        raise ValueError(
            f"{len(files)} record files cannot be split over {process_count} processes; "
            "convert with --num_shards >= the number of processes"
        )
    mine = list(files[process_index::process_count])
    covered = sorted(f for p in range(process_count) for f in files[p::process_count])
    assert covered == sorted(files), "file split must cover every file exactly once"
    return mine


def process_splits(
    file_splits: int, process_index: int, process_count: int
) -> tuple[list[int], int]:
    """Which file splits a process reads: a contiguous block of S / n of the S splits.

    The global batch is the concatenation of the S splits' batches in split order, and process p
    holds the rows of its devices, so giving process p splits [p * S/n, (p + 1) * S/n) makes the
    global batches the same for any process count n that divides S. S = 0 means one split per
    process (files[p::n], the layout without the key).

    Returns:
        (this process's split indices, S).

    Raises:
        ValueError: naming config.data.file_splits when n does not divide it.
    """
    total = int(file_splits) or process_count
    if total < 0 or total % process_count:
        raise ValueError(
            f"config.data.file_splits={file_splits} cannot be shared by {process_count} "
            "processes: use a multiple of the process count (0 = one split per process)"
        )
    per = total // process_count
    return list(range(process_index * per, (process_index + 1) * per)), total


def process_files(data, process_index: int = 0, process_count: int = 1) -> list[list[str]]:
    """The record files of each file split that this process reads (data.file_splits)."""
    splits, total = process_splits(data.file_splits, process_index, process_count)
    files = record_files(data.train_records)
    return [split_files(files, s, total) for s in splits]


def _count_fn(min_object_frames):
    spec = {
        record_schema.OBJECT_IDS: tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True),
        record_schema.OBJECT_FRAMES: tf.io.FixedLenSequenceFeature(
            [], tf.int64, allow_missing=True
        ),
    }

    def count(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        k = tf.shape(ex[record_schema.OBJECT_IDS])[0]
        per_object = tf.reduce_sum(tf.reshape(ex[record_schema.OBJECT_FRAMES], [k, -1]), axis=1)
        return tf.reduce_sum(tf.cast(per_object >= min_object_frames, tf.int64))

    return count


def samples_per_epoch(files: list[str], min_object_frames: int) -> int:
    """(video, object) pairs with >= min_object_frames listed frames in these files (reads them)."""
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE)
    ds = ds.map(
        tf.autograph.experimental.do_not_convert(_count_fn(min_object_frames)),
        num_parallel_calls=AUTOTUNE,
    )
    return int(
        ds.reduce(
            tf.constant(0, tf.int64), tf.autograph.experimental.do_not_convert(lambda a, b: a + b)
        ).numpy()
    )


def check_not_empty(files: list[str], min_object_frames: int) -> None:
    """Raises unless some record has a usable pair (reads up to the first one)."""
    ds = tf.data.TFRecordDataset(files).map(
        tf.autograph.experimental.do_not_convert(_count_fn(min_object_frames))
    )
    if not list(
        ds.filter(tf.autograph.experimental.do_not_convert(lambda n: n > 0))
        .take(1)
        .as_numpy_iterator()
    ):
        raise ValueError(
            f"no (video, object) pair with >= {min_object_frames} listed frames in {files}"
        )
