"""Your own video, segmented: a video file or frame folder + masks -> palette PNGs, an overlay
and a record (`segment_video`); `python -m rnn_vos_jax.segment` and `api.segment_video` call it.

Writes DIR/Annotations/FRAME.png (DAVIS-palette PNGs of object ids at the original frame size),
DIR/overlay.mp4 (or overlay.gif: the masks blended in their palette colours, with contours) and,
last, DIR/segment.json (what was run, each object's first frame; its presence marks a finished
run). The checkpoint is an orbax checkpoint (directory) or an authors' .pth.
Inputs (see video_io for the frame sources):
  --video   a video file OpenCV reads (frame i is named %05d), or a folder of JPEG/PNG frames
            (named by their file names, ordered with numbers compared as numbers).
  --masks   one PNG: the objects on the first frame; or a folder of PNGs named like the frames
            (FRAME.png; for a video file 00012.png or 12.png), where objects first appear: each
            object starts at the first PNG holding it (as in the YouTube-VOS protocol) and later
            PNGs of that object are not used. Masks are decoded by `annotations.decode`: palette
            or greyscale PNGs of object ids (0 background; a greyscale 0/255 mask is object 1);
            RGB PNGs map black to 0 and DAVIS palette colours to their index ((128, 0, 0) = 1,
            (0, 128, 0) = 2, ...; an all-grey RGB image is read as greyscale ids) and any other
            colour is refused naming the file. Id 255 is void (DAVIS) and ignored.

The video streams through the model one frame at a time (`predictors.predictor_for`: for
streaming families memory stays flat in the video length; offline, whole-clip families hold the
video). Frames are resized to config.data.image_size for the model; per-object probabilities are
resized back to the original size and merged as evaluation merges them
(`object_merge.merge_probabilities`: argmax against a 0.5 background score).

Earlier results in DIR: a finished run with the same inputs (video, masks, checkpoint and model,
compared by path, size and modification time) is reused as it is. Anything else already there
(a different or an unfinished run) is refused unless --overwrite, which deletes those results
first. An unfinished run is not resumed part-way: the recurrent state at a frame depends on every
earlier frame, so the frames already written would have to be recomputed anyway; the PNGs it
wrote stay untouched until --overwrite.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Any

import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.inference import first_masks, object_merge, png_writer, progress, video_io
from rnn_vos_jax.inference import segmenter as segmenter_lib
from rnn_vos_jax.runtime import atomic, config_files

ANNOTATIONS_DIR = "Annotations"
RECORD = "segment.json"
OVERLAY_FILES = {"mp4": "overlay.mp4", "gif": "overlay.gif"}


@dataclasses.dataclass(frozen=True)
class SegmentResult:
    """What `segment_video` wrote.

    Attributes:
      output: the output folder.
      annotations: output/Annotations, holding one FRAME.png per frame.
      pngs: those PNG paths, in frame order.
      overlay: output/overlay.mp4 or .gif, or None (overlay='none').
      record: output/segment.json.
      object_ids: the object ids, ascending.
      first_frames: object id -> name of the frame where it starts.
      num_frames: frames in the video.
      reused: True when an earlier finished run with the same inputs was returned as it was.
    """

    output: str
    annotations: str
    pngs: list[str]
    overlay: str | None
    record: str
    object_ids: list[int]
    first_frames: dict[int, str]
    num_frames: int
    reused: bool = False


# -- earlier results -----------------------------------------------------------------------------


def _stat(path: str | None):
    """A cheap identity of a file or folder: sizes and modification times, not contents.

    For a folder, of its direct entries only (frames, masks, a checkpoint's step folders): a
    training workdir can hold many thousands of files below them.
    """
    if path is None or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    digest = hashlib.sha1()
    for name in sorted(os.listdir(path)):
        st = os.stat(os.path.join(path, name))
        digest.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


def _inputs(video: str, masks: str, checkpoint: str | None, model, image_size) -> dict:
    """What a finished run must match to be reused (None checkpoint: never matches)."""
    ckpt = None if checkpoint is None else os.path.abspath(checkpoint)
    return {
        "video": [os.path.abspath(video), _stat(video)],
        "masks": [os.path.abspath(masks), _stat(masks)],
        "checkpoint": None if ckpt is None else [ckpt, _stat(ckpt)],
        "model": hashlib.sha1(repr(model).encode()).hexdigest(),
        "image_size": [int(s) for s in image_size],
    }


def _earlier_results(output: str) -> list[str]:
    """Human descriptions of what an earlier run left in `output` (empty: nothing)."""
    found = []
    ann = os.path.join(output, ANNOTATIONS_DIR)
    if os.path.isdir(ann):
        pngs = [n for n in os.listdir(ann) if n.endswith(".png")]
        if pngs:
            found.append(f"{len(pngs)} PNGs in {ann}")
    for name in (RECORD, *OVERLAY_FILES.values()):
        if os.path.exists(os.path.join(output, name)):
            found.append(name)
    return found


def _remove_earlier_results(output: str) -> None:
    # Only what this command writes: other files in the folder are the user's.
    ann = os.path.join(output, ANNOTATIONS_DIR)
    if os.path.isdir(ann):
        for name in os.listdir(ann):
            if name.endswith((".png", ".png.tmp")):
                os.remove(os.path.join(ann, name))
    for name in (RECORD, *OVERLAY_FILES.values()):
        if os.path.exists(os.path.join(output, name)):
            os.remove(os.path.join(output, name))


def _reusable(output: str, inputs: dict, overlay: str) -> SegmentResult | None:
    """The earlier finished run in `output` if it used the same inputs and its files exist."""
    try:
        with open(os.path.join(output, RECORD)) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if inputs["checkpoint"] is None or record.get("inputs") != json.loads(json.dumps(inputs)):
        return None
    if record.get("overlay") != overlay or not record.get("complete"):
        return None
    result = _result(output, record["frames"], overlay, record["objects"], reused=True)
    files = [*result.pngs, *([result.overlay] if result.overlay else [])]
    return result if all(os.path.exists(f) for f in files) else None


def _result(output, frame_names, overlay, objects, reused=False) -> SegmentResult:
    ann = os.path.join(output, ANNOTATIONS_DIR)
    return SegmentResult(
        output=output,
        annotations=ann,
        pngs=[os.path.join(ann, f + ".png") for f in frame_names],
        overlay=os.path.join(output, OVERLAY_FILES[overlay]) if overlay != "none" else None,
        record=os.path.join(output, RECORD),
        object_ids=sorted(int(o) for o in objects),
        first_frames={int(o): v["first_frame"] for o, v in objects.items()},
        num_frames=len(frame_names),
        reused=reused,
    )


# -- the run -------------------------------------------------------------------------------------


def segment_video(
    config: Any,
    checkpoint: Any,
    video: str,
    masks: str,
    output: str,
    overlay: str = "mp4",
    *,
    overwrite: bool = False,
    fps: float | None = None,
    show_progress: bool = True,
) -> SegmentResult:
    """Segments the objects of `masks` through `video`; writes PNGs, an overlay and a record.

    Args:
      config: full config or a config file spec ('configs/hs2s.py[:ARG]'); may be None when
        `checkpoint` is a `Segmenter`.
      checkpoint: orbax checkpoint directory or authors' .pth path, or a ready `Segmenter`
        (reuses its compiled model; a run with one is never reused, as its weights' origin is
        unknown unless it came from `Segmenter.from_checkpoint`).
      video: a video file or a folder of JPEG/PNG frames.
      masks: a PNG (first frame) or a folder of PNGs named like the frames.
      output: output folder (created).
      overlay: 'mp4', 'gif' or 'none'.
      overwrite: replace earlier results in `output` instead of refusing.
      fps: overlay frame rate (default: the video's, 24 for frame folders).
      show_progress: draw a progress bar (frames/s, ETA) on stderr.

    Returns:
      A SegmentResult with the written paths.

    Raises:
      FileNotFoundError / ValueError: bad inputs, naming the file (see the module docstring).
      FileExistsError: `output` holds other results and `overwrite` is False.
    """
    if overlay not in video_io.OVERLAY_KINDS:
        raise ValueError(f"overlay must be one of {video_io.OVERLAY_KINDS}, got {overlay!r}")
    # Inputs first: a bad mask is reported before any weights are loaded or compiled.
    source = video_io.open_frames(video)
    first, mask_files = first_masks.read_first_masks(masks, source)
    if isinstance(checkpoint, segmenter_lib.Segmenter):
        segmenter, model = checkpoint, checkpoint.model
        inputs = _inputs(video, masks, segmenter.source, model, segmenter.image_size)
    else:
        if config is None:
            raise ValueError(f"a config is needed to build the model of checkpoint {checkpoint}")
        if isinstance(config, str):
            config = config_files.load_config(config)
        segmenter, model = None, models.build(config.model)
        inputs = _inputs(video, masks, checkpoint, model, config.data.image_size)

    earlier = _reusable(output, inputs, overlay)
    if earlier is not None and not overwrite:
        print(f"segment: {output} already holds this run's results; reusing them", file=sys.stderr)
        return earlier
    found = _earlier_results(output)
    if found and not overwrite:
        # Only finished runs write the record (last), so without one the run stopped early.
        what = "a finished run with other inputs" if RECORD in found else "an unfinished run"
        raise FileExistsError(
            f"{output} holds results of {what} ({', '.join(found)}): pass --overwrite "
            "(overwrite=True) to replace them, or choose another --output. A stopped run is not "
            "resumed part-way: the recurrent state at a frame depends on every earlier frame, so "
            "those frames would be recomputed anyway."
        )
    if segmenter is None:  # before removing anything: bad weights must not cost old results
        segmenter = segmenter_lib.Segmenter.from_checkpoint(checkpoint, config)
    if found:
        _remove_earlier_results(output)

    ann_dir = os.path.join(output, ANNOTATIONS_DIR)
    os.makedirs(ann_dir, exist_ok=True)
    object_ids = list(first)
    pending = collections.deque()  # frames handed to the model, waiting for their prediction

    def frames():
        for frame in source.frames():
            pending.append(frame)
            yield frame

    writer_out = None
    if overlay != "none":
        path = os.path.join(output, OVERLAY_FILES[overlay])
        writer_out = video_io.OverlayWriter(path, overlay, fps or source.fps)
    names, start = [], time.time()
    bar = progress.Bar(source.num_frames, "frames", "segment", enabled=show_progress)
    try:
        # PNGs and overlay frames are written on one background thread, in frame order.
        with png_writer.PngWriter(max_pending=16) as writer:
            for t, probs in enumerate(segmenter.predictor.predict(frames(), first)):
                frame = pending.popleft()
                ids = object_merge.merge_probabilities(probs, object_ids)
                names.append(source.name(t))
                writer.write(os.path.join(ann_dir, names[-1] + ".png"), ids)
                if writer_out is not None:
                    writer.submit(_write_overlay_frame, writer_out, frame, ids)
                bar.update()
    except BaseException:
        if writer_out is not None:
            writer_out.abort()  # after the writer thread finished: no frame is in flight
        raise
    finally:
        bar.close()
    seconds = time.time() - start
    late = {o: os.path.basename(mask_files[o]) for o, (i, _) in first.items() if i >= len(names)}
    if late:
        if writer_out is not None:
            writer_out.abort()
        raise ValueError(
            f"{source.path} has only {len(names)} frames: objects {sorted(late)} start after its "
            f"end ({sorted(set(late.values()))}); the PNGs of all {len(names)} frames are written"
        )
    if writer_out is not None:
        writer_out.close()
    objects = {
        str(o): {"first_frame": names[i], "mask_file": os.path.abspath(mask_files[o])}
        for o, (i, _) in first.items()
    }
    record = {
        "complete": True,
        "inputs": inputs,
        "overlay": overlay,
        "frames": names,
        "objects": objects,
        "num_frames": len(names),
        "size": list(source.size),
        "seconds": round(seconds, 3),
        "frames_per_second": round(len(names) / max(seconds, 1e-9), 3),
    }
    atomic.write_json(os.path.join(output, RECORD), record)  # last: marks the run finished
    return _result(output, names, overlay, objects)


def _write_overlay_frame(writer: video_io.OverlayWriter, frame: np.ndarray, ids: np.ndarray):
    writer.write(video_io.overlay(frame, ids))
