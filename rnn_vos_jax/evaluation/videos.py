"""Evaluation videos: a raw YouTube-VOS/DAVIS folder (VOSReader) or converted records.

Both give `eval_video.EvalVideo`s (frames at original size); decoding runs on a prefetch thread
so it overlaps inference. TensorFlow is imported only when records are read. With several
processes each gets a disjoint share of the videos (raw folder: every process_count-th name;
records: every process_count-th file). With config.eval.all_frames_dir (YouTube-VOS
valid_all_frames) a raw folder's videos hold every frame of that folder, the first masks and the
frames to write and score coming from config.data.eval_dir (valid).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator

import ml_collections
import numpy as np
from absl import logging

from rnn_vos_jax.data import meta, vos_reader
from rnn_vos_jax.data.eval_video import EvalVideo
from rnn_vos_jax.runtime import storage


def reader_video(
    reader: vos_reader.VOSReader, name: str, all_frames: vos_reader.VOSReader | None = None
) -> EvalVideo:
    """One video of a raw folder, frames at full size.

    Args:
      reader: the split folder (meta.json, Annotations, JPEGImages).
      name: video name.
      all_frames: the same split at the full frame rate (YouTube-VOS valid_all_frames, only
        JPEGImages used): the video then holds all of its frames, ``output`` marking those of
        ``reader`` (their PNGs are written and scored); objects start at their first frame in
        ``reader``.

    Raises:
      ValueError: naming the video when an object's first frame has no JPEG or PNG, or when
        the all-frames folder lacks one of the split's frames or has another frame size.
    """
    info = reader.video(name)
    annotated = set(info.annotated)
    names, output = list(info.frames), None
    frame_reader = reader
    if all_frames is not None:
        dense = all_frames.video(name)  # FileNotFoundError naming the folder when missing
        missing = sorted(set(info.frames) - set(dense.frames))
        if missing:
            raise ValueError(
                f"video {name}: frames {missing[:5]} of {reader.root} are not in "
                f"{all_frames.root}/JPEGImages/{name} (not its all-frames folder?)"
            )
        if (dense.height, dense.width) != (info.height, info.width):
            raise ValueError(
                f"video {name}: {all_frames.root} frames are {dense.height}x{dense.width}, "
                f"{reader.root} frames {info.height}x{info.width}"
            )
        names, frame_reader = list(dense.frames), all_frames
        sparse = set(info.frames)
        output = np.array([f in sparse for f in names])
    frames = np.stack([frame_reader.read_frame(name, f) for f in names])
    annotations = np.zeros((len(names), info.height, info.width), np.uint8)
    for n, frame in enumerate(names):
        if frame in annotated:
            annotations[n] = reader.read_annotation(name, frame)
    ids = sorted(info.objects)
    first = []
    for obj_id in ids:
        f0 = info.objects[obj_id].frames[0]
        if f0 not in info.frames or f0 not in annotated:
            raise ValueError(f"video {name}: object {obj_id}'s first frame {f0} has no JPEG or PNG")
        first.append(names.index(f0))
    return EvalVideo(
        name=name,
        frame_names=names,
        frames=frames,
        annotations=annotations,
        annotated=np.array([f in annotated for f in names]),
        object_ids=np.asarray(ids, np.int32),
        categories=[info.objects[o].category or "" for o in ids],
        first_frame=np.asarray(first, np.int32),
        height=info.height,
        width=info.width,
        output=output,
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
    """Eval videos of config.data.eval_dir or config.data.eval_records (this process's share).

    Attributes:
      split: the split's name (output folder WORKDIR/eval/<split>).
      path: the folder or records evaluated.
      names: this process's video names (raw folder), or None (records: known once read).
      all_frames: the all-frames reader (config.eval.all_frames_dir), or None.

    Raises:
      ValueError: neither source is set, or all_frames_dir is set without a raw eval_dir.
    """

    def __init__(
        self, config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1
    ):
        data = config.data
        self.seen_categories = seen_categories(config)
        self.path = data.eval_dir or data.eval_records
        self._share = (process_index, process_count)
        all_frames_dir = config.eval.all_frames_dir
        self.all_frames = None
        if all_frames_dir and not data.eval_dir:
            raise ValueError(
                f"config.eval.all_frames_dir={all_frames_dir!r} needs config.data.eval_dir (the "
                "YouTube-VOS valid folder with meta.json and the first masks), not records"
            )
        if data.eval_dir:
            split = config.eval.split
            self._reader = vos_reader.VOSReader(
                data.eval_dir, davis_set="val" if split == "valid" else split
            )
            if all_frames_dir:
                self.all_frames = vos_reader.VOSReader(all_frames_dir)
                if self.all_frames.layout != vos_reader.YOUTUBE_VOS:
                    raise ValueError(
                        f"config.eval.all_frames_dir={all_frames_dir!r}: expected a YouTube-VOS "
                        "folder (JPEGImages/VIDEO/FRAME.jpg), found a DAVIS layout"
                    )
            self.split = self._reader.split
            self.names = self._reader.video_names()[process_index::process_count]
        elif data.eval_records:
            self._reader = None
            records = str(data.eval_records).split(",")[0]
            folder = records if storage.isdir(records) else storage.dirname(records)
            info_path = storage.join(folder, "dataset_info.json")
            info = {}
            if storage.exists(info_path):
                info = json.loads(storage.read_text(info_path))
            self.split = info.get("split") or config.eval.split
            self.names = None
            self._records = data.eval_records
            self._damage = {
                "on_corrupt": data.on_corrupt,
                "max_corrupt_fraction": data.max_corrupt_fraction,
            }
        else:
            raise ValueError("evaluation needs config.data.eval_dir or config.data.eval_records")

    def videos(self, skip) -> Iterator[EvalVideo | str]:
        """Yields EvalVideos, or just the name of a video that ``skip(name)`` says is done."""
        if self._reader is not None:
            for name in self.names:
                yield name if skip(name) else reader_video(self._reader, name, self.all_frames)
            return
        from rnn_vos_jax.data import eval_records  # TensorFlow only on this path

        index, count = self._share
        for video in eval_records.eval_videos(
            self._records, process_index=index, process_count=count, **self._damage
        ):
            yield video.name if skip(video.name) else video


def seen_categories(config) -> set[str] | None:
    path = config.eval.train_meta
    if not path and config.data.train_records:
        candidate = storage.join(config.data.train_records, "dataset_info.json")
        path = candidate if storage.exists(candidate) else ""
    if not path:
        return None
    try:
        return meta.categories(path) or None
    except ValueError as e:
        logging.warning("no seen/unseen split: %s", e)
        return None
