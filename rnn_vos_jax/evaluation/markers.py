"""Per-video done markers of an evaluation (OUT/done/VIDEO.json, written after the video's PNGs,
with its scores) and the run's scores merged from them: what lets an interrupted evaluation resume
where it stopped, and several processes share one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
from absl import logging

from rnn_vos_jax.data.eval_video import EvalVideo
from rnn_vos_jax.evaluation import timing
from rnn_vos_jax.models.family import FrameOutput
from rnn_vos_jax.runtime import atomic, storage
from rnn_vos_jax.scoring import metrics


class Marker:
    """Per-video done markers under OUT/done/VIDEO.json."""

    def __init__(
        self,
        out_dir: str,
        label: str,
        save_pngs: bool,
        protocol: dict,
        outputs: Mapping[str, FrameOutput] = MappingProxyType({}),
    ):
        self.dir = storage.join(out_dir, "done")
        self.png_dir = storage.join(out_dir, "Annotations")
        # Per-frame outputs' folders (e.g. Flow/), by output name.
        self.output_dirs = {name: storage.join(out_dir, o.folder) for name, o in outputs.items()}
        # A marker counts only for the same checkpoint and evaluation protocol (the options that
        # change predictions or scores; markers from before void counted as background are
        # stale, as their label lacks ignore_void).
        self.label = "; ".join([label, *(f"{k}={v}" for k, v in sorted(protocol.items()))])
        self.protocol = protocol
        self.save_pngs = save_pngs

    def path(self, video: str) -> str:
        return storage.join(self.dir, video + ".json")

    def load(self, video: str) -> dict | None:
        """The marker of ``video`` if it is finished for this checkpoint, else None."""
        try:
            marker = json.loads(storage.read_text(self.path(video)))
        except (OSError, json.JSONDecodeError):
            return None
        if marker.get("checkpoint") != self.label:
            return None
        if self.save_pngs and not _all_exist(
            storage.join(self.png_dir, video), [f + ".png" for f in marker["frames"]]
        ):
            return None
        # A video finished without an output (e.g. save_flow) is redone when it is asked for. (In
        # a bucket a folder exists once an object is in it: a video whose output wrote no frame
        # is redone there.)
        if any(not storage.isdir(storage.join(d, video)) for d in self.output_dirs.values()):
            return None
        return marker


def _all_exist(folder: str, names: list[str]) -> bool:
    """Whether every one of `names` is in `folder`: one listing (in a bucket each existence
    check would be a request)."""
    return storage.isdir(folder) and set(names) <= set(storage.listdir(folder))


def score_and_mark(marker: Marker, video: EvalVideo, pred_ids: list, speed: dict, seen: int):
    """Writer-thread job: scores a finished video and writes its marker (after its PNGs).

    Args:
      video: the video's output view (EvalVideo.output_view: its M written frames).
      pred_ids: M uint8[H0, W0] predicted id maps of those frames.
      speed: the video's timing.VideoClock record; kept in the marker.
      seen: the number of frames the model ran on.
    """
    name, ids = video.name, [int(i) for i in video.object_ids]
    first = dict(zip(ids, (int(f) for f in video.first_frame)))
    cats = {o: (c or None) for o, c in zip(ids, video.categories)}
    full_gt = bool(np.all(video.annotated))
    entry = {"checkpoint": marker.label, "frames": list(video.frame_names), "scored": full_gt}
    entry["speed"] = speed
    line = f"{name}: {len(ids)} objects, {seen} frames, {timing.describe(speed)}"
    if seen != len(pred_ids):
        line += f", {len(pred_ids)} written"
    if full_gt:
        anns = list(video.annotations)
        kw = {
            "categories": cats,
            "include_first_last": marker.protocol["include_first_last"],
            "ignore_void": marker.protocol["ignore_void"],
        }
        model = metrics.score_video(pred_ids, anns, first, **kw)
        base = metrics.score_video(None, anns, first, **kw)
        entry["scores"] = {str(o): s.to_json() for o, s in model.items()}
        entry["baseline"] = {str(o): s.to_json() for o, s in base.items()}
        summary = metrics.summarize({name: model}, with_baseline={name: base})
        if summary["num_objects"]:
            line += (
                f", J&F {summary['JF_mean']:.3f} (copy-first {summary['baseline']['JF_mean']:.3f})"
            )
    else:
        line += ", no full ground truth: not scored"
    atomic.write_json(marker.path(name), entry)
    logging.info("%s", line)


def summarize(marker: Marker, names: list[str], seen: set[str] | None) -> dict:
    model, base, unscored = {}, {}, []
    names = sorted(names)  # the same result whichever process evaluated which video
    for name in names:
        entry = marker.load(name)
        if entry is None:
            raise RuntimeError(f"video {name} has no done marker at {marker.path(name)}")
        if not entry["scored"]:
            unscored.append(name)
            continue
        model[name] = {
            int(o): metrics.ObjectScores.from_json(s) for o, s in entry["scores"].items()
        }
        base[name] = {
            int(o): metrics.ObjectScores.from_json(s) for o, s in entry["baseline"].items()
        }
    if not model:
        message = (
            f"ground truth is missing on some frames of all {len(names)} videos (e.g. the real "
            "YouTube-VOS valid split): PNGs written, scoring skipped"
        )
        logging.warning("%s", message)
        return {"scored": False, "message": message, "videos_without_ground_truth": unscored}
    result = metrics.summarize(model, seen, base)
    result["scored"] = True
    result["videos_without_ground_truth"] = unscored
    if unscored:
        logging.warning(
            "%d of %d videos lack ground truth on some frames: predicted but not scored",
            len(unscored),
            len(names),
        )
    return result
