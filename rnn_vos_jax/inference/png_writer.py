"""Background writer of palette PNGs, so inference never waits on the disk.

Jobs run in submission order on one thread: PNG writes and arbitrary callables (used to score a
finished video and write its done marker only after all of its PNGs are on disk). An exception in
the thread is re-raised in the caller at the next ``submit``/``write`` or at ``close``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

# aliased: `from __future__ import annotations` binds the name `annotations` in this module
from rnn_vos_jax.data import annotations as annotation_png
from rnn_vos_jax.runtime import storage

_STOP = object()


class PngWriter:
    """Ordered background job queue for PNG writing.

    Args:
      max_pending: queue bound; the producer blocks only when this many jobs are waiting (a
        memory bound, not a per-frame wait).
    """

    def __init__(self, max_pending: int = 256):
        self._queue = queue.Queue(maxsize=max_pending)
        self._error = None
        self._thread = threading.Thread(target=self._loop, name="png-writer", daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._error is None:  # after a failure, drain without running more jobs
                fn, args = job
                try:
                    fn(*args)
                except BaseException as e:  # noqa: BLE001 - handed to the caller thread
                    self._error = e

    def check(self) -> None:
        """Raises the writer thread's error, if any (a storage error as it is, so that a full disk
        stops a command with its one line: runtime.storage.exit_on_storage_error)."""
        if isinstance(self._error, storage.StorageError):
            raise self._error
        if self._error is not None:
            raise RuntimeError(f"PNG writer failed: {self._error}") from self._error

    def submit(self, fn: Callable, *args) -> None:
        """Runs ``fn(*args)`` on the writer thread after every job submitted before it."""
        self.check()
        if not self._thread.is_alive():
            raise RuntimeError("PNG writer is closed")
        self._queue.put((fn, args))

    def write(self, path: str, ids: np.ndarray) -> None:
        """Queues ``ids`` (uint8[H, W]) to be written to ``path`` (local or URL; its folder is
        created)."""
        self.submit(_make_dirs_and_write, path, ids)

    def close(self) -> None:
        """Waits for every queued job and stops the thread; raises the thread's error, if any."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self.check()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif self._thread.is_alive():
            # Failing already: still finish the queued jobs (finished videos keep their
            # markers), then let the original exception propagate.
            self._queue.put(_STOP)
            self._thread.join()
        return False


def _make_dirs_and_write(path, ids):
    # Encoded in memory and written in one atomic step (storage.write_bytes, local or gs://): a
    # full disk never leaves a half PNG that a resumed run would count as done.
    annotation_png.write(path, ids)
