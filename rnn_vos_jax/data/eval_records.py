"""Evaluation input: whole videos from TFRecords at their original size, as `EvalVideo`s.

Records are read by record_io (record_files.records_dataset); a damaged one stops with a
CorruptRecordError naming the file, the record index and, when the record still parses, its
video; or is skipped (on_corrupt='skip', the same keys as config.data's).
"""

import numpy as np
import tensorflow as tf

from rnn_vos_jax.data import annotations, record_io, record_schema
from rnn_vos_jax.data.eval_video import EvalVideo
from rnn_vos_jax.data.record_files import named_damage, record_files, records_dataset, split_files


def _decode(serialized):
    ex = tf.io.parse_single_example(serialized, record_schema.tf_feature_spec(tf))
    ex["frames"] = tf.map_fn(
        lambda b: tf.io.decode_jpeg(b, channels=3, dct_method="INTEGER_ACCURATE"),
        ex[record_schema.JPEG],
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
    del ex[record_schema.JPEG]
    return ex


def _name_video(error: record_io.CorruptRecordError) -> record_io.CorruptRecordError:
    """The error with the damaged record's video id when its bytes still parse as an Example."""
    try:
        example = tf.train.Example.FromString(error.data or b"")
        video = example.features.feature[record_schema.VIDEO].bytes_list.value[0].decode()
    except Exception:  # noqa: BLE001 - damaged bytes can fail to parse in many ways
        return error
    return error.with_note(f" (video {video})")


def eval_videos(
    records,
    *,
    process_index: int = 0,
    process_count: int = 1,
    on_corrupt: str = "stop",
    max_corrupt_fraction: float = 0.01,
):
    """Yields every video of the record files given to this process, in file and record order.

    Args:
        records: shard directory, glob, or comma-separated list (as `config.data.eval_records`).
        process_index, process_count: files are split as in training (files[p::n]).
        on_corrupt, max_corrupt_fraction: what a damaged record does (config.data's keys).

    Yields:
        EvalVideo: frames uint8[N,H0,W0,3], annotations uint8[N,H0,W0] (0 where no PNG),
        first_frame int32[K] the first frame listed for each object in the record.

    Raises:
        ValueError: naming the video when its frames or PNGs disagree with the record's size or
        an object has no listed frame.
        record_io.CorruptRecordError: a damaged record (on_corrupt='stop') or too many skipped.
    """
    policy = record_io.Policy(on_corrupt, max_corrupt_fraction)
    files = split_files(record_files(records), process_index, process_count)
    ds = records_dataset(files, policy, _name_video).map(
        tf.autograph.experimental.do_not_convert(_decode), num_parallel_calls=2, deterministic=True
    )
    examples = ds.prefetch(1).as_numpy_iterator()
    while True:
        with named_damage(policy):
            ex = next(examples, None)
        if ex is None:
            return
        video = ex[record_schema.VIDEO].decode()
        height, width = int(ex[record_schema.HEIGHT]), int(ex[record_schema.WIDTH])
        frames = ex["frames"]
        pngs = list(ex[record_schema.PNG])
        png_of = f"PNG of video {video}"
        ids = np.stack([annotations.decode(p, shape=(height, width), name=png_of) for p in pngs])
        annotated = np.array([bool(p) for p in pngs])
        object_ids = ex[record_schema.OBJECT_IDS].astype(np.int32)
        listed = ex[record_schema.OBJECT_FRAMES].reshape(len(object_ids), len(frames)) > 0
        if len(object_ids) and not listed.any(axis=1).all():
            raise ValueError(f"video {video}: an object has no listed frame")
        yield EvalVideo(
            name=video,
            frame_names=[n.decode() for n in ex[record_schema.FRAME_NAMES]],
            frames=frames,
            annotations=ids,
            annotated=annotated,
            object_ids=object_ids,
            categories=[c.decode() for c in ex[record_schema.CATEGORIES]],
            first_frame=listed.argmax(axis=1).astype(np.int32),
            height=height,
            width=width,
        )
