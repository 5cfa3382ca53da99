"""Evaluation videos: a raw YouTube-VOS/DAVIS folder (VOSReader) or converted records.

Both give `eval_video.EvalVideo`s (frames at original size); decoding runs on a prefetch thread
so it overlaps inference. TensorFlow is imported only when records are read.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator

import ml_collections
import numpy as np
from absl import logging

from rnn_vos_jax import score, vos_reader
from rnn_vos_jax.eval_video import EvalVideo


def reader_video(reader: vos_reader.VOSReader, name: str) -> EvalVideo:
    """One video of a raw folder, frames at full size.

    Raises:
      ValueError: naming the video when an object's first frame has no JPEG or PNG.
    """
    info = reader.video(name)
    annotated = set(info.annotated)
    frames = np.stack([reader.read_frame(name, f) for f in info.frames])
    annotations = np.zeros((len(info.frames), info.height, info.width), np.uint8)
    for n, frame in enumerate(info.frames):
        if frame in annotated:
            annotations[n] = reader.read_annotation(name, frame)
    ids = sorted(info.objects)
    first = []
    for obj_id in ids:
        f0 = info.objects[obj_id].frames[0]
        if f0 not in info.frames or f0 not in annotated:
            raise ValueError(f"video {name}: object {obj_id}'s first frame {f0} has no JPEG or PNG")
        first.append(info.frames.index(f0))
    return EvalVideo(
        name=name,
        frame_names=list(info.frames),
        frames=frames,
        annotations=annotations,
        annotated=np.array([f in annotated for f in info.frames]),
        object_ids=np.asarray(ids, np.int32),
        categories=[info.objects[o].category or "" for o in ids],
        first_frame=np.asarray(first, np.int32),
        height=info.height,
        width=info.width,
    )


def prefetch(items: Iterator, size: int = 2) -> Iterator:
    """Runs ``items`` on a thread ``size`` ahead (video decoding overlaps inference)."""
    q = queue.Queue(maxsize=size)
    done, stop = object(), threading.Event()

    def put(entry):
        while not stop.is_set():  # a consumer that stopped early must not strand this thread
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill():
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put((None, e))
            return
        put((done, None))

    threading.Thread(target=fill, daemon=True).start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


class EvalSource:
    """Eval videos of config.data.eval_dir or config.data.eval_records."""

    def __init__(self, config: ml_collections.ConfigDict):
        data = config.data
        self.seen_categories = seen_categories(config)
        self.path = data.get("eval_dir") or data.get("eval_records")
        if data.get("eval_dir"):
            split = config.eval.get("split", "valid")
            self._reader = vos_reader.VOSReader(
                data.eval_dir, davis_set="val" if split == "valid" else split
            )
            self.split = self._reader.split
            self.names = self._reader.video_names()
        elif data.get("eval_records"):
            self._reader = None
            records = str(data.eval_records).split(",")[0]
            folder = records if os.path.isdir(records) else os.path.dirname(records)
            info_path = os.path.join(folder, "dataset_info.json")
            info = {}
            if os.path.exists(info_path):
                with open(info_path) as f:
                    info = json.load(f)
            self.split = info.get("split") or config.eval.get("split", "valid")
            self.names = None
            self._records = data.eval_records
        else:
            raise ValueError("evaluation needs config.data.eval_dir or config.data.eval_records")

    def videos(self, skip) -> Iterator[EvalVideo | str]:
        """Yields EvalVideos, or just the name of a video that ``skip(name)`` says is done."""
        if self._reader is not None:
            for name in self.names:
                yield name if skip(name) else reader_video(self._reader, name)
            return
        from rnn_vos_jax import input_pipeline_eval  # TensorFlow only on this path

        for video in input_pipeline_eval.eval_videos(self._records):
            yield video.name if skip(video.name) else video


def seen_categories(config) -> set[str] | None:
    path = config.eval.get("train_meta") or ""
    if not path and config.data.get("train_records"):
        candidate = os.path.join(config.data.train_records, "dataset_info.json")
        path = candidate if os.path.exists(candidate) else ""
    if not path:
        return None
    try:
        return score.load_categories(path) or None
    except ValueError as e:
        logging.warning("no seen/unseen split: %s", e)
        return None
