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
    segment_output,
    stream_run,
    streams,
    tracker,
)
from rnn_vos_jax.inference import segmenter as segmenter_lib
from rnn_vos_jax.inference.segment_output import SegmentResult
from rnn_vos_jax.runtime import atomic, config_files, storage


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
    inputs = segment_output.input_record(video, masks, origin, model, image_size, max_frames)
    family = models.family_of(model)
    streaming = family.prediction == "streaming"
    if not streaming and (source.live or plan.corrections):
        what = "a live source" if source.live else "corrections (later masks of an object)"
        raise ValueError(
            f"model family {family.name!r} predicts whole clips (offline): it cannot take "
            f"{what}; use a streaming family ({', '.join(tracker.streaming_families())})"
        )

    earlier = None if source.live else segment_output.reusable(output, inputs, overlay)
    if earlier is not None and not overwrite:
        print(f"segment: {output} already holds this run's results; reusing them", file=sys.stderr)
        return earlier
    diffs = stream_run.differences(output, inputs, overlay) if streaming else None
    resume = not overwrite and diffs == []
    found = segment_output.earlier_results(output)
    if found and not overwrite and not resume:
        # Only finished runs write the record (last), so without one the run stopped early.
        if segment_output.RECORD in found and source.live:
            what = "a finished run (a live source is never reused: its frames are new each time)"
        elif segment_output.RECORD in found:
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
        segment_output.remove_earlier_results(output)

    ann_dir = storage.join(output, segment_output.ANNOTATIONS_DIR)
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
    atomic.write_json(
        storage.join(output, segment_output.RECORD), record
    )  # last: marks the run finished
    segment_output.remove_state(output)
    return segment_output.read_result(output, json.loads(json.dumps(record)), overlay)


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
        path = storage.join(output, segment_output.OVERLAY_FILES[overlay])
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
