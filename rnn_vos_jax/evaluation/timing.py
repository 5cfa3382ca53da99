"""Inference speed of an evaluation: each video's record (kept in its done marker), the run's
frames/s per object (into metrics.json), and the evaluation's scalars for TensorBoard.

Frames/s per object = predicted (object, frame) pairs / seconds of prediction, where an object is
predicted on the frames after its first (given) one and the seconds are the wall time of the
video's prediction loop (model calls, resizing, merging objects, queueing PNGs) minus the time
JAX spent tracing and compiling during it (throughput.compile_clock), so the first video of each
object-batch shape is not slowed by its compilation. With object slots (config.eval.object_slots)
videos run side by side, so each step's seconds are shared among the videos in it by their
numbers of objects (`SlotClock`); the run's rate is then the slots' total rate.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Hashable, Iterable, Mapping

from absl import logging

from rnn_vos_jax.runtime import metric_writer, throughput


def _entry(frames_seen: int, first_frames: Iterable[int], seconds: float, compiling: float):
    return {
        "object_frames": int(sum(frames_seen - 1 - int(f) for f in first_frames)),
        "seconds": max(seconds, 0.0),
        "compile_seconds": compiling,
    }


class VideoClock:
    """Times one video's prediction; `record` gives its speed entry."""

    def __init__(self):
        self.start = time.time()
        self.compiled_before = throughput.compile_clock.seconds()

    def record(self, frames_seen: int, first_frames: Iterable[int]) -> dict:
        """{'object_frames', 'seconds' (without compiling), 'compile_seconds'} of a video whose
        model ran on `frames_seen` frames, with objects given on `first_frames`."""
        compiling = throughput.compile_clock.seconds() - self.compiled_before
        return _entry(frames_seen, first_frames, time.time() - self.start - compiling, compiling)


class SlotClock:
    """Times slot-batched prediction: each lap (from the end of the last one: the step, resizing,
    merging, queueing PNGs) is shared among the videos in it by their numbers of objects."""

    def __init__(self):
        self.spent = collections.defaultdict(lambda: [0.0, 0.0])  # key -> [seconds, compiling]
        self._mark()

    def _mark(self):
        self.start = time.time()
        self.compiled_before = throughput.compile_clock.seconds()

    def lap(self, objects: Mapping[Hashable, int]) -> None:
        """Ends a lap that stepped `objects` (video key -> its number of objects)."""
        compiling = throughput.compile_clock.seconds() - self.compiled_before
        seconds = time.time() - self.start - compiling
        total = sum(objects.values())
        for key, n in objects.items():
            share = n / total if total else 1 / len(objects)
            self.spent[key][0] += seconds * share
            self.spent[key][1] += compiling * share
        self._mark()

    def record(self, key: Hashable, frames_seen: int, first_frames: Iterable[int]) -> dict:
        """The speed entry of a finished video (as VideoClock.record), from its laps."""
        seconds, compiling = self.spent.pop(key, (0.0, 0.0))
        return _entry(frames_seen, first_frames, seconds, compiling)


def rate(speed: dict) -> float:
    """Frames/s per object of one speed entry."""
    return speed["object_frames"] / max(speed["seconds"], 1e-9)


def describe(speed: dict) -> str:
    """'R frames/s per object' of one speed entry, with its compile time when it compiled."""
    line = f"{rate(speed):.1f} frames/s per object"
    if speed["compile_seconds"] > 0.05:
        line += f" (+{speed['compile_seconds']:.1f} s compiling)"
    return line


def summarize(speeds: list[dict]) -> dict:
    """{'object_frames_per_sec', 'object_frames'} over the videos' speed entries ({} if none).
    With several processes sharing the videos, the rate is per process."""
    pairs = sum(s["object_frames"] for s in speeds)
    seconds = sum(s["seconds"] for s in speeds)
    if not speeds or seconds <= 0:
        return {}
    logging.info("inference: %.1f frames/s per object (%d object-frames)", pairs / seconds, pairs)
    return {"object_frames_per_sec": pairs / seconds, "object_frames": pairs}


TENSORBOARD_KEYS = ("JF_mean", "J_mean", "F_mean", "object_frames_per_sec")


def write_tensorboard(out_dir: str, step: int, result: dict) -> None:
    """`result`'s TENSORBOARD_KEYS as eval/KEY at `step`, to OUT_DIR/tensorboard (process 0)."""
    scalars = {f"eval/{k}": result[k] for k in TENSORBOARD_KEYS if k in result}
    writer = metric_writer.MetricWriter(out_dir, tensorboard=True, jsonl=False)
    writer.write(step, scalars)
    writer.close()
