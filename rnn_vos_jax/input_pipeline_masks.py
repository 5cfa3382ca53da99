"""Host-side pieces of the input pipeline wrapped as TF ops: annotation decoding and distances.

Annotations are palette PNGs whose pixel values are object ids; `tf.io.decode_png` expands
palettes to RGB, so they are decoded with PIL (which returns the indices) in `tf.numpy_function`.
Border-distance classes come from `rnn_vos_jax.distance` (exact EDT, OpenCV) the same way: about
1 ms per 256x448 frame, cheap next to JPEG decoding.
"""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from rnn_vos_jax import distance


def decode_ids(png: bytes, height: int, width: int, where: str = "") -> np.ndarray:
    """Decodes one annotation PNG to object ids.

    Args:
        png: PNG file bytes (palette, grey or 0/255); b'' means no annotation (all zeros).
        height, width: expected size.
        where: name of the video/frame for error messages.

    Returns:
        uint8[height, width] ids.
    """
    if not png:
        return np.zeros((height, width), np.uint8)
    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except Exception as err:  # PIL raises several types for corrupt data
        raise ValueError(f"cannot decode annotation PNG of {where}: {err}") from err
    if image.mode not in ("P", "L"):
        raise ValueError(f"annotation PNG of {where} has mode {image.mode}, expected P or L ids")
    ids = np.asarray(image, dtype=np.uint8)
    if ids.shape != (height, width):
        raise ValueError(f"annotation PNG of {where} is {ids.shape}, frames are {(height, width)}")
    return ids


def decode_object_masks(pngs, object_id, orig_hw, video):
    """Binary masks of one object, uint8[N, H0, W0, 1] (1 where the id equals object_id).

    Args:
        pngs: string[N] annotation PNG bytes.
        object_id: int64 scalar.
        orig_hw: (H0, W0) int64 scalars.
        video: string scalar (for error messages).
    """

    def fn(pngs, object_id, height, width, video):
        name = video.decode(errors="replace")
        out = np.empty((len(pngs), height, width, 1), np.uint8)
        for i, png in enumerate(pngs):
            if not png:
                raise ValueError(f"video {name}: a frame listed for object {object_id} has no PNG")
            out[i, ..., 0] = decode_ids(png, height, width, f"video {name}") == object_id
        return out

    masks = tf.numpy_function(
        fn, [pngs, object_id, orig_hw[0], orig_hw[1], video], tf.uint8, stateful=False
    )
    return tf.reshape(masks, [tf.size(pngs), orig_hw[0], orig_hw[1], 1])


def distance_tf(masks, border: int, bin_size: int):
    """Border-distance classes of masks [N, H, W, 1] (any dtype, nonzero = object): int32[N, H, W]."""

    def fn(m):
        return distance.distance_classes_batch(m, border, bin_size)

    out = tf.numpy_function(fn, [masks], tf.int32, stateful=False)
    return tf.reshape(out, tf.shape(masks)[:3])


def decode_all_ids(pngs, height: int, width: int, video: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids of every frame of a video: (uint8[N, H, W] with 0 where no PNG, bool[N] annotated)."""
    ids = np.stack([decode_ids(p, height, width, f"video {video}") for p in pngs])
    return ids, np.array([bool(p) for p in pngs])
