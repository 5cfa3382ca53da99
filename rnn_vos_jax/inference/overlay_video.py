"""Overlay videos out: the masks drawn over the frames (`overlay`), written as H.264 mp4 files
that play in browsers, notebooks and players, or as GIFs (`OverlayWriter`).

    with overlay_video.OverlayWriter("DIR/overlay.mp4", "mp4", fps=24) as out:
        out.write(overlay_video.overlay(frame, ids))  # ids uint8[H, W] -> uint8[H, W, 3] RGB

Drawing: each object's DAVIS palette colour blended into the frame (alpha 0.5) and its contour in
that colour.

mp4: H.264 (High profile, yuv420p, CRF 18) in an MP4 container with its index at the front
(faststart, so a browser starts playing before the whole file arrived), written with PyAV
(the `av` package), whose wheels ship FFmpeg with libx264: nothing to install beside pip, and
the codec every browser and notebook plays (OpenCV's wheels write only MPEG-4 part 2, 'mp4v',
which they do not). yuv420p needs even sizes: an odd height or width is padded by repeating the
last row or column. The RGB -> YUV conversion is BT.601, limited range, and the file says so,
so players convert it back with the same matrix. The same frames give the same file, byte for
byte (ENCODER_OPTIONS says what that takes).

GIF: frame by frame (one 256-colour table per frame, no dithering; frame times below 20 ms,
which viewers ignore, are raised to 20 ms).

Both are written under a temporary name (overlay.partial.mp4) and renamed when complete, so the
final name only ever holds a whole overlay; `finish_partial` closes the temporary file without
renaming it (a stopped live run keeps its overlay so far, `read_frames` reads it back). An
overlay in a bucket (`gs://...`) is encoded into a local temporary file (FFmpeg writes real files)
uploaded as one object when complete (runtime.storage).
"""

from __future__ import annotations

import fractions
import os
import shutil
import tempfile
from collections.abc import Iterator

import av
import cv2
import numpy as np
from PIL import GifImagePlugin, Image

from rnn_vos_jax.data.annotations import PALETTE
from rnn_vos_jax.runtime import storage

KINDS = ("mp4", "gif")
CHOICES = (*KINDS, "none")  # what `segment --overlay` takes
ALPHA = 0.5  # weight of the palette colour inside a mask
CODEC = "libx264"
# mbtree off: libx264's macroblock-tree rate control reads uninitialised stack memory (valgrind,
# libx264 165 of PyAV's wheels), so the same frames encoded to different bytes from run to run,
# and a resumed segment run's overlay differed from an uninterrupted one's. Without it the
# encoder is deterministic; files are a few per cent larger at the same CRF.
ENCODER_OPTIONS = {"crf": "18", "preset": "medium", "profile": "high", "x264-params": "mbtree=0"}
BT601 = 6  # AVCOL_SPC/PRI/TRC_SMPTE170M: BT.601 (525 lines), what swscale converts RGB with
LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


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


def partial_path(path: str) -> str:
    """Where an overlay is written until it is complete: overlay.partial.mp4 beside overlay.mp4."""
    stem, ext = os.path.splitext(str(path))
    return f"{stem}.partial{ext}"


class OverlayWriter:
    """Writes RGB frames to `path` as an H.264 mp4 or an animated GIF, atomically.

    Frames go to `partial_path(path)` that `close` renames to `path`; `abort` (or an exception
    inside a `with` block) removes it, so `path` only ever holds a complete overlay. For a URL
    `path` the partial file is a local temporary one that `close` uploads to `path`.

    Args:
      path: output file (local or a URL).
      kind: 'mp4' or 'gif'.
      fps: frames per second.
    """

    def __init__(self, path: str, kind: str, fps: float):
        if kind not in KINDS:
            raise ValueError(f"overlay kind must be mp4 or gif, got {kind!r}")
        self.path, self.kind, self.fps = path, kind, float(fps)
        self._local_dir = None
        if storage.is_remote(path):
            self._local_dir = tempfile.mkdtemp(prefix="rnn_vos_jax_overlay_")
            self._tmp = os.path.join(self._local_dir, os.path.basename(partial_path(path)))
        else:
            self._tmp = partial_path(path)
        self._container = self._stream = self._file = None
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
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = self.num_frames
            for packet in self._stream.encode(picture):
                self._container.mux(packet)
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
        if self.kind == "gif":
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close/abort
            return
        try:
            self._container = av.open(
                self._tmp, "w", format="mp4", options={"movflags": "+faststart"}
            )
            rate = fractions.Fraction(self.fps).limit_denominator(1001)
            stream = self._container.add_stream(CODEC, rate=rate, options=dict(ENCODER_OPTIONS))
        except (av.FFmpegError, ValueError) as error:
            raise OSError(f"cannot write {self._tmp}: {CODEC} did not open: {error}") from None
        stream.width, stream.height = size[1] + size[1] % 2, size[0] + size[0] % 2
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = BT601
        context.color_range = LIMITED_RANGE
        self._stream = stream

    def _finish(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode(None):  # flush the encoder's delayed frames
                self._container.mux(packet)
            self._container.close()
            self._container = self._stream = None
        if self._file is not None:
            self._file.write(b";")  # GIF trailer
            self._file.close()
            self._file = None

    def close(self) -> str | None:
        """Finishes the file and renames it to `path`; returns `path` (None if no frame came)."""
        self._finish()
        if not self.num_frames:
            self._drop_local()
            return None
        if self._local_dir is None:
            storage.rename(self._tmp, self.path)
        else:
            storage.copy(self._tmp, self.path)  # one object upload: whole or absent
            self._drop_local()
        return self.path

    def finish_partial(self) -> str | None:
        """Finishes the file under its temporary name (a stopped run's overlay so far); for a
        URL `path` it is uploaded to `partial_path(path)`."""
        self._finish()
        if not self.num_frames:
            self._drop_local()
            return None
        if self._local_dir is None:
            return self._tmp
        partial = partial_path(self.path)
        storage.copy(self._tmp, partial)
        self._drop_local()
        return partial

    def _drop_local(self) -> None:
        if self._local_dir is not None:
            shutil.rmtree(self._local_dir, ignore_errors=True)

    def abort(self) -> None:
        """Drops the partial file."""
        if self._container is not None:
            self._container.close()
            self._container = self._stream = None
        if self._file is not None:
            self._file.close()
            self._file = None
        storage.remove(self._tmp)
        self._drop_local()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def read_frames(path: str, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The uint8[H, W, 3] RGB frames of an overlay file (mp4 or GIF), cropped to `size` (the
    padding of odd sizes removed); a URL is read from a local copy. Raises av.FFmpegError /
    OSError when it is unreadable."""
    h, w = size
    with storage.local_file(path) as local:
        if path.endswith(".gif"):
            with Image.open(local) as gif:
                for i in range(gif.n_frames):
                    gif.seek(i)
                    yield np.asarray(gif.convert("RGB"))[:h, :w]
            return
        with av.open(local) as container:
            for picture in container.decode(video=0):
                yield picture.to_ndarray(format="rgb24")[:h, :w]
