"""Your own videos in: frames read lazily from a video file or a frame folder (live sources:
streams; overlays out: overlay_video).

    source = video_io.open_frames("IN.mp4")          # or a folder of JPEG/PNG frames
    source.size, source.num_frames, source.frame_names
    for frame in source.frames(): ...                # uint8[H, W, 3] RGB, one at a time

Frames are decoded one at a time, so memory does not grow with the video length.

Video files are read with OpenCV (FFmpeg): frame i is named `%05d` (00000, 00001, ...). Frame
folders hold `*.jpg`, `*.jpeg` or `*.png` (any case); frames are ordered by name with numbers
compared as numbers (frame2 before frame10) and named by their file name without extension. Every
frame's header is read when the folder is opened, so unreadable files and frames of another size
are reported before any work starts.

Both may live in a bucket (`gs://...`, through runtime.storage): a video file is downloaded to a
temporary local copy for OpenCV (kept while the source lives), frames are read object by object.

No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import os
import re
import weakref
from collections.abc import Iterator

import cv2
import numpy as np
from PIL import Image

from rnn_vos_jax.runtime import storage

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_FPS = 24.0


def _natural_key(name: str) -> list:
    # frame2 < frame10: digit runs compare as numbers, the rest as text.
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    ]


def rgb_frames(capture, first, index: int, size, source: str) -> Iterator[np.ndarray]:
    """uint8[H, W, 3] RGB frames of an OpenCV capture: `first` (a BGR frame already read, or
    None), then each `capture.read()` until it fails; `index` numbers the first one.

    Raises:
      ValueError: naming `source` and the frame when one is not `size` (H, W).
    """
    frame = first if first is not None else _read(capture)
    while frame is not None:
        if frame.shape[:2] != tuple(size):
            raise ValueError(
                f"{source}: frame {index} ({index:05d}) is {frame.shape[0]}x{frame.shape[1]}, "
                f"the first frame {size[0]}x{size[1]}"
            )
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1
        frame = _read(capture)


def _read(capture) -> np.ndarray | None:
    ok, frame = capture.read()
    return frame if ok else None


class VideoFile:
    """Frames of a video file OpenCV can read (mp4, avi, mov, ...), named `%05d`.

    Attributes:
      path: the file.
      size: (H, W) of its frames.
      fps: its frame rate (DEFAULT_FPS when the file does not say).
      num_frames: the frame count the container reports (may be approximate; None if unknown).
      frame_names: None: the exact count is known only after reading (see `name`).
      live: False: it can be read again from its start (streams has the live sources).

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming the file when it is empty, cannot be opened, or has no frames.
    """

    live = False

    def __init__(self, path: str):
        self.path = path
        if not storage.isfile(path):
            raise FileNotFoundError(f"video not found: {path}")
        if storage.size(path) == 0:
            raise ValueError(f"video {path} is empty (0 bytes)")
        # OpenCV reads real files: a video in a bucket is read from a local copy, removed when
        # this source is garbage collected (or at exit).
        local = contextlib.ExitStack()
        self._local = local.enter_context(storage.local_file(path))
        weakref.finalize(self, local.close)
        capture = self._open()
        try:
            ok, frame = capture.read()
            if not ok or frame is None:
                raise ValueError(f"video {path} has no frames OpenCV can decode")
            self.size = tuple(int(s) for s in frame.shape[:2])
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.num_frames = count if count > 0 else None
        finally:
            capture.release()
        self.frame_names = None

    def _open(self):
        capture = cv2.VideoCapture(self._local)
        if not capture.isOpened():
            capture.release()
            raise ValueError(
                f"cannot read video {self.path}: OpenCV cannot open it (truncated, not a video, "
                "or a codec its FFmpeg lacks); a folder of JPEG/PNG frames also works"
            )
        return capture

    @staticmethod
    def name(index: int) -> str:
        """The name of frame `index`: '00012' for 12."""
        return f"{index:05d}"

    def index_of(self, stem: str) -> int | None:
        """The frame index a mask file stem names ('00012' or '12'), or None."""
        return int(stem) if stem.isdigit() else None

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Yields uint8[H, W, 3] RGB frames in order from frame `start`, decoding one at a time
        (the frames before `start` are demuxed, not decoded into images: a resumed run)."""
        capture = self._open()
        try:
            index = 0
            # grab() steps exactly one frame; seeking (CAP_PROP_POS_FRAMES) can land off by some.
            while index < start and capture.grab():
                index += 1
            yield from rgb_frames(capture, None, index, self.size, f"video {self.path}")
        finally:
            capture.release()


class FrameFolder:
    """Frames stored as JPEG/PNG files in one folder, named by their file names' stems.

    Attributes:
      path: the folder.
      files: the frame files in frame order.
      frame_names: their stems.
      size: (H, W) shared by all frames.
      fps: DEFAULT_FPS (a folder has no frame rate).
      num_frames: len(files).
      live: False.

    Raises:
      FileNotFoundError: no such folder.
      ValueError: naming the file when the folder has no frames, two frames share a name, a frame
        is not a readable image, or frames differ in size.
    """

    live = False

    def __init__(self, path: str):
        self.path = path
        if not storage.isdir(path):
            raise FileNotFoundError(f"frame folder not found: {path}")
        names = [n for n in storage.listdir(path) if n.lower().endswith(FRAME_EXTENSIONS)]
        if not names:
            raise ValueError(
                f"frame folder {path} is empty: no {'/'.join(FRAME_EXTENSIONS)} files in it"
            )
        names.sort(key=lambda n: _natural_key(os.path.splitext(n)[0]))
        self.files = [storage.join(path, n) for n in names]
        self.frame_names = [os.path.splitext(n)[0] for n in names]
        seen = {}
        for name, file in zip(self.frame_names, names):
            if name in seen:
                raise ValueError(
                    f"frame folder {path}: {seen[name]} and {file} name the same frame"
                )
            seen[name] = file
        self._index = {name: i for i, name in enumerate(self.frame_names)}
        self.size = None
        for file in self.files:  # headers only: cheap, and every bad file is found up front
            size = self._size_of(file)
            if self.size is None:
                self.size = size
            elif size != self.size:
                raise ValueError(
                    f"frame {file} is {size[0]}x{size[1]} (height x width) but the first frame "
                    f"{self.files[0]} is {self.size[0]}x{self.size[1]}"
                )
        self.fps = DEFAULT_FPS
        self.num_frames = len(self.files)

    @staticmethod
    def _size_of(file: str) -> tuple[int, int]:
        try:
            with _open_image(file) as image:
                return image.size[1], image.size[0]
        except (OSError, SyntaxError) as error:
            raise ValueError(f"cannot read frame {file}: {error}") from None

    def name(self, index: int) -> str:
        return self.frame_names[index]

    def index_of(self, stem: str) -> int | None:
        return self._index.get(stem)

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Yields uint8[H, W, 3] RGB frames in order from frame `start`, decoding one at a time."""
        for file in self.files[start:]:
            try:
                with _open_image(file) as image:
                    frame = np.asarray(image.convert("RGB"))
            except (OSError, SyntaxError) as error:
                raise ValueError(f"cannot read frame {file}: {error}") from None
            if frame.shape[:2] != self.size:
                raise ValueError(f"frame {file} changed size while being read: {frame.shape[:2]}")
            yield frame


@contextlib.contextmanager
def _open_image(file: str) -> Iterator[Image.Image]:
    """PIL's image of a local file, or of an object read through storage (headers first: PIL
    reads the pixels only when asked)."""
    if not storage.is_remote(file):
        with Image.open(file) as image:
            yield image
        return
    with storage.open(file, "rb") as f, Image.open(f) as image:
        yield image


def open_frames(path: str) -> VideoFile | FrameFolder:
    """A folder of frames, or a video file OpenCV reads (either local or in a bucket)."""
    if storage.isdir(path):
        return FrameFolder(path)
    return VideoFile(path)
