"""Your own video, segmented: a video file, frame folder or live stream + masks -> palette PNGs,
an overlay and a record (`segment_video`); `python -m rnn_vos_jax.segment` and
`api.segment_video` call it.

Writes DIR/Annotations/FRAME.png (DAVIS-palette PNGs of object ids at the original frame size),
DIR/overlay.mp4 (H.264; or overlay.gif: the masks blended in their palette colours, with
contours; overlay_video) and, last, DIR/segment.json (what was run, each object's first frame,
the corrections used, where the run resumed; its presence marks a finished run). The
checkpoint is an orbax checkpoint (directory) or an authors' .pth.
Inputs:
  --video   a video file OpenCV reads (frame i is named %05d), a folder of JPEG/PNG frames
            (named by their file names, ordered with numbers compared as numbers) (video_io), or
            a live source: '-' (YUV4MPEG2 on stdin), an rtsp:// or http:// URL, a camera
            number (streams; frames named 00000, 00001, ... in arrival order).
  --masks   one PNG: the objects on the first frame; or a folder of PNGs named like the frames
            (FRAME.png; for a video file or stream 00012.png or 12.png). Each object starts at
            the first PNG holding it (as in the YouTube-VOS protocol); a later PNG holding it
            again is a correction (below). Masks are decoded by `annotations.decode`: palette
            or greyscale PNGs of object ids (0 background; a greyscale 0/255 mask is object 1);
            RGB PNGs map black to 0 and DAVIS palette colours to their index ((128, 0, 0) = 1,
            (0, 128, 0) = 2, ...; an all-grey RGB image is read as greyscale ids) and any other
            colour is refused naming the file. Id 255 is void (DAVIS) and ignored.

The video streams through the model one frame at a time. Streaming families run through a
tracker.Tracker (stream_run): memory stays flat in the video length, the state is saved as it
goes, and a rerun resumes. Offline, whole-clip families (Bi-HS2S) hold the video and take
neither live sources nor corrections (refused naming the family). Frames are resized to
config.data.image_size for the model; per-object probabilities are resized back to the original
size and merged as evaluation merges them (`object_merge.merge_probabilities`: argmax against a
0.5 background score).

Corrections: on a frame whose PNG holds an already tracked object, the PNG written is the given
mask for that object, and from there on the object continues with it as its fed-back mask; its
recurrent memory is kept (tracker.py says why, and what families without a fed-back mask do).
Frames before it come out exactly as without it.

Earlier results in DIR: a finished run with the same inputs (video, masks, checkpoint, model,
--max_frames; files compared by path, size and modification time) is reused as it is (never for
a live source: its frames are new each time). An unfinished run of a streaming family with the
same inputs and overlay is resumed from its saved state (stream_run), so the same command run
again after Ctrl-C, SIGTERM or a crash goes on where it stopped. Anything else already there is
refused unless --overwrite, which deletes those results first.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from typing import Any

from rnn_vos_jax import models
from rnn_vos_jax.inference import (
    first_masks,
    object_merge,
    overlay_video,
    png_writer,
    progress,
    stream_run,
    streams,
    tracker,
)
from rnn_vos_jax.inference import segmenter as segmenter_lib
from rnn_vos_jax.runtime import atomic, config_files, storage

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
      record_data: segment.json's content (`resumed`, `corrections`, `frames_per_second`,
        `latency_ms`, ...).
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
    record_data: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """What the command prints: frames, speed, resumes, objects, corrections, paths."""
        record = self.record_data
        speed = f"{record.get('frames_per_second')} frames/s"
        if record.get("latency_ms") is not None:
            speed += f", latency {record['latency_ms']} ms per frame"
        speed += "".join(
            f", resumed at frame {r['frame_index']}" for r in record.get("resumed", [])
        )
        objects = ", ".join(f"{o} from frame {f}" for o, f in self.first_frames.items())
        lines = [f"{self.num_frames} frames ({speed}), objects {objects}"]
        if record.get("corrections"):
            fixes = ", ".join(f"{c['object']} at {c['frame']}" for c in record["corrections"])
            lines.append(f"corrections: {fixes}")
        lines.append(f"masks:   {self.annotations}")
        if self.overlay:
            lines.append(f"overlay: {self.overlay}")
        return "\n".join(lines)


# -- earlier results -----------------------------------------------------------------------------


def _stat(path: str | None):
    """A cheap identity of a file or folder: sizes and modification times, not contents.

    For a folder, of its direct entries only (frames, masks, a checkpoint's step folders): a
    training workdir can hold many thousands of files below them.
    """
    if path is None or not _exists(path):
        return None
    if storage.isfile(path):
        return list(storage.stat(path))
    digest = hashlib.sha1()
    for name in storage.listdir(path):
        size, mtime_ns = storage.stat(storage.join(path, name))
        digest.update(f"{name}:{size}:{mtime_ns};".encode())
    return digest.hexdigest()


def _exists(path: str) -> bool:
    """A local or stored (gs://, ...) file or folder; False for live sources (network URLs)."""
    return (not storage.is_remote(path) or storage.is_storage_url(path)) and storage.exists(path)


def _inputs(video, masks, checkpoint, model, image_size, max_frames) -> dict:
    """What a finished run must match to be reused, or a stopped one to be resumed (None
    checkpoint: never matches). A live source is named as given ('-', a URL, a camera)."""
    ckpt = None if checkpoint is None else storage.absolute(checkpoint)
    path = storage.absolute(video) if _exists(video) else video
    return {
        "video": [path, _stat(video)],
        "masks": [storage.absolute(masks), _stat(masks)],
        "checkpoint": None if ckpt is None else [ckpt, _stat(ckpt)],
        "model": hashlib.sha1(repr(model).encode()).hexdigest(),
        "image_size": [int(s) for s in image_size],
        "max_frames": max_frames,
    }


def _earlier_results(output: str) -> list[str]:
    """Human descriptions of what an earlier run left in `output` (empty: nothing)."""
    found = []
    ann = storage.join(output, ANNOTATIONS_DIR)
    if storage.isdir(ann):
        pngs = [n for n in storage.listdir(ann) if n.endswith(".png")]
        if pngs:
            found.append(f"{len(pngs)} PNGs in {ann}")
    for name in (RECORD, stream_run.STATE_DIR, *_overlay_files()):
        if storage.exists(storage.join(output, name)):
            found.append(name)
    return found


def _overlay_files() -> list[str]:
    """Overlay files a run may leave: finished, partial, a stopped live run's set aside."""
    names = [*OVERLAY_FILES.values()]
    names += [storage.basename(overlay_video.partial_path(n)) for n in OVERLAY_FILES.values()]
    names += [storage.basename(stream_run.previous_path(n)) for n in OVERLAY_FILES.values()]
    return names


def _remove_earlier_results(output: str) -> None:
    # Only what this command writes: other files in the folder are the user's.
    ann = storage.join(output, ANNOTATIONS_DIR)
    if storage.isdir(ann):
        for name in storage.listdir(ann):
            if name.endswith(".png") or ".png.tmp" in name:  # and interrupted writes' temporaries
                storage.remove(storage.join(ann, name))
    for name in (RECORD, *_overlay_files()):
        storage.remove(storage.join(output, name))
    _remove_state(output)


def _remove_state(output: str) -> None:
    with contextlib.suppress(OSError):
        storage.rmtree(storage.join(output, stream_run.STATE_DIR))


def _reusable(output: str, inputs: dict, overlay: str) -> SegmentResult | None:
    """The earlier finished run in `output` if it used the same inputs and its files exist."""
    try:
        record = json.loads(storage.read_text(storage.join(output, RECORD)))
    except (OSError, json.JSONDecodeError):
        return None
    if inputs["checkpoint"] is None or record.get("inputs") != json.loads(json.dumps(inputs)):
        return None
    if record.get("overlay") != overlay or not record.get("complete"):
        return None
    result = _result(output, record, overlay, reused=True)
    files = [*result.pngs, *([result.overlay] if result.overlay else [])]
    return result if all(storage.exists(f) for f in files) else None


def _result(output, record, overlay, reused=False) -> SegmentResult:
    ann = storage.join(output, ANNOTATIONS_DIR)
    frame_names, objects = record["frames"], record["objects"]
    return SegmentResult(
        output=output,
        annotations=ann,
        pngs=[storage.join(ann, f + ".png") for f in frame_names],
        overlay=storage.join(output, OVERLAY_FILES[overlay]) if overlay != "none" else None,
        record=storage.join(output, RECORD),
        object_ids=sorted(int(o) for o in objects),
        first_frames={int(o): v["first_frame"] for o, v in objects.items()},
        num_frames=len(frame_names),
        reused=reused,
        record_data=record,
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
    state_every: int | None = None,
    max_frames: int | None = None,
) -> SegmentResult:
    """Segments the objects of `masks` through `video`; writes PNGs, an overlay and a record.

    Args:
      config: full config or a config file spec ('configs/hs2s.py[:ARG]'); may be None when
        `checkpoint` is a `Segmenter`.
      checkpoint: orbax checkpoint directory or authors' .pth path, or a ready `Segmenter`
        (reuses its compiled model; a run with one is never reused, as its weights' origin is
        unknown unless it came from `Segmenter.from_checkpoint`).
      video: a video file, a folder of JPEG/PNG frames, '-' (YUV4MPEG2 on stdin), a URL or a
        camera number (the module docstring).
      masks: a PNG (first frame) or a folder of PNGs named like the frames.
      output: output folder (created).
      overlay: 'mp4', 'gif' or 'none'.
      overwrite: replace earlier results in `output` instead of refusing (or resuming).
      fps: overlay frame rate (default: the video's, 24 for frame folders).
      show_progress: draw a progress bar (frames/s, latency, ETA) on stderr.
      state_every: save the tracking state every this many frames (None: about every 10 s).
      max_frames: stop after this many frames.

    Returns:
      A SegmentResult with the written paths.

    Raises:
      FileNotFoundError / ValueError: bad inputs, naming the file (see the module docstring).
      FileExistsError: `output` holds other results and `overwrite` is False.
      preemption.Preempted (SystemExit 130 / 143): stopped by SIGINT / SIGTERM, state saved.
    """
    if overlay not in overlay_video.CHOICES:
        raise ValueError(f"overlay must be one of {overlay_video.CHOICES}, got {overlay!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if state_every is not None and state_every < 1:
        raise ValueError(f"state_every must be at least 1, got {state_every}")
    # Inputs first: a bad mask is reported before any weights are loaded or compiled.
    source = streams.open_source(video)
    plan = first_masks.read_masks(masks, source)
    if isinstance(checkpoint, segmenter_lib.Segmenter):
        segmenter, model = checkpoint, checkpoint.model
        image_size, origin = segmenter.image_size, segmenter.source
    else:
        if config is None:
            raise ValueError(f"a config is needed to build the model of checkpoint {checkpoint}")
        if isinstance(config, str):
            config = config_files.load_config(config)
        segmenter, model = None, models.build(config.model)
        image_size, origin = config.data.image_size, checkpoint
    inputs = _inputs(video, masks, origin, model, image_size, max_frames)
    family = models.family_of(model)
    streaming = family.prediction == "streaming"
    if not streaming and (source.live or plan.corrections):
        what = "a live source" if source.live else "corrections (later masks of an object)"
        raise ValueError(
            f"model family {family.name!r} predicts whole clips (offline): it cannot take "
            f"{what}; use a streaming family ({', '.join(tracker.streaming_families())})"
        )

    earlier = None if source.live else _reusable(output, inputs, overlay)
    if earlier is not None and not overwrite:
        print(f"segment: {output} already holds this run's results; reusing them", file=sys.stderr)
        return earlier
    diffs = stream_run.differences(output, inputs, overlay) if streaming else None
    resume = not overwrite and diffs == []
    found = _earlier_results(output)
    if found and not overwrite and not resume:
        # Only finished runs write the record (last), so without one the run stopped early.
        if RECORD in found and source.live:
            what = "a finished run (a live source is never reused: its frames are new each time)"
        elif RECORD in found:
            what = "a finished run with other inputs"
        elif diffs:
            what = f"an unfinished run with another {', '.join(diffs)} (it cannot resume)"
        else:
            what = "an unfinished run without a state to resume from"
        raise FileExistsError(
            f"{output} holds results of {what} ({', '.join(found)}): pass --overwrite "
            "(overwrite=True) to replace them, or choose another --output (the same command run "
            "again resumes a stopped run)"
        )
    if segmenter is None:  # before removing anything: bad weights must not cost old results
        segmenter = segmenter_lib.Segmenter.from_checkpoint(checkpoint, config)
    if found and not resume:
        _remove_earlier_results(output)

    ann_dir = storage.join(output, ANNOTATIONS_DIR)
    run = stream_run.run if streaming else _run_whole_clip
    report = run(
        segmenter,
        source,
        plan,
        output,
        ann_dir,
        overlay,
        fps,
        inputs=inputs,
        resume=resume,
        state_every=state_every,
        max_frames=max_frames,
        show_progress=show_progress,
    )
    names = report.names
    ended = max_frames is None or len(names) < max_frames  # the source ran out
    late = [o for o, t in plan.first.items() if t >= len(names)]
    if late and ended:
        if report.overlay:
            storage.remove(report.overlay)
        raise ValueError(
            f"{source.path} has only {len(names)} frames: objects {late} start after its end "
            f"({sorted({storage.basename(plan.files[plan.first[o]]) for o in late})}); the PNGs "
            f"of all {len(names)} frames are written"
        )
    objects = {
        str(o): {"first_frame": names[t], "mask_file": storage.absolute(plan.files[t])}
        for o, t in plan.first.items()
        if t < len(names)
    }
    corrections = [
        {"frame": names[t], "object": o, "mask_file": storage.absolute(plan.files[t])}
        for t, o in plan.corrections
        if t < len(names)
    ]
    record = {
        "complete": True,
        "inputs": inputs,
        "overlay": overlay,
        "frames": names,
        "objects": objects,
        "corrections": corrections,
        "resumed": report.resumed,  # [{'frame', 'frame_index'}] of each rerun that went on
        "num_frames": len(names),
        "size": list(source.size),
        "seconds": round(report.seconds, 3),  # this process's, after the last resume
        "frames_per_second": round(report.processed / max(report.seconds, 1e-9), 3),
        "latency_ms": None if report.latency_ms is None else round(report.latency_ms, 1),
    }
    if report.missing_overlay:
        record["overlay_missing_frames"] = report.missing_overlay
    atomic.write_json(storage.join(output, RECORD), record)  # last: marks the run finished
    _remove_state(output)
    return _result(output, json.loads(json.dumps(record)), overlay)


def _run_whole_clip(
    segmenter,
    source,
    plan,
    output,
    annotations_dir,
    overlay,
    fps,
    *,
    max_frames,
    show_progress,
    **unused,
) -> stream_run.RunReport:
    """An offline family's run (ClipPredictor: the whole clip, then the frames' outputs): PNGs
    and overlay written as stream_run writes them, no state (nothing to resume from)."""
    del unused
    storage.makedirs(annotations_dir)
    pending = collections.deque()  # frames handed to the model, waiting for their prediction

    def frames():
        for t, frame in enumerate(source.frames()):
            if max_frames is not None and t >= max_frames:
                return
            pending.append(frame)
            yield frame

    out = None
    if overlay != "none":
        path = storage.join(output, OVERLAY_FILES[overlay])
        out = overlay_video.OverlayWriter(path, overlay, fps or source.fps)
    names, start = [], time.monotonic()
    bar = progress.Bar(source.num_frames, "frames", "segment", enabled=show_progress)
    object_ids = plan.object_ids
    try:
        with png_writer.PngWriter(max_pending=16) as writer:
            for t, probs in enumerate(segmenter.predictor.predict(frames(), plan.first_masks())):
                frame = pending.popleft()
                ids = object_merge.merge_probabilities(probs, object_ids)
                names.append(source.name(t))
                writer.write(storage.join(annotations_dir, names[-1] + ".png"), ids)
                if out is not None:
                    writer.submit(stream_run.write_overlay_frame, out, frame, ids)
                bar.update()
    except BaseException:
        if out is not None:
            out.abort()  # after the writer thread finished: no frame is in flight
        raise
    finally:
        bar.close()
    seconds = time.monotonic() - start
    return stream_run.RunReport(
        names=names,
        overlay=out.close() if out is not None else None,
        resumed=[],
        seconds=seconds,
        processed=len(names),
        latency_ms=None,
        missing_overlay=[],
    )
