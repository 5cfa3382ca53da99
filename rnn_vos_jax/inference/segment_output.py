"""What `segment` leaves in its output folder (own_video.segment_video writes it): the layout,
the result it returns, the record of its inputs that decides whether an earlier run is reused or
resumed, and removing earlier results (--overwrite). Local folders and buckets alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json

from rnn_vos_jax.inference import overlay_video, stream_run
from rnn_vos_jax.runtime import storage

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


def file_stamp(path: str | None):
    """A cheap identity of a file or folder: sizes and modification times, not contents.

    For a folder, of its direct entries only (frames, masks, a checkpoint's step folders): a
    training workdir can hold many thousands of files below them.
    """
    if path is None or not source_exists(path):
        return None
    if storage.isfile(path):
        return list(storage.stat(path))
    digest = hashlib.sha1()
    for name in storage.listdir(path):
        size, mtime_ns = storage.stat(storage.join(path, name))
        digest.update(f"{name}:{size}:{mtime_ns};".encode())
    return digest.hexdigest()


def source_exists(path: str) -> bool:
    """A local or stored (gs://, ...) file or folder; False for live sources (network URLs)."""
    return (not storage.is_remote(path) or storage.is_storage_url(path)) and storage.exists(path)


def input_record(video, masks, checkpoint, model, image_size, max_frames) -> dict:
    """What a finished run must match to be reused, or a stopped one to be resumed (None
    checkpoint: never matches). A live source is named as given ('-', a URL, a camera)."""
    ckpt = None if checkpoint is None else storage.absolute(checkpoint)
    path = storage.absolute(video) if source_exists(video) else video
    return {
        "video": [path, file_stamp(video)],
        "masks": [storage.absolute(masks), file_stamp(masks)],
        "checkpoint": None if ckpt is None else [ckpt, file_stamp(ckpt)],
        "model": hashlib.sha1(repr(model).encode()).hexdigest(),
        "image_size": [int(s) for s in image_size],
        "max_frames": max_frames,
    }


def earlier_results(output: str) -> list[str]:
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


def remove_earlier_results(output: str) -> None:
    # Only what this command writes: other files in the folder are the user's.
    ann = storage.join(output, ANNOTATIONS_DIR)
    if storage.isdir(ann):
        for name in storage.listdir(ann):
            if name.endswith(".png") or ".png.tmp" in name:  # and interrupted writes' temporaries
                storage.remove(storage.join(ann, name))
    for name in (RECORD, *_overlay_files()):
        storage.remove(storage.join(output, name))
    remove_state(output)


def remove_state(output: str) -> None:
    with contextlib.suppress(OSError):
        storage.rmtree(storage.join(output, stream_run.STATE_DIR))


def reusable(output: str, inputs: dict, overlay: str) -> SegmentResult | None:
    """The earlier finished run in `output` if it used the same inputs and its files exist."""
    try:
        record = json.loads(storage.read_text(storage.join(output, RECORD)))
    except (OSError, json.JSONDecodeError):
        return None
    if inputs["checkpoint"] is None or record.get("inputs") != json.loads(json.dumps(inputs)):
        return None
    if record.get("overlay") != overlay or not record.get("complete"):
        return None
    result = read_result(output, record, overlay, reused=True)
    # One listing, not a request per PNG (in a bucket).
    have = set(storage.listdir(result.annotations)) if storage.isdir(result.annotations) else set()
    if not all(storage.basename(p) in have for p in result.pngs):
        return None
    return result if result.overlay is None or storage.exists(result.overlay) else None


def read_result(output, record, overlay, reused=False) -> SegmentResult:
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
