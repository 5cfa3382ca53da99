"""YUV4MPEG2 (.y4m) streams in: the raw frames `ffmpeg ... -f yuv4mpegpipe -` writes, so any
camera, screen or network source ffmpeg opens can be piped into `segment --video=-`.

    reader = y4m.Reader(sys.stdin.buffer, "stdin")   # reads the stream header
    reader.size, reader.fps
    for frame in reader.frames(): ...                # uint8[H, W, 3] RGB, one at a time

The stream: one header line `YUV4MPEG2 W<width> H<height> F<num>:<den> [I.] [A.] [C<space>]
[X<key>=<value> ...]`, then per frame a line `FRAME[ params]` and the planes Y, U, V (8 bits;
C420jpeg, C420paldv, C420mpeg2 and C420 are 4:2:0 with chroma planes of ceil(W/2) x ceil(H/2),
C422 4:2:2, C444 4:4:4, C444alpha adds an alpha plane (ignored), Cmono has Y only; no C: 4:2:0).
Higher bit depths (C420p10, ...) are refused with the ffmpeg option that avoids them.

Colour: YUV4MPEG2 carries no matrix, so BT.601 is assumed (what ffmpeg's RGB -> yuv420p
conversion uses when nothing else is said), in limited (TV, Y 16..235) range unless the header
says XCOLORRANGE=FULL. Chroma is upsampled by repetition (each 2x2 block shares one U, V). The
arithmetic is float32, rounded to the nearest integer.

A stream that ends between frames ends normally; one that ends inside a frame's header or
planes raises a ValueError naming the frame (index and bytes received), after the frames before
it were handed out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

MAGIC = b"YUV4MPEG2"
MAX_LINE = 4096  # a header or FRAME line longer than this is not YUV4MPEG2
# Chroma subsampling (vertical, horizontal) by colour space; None: no chroma planes.
CHROMA = {
    "420jpeg": (2, 2),
    "420paldv": (2, 2),
    "420mpeg2": (2, 2),
    "420": (2, 2),
    "422": (1, 2),
    "444": (1, 1),
    "444alpha": (1, 1),
    "mono": None,
}
# BT.601: R = Y' + 1.402 V', G = Y' - 0.344136 U' - 0.714136 V', B = Y' + 1.772 U' (full range).
KR, KB = 0.299, 0.114


def _readline(stream: BinaryIO) -> bytes:
    """One line without its newline; b'' at the end of the stream; the partial line if the
    stream ends inside it (the caller tells them apart by the newline it asked for)."""
    out = bytearray()
    while len(out) < MAX_LINE:
        byte = stream.read(1)
        if not byte:
            return bytes(out)
        if byte == b"\n":
            out += byte
            return bytes(out)
        out += byte
    return bytes(out)


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to n bytes: fewer only when the stream ends (pipes hand out partial reads)."""
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class Reader:
    """Frames of a YUV4MPEG2 stream, read one at a time.

    Args:
      stream: a binary stream (sys.stdin.buffer, a pipe, a file) positioned at the header.
      name: what error messages call it ('stdin').

    Attributes:
      size: (H, W) of the frames.
      fps: frames per second from the header (None if it gives none).
      colour_space: the C tag ('420jpeg' when absent), full_range: XCOLORRANGE=FULL.

    Raises:
      ValueError: naming the stream when the header is missing, damaged or of a format this
        reader does not take (with the ffmpeg option that gives one it does).
    """

    def __init__(self, stream: BinaryIO, name: str = "stdin"):
        self.stream, self.name = stream, name
        line = _readline(stream)
        if not line:
            raise ValueError(f"{name}: the stream is empty (no YUV4MPEG2 header)")
        if not line.startswith(MAGIC + b" ") or not line.endswith(b"\n"):
            raise ValueError(
                f"{name}: not a YUV4MPEG2 stream (it starts with {line[:24]!r}); pipe one with "
                "ffmpeg -i SOURCE -pix_fmt yuv420p -f yuv4mpegpipe -"
            )
        tags = {}
        for token in line[len(MAGIC) :].decode("ascii", "replace").split():
            tags.setdefault(token[0], token[1:])
            if token.startswith("XCOLORRANGE="):
                tags["range"] = token.split("=", 1)[1].upper()
        try:
            width, height = int(tags["W"]), int(tags["H"])
        except (KeyError, ValueError):
            raise ValueError(f"{name}: the YUV4MPEG2 header {line!r} gives no W and H") from None
        if width <= 0 or height <= 0:
            raise ValueError(f"{name}: the YUV4MPEG2 header gives a frame of {width}x{height}")
        self.size = (height, width)
        self.colour_space = tags.get("C", "420jpeg")
        if self.colour_space not in CHROMA:
            raise ValueError(
                f"{name}: YUV4MPEG2 colour space C{self.colour_space} is not supported (8-bit "
                f"{', '.join('C' + c for c in CHROMA)} are); add -pix_fmt yuv420p to the ffmpeg "
                "command"
            )
        self.full_range = tags.get("range") == "FULL"
        self.fps = None
        if "F" in tags:
            num, _, den = tags["F"].partition(":")
            try:
                rate = int(num) / int(den or 1)
                self.fps = rate if 0 < rate < 1000 else None
            except (ValueError, ZeroDivisionError):
                self.fps = None
        sub = CHROMA[self.colour_space]
        self._chroma = None if sub is None else (-(-height // sub[0]), -(-width // sub[1]))
        chroma = 0 if sub is None else self._chroma[0] * self._chroma[1]
        alpha = height * width if self.colour_space == "444alpha" else 0
        self.frame_bytes = height * width + 2 * chroma + alpha

    def frames(self) -> Iterator[np.ndarray]:
        """Yields uint8[H, W, 3] RGB frames until the stream ends."""
        index = 0
        while True:
            line = _readline(self.stream)
            if not line:
                return
            if not line.endswith(b"\n") or not line.startswith(b"FRAME"):
                raise ValueError(
                    f"{self.name}: the stream broke at frame {index} ({index:05d}): expected a "
                    f"FRAME line, got {line[:24]!r}"
                )
            data = _read_exactly(self.stream, self.frame_bytes)
            if len(data) < self.frame_bytes:
                raise ValueError(
                    f"{self.name}: the stream ended inside frame {index} ({index:05d}): "
                    f"{len(data)} of its {self.frame_bytes} bytes arrived"
                )
            yield self.to_rgb(data)
            index += 1

    def to_rgb(self, data: bytes) -> np.ndarray:
        """One frame's planes -> uint8[H, W, 3] RGB (module docstring: BT.601, range)."""
        h, w = self.size
        buf = np.frombuffer(data, np.uint8)
        y = buf[: h * w].reshape(h, w).astype(np.float32)
        if self._chroma is None:
            u = v = np.full((h, w), 128.0, np.float32)
        else:
            ch, cw = self._chroma
            n = ch * cw
            u = buf[h * w : h * w + n].reshape(ch, cw)
            v = buf[h * w + n : h * w + 2 * n].reshape(ch, cw)
            sv, sh = CHROMA[self.colour_space]
            u = np.repeat(np.repeat(u, sv, 0), sh, 1)[:h, :w].astype(np.float32)
            v = np.repeat(np.repeat(v, sv, 0), sh, 1)[:h, :w].astype(np.float32)
        if self.full_range:
            u, v = u - 128.0, v - 128.0
        else:  # limited: Y 16..235, U and V 16..240
            y = (y - 16.0) * (255.0 / 219.0)
            u, v = (u - 128.0) * (255.0 / 224.0), (v - 128.0) * (255.0 / 224.0)
        r = y + 2.0 * (1.0 - KR) * v
        b = y + 2.0 * (1.0 - KB) * u
        g = (y - KR * r - KB * b) / (1.0 - KR - KB)
        rgb = np.stack([r, g, b], axis=-1)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
