"""Checkpoint evaluation: per-video inference -> palette PNGs -> J, F, J&F.

    python -m rnn_vos_jax.main --config=configs/hs2s.py --workdir=DIR --mode=eval \
        [--config.data.eval_dir=RAW_FOLDER | --config.data.eval_records=TFRECORDS] \
        [--config.eval.all_frames_dir=YTVOS/valid_all_frames] \
        [--config.eval.step=N] [--config.eval.watch=True]

Evaluates the latest checkpoint of WORKDIR/checkpoints (or config.eval.step; or, when the workdir
has none, config.init_from) on a raw YouTube-VOS/DAVIS folder (read with VOSReader, no conversion)
or on converted eval records. Writes WORKDIR/eval/<split>/Annotations/VIDEO/FRAME.png at the
original frame size on a background thread, then WORKDIR/eval/<split>/metrics.json (schema of
``metrics.summarize``, with a copy-the-first-mask baseline under "baseline"). Each finished video
leaves a marker WORKDIR/eval/<split>/done/VIDEO.json (written atomically after its last PNG, with
its scores), so an interrupted evaluation resumes where it stopped. Videos without ground truth on
every frame (real YouTube-VOS valid) get PNGs but no scores. Inference uses the predictor the
model's family asks for (inference.predictor_for: streaming, or whole-clip for offline models;
config.eval.clip_window / clip_overlap run long clips of those in overlapping windows).
metrics.json also gives the inference speed, `object_frames_per_sec` (frames/s per object,
compilation excluded: eval_speed), and J, F, J&F and that speed go to TensorBoard at the
checkpoint's step under WORKDIR/eval/<split>/tensorboard (config.eval.tensorboard, default on).

With config.eval.save_flow (families whose streaming step outputs a flow, Family.frame_outputs)
each frame's flow is also written as a colour-coded RGB PNG (flow_viz: the Middlebury colour
wheel, normalised per frame) at the original size under WORKDIR/eval/<split>/Flow/VIDEO/FRAME.png:
the flow from the previous frame the model ran on to this one, of the video's lowest object id
the model stepped on at this frame (the flow head sees the object's mask through the encoder, so
objects' flows differ). Frames on which no object was stepped (the first frame, frames before any
object starts) have no flow PNG.

Protocols: by default the model sees the frames of config.data.eval_dir (YouTube-VOS valid: every
5th frame, as the authors evaluate). With config.eval.all_frames_dir (YouTube-VOS
valid_all_frames) it runs on every frame of that folder (30 fps) while the first masks, and the
frames written and scored, are those of eval_dir; objects appearing mid-video start at their first
annotated frame. Void pixels (255) of the ground truth count as background as in the DAVIS toolkit
(config.eval.ignore_void leaves them out).

Several processes (multi-host): each evaluates a disjoint share of the videos (eval_data) and
writes its PNGs and done markers; then it writes WORKDIR/eval/<split>/shares/process_<i>.json
(its video names), and process 0, once every share is there, merges the markers into the one
metrics.json, equal to a single-process evaluation's. No collective carries scores; one barrier at
the start (process 0 first clears old share files) keeps a rerun from reading the last run's
shares. Process 0 returns the metrics, the others {}. config.eval.watch runs on process 0 only.

With config.eval.watch it evaluates every new checkpoint until the final training step's (which
training records in WORKDIR/run.json, see run_info), or until config.eval.watch_timeout_s pass
without a new one.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from rnn_vos_jax import (
    checkpoints,
    eval_data,
    eval_predict,
    eval_speed,
    flow_viz,
    inference,
    metrics,
    png_writer,
    run_info,
    score,
)
from rnn_vos_jax.eval_video import EvalVideo

EVAL_DIR = "eval"
SHARES_DIR = "shares"
FLOW_DIR = "Flow"
# config.eval switches -> the per-frame model output (Family.frame_outputs) each one writes.
# How often process 0 looks for the other processes' share files, and logs the missing ones.
SHARE_POLL_S = 0.5
SHARE_LOG_S = 60.0


def _checkpoint_steps(workdir: str) -> list[int]:
    root = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
    if not os.path.isdir(root):
        return []
    # Orbax renames a step's temporary folder only when the save is complete.
    return sorted(
        int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n))
    )


class _Marker:
    """Per-video done markers under OUT/done/VIDEO.json."""

    def __init__(
        self, out_dir: str, label: str, save_pngs: bool, protocol: dict, save_flow: bool = False
    ):
        self.dir = os.path.join(out_dir, "done")
        self.png_dir = os.path.join(out_dir, "Annotations")
        self.flow_dir = os.path.join(out_dir, FLOW_DIR) if save_flow else None
        # A marker counts only for the same checkpoint and evaluation protocol (the options that
        # change predictions or scores; markers from before void counted as background are
        # stale, as their label lacks ignore_void).
        self.label = "; ".join([label, *(f"{k}={v}" for k, v in sorted(protocol.items()))])
        self.protocol = protocol
        self.save_pngs = save_pngs

    def path(self, video: str) -> str:
        return os.path.join(self.dir, video + ".json")

    def load(self, video: str) -> dict | None:
        """The marker of ``video`` if it is finished for this checkpoint, else None."""
        try:
            with open(self.path(video)) as f:
                marker = json.load(f)
        except (OSError, json.JSONDecodeError):
            return None
        if marker.get("checkpoint") != self.label:
            return None
        if self.save_pngs and not all(
            os.path.exists(os.path.join(self.png_dir, video, f + ".png")) for f in marker["frames"]
        ):
            return None
        # A video finished without save_flow is redone when its flows are asked for.
        if self.flow_dir and not os.path.isdir(os.path.join(self.flow_dir, video)):
            return None
        return marker


def _score_and_mark(marker: _Marker, video: EvalVideo, pred_ids: list, speed: dict, seen: int):
    """Writer-thread job: scores a finished video and writes its marker (after its PNGs).

    Args:
      video: the video's output view (EvalVideo.output_view: its M written frames).
      pred_ids: M uint8[H0, W0] predicted id maps of those frames.
      speed: the video's eval_speed.VideoClock record; kept in the marker.
      seen: the number of frames the model ran on.
    """
    name, ids = video.name, [int(i) for i in video.object_ids]
    first = dict(zip(ids, (int(f) for f in video.first_frame)))
    cats = {o: (c or None) for o, c in zip(ids, video.categories)}
    full_gt = bool(np.all(video.annotated))
    entry = {"checkpoint": marker.label, "frames": list(video.frame_names), "scored": full_gt}
    entry["speed"] = speed
    line = f"{name}: {len(ids)} objects, {seen} frames, {eval_speed.describe(speed)}"
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
    os.makedirs(marker.dir, exist_ok=True)
    score.write_json(marker.path(name), entry)
    logging.info("%s", line)


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int | None = None,
    *,
    predictor: inference.Predictor | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> dict:
    """Evaluates one checkpoint (default: latest; none in the workdir: config.init_from).

    Args:
      process_index, process_count: this process's share of the videos (default: JAX's
        process index and count). With process_count > 1 every process must call this.

    Returns:
      The metrics dict written to WORKDIR/eval/<split>/metrics.json (on process 0; {} on the
      others, once their share is written).
    """
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    steps = _checkpoint_steps(workdir)
    if step is None and steps:
        step = steps[-1]
    if step is not None:
        variables, label = checkpoints.load_variables(workdir, step), f"step {step}"
    elif config.get("init_from"):
        variables, label = checkpoints.load_variables(config.init_from), f"init {config.init_from}"
    else:
        raise FileNotFoundError(
            f"no checkpoint in {os.path.join(workdir, checkpoints.CHECKPOINT_DIR)} and no "
            "config.init_from to evaluate"
        )
    if predictor is None:
        predictor = eval_predict.predictor(config, variables)
    else:
        missing = set(eval_predict.frame_outputs(config)) - set(getattr(predictor, "outputs", ()))
        if missing:
            raise ValueError(f"the given predictor does not output {sorted(missing)}")
        predictor.set_variables(variables)
    source = eval_data.EvalSource(config, index, count)
    out_dir = os.path.join(workdir, EVAL_DIR, source.split)
    save_pngs = bool(config.eval.get("save_pngs", True))
    protocol = {
        "include_first_last": bool(config.eval.get("include_first_last", False)),
        "ignore_void": bool(config.eval.get("ignore_void", False)),
        "all_frames": source.all_frames is not None,
    }
    save_flow = "flow" in eval_predict.frame_outputs(config)
    marker = _Marker(out_dir, label, save_pngs, protocol, save_flow)
    shares = _Shares(out_dir, marker.label, index, count)
    shares.start()
    logging.info(
        "evaluating %s on %s (split %r%s%s) -> %s",
        label,
        source.path,
        source.split,
        f", all frames of {source.all_frames.root}" if source.all_frames else "",
        f", process {index} of {count}" if count > 1 else "",
        out_dir,
    )
    names, skipped = [], 0
    with png_writer.PngWriter() as writer:
        for item in eval_data.prefetch(source.videos(lambda n: marker.load(n) is not None)):
            if isinstance(item, str):
                names.append(item)
                skipped += 1
                continue
            video, clock = item, eval_speed.VideoClock()
            names.append(video.name)
            # All-frames protocol: the model runs on every frame (the recurrent state advances
            # on each); only the output frames are merged, written and scored.
            output = np.zeros(len(video.frame_names), bool)
            output[video.output_indices()] = True
            pred_ids = []
            if save_flow:  # the folder marks the video's flows as asked for (see _Marker.load)
                os.makedirs(os.path.join(marker.flow_dir, video.name), exist_ok=True)
            for n, (probs, extras) in enumerate(
                eval_predict.probabilities(
                    predictor, video, int(config.eval.get("batch_objects", 0))
                )
            ):
                if not output[n]:
                    continue
                ids = inference.merge_probabilities(probs, video.object_ids.tolist())
                pred_ids.append(ids)
                frame = video.frame_names[n]
                if save_pngs:
                    writer.write(os.path.join(marker.png_dir, video.name, frame + ".png"), ids)
                if save_flow and extras["flow"]:
                    flow = extras["flow"][min(extras["flow"])]
                    path = os.path.join(marker.flow_dir, video.name, frame + ".png")
                    writer.submit(flow_viz.write_png, path, flow, probs.shape[1:])
            seen = len(output)
            speed = clock.record(seen, video.first_frame)
            view = video.output_view()  # without frames: they can go now
            writer.submit(_score_and_mark, marker, view, pred_ids, speed, seen)
    if skipped:
        logging.info("resumed: %d of %d videos were already done", skipped, len(names))
    names = shares.merge(names)
    if names is None:  # another process merges
        return {}
    result = _summarize(marker, names, source.seen_categories)
    result.update(checkpoint=label, split=source.split, num_videos=len(names))
    entries = [marker.load(n) for n in names]
    result.update(eval_speed.summarize([e["speed"] for e in entries if e and "speed" in e]))
    score.write_json(os.path.join(out_dir, "metrics.json"), result)
    if config.eval.get("tensorboard", True):
        eval_speed.write_tensorboard(out_dir, step or 0, result)
    if result.get("scored"):
        logging.info("%s on %s:\n%s", label, source.split, metrics.format_table(result))
    return result


class _Shares:
    """Which videos each process evaluated: OUT/shares/process_<i>.json, merged by process 0."""

    def __init__(self, out_dir: str, label: str, index: int, count: int):
        self.dir = os.path.join(out_dir, SHARES_DIR)
        self.label, self.index, self.count = label, index, count

    def path(self, index: int) -> str:
        return os.path.join(self.dir, f"process_{index}.json")

    def start(self) -> None:
        """Process 0 clears the last run's shares; a barrier keeps the others from writing first."""
        if self.count == 1:
            return
        if self.index == 0 and os.path.isdir(self.dir):
            for name in os.listdir(self.dir):
                os.remove(os.path.join(self.dir, name))
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"rnn_vos_jax eval start: {self.label}")

    def merge(self, names: list[str]) -> list[str] | None:
        """Every process's video names on process 0 (None on the others, after writing theirs).

        Raises:
          ValueError: a share belongs to another evaluation, or two shares hold one video.
        """
        if self.count == 1:
            return names
        os.makedirs(self.dir, exist_ok=True)
        entry = {"checkpoint": self.label, "process_count": self.count, "videos": names}
        score.write_json(self.path(self.index), entry)
        if self.index != 0:
            logging.info(
                "process %d: share of %d videos done, process 0 merges", self.index, len(names)
            )
            return None
        pending, last_log = set(range(self.count)), time.time()
        merged = {}
        while pending:
            for i in sorted(pending):
                try:
                    with open(self.path(i)) as f:
                        merged[i] = json.load(f)
                except (OSError, json.JSONDecodeError):  # not written yet (writes are atomic)
                    continue
                pending.discard(i)
            if pending:
                if time.time() - last_log > SHARE_LOG_S:
                    logging.info("waiting for the shares of processes %s", sorted(pending))
                    last_log = time.time()
                time.sleep(SHARE_POLL_S)
        videos = []
        for i, share in sorted(merged.items()):
            if share.get("checkpoint") != self.label or share.get("process_count") != self.count:
                raise ValueError(
                    f"{self.path(i)} is from another evaluation ({share.get('checkpoint')!r}, "
                    f"{share.get('process_count')} processes), not {self.label!r} on {self.count}"
                )
            videos += share["videos"]
        twice = sorted(v for v in set(videos) if videos.count(v) > 1)
        if twice:
            raise ValueError(f"videos evaluated by two processes: {twice[:5]}")
        return videos


def _summarize(marker: _Marker, names: list[str], seen: set[str] | None) -> dict:
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


def watch(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates each new checkpoint as training writes it; returns the last metrics.

    Stops after evaluating the final training step's checkpoint (WORKDIR/run.json, written by
    training when it starts; until it exists the final step is unknown), or when no new
    checkpoint has appeared for config.eval.watch_timeout_s seconds (default 3600).
    """
    timeout = float(config.eval.get("watch_timeout_s", 3600.0))
    poll = float(config.eval.get("watch_poll_s", 10.0))
    done, result, predictor = set(), {}, None
    last_new = time.time()
    while True:
        pending = [s for s in _checkpoint_steps(workdir) if s not in done]
        if pending:
            step = pending[-1]  # newest first: older ones may be rotated away meanwhile
            if len(pending) > 1:
                logging.info("watch: skipping older checkpoints %s", pending[:-1])
            if predictor is None:  # one predictor: compiled steps are reused across checkpoints
                predictor = eval_predict.predictor(config, None)
            try:  # process 0 alone: the others are not watching
                result = evaluate_checkpoint(
                    config, workdir, step, predictor=predictor, process_index=0, process_count=1
                )
            except (FileNotFoundError, ValueError):
                if step in _checkpoint_steps(workdir):
                    raise
                # Rotated away by the trainer's max_to_keep while loading: take the next one.
                logging.warning("watch: checkpoint %d vanished while loading, skipping", step)
                done.update(pending)
                continue
            _append_history(workdir, result, step)
            done.update(pending)
            last_new = time.time()
            info = run_info.read(workdir)
            if info is not None and step >= int(info["num_steps"]):
                logging.info("watch: evaluated the final step %d", step)
                return result
        elif time.time() - last_new > timeout:
            logging.info("watch: no new checkpoint for %.0f s, stopping", timeout)
            return result
        else:
            time.sleep(poll)


def _append_history(workdir: str, result: dict, step: int) -> None:
    out_dir = os.path.join(workdir, EVAL_DIR, result["split"])
    score.write_json(os.path.join(out_dir, f"metrics_{step}.json"), result)
    keys = ("J_mean", "F_mean", "JF_mean", "overall", "scored", "object_frames_per_sec")
    line = {"step": step, **{k: result[k] for k in keys if k in result}}
    with open(os.path.join(out_dir, "metrics_history.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Entry of ``--mode=eval``: one checkpoint (every process evaluates its share of the
    videos), or every new one with config.eval.watch (process 0 alone)."""
    if config.eval.get("watch", False):
        if jax.process_index() != 0:
            logging.info("watching evaluation runs on process 0 only")
            return {}
        return watch(config, workdir)
    return evaluate_checkpoint(config, workdir, config.eval.get("step"))
