"""TFRecord schema of converted VOS datasets: one `tf.train.Example` per video (no TensorFlow here).

Written by `data_prep/convert.py`; parsed by `rnn_vos_jax/data/pipeline.py` (training clips),
`data/eval_records.py` (evaluation videos) and `data/record_files.py` (sample counts). For a
video with N frames and K objects the example holds:

  VIDEO          bytes        video name
  HEIGHT, WIDTH  int64        original frame size in pixels
  FRAME_NAMES    bytes[N]     frame names without extension, sorted (e.g. b"00000", b"00005")
  JPEG           bytes[N]     the JPEG files' bytes, unchanged
  PNG            bytes[N]     annotation PNG bytes; b"" where the frame has no annotation. Unchanged
                              when the file's pixel values are the object ids (YouTube-VOS, DAVIS
                              2017); re-encoded as a palette PNG of ids otherwise (DAVIS 2016 0/255)
  OBJECT_IDS     int64[K]     object ids as they appear in the PNGs, ascending
  CATEGORIES     bytes[K]     category names; b"" when unknown (DAVIS)
  OBJECT_FRAMES  int64[K*N]   row-major 0/1 matrix: 1 where frame n is listed for object k (meta.json
                              `frames`: frames where the object is annotated / visible)

Shards are `<split>-<i:05d>-of-<n:05d>.tfrecord` beside `dataset_info.json` (DATASET_INFO).
"""

VIDEO = "video"
HEIGHT = "height"
WIDTH = "width"
FRAME_NAMES = "frame_names"
JPEG = "jpeg"
PNG = "png"
OBJECT_IDS = "object_ids"
CATEGORIES = "categories"
OBJECT_FRAMES = "object_frames"

# name -> (dtype, is_scalar); dtype is "bytes" or "int64". Lists have variable length.
FEATURES = {
    VIDEO: ("bytes", True),
    HEIGHT: ("int64", True),
    WIDTH: ("int64", True),
    FRAME_NAMES: ("bytes", False),
    JPEG: ("bytes", False),
    PNG: ("bytes", False),
    OBJECT_IDS: ("int64", False),
    CATEGORIES: ("bytes", False),
    OBJECT_FRAMES: ("int64", False),
}

DATASET_INFO = "dataset_info.json"
SHARD_SUFFIX = ".tfrecord"


def shard_name(split: str, index: int, num_shards: int) -> str:
    """File name of shard `index` (0-based) of `num_shards` for `split`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def tf_feature_spec(tf) -> dict:
    """Feature spec for `tf.io.parse_single_example`, built from the `tf` module passed in.

    Taking the module as an argument keeps this file free of a TensorFlow import.

    Args:
      tf: the `tensorflow` module.

    Returns:
      dict name -> `tf.io.FixedLenFeature` (scalars) or `tf.io.FixedLenSequenceFeature`
      (variable-length lists, parsed dense).
    """
    dtypes = {"bytes": tf.string, "int64": tf.int64}
    spec = {}
    for name, (dtype, scalar) in FEATURES.items():
        if scalar:
            spec[name] = tf.io.FixedLenFeature([], dtypes[dtype])
        else:
            spec[name] = tf.io.FixedLenSequenceFeature([], dtypes[dtype], allow_missing=True)
    return spec
