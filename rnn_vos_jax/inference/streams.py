"""Live frame sources for `segment --video=...`, beside the files and folders of video_io:

    -                 YUV4MPEG2 on standard input (`ffmpeg ... -f yuv4mpegpipe - | segment
                      --video=- ...`), or a named pipe (FIFO) carrying one
    rtsp://... http://... (any URL but a store's)
                      a network stream OpenCV (its FFmpeg) opens; gs://, s3://, ... name a
                      video file or frame folder in a bucket (video_io, runtime.storage)
    0, 1, ...         a camera, by OpenCV's index

    source = streams.open_source("-")   # or a file / folder (video_io.open_frames) / URL / camera
    source.live, source.size, source.fps
    for frame in source.frames(): ...   # uint8[H, W, 3] RGB in arrival order, one at a time

A live source is read once, as its frames arrive: frames are named 00000, 00001, ... in arrival
order and their number is unknown (num_frames None). The first frame (or the stream header) is
read when the source is opened, so that the masks can be checked against its size before any
work starts. End of stream ends `frames()`; a YUV4MPEG2 stream that breaks inside a frame raises
a ValueError naming it (y4m). OpenCV does not tell a broken connection from the end of a
stream: for URLs and cameras both end the frames.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterator

import cv2
import numpy as np

from rnn_vos_jax.inference import video_io, y4m
from rnn_vos_jax.runtime import storage

STDIN = "-"
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class _Live:
    """What live sources share: frames named %05d in arrival order, no known length."""

    live = True
    num_frames = None
    frame_names = None

    @staticmethod
    def name(index: int) -> str:
        return f"{index:05d}"

    @staticmethod
    def index_of(stem: str) -> int | None:
        """The frame index a mask file stem names ('00012' or '12'), or None."""
        return int(stem) if stem.isdigit() else None


class Y4MStream(_Live):
    """YUV4MPEG2 frames from a binary stream: standard input or a named pipe.

    Args:
      spec: '-' (standard input) or the path of a named pipe.
      stream: the binary stream to read instead (tests; default: by `spec`).
    """

    def __init__(self, spec: str = STDIN, stream=None):
        self.path = "stdin" if spec == STDIN else spec
        if stream is None:
            stream = sys.stdin.buffer if spec == STDIN else open(spec, "rb")  # noqa: SIM115
        self._reader = y4m.Reader(stream, self.path)
        self.size = self._reader.size
        self.fps = self._reader.fps or video_io.DEFAULT_FPS

    def frames(self) -> Iterator[np.ndarray]:
        return self._reader.frames()


class CaptureStream(_Live):
    """Frames of a network stream (URL) or camera (index) read with OpenCV.

    Raises:
      ValueError: naming the source when OpenCV cannot open it or reads no first frame.
    """

    def __init__(self, spec: str):
        self.path = f"camera {spec}" if spec.isdigit() else spec
        self._capture = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        if not self._capture.isOpened():
            self._capture.release()
            raise ValueError(
                f"cannot open {self.path}: OpenCV (its FFmpeg backend) cannot read it; check the "
                "address or camera, or pipe it through ffmpeg into --video=- "
                "(ffmpeg -i SOURCE -f yuv4mpegpipe -)"
            )
        ok, frame = self._capture.read()
        if not ok or frame is None:
            self._capture.release()
            raise ValueError(f"{self.path} opened but gave no frame")
        self._first = frame
        self.size = tuple(int(s) for s in frame.shape[:2])
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else video_io.DEFAULT_FPS

    def frames(self) -> Iterator[np.ndarray]:
        """Yields the frames as they arrive (once: a live source cannot be rewound)."""
        first, self._first = self._first, None
        try:
            if first is not None:
                yield from video_io.rgb_frames(self._capture, first, 0, self.size, self.path)
        finally:
            self._capture.release()


def open_source(spec: str):
    """The frame source `spec` names: '-', a URL, a named pipe, a camera number, or a video file
    or frame folder (video_io.open_frames; those are not live)."""
    if spec == STDIN:
        return Y4MStream(STDIN)
    if URL.match(spec) and not storage.is_storage_url(spec):  # gs://...: a file in a bucket
        return CaptureStream(spec)
    if os.path.exists(spec) and stat.S_ISFIFO(os.stat(spec).st_mode):
        return Y4MStream(spec)
    if spec.isdigit() and not os.path.exists(spec):
        return CaptureStream(spec)
    return video_io.open_frames(spec)
