"""Serializes VideoRecords as tf.train.Example and writes TFRecord shards atomically."""

import tensorflow as tf

from rnn_vos_jax.data import record_io
from rnn_vos_jax.data import record_schema as rs
from rnn_vos_jax.data.conversion.video_record import VideoRecord


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def serialize(record: VideoRecord) -> bytes:
    """One video's tf.train.Example bytes (schema in rnn_vos_jax/data/record_schema.py).

    Serialized deterministically (sorted map keys) so equal records give equal bytes.
    """
    features = {
        rs.VIDEO: _bytes([record.name.encode()]),
        rs.HEIGHT: _ints([record.height]),
        rs.WIDTH: _ints([record.width]),
        rs.FRAME_NAMES: _bytes([f.encode() for f in record.frame_names]),
        rs.JPEG: _bytes(record.jpeg),
        rs.PNG: _bytes(record.png),
        rs.OBJECT_IDS: _ints(record.object_ids),
        rs.CATEGORIES: _bytes([c.encode() for c in record.categories]),
        rs.OBJECT_FRAMES: _ints(record.object_frames.reshape(-1)),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def write_shard(path: str, examples) -> dict:
    """Writes serialized examples to `path` (local or gs://) atomically (record_io.write_records).

    A crash leaves either no file at `path` or the complete one, never a partial shard.

    Args:
      path: final shard path.
      examples: iterable of serialized tf.train.Example bytes.

    Returns:
      {"records", "bytes", "sha256"} of the written file (dataset_info.json's shard fields).
    """
    return record_io.write_records(path, examples)
