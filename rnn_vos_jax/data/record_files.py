"""Which TFRecord files a process reads, how many training samples they hold, and their records
as tf.data datasets (TensorFlow).

Files are listed through runtime.storage. Records of URLs (gs:// through gcsfs), and any records
read with on_corrupt=skip, are read by record_io (our own framing reader); local files read while
damage stops the run go through TensorFlow's TFRecordDataset, a third cheaper per clip
(record_io.Policy.native). A damaged record surfaces in Python as a TensorFlow error (record_io's
text, or TensorFlow's DataLossError naming no file); `named_damage` raises the CorruptRecordError
naming the file and record instead (found again by record_io for TensorFlow's reader).
"""

import contextlib
import json
import re

import tensorflow as tf

from rnn_vos_jax.data import record_io, record_schema
from rnn_vos_jax.runtime import storage

AUTOTUNE = tf.data.AUTOTUNE
# Temporary files of an unfinished write (storage.staged_output, older converters): never shards.
_TEMPORARY = re.compile(r"\.tmp-?\d+")


def record_files(spec) -> list[str]:
    """Sorted TFRecord files from a directory, a glob pattern, or a comma-separated list/sequence.

    Paths go through runtime.storage, so gs:// buckets work. A directory with dataset_info.json
    gives the shards it lists; otherwise its *.tfrecord files.

    Raises:
        FileNotFoundError: naming the spec when nothing matches or a listed shard is missing.
    """
    if isinstance(spec, (list, tuple)):
        files = [str(f) for f in spec]
    elif spec and storage.isdir(spec):
        info_path = storage.join(spec, record_schema.DATASET_INFO)
        if storage.exists(info_path):
            shards = json.loads(storage.read_text(info_path))["shards"]
            files = [storage.join(spec, s["file"]) for s in shards]
        else:
            files = storage.glob(storage.join(spec, "*" + record_schema.SHARD_SUFFIX))
    else:
        files = [g for part in str(spec).split(",") if part for g in storage.glob(part)]
    files = sorted({f for f in files if not _TEMPORARY.search(storage.basename(f))})
    missing = [f for f in files if not storage.exists(f)]
    if not files or missing:
        raise FileNotFoundError(f"no TFRecord files found for {spec!r} (missing: {missing[:3]})")
    return files


def file_records(policy: record_io.Policy, annotate=None, files=()):
    """fn(file name tensor) -> tf.data.Dataset of that file's serialized records, in order (for
    interleave): TensorFlow's TFRecordDataset where `policy.native(files)` allows it, else read
    by record_io under `policy`."""
    if policy.native(files, annotate):
        return tf.data.TFRecordDataset

    def generate(name):
        yield from policy.records(name.decode(), annotate)

    def dataset(name):
        return tf.data.Dataset.from_generator(
            generate, args=(name,), output_signature=tf.TensorSpec([], tf.string)
        )

    return dataset


def records_dataset(files, policy: record_io.Policy, annotate=None) -> tf.data.Dataset:
    """The serialized records of `files`, file after file, each in file order."""
    names = tf.data.Dataset.from_tensor_slices(tf.constant(list(files), tf.string))
    return names.flat_map(file_records(policy, annotate, files))


@contextlib.contextmanager
def named_damage(policy: record_io.Policy):
    """Around iterating a dataset read under `policy`: a TensorFlow error caused by a reader's
    CorruptRecordError becomes that error (one line naming file and record), not a TF traceback."""
    try:
        yield
    except tf.errors.OpError as error:
        if policy.error is not None and str(policy.error) in str(error):
            raise policy.error from None
        if isinstance(error, tf.errors.DataLossError):  # TensorFlow's reader (policy.native)
            found = policy.locate()
            if found is not None:
                raise found from None
        raise


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


def samples_per_epoch(
    files: list[str], min_object_frames: int, policy: record_io.Policy | None = None
) -> int:
    """(video, object) pairs with >= min_object_frames listed frames in these files (reads them).

    `policy` says what a damaged record does (default: stop with a CorruptRecordError)."""
    policy = policy or record_io.Policy()
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(files), tf.string)).interleave(
        file_records(policy, files=files),
        cycle_length=max(1, min(len(files), 4)),
        num_parallel_calls=AUTOTUNE,
    )
    ds = ds.map(
        tf.autograph.experimental.do_not_convert(_count_fn(min_object_frames)),
        num_parallel_calls=AUTOTUNE,
    )
    with named_damage(policy):
        total = ds.reduce(
            tf.constant(0, tf.int64), tf.autograph.experimental.do_not_convert(lambda a, b: a + b)
        )
    return int(total.numpy())


def check_not_empty(
    files: list[str], min_object_frames: int, policy: record_io.Policy | None = None
) -> None:
    """Raises unless some record has a usable pair (reads up to the first one)."""
    policy = policy or record_io.Policy()
    ds = records_dataset(files, policy).map(
        tf.autograph.experimental.do_not_convert(_count_fn(min_object_frames))
    )
    with named_damage(policy):
        found = list(
            ds.filter(tf.autograph.experimental.do_not_convert(lambda n: n > 0))
            .take(1)
            .as_numpy_iterator()
        )
    if not found:
        raise ValueError(
            f"no (video, object) pair with >= {min_object_frames} listed frames in {files}"
        )
