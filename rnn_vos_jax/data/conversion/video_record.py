"""Loads one raw video, validates it strictly and gathers the fields of its TFRecord example.

Every problem raises BadInputError (a ValueError) naming the offending file or meta.json key.
"""

import collections
import dataclasses
import io

import numpy as np
from PIL import Image

from rnn_vos_jax.data import annotations, vos_reader
from rnn_vos_jax.runtime import storage

# YouTube-VOS splits whose Annotations hold PNGs only where an object first appears.
SPARSE_SPLITS = ("valid", "test", "test-dev")


class BadInputError(ValueError):
    """A raw dataset file or meta.json entry is missing, unreadable or inconsistent."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """Fields of one video's example (see rnn_vos_jax/data/record_schema.py).

    jpeg[n] / png[n]: file bytes of frame n (png b'' when not annotated); object_frames:
    int64[K, N] 0/1.
    """

    name: str
    height: int
    width: int
    frame_names: list[str]
    jpeg: list[bytes]
    png: list[bytes]
    object_ids: list[int]
    categories: list[str]
    object_frames: np.ndarray

    def category_counts(self) -> collections.Counter:
        """Objects per known category (unknown '' categories, as in DAVIS, are not counted)."""
        return collections.Counter(c for c in self.categories if c)


def is_dense(reader: vos_reader.VOSReader) -> bool:
    """Whether every frame listed for an object must have a PNG (train-style annotations)."""
    return not (reader.layout == vos_reader.YOUTUBE_VOS and reader.split in SPARSE_SPLITS)


def _read(path: str) -> bytes:
    try:
        return storage.read_bytes(path)
    except OSError as error:
        raise BadInputError(f"cannot read {path}: {error}") from error


def _check_jpeg(data: bytes, path: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                raise BadInputError(f"{path} is a {image.format} file, not a JPEG")
            image.load()  # decodes fully: truncated or corrupt files fail here
            return image.size
    except Image.UnidentifiedImageError as error:
        raise BadInputError(f"unreadable JPEG {path}: not an image file") from error
    except (OSError, SyntaxError) as error:
        raise BadInputError(f"unreadable JPEG {path}: {error}") from error


def _annotation(data: bytes, path: str, binary: bool) -> tuple[np.ndarray, bool]:
    """Decoded ids and whether the file's raw pixel values already equal them."""
    try:
        ids = annotations.decode(data, binary=binary, name=path)
        with Image.open(io.BytesIO(data)) as image:
            raw_ok = image.format == "PNG" and image.mode in ("P", "L")
            raw_ok = raw_ok and np.array_equal(np.array(image), ids)
    except (ValueError, OSError, SyntaxError) as error:
        raise BadInputError(f"unreadable annotation {path}: {error}") from error
    return ids, raw_ok


def load_video(reader: vos_reader.VOSReader, name: str, dense: bool | None = None) -> VideoRecord:
    """Reads and validates a video of `reader`.

    Checks: every JPEG decodes and has the first frame's size; every PNG decodes, has that size,
    belongs to a JPEG frame and holds only known object ids; every frame listed for an object
    exists; each object's first listed frame has a PNG containing the object; with `dense`, every
    listed frame has a PNG.

    Args:
      reader: the raw folder.
      name: video name.
      dense: require PNGs on all listed frames; None = from the layout and split (is_dense).

    Returns:
      VideoRecord with the JPEG bytes unchanged and PNG bytes unchanged unless the file's values
      are not the ids (DAVIS 2016 0/255, RGB masks): those are re-encoded as palette PNGs of ids.

    Raises:
      BadInputError: naming the offending file or meta.json key.
    """
    dense = is_dense(reader) if dense is None else dense
    try:
        info = reader.video(name)
    except (ValueError, OSError) as error:
        raise BadInputError(str(error)) from error
    size = (info.width, info.height)
    first_path = reader.frame_path(name, info.frames[0])
    jpegs = []
    for frame in info.frames:
        path = reader.frame_path(name, frame)
        jpegs.append(_read(path))
        frame_size = _check_jpeg(jpegs[-1], path)
        if frame_size != size:
            raise BadInputError(
                f"frame {path} is {frame_size[0]}x{frame_size[1]} but the video's first frame "
                f"{first_path} is {size[0]}x{size[1]} (WxH)"
            )
    frame_index = {frame: n for n, frame in enumerate(info.frames)}
    where = reader.meta_path or "the annotations"
    pngs, present = [b""] * len(info.frames), {}
    for frame in info.annotated:
        path = reader.annotation_path(name, frame)
        if frame not in frame_index:
            raise BadInputError(f"annotation {path} has no frame {reader.frame_path(name, frame)}")
        data = _read(path)
        ids, raw_ok = _annotation(data, path, reader.binary)
        if ids.shape != (info.height, info.width):
            raise BadInputError(
                f"annotation {path} is {ids.shape[1]}x{ids.shape[0]} but frame {first_path} is "
                f"{size[0]}x{size[1]} (WxH)"
            )
        found = set(np.unique(ids).tolist()) - {0}
        unknown = sorted(found - set(info.objects))
        if unknown:
            raise BadInputError(f"annotation {path} holds object ids {unknown} not in {where}")
        present[frame] = found
        pngs[frame_index[frame]] = data if raw_ok else annotations.encode(ids)
    if not info.objects:
        raise BadInputError(f"video {name} has no objects in {where}")
    object_frames = np.zeros((len(info.objects), len(info.frames)), np.int64)
    for k, obj in enumerate(info.objects.values()):
        key = f"{where} videos/{name}/objects/{obj.obj_id}"
        for frame in obj.frames:
            if frame not in frame_index:
                raise BadInputError(
                    f"{key} lists frame {frame} but {reader.frame_path(name, frame)} does not exist"
                )
            if frame not in present and (dense or frame == obj.frames[0]):
                raise BadInputError(
                    f"missing annotation {reader.annotation_path(name, frame)}: frame {frame} is "
                    f"listed for object {obj.obj_id} in {where}"
                )
            object_frames[k, frame_index[frame]] = 1
        first = obj.frames[0]
        if obj.obj_id not in present[first]:
            raise BadInputError(
                f"object {obj.obj_id} is absent from its first-frame annotation "
                f"{reader.annotation_path(name, first)}"
            )
    return VideoRecord(
        name=name,
        height=info.height,
        width=info.width,
        frame_names=list(info.frames),
        jpeg=jpegs,
        png=pngs,
        object_ids=list(info.objects),
        categories=[obj.category or "" for obj in info.objects.values()],
        object_frames=object_frames,
    )
