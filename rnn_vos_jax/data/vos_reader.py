"""Reader for raw VOS folders: YouTube-VOS 2018/2019 (train, valid) and DAVIS 2016/2017.

No TensorFlow here: evaluation on raw folders and data_prep both use it. Files go through
runtime.storage, so a raw set in a bucket (gs://...) reads (and converts) as a local one.

Layouts:
  YouTube-VOS split folder ROOT (e.g. .../train or .../valid):
    ROOT/JPEGImages/VIDEO/FRAME.jpg, ROOT/Annotations/VIDEO/FRAME.png (palette PNGs of object ids),
    ROOT/meta.json {"videos": {VIDEO: {"objects": {"1": {"category": str, "frames": [FRAME...]}}}}}.
    In train every listed frame has a PNG; in valid only frames where an object first appears do.
    Without meta.json, objects and their frames come from the PNGs.
  DAVIS root ROOT: ROOT/JPEGImages/480p/VIDEO/*.jpg, ROOT/Annotations/480p/VIDEO/*.png,
    ROOT/ImageSets/<year>/<set>.txt (one video name per line). Objects and their frames come from
    the PNGs. DAVIS 2016 is single-object: every nonzero pixel is object 1 (its PNGs are 0/255).
"""

import dataclasses
import io
import os

import numpy as np
from PIL import Image

from rnn_vos_jax.data import annotations, meta
from rnn_vos_jax.data.meta import ObjectInfo
from rnn_vos_jax.runtime import storage

YOUTUBE_VOS = "youtube_vos"
DAVIS = "davis"


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """One video: all JPEG frame names (sorted), frames that have a PNG, objects by id, size."""

    name: str
    frames: list[str]
    annotated: list[str]
    objects: dict[int, ObjectInfo]
    height: int
    width: int


def stems(folder: str, extension: str) -> list[str]:
    """Sorted names without `extension` of the files in `folder` ending with it ([] if none)."""
    if not storage.isdir(folder):
        return []
    return sorted(f[: -len(extension)] for f in storage.listdir(folder) if f.endswith(extension))


class VOSReader:
    """Uniform access to a YouTube-VOS split folder or a DAVIS root (layout detected).

    Attributes:
      root: the folder given.
      layout: 'youtube_vos' or 'davis'.
      split: 'train' / 'valid' / ... (YouTube-VOS: the folder name; DAVIS: davis_set).
      year: DAVIS year ('2016' or '2017'), None for YouTube-VOS.
    """

    def __init__(self, root: str, davis_set: str = "val", year: str | int | None = None):
        self.root = os.fspath(root)
        if not storage.isdir(self.root):
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self._cache = {}
        self._meta = None
        self.meta_path = None
        self.year = None
        if storage.isdir(storage.join(self.root, "JPEGImages", "480p")):
            self.layout = DAVIS
            self.split = davis_set
            self._subdir = "480p"
            self.year = self._davis_year(year, davis_set)
            self._names = self._davis_names(davis_set)
        elif storage.isdir(storage.join(self.root, "JPEGImages")):
            self.layout = YOUTUBE_VOS
            self.split = storage.basename(
                self.root
                if storage.is_remote(self.root)
                else os.path.normpath(storage.absolute(self.root))
            )
            self._subdir = ""
            meta_path = storage.join(self.root, "meta.json")
            if storage.exists(meta_path):
                self.meta_path = meta_path
                self._meta = meta.read(meta_path)
            jpeg_root = storage.join(self.root, "JPEGImages")
            names = {
                d for d in storage.listdir(jpeg_root) if storage.isdir(storage.join(jpeg_root, d))
            }
            self._names = sorted(names | set(self._meta or {}))
        else:
            raise FileNotFoundError(
                f"{self.root}: no JPEGImages folder; expected a YouTube-VOS split folder "
                "(JPEGImages/, Annotations/, meta.json) or a DAVIS root (JPEGImages/480p)"
            )

    def _davis_year(self, year, davis_set: str) -> str:
        sets = storage.join(self.root, "ImageSets")
        if year is not None:
            return str(year)
        for candidate in ("2017", "2016"):
            if storage.exists(storage.join(sets, candidate, f"{davis_set}.txt")):
                return candidate
        raise FileNotFoundError(f"no ImageSets/2017/{davis_set}.txt or ImageSets/2016/ in {sets}")

    def _davis_names(self, davis_set: str) -> list[str]:
        path = storage.join(self.root, "ImageSets", self.year, f"{davis_set}.txt")
        if not storage.exists(path):
            raise FileNotFoundError(f"DAVIS image set file not found: {path}")
        names = set()
        with storage.open(path) as f:
            for line in f:
                token = line.split()[0] if line.split() else ""
                if "/" in token:  # DAVIS 2016 style: '/JPEGImages/480p/VIDEO/00000.jpg ...'
                    token = token.strip("/").split("/")[-2]
                if token:
                    names.add(token)
        return sorted(names)

    def video_names(self) -> list[str]:
        """Sorted video names (YouTube-VOS: JPEGImages folders and meta.json entries)."""
        return list(self._names)

    def frame_path(self, name: str, frame: str) -> str:
        return storage.join(self.root, "JPEGImages", self._subdir, name, frame + ".jpg")

    def annotation_path(self, name: str, frame: str) -> str:
        return storage.join(self.root, "Annotations", self._subdir, name, frame + ".png")

    @property
    def binary(self) -> bool:
        """Whether annotations are read single-object (DAVIS 2016: nonzero -> 1)."""
        return self.layout == DAVIS and self.year == "2016"

    def video(self, name: str) -> VideoInfo:
        """Frames, annotated frames, objects and size of a video (cached).

        Raises:
          FileNotFoundError: the video's JPEG folder is missing or empty.
          ValueError: meta.json has no or a malformed entry for the video (key named).
        """
        if name not in self._cache:
            self._cache[name] = self._load_video(name)
        return self._cache[name]

    def _load_video(self, name: str) -> VideoInfo:
        jpeg_dir = storage.dirname(self.frame_path(name, "x"))
        frames = stems(jpeg_dir, ".jpg")
        if not frames:
            raise FileNotFoundError(f"video {name}: no JPEG frames in {jpeg_dir}")
        annotated = stems(storage.dirname(self.annotation_path(name, "x")), ".png")
        first = self.frame_path(name, frames[0])
        try:
            with Image.open(io.BytesIO(storage.read_bytes(first))) as image:
                width, height = image.size
        except OSError as error:
            raise ValueError(f"cannot read frame {first}: {error}") from error
        if self._meta is not None:
            objects = self._meta_objects(name)
        else:
            objects = self._annotation_objects(name, annotated)
        return VideoInfo(name, frames, annotated, objects, height, width)

    def _meta_objects(self, name: str) -> dict[int, ObjectInfo]:
        objects = self._meta.get(name)
        if objects is None:
            raise ValueError(
                f"{self.meta_path} videos/{name}: missing video entry or its 'objects' dict"
            )
        return objects

    def _annotation_objects(self, name: str, annotated: list[str]) -> dict[int, ObjectInfo]:
        frames_of = {}
        for frame in annotated:
            ids = np.unique(self.read_annotation(name, frame))
            for obj_id in ids[ids > 0].tolist():
                frames_of.setdefault(obj_id, []).append(frame)
        return {k: ObjectInfo(k, None, frames_of[k]) for k in sorted(frames_of)}

    def read_frame(self, name: str, frame: str) -> np.ndarray:
        """Decoded JPEG frame as uint8[H, W, 3]."""
        path = self.frame_path(name, frame)
        if not storage.exists(path):
            raise FileNotFoundError(f"frame not found: {path}")
        try:
            with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
                return np.array(image.convert("RGB"))
        except OSError as error:
            raise ValueError(f"cannot read frame {path}: {error}") from error

    def read_annotation(self, name: str, frame: str) -> np.ndarray:
        """Annotation of a frame as uint8[H, W] object ids (0 = background; `annotations.decode`)."""
        return annotations.decode(self.annotation_path(name, frame), binary=self.binary)
