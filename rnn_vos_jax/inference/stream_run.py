"""The `segment` run of a streaming model: frames through a tracker.Tracker, PNGs and overlay
frames written as they come, the tracking state saved as it goes, resumed from it when rerun.

    OUT/state/                 the Tracker's saved state (tracker_files) with this run's `info`:
                               its inputs, overlay kind and where it resumed before

State: saved when the run starts (frame 0), every `state_every` frames (default: when
DEFAULT_STATE_SECONDS of work went by), when the run stops on SIGTERM or SIGINT (Ctrl-C; then
the exit status is 143 or 130 and a line says how to go on), when a frame cannot be read, and at
the end. A save is queued behind the PNGs of the frames before it on the writer thread, so a
state at frame k always has the PNGs of frames 0..k-1 on disk.

Resuming (`run(..., resume=True)`): the tracker continues from the saved frame k. A video file or
frame folder is read again from frame k without an overlay, else from its start: frames 0..k-1
are not segmented again, but their overlay frames are drawn again from the frames and their PNGs
(the stopped run's overlay was dropped: an mp4 cut short is unreadable). So PNGs and overlay come
out as those of a run that never stopped (the same state gives the same steps, bit for bit; a
GIF or mp4 is the same file). A live source cannot be rewound: its frames after the restart are
numbered from k on, and the overlay's
first k frames are read back from the stopped run's overlay.partial.mp4 and encoded again (once
more lossy), or are missing when that file was cut short (the run was killed with SIGKILL).

Frames are read on a thread (`_Prefetch`, a few frames ahead), so decoding overlaps the model
and a stop request is seen while a live source waits for its next frame. Latency is the time
from a frame's arrival (read whole from the source) to its PNG on disk.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import queue
import signal
import sys
import threading
import time

import numpy as np

from rnn_vos_jax.data import annotations
from rnn_vos_jax.inference import object_merge, overlay_video, png_writer, progress, tracker_files
from rnn_vos_jax.runtime import preemption, storage

STATE_DIR = "state"
DEFAULT_STATE_SECONDS = 10.0
_END = object()


@dataclasses.dataclass
class RunReport:
    """What a run did: `names` of all frames (resumed ones included), the overlay it wrote
    (None: none), `resumed` (every resume so far: {'frame', 'frame_index'}), the seconds and
    frames it took in this process, its mean latency, and `missing_overlay` (frame indices the
    overlay lacks, after a live source's overlay was cut short)."""

    names: list[str]
    overlay: str | None
    resumed: list[dict]
    seconds: float
    processed: int
    latency_ms: float | None
    missing_overlay: list[int]


def saved_info(output: str) -> dict | None:
    """The `info` of the state in OUT/state (None: no readable state)."""
    path = storage.join(output, STATE_DIR, tracker_files.RECORD)
    try:
        return json.loads(storage.read_text(path)).get("info")
    except (OSError, json.JSONDecodeError):
        return None


def differences(output: str, inputs: dict, overlay: str) -> list[str] | None:
    """What differs between the run whose state OUT/state holds and a run with these inputs and
    overlay kind: input names ('video', 'checkpoint', 'model', ...; empty: none, it can
    resume), or None when there is no readable state."""
    info = saved_info(output)
    if not info:
        return None
    saved, now = info.get("inputs") or {}, json.loads(json.dumps(inputs))
    diffs = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return diffs + (["overlay"] if info.get("overlay") != overlay else [])


class _Prefetch:
    """Reads (frame, arrival time) pairs from a source on a thread, a few frames ahead; `close`
    ends the thread (and so the source's generator, which releases its file) at its next frame."""

    def __init__(self, frames, ahead: int = 4):
        self._queue = queue.Queue(maxsize=ahead)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(frames,), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _loop(self, frames):
        try:
            for frame in frames:
                if not self._put((frame, time.monotonic())):
                    return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the reading thread
            self._put(error)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        self._closed.set()

    def get(self, stopping):
        """The next (frame, arrival), _END, or None once `stopping()` is true."""
        while not stopping():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            return item
        return None


class _Latency:
    """Mean time from a frame's arrival to its PNG on disk, over the last frames (the writer
    thread adds, the main thread reads)."""

    def __init__(self, window: int = 100):
        self._times = collections.deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, arrival: float) -> None:
        with self._lock:
            self._times.append(time.monotonic() - arrival)

    def mean_ms(self) -> float | None:
        with self._lock:
            return 1000.0 * float(np.mean(self._times)) if self._times else None


def run(
    segmenter,
    source,
    plan,
    output: str,
    annotations_dir: str,
    overlay: str,
    fps: float | None,
    *,
    inputs: dict,
    resume: bool,
    state_every: int | None = None,
    max_frames: int | None = None,
    show_progress: bool = True,
) -> RunReport:
    """Segments `source` with the masks of `plan` (first_masks.MaskPlan) into `output`.

    Args:
      segmenter: a segmenter.Segmenter of a streaming family.
      source: video_io / streams source (`live`, `size`, `fps`, `num_frames`, `name`, `frames`).
      plan: the objects' first masks and corrections.
      output, annotations_dir: the output folder and its PNG folder.
      overlay: 'mp4', 'gif' or 'none'; fps: its frame rate (None: the source's).
      inputs: what the run was given (own_video), kept with the state: a rerun resumes only
        with the same.
      resume: go on from the state in OUT/state (`resumable` said it matches).
      state_every: save the state every this many frames (None: every DEFAULT_STATE_SECONDS).
      max_frames: stop after this many frames (counted from the video's first).
      show_progress: the progress bar on stderr (frames/s and latency).

    Returns:
      The RunReport.

    Raises:
      preemption.Preempted (a SystemExit, status 130 / 143) when SIGINT / SIGTERM arrived,
      after saving the state; errors of the source or the writers after saving the state at
      the last whole frame.
    """
    state_dir = storage.join(output, STATE_DIR)
    storage.makedirs(annotations_dir)
    if resume:
        tracker = segmenter.load_tracker(state_dir)
        info, k = tracker.info, tracker.frame_index
        resumed = {"frame": _name(source, k), "frame_index": k}
        info["resumed"] = [*info.get("resumed", []), resumed]
        print(f"segment: resuming {output} at frame {k}", file=sys.stderr)
    else:
        tracker = segmenter.tracker(reserve=plan.object_ids)
        info, k = {"inputs": inputs, "overlay": overlay, "resumed": []}, 0
        tracker.save(state_dir, info)  # a rerun before the first periodic save resumes at 0
    out, missing = None, []
    if overlay != "none":
        path = storage.join(output, f"overlay.{overlay}")
        previous = _set_aside(path) if source.live and k else None
        out = overlay_video.OverlayWriter(path, overlay, fps or source.fps)
        if previous:
            missing = _carry_over(out, previous, source.size, k)
    total = None if source.num_frames is None else source.num_frames - k
    if max_frames is not None:
        total = max(0, max_frames - k) if total is None else max(0, min(total, max_frames - k))
    bar = progress.Bar(total, "frames", "segment", enabled=show_progress)
    latency, stops = _Latency(), preemption.StopRequests()
    # The index the source's next frame gets: a file is read again from its start when its
    # first k overlay frames must be drawn again, else from frame k.
    t = 0 if out is not None and not source.live else k
    signum, began = None, time.monotonic()
    saved_at, saved_t = began, k
    writer = png_writer.PngWriter(max_pending=16)

    def save(queue_behind=False):
        snapshot = tracker.snapshot(info)
        if queue_behind:  # on the writer thread, after the PNGs of the frames before it
            writer.submit(tracker_files.write, state_dir, snapshot)
        else:
            tracker_files.write(state_dir, snapshot)

    try:
        with stops, contextlib.ExitStack() as stack:
            frames = _Prefetch(source.frames() if source.live else source.frames(start=t))
            stack.callback(frames.close)
            while max_frames is None or t < max_frames:
                item = frames.get(lambda: stops.signum is not None)
                if item is None or item is _END:
                    break
                frame, arrival = item
                png = storage.join(annotations_dir, source.name(t) + ".png")
                if t < k:  # segmented before the stop: only its overlay frame, from its PNG
                    if out is not None:
                        writer.submit(write_overlay_frame, out, frame, annotations.decode(png))
                    t += 1
                    continue
                add, correct = plan.at(t)
                probs = tracker.step(frame, add=add, correct=correct)
                ids = object_merge.merge_probabilities(probs, tracker.object_ids)
                for o, mask in correct.items():  # the corrected mask is what is written
                    ids[mask] = o
                writer.write(png, ids)
                if out is not None:
                    writer.submit(write_overlay_frame, out, frame, ids)
                writer.submit(latency.add, arrival)
                t += 1
                bar.update()
                signum = stops.poll(t)
                if signum:
                    break
                now = time.monotonic()
                if (
                    (t - saved_t >= state_every)
                    if state_every
                    else (now - saved_at >= DEFAULT_STATE_SECONDS)
                ):
                    save(queue_behind=True)
                    saved_at, saved_t = now, t
            signum = signum or stops.signum
            writer.close()
            if signum:  # still catching signals: a second one does not cut the save short
                save()
                _stopped(_stop_writers(writer, out, source.live), source, state_dir, signum, t)
    except preemption.Preempted:
        raise
    except BaseException:
        kept = _stop_writers(writer, out, source.live)
        # At the last whole frame (its PNGs are on disk now); the original error is the one
        # to report if this fails too.
        with contextlib.suppress(Exception):
            save()
        if stops.signum:  # Ctrl-C also stops a pipe's writer, whose broken stream may come first
            _stopped(kept, source, state_dir, stops.signum, t)
        raise
    finally:
        bar.close()
    save()
    return RunReport(
        names=[source.name(i) for i in range(t)],
        overlay=out.close() if out is not None else None,
        resumed=info["resumed"],
        seconds=time.monotonic() - began,
        processed=t - k,
        latency_ms=latency.mean_ms(),
        missing_overlay=missing,
    )


def _stopped(kept: str | None, source, state_dir: str, signum: int, t: int) -> None:
    """Says how to go on after a signal stopped the run after frame t - 1 (`kept`: the overlay
    so far, or None); raises preemption.Preempted."""
    overlay = f" and the overlay so far in {kept}" if kept else ""
    name = _name(source, t)
    print(
        f"segment: stopped by {signal.Signals(signum).name} after {t} frames; the state is saved "
        f"in {state_dir}{overlay}. Run the same command again to go on from frame {t}"
        f"{f' ({name})' if name else ''}.",
        file=sys.stderr,
    )
    raise preemption.Preempted(signum, t)


def _name(source, index: int) -> str | None:
    """Frame `index`'s name, None past the end of a frame folder."""
    known = source.live or source.frame_names is None or index < len(source.frame_names)
    return source.name(index) if known else None


def write_overlay_frame(out: overlay_video.OverlayWriter, frame: np.ndarray, ids: np.ndarray):
    """A writer-thread job: the masks `ids` uint8[H, W] drawn over `frame` uint8[H, W, 3]."""
    out.write(overlay_video.overlay(frame, ids))


def _stop_writers(writer: png_writer.PngWriter, out, live: bool) -> str | None:
    """A run that does not finish: the queued PNGs written; a file's overlay dropped (a rerun
    reads the file again and draws its frames again), a live source's kept as it is (its frames
    cannot be read again; returns its path)."""
    with contextlib.suppress(Exception):  # an earlier error is the one to report
        writer.close()
    if out is None:
        return None
    if live:
        # Unfinishable (the error was the overlay's): the resumed overlay lacks these frames.
        with contextlib.suppress(Exception):
            return out.finish_partial()
    out.abort()
    return None


def previous_path(path: str) -> str:
    """Where a stopped live run's overlay so far waits for the resumed run: overlay.previous.mp4."""
    stem, ext = os.path.splitext(str(path))
    return f"{stem}.previous{ext}"


def _set_aside(path: str) -> str | None:
    """Moves a stopped live run's overlay.partial.* aside (the new overlay is written there)."""
    partial, previous = overlay_video.partial_path(path), previous_path(path)
    if storage.exists(partial):
        storage.rename(partial, previous)
    return previous if storage.exists(previous) else None


def _carry_over(out, previous: str, size, k: int) -> list[int]:
    """Copies the first k frames of a stopped live run's overlay into `out`; returns the frame
    indices it lacked (the file was cut short: a hard kill)."""
    copied = 0
    try:
        for frame in overlay_video.read_frames(previous, size):
            if copied == k:
                break
            out.write(frame)
            copied += 1
    except Exception as error:  # noqa: BLE001 - unreadable: start the overlay afresh
        print(f"segment: the overlay so far ({previous}) is unreadable: {error}", file=sys.stderr)
    storage.remove(previous)
    if copied < k:
        print(f"segment: the overlay lacks frames {copied}..{k - 1}", file=sys.stderr)
    return list(range(copied, k))
