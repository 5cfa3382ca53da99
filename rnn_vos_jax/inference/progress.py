"""A progress bar on stderr with frames/s and ETA: tqdm when installed, else a small own one.

bar = progress.Bar(total=300, unit="frames", desc="segment")   # total None: unknown length
for frame in frames:
    ...
    bar.update()
bar.close()
"""

from __future__ import annotations

import sys
import time

try:  # optional: tqdm comes with tensorflow-datasets, but nothing here needs it
    import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _OwnBar:
    """`done/total unit  rate unit/s  ETA h:mm:ss`, redrawn on one line at most 4 times a second."""

    def __init__(self, total, unit, desc, stream):
        self.total, self.unit, self.desc, self.stream = total, unit, desc, stream
        self.n, self.start, self._last = 0, time.monotonic(), 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= 0.25 or (self.total and self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        line = f"{self.desc}: {done} {self.unit}  {rate:.1f} {self.unit}/s"
        if self.total and rate > 0:
            line += f"  ETA {_clock(max(self.total - self.n, 0) / rate)}"
        else:
            line += f"  elapsed {_clock(elapsed)}"
        self.stream.write("\r" + line.ljust(70))
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


class Bar:
    """Progress over `total` items (None when unknown: then rate and elapsed time, no ETA).

    Args:
      total: expected number of items, or None.
      unit: what is counted, e.g. 'frames'.
      desc: prefix of the line.
      enabled: False gives a bar that draws nothing (library use, tests).
      stream: where to draw (default stderr).
    """

    def __init__(self, total=None, unit="frames", desc="", enabled=True, stream=None):
        stream = sys.stderr if stream is None else stream
        self._bar = None
        if not enabled:
            return
        if _tqdm is not None:
            self._bar = _tqdm.tqdm(
                total=total, unit=f" {unit}", desc=desc, file=stream, dynamic_ncols=True
            )
        else:
            self._bar = _OwnBar(total, unit, desc, stream)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
