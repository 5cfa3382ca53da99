"""Your own videos in and out: frames read lazily from a video file or a frame folder, overlays out.

    source = video_io.open_frames("IN.mp4")          # or a folder of JPEG/PNG frames
    source.size, source.num_frames, source.frame_names
    for frame in source.frames(): ...                # uint8[H, W, 3] RGB, one at a time

    with video_io.OverlayWriter("DIR/overlay.mp4", "mp4", fps=24) as out:
        out.write(video_io.overlay(frame, ids))      # ids uint8[H, W] object ids

Frames are decoded one at a time, so memory does not grow with the video length.

Video files are read with OpenCV (FFmpeg): frame i is named `%05d` (00000, 00001, ...). Frame
folders hold `*.jpg`, `*.jpeg` or `*.png` (any case); frames are ordered by name with numbers
compared as numbers (frame2 before frame10) and named by their file name without extension. Every
frame's header is read when the folder is opened, so unreadable files and frames of another size
are reported before any work starts.

Overlays blend each object's DAVIS palette colour into the frame (alpha 0.5) and draw its contour
in that colour. mp4 is written with OpenCV's 'mp4v' codec, which needs even sizes: an odd height
or width is padded by repeating the last row or column. GIFs are written frame by frame (one
256-colour table per frame, no dithering; frame times below 20 ms, which viewers ignore, are
raised to 20 ms). Both are written under a temporary name and renamed when complete. No
TensorFlow here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import cv2
import numpy as np
from PIL import GifImagePlugin, Image

from rnn_vos_jax.data.annotations import PALETTE

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
OVERLAY_KINDS = ("mp4", "gif", "none")
DEFAULT_FPS = 24.0
ALPHA = 0.5  # weight of the palette colour inside a mask


def _natural_key(name: str) -> list:
    # frame2 < frame10: digit runs compare as numbers, the rest as text.
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    ]


class VideoFile:
    """Frames of a video file OpenCV can read (mp4, avi, mov, ...), named `%05d`.

    Attributes:
      path: the file.
      size: (H, W) of its frames.
      fps: its frame rate (DEFAULT_FPS when the file does not say).
      num_frames: the frame count the container reports (may be approximate; None if unknown).
      frame_names: None: the exact count is known only after reading (see `name`).

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming the file when it is empty, cannot be opened, or has no frames.
    """

    def __init__(self, path: str):
        self.path = path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"video not found: {path}")
        if os.path.getsize(path) == 0:
            raise ValueError(f"video {path} is empty (0 bytes)")
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
        capture = cv2.VideoCapture(self.path)
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

    def frames(self) -> Iterator[np.ndarray]:
        """Yields uint8[H, W, 3] RGB frames in order, decoding one at a time."""
        capture = self._open()
        try:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    return
                if frame.shape[:2] != self.size:
                    raise ValueError(
                        f"video {self.path}: frame {index} is {frame.shape[0]}x{frame.shape[1]}, "
                        f"the first frame {self.size[0]}x{self.size[1]}"
                    )
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
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

    Raises:
      FileNotFoundError: no such folder.
      ValueError: naming the file when the folder has no frames, two frames share a name, a frame
        is not a readable image, or frames differ in size.
    """

    def __init__(self, path: str):
        self.path = path
        if not os.path.isdir(path):
            raise FileNotFoundError(f"frame folder not found: {path}")
        names = [n for n in os.listdir(path) if n.lower().endswith(FRAME_EXTENSIONS)]
        if not names:
            raise ValueError(
                f"frame folder {path} is empty: no {'/'.join(FRAME_EXTENSIONS)} files in it"
            )
        names.sort(key=lambda n: _natural_key(os.path.splitext(n)[0]))
        self.files = [os.path.join(path, n) for n in names]
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
            with Image.open(file) as image:
                return image.size[1], image.size[0]
        except (OSError, SyntaxError) as error:
            raise ValueError(f"cannot read frame {file}: {error}") from None

    def name(self, index: int) -> str:
        return self.frame_names[index]

    def index_of(self, stem: str) -> int | None:
        return self._index.get(stem)

    def frames(self) -> Iterator[np.ndarray]:
        """Yields uint8[H, W, 3] RGB frames in order, decoding one at a time."""
        for file in self.files:
            try:
                with Image.open(file) as image:
                    frame = np.asarray(image.convert("RGB"))
            except (OSError, SyntaxError) as error:
                raise ValueError(f"cannot read frame {file}: {error}") from None
            if frame.shape[:2] != self.size:
                raise ValueError(f"frame {file} changed size while being read: {frame.shape[:2]}")
            yield frame


def open_frames(path: str) -> VideoFile | FrameFolder:
    """A folder of frames, or a video file OpenCV reads."""
    if os.path.isdir(path):
        return FrameFolder(path)
    return VideoFile(path)


def overlay(frame: np.ndarray, ids: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Draws object masks over a frame in their DAVIS palette colours.

    Args:
      frame: uint8[H, W, 3] RGB.
      ids: uint8[H, W] object ids (0 = background).
      alpha: weight of the palette colour inside a mask.

    Returns:
      uint8[H, W, 3]: (1 - alpha) * frame + alpha * colour inside each mask, the mask's contour
      (inner boundary, holes included) in its full colour, the frame unchanged elsewhere.
    """
    if frame.shape[:2] != ids.shape:
        raise ValueError(f"overlay: frame {frame.shape[:2]} and ids {ids.shape} differ in size")
    out = frame.astype(np.float32)
    inside = ids > 0
    out[inside] = (1.0 - alpha) * out[inside] + alpha * PALETTE[ids[inside]]
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    thickness = max(1, round(min(ids.shape) / 240))  # 2 pixels at 480p
    for obj in np.unique(ids[inside]):
        contours, _ = cv2.findContours(
            (ids == obj).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
        )
        colour = tuple(int(c) for c in PALETTE[obj])
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


class OverlayWriter:
    """Writes RGB frames to `path` as an mp4 ('mp4v') or an animated GIF, atomically.

    Frames go to a temporary file next to `path` that `close` renames to `path`; `abort` (or an
    exception inside a `with` block) removes it, so `path` only ever holds a complete overlay.

    Args:
      path: output file.
      kind: 'mp4' or 'gif'.
      fps: frames per second.
    """

    def __init__(self, path: str, kind: str, fps: float):
        if kind not in ("mp4", "gif"):
            raise ValueError(f"overlay kind must be mp4 or gif, got {kind!r}")
        self.path, self.kind, self.fps = path, kind, float(fps)
        stem, ext = os.path.splitext(path)
        self._tmp = f"{stem}.partial{ext}"  # keeps the extension: OpenCV picks the container by it
        self._writer = self._file = None
        self._size = None
        self.num_frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Appends one uint8[H, W, 3] RGB frame (all frames of one size)."""
        size = frame.shape[:2]
        if self._size is None:
            self._size = size
            self._start(size)
        elif size != self._size:
            raise ValueError(f"overlay frame {self.num_frames} is {size}, the first {self._size}")
        if self.kind == "mp4":
            h, w = size
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        else:
            im = Image.fromarray(frame).quantize(256, dither=Image.Dither.NONE)
            if self.num_frames == 0:
                info = {"loop": 0, "duration": self._duration_ms()}
                header, _ = GifImagePlugin.getheader(im.copy(), None, info)
                self._file.write(b"".join(header))
            chunks = GifImagePlugin.getdata(
                im, duration=self._duration_ms(), include_color_table=True
            )
            self._file.write(b"".join(chunks))
        self.num_frames += 1

    def _duration_ms(self) -> int:
        return max(20, round(1000.0 / self.fps))

    def _start(self, size) -> None:
        if self.kind == "mp4":
            h, w = size[0] + size[0] % 2, size[1] + size[1] % 2
            self._writer = cv2.VideoWriter(
                self._tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                raise OSError(f"cannot write {self._tmp}: OpenCV's mp4v encoder did not open")
        else:
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close/abort

    def close(self) -> str | None:
        """Finishes the file and renames it to `path`; returns `path` (None if no frame came)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._file is not None:
            self._file.write(b";")  # GIF trailer
            self._file.close()
            self._file = None
        if not self.num_frames:
            return None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drops the partial file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
