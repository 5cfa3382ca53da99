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
model's family asks for (predictors.predictor_for: streaming, or whole-clip for offline models;
config.eval.clip_window / clip_overlap run long clips of those in overlapping windows).
metrics.json also gives the inference speed, `object_frames_per_sec` (frames/s per object,
compilation excluded: evaluation/timing.py), and J, F, J&F and that speed go to TensorBoard at the
checkpoint's step under WORKDIR/eval/<split>/tensorboard (config.eval.tensorboard, default on).

A family's per-frame outputs (Family.frame_outputs) are written when their config.eval switch is
on, by the family's own writer, at the original size under WORKDIR/eval/<split>/<folder>/VIDEO/
FRAME.png, of the video's lowest object id the model stepped on at that frame: e.g. RAFT-HS2S's
flow with config.eval.save_flow, as colour-coded PNGs under Flow/ (the flow from the previous
frame the model ran on to this one; the flow head sees the object's mask through the encoder, so
objects' flows differ). Frames on which no object was stepped (the first frame, frames before any
object starts) have no output image.

Protocols: by default the model sees the frames of config.data.eval_dir (YouTube-VOS valid: every
5th frame, as the authors evaluate). With config.eval.all_frames_dir (YouTube-VOS
valid_all_frames) it runs on every frame of that folder (30 fps) while the first masks, and the
frames written and scored, are those of eval_dir; objects appearing mid-video start at their first
annotated frame. Void pixels (255) of the ground truth count as background as in the DAVIS toolkit
(config.eval.ignore_void leaves them out).

Several processes (multi-host): each evaluates a disjoint share of the videos (evaluation/videos.py) and
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
import time

import jax
import ml_collections
from absl import logging

from rnn_vos_jax.evaluation import markers, predict, shares, timing, videos
from rnn_vos_jax.inference import object_merge, png_writer, predictors
from rnn_vos_jax.runtime import atomic, checkpoints, run_info, storage
from rnn_vos_jax.scoring import metrics

EVAL_DIR = "eval"


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int | None = None,
    *,
    predictor: predictors.Predictor | None = None,
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
    steps = checkpoints.committed_steps(workdir)
    if step is None and steps:
        step = steps[-1]
    if step is not None:
        variables, label = checkpoints.load_variables(workdir, step), f"step {step}"
    elif config.init_from:
        variables, label = checkpoints.load_variables(config.init_from), f"init {config.init_from}"
    else:
        raise FileNotFoundError(
            f"no checkpoint in {storage.join(workdir, checkpoints.CHECKPOINT_DIR)} and no "
            "config.init_from to evaluate"
        )
    if predictor is None:
        predictor = predict.predictor(config, variables)
    else:
        missing = set(predict.frame_outputs(config)) - set(getattr(predictor, "outputs", ()))
        if missing:
            raise ValueError(f"the given predictor does not output {sorted(missing)}")
        predictor.set_variables(variables)
    source = videos.EvalSource(config, index, count)
    out_dir = storage.join(workdir, EVAL_DIR, source.split)
    save_pngs = bool(config.eval.save_pngs)
    protocol = {
        "include_first_last": bool(config.eval.include_first_last),
        "ignore_void": bool(config.eval.ignore_void),
        "all_frames": source.all_frames is not None,
    }
    outputs = predict.frame_outputs(config)
    marker = markers.Marker(out_dir, label, save_pngs, protocol, outputs)
    share = shares.Shares(out_dir, marker.label, index, count)
    share.start()
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

    def todo():
        nonlocal skipped
        for item in videos.prefetch(source.videos(lambda n: marker.load(n) is not None)):
            if isinstance(item, str):  # done in an earlier run
                skipped += 1
            names.append(item if isinstance(item, str) else item.name)
            if not isinstance(item, str):
                for folder in marker.output_dirs.values():  # marks the outputs as asked for
                    storage.makedirs(storage.join(folder, item.name))
                yield item

    written = {}  # video name -> merged id maps of its output frames so far
    with png_writer.PngWriter() as writer:
        for event in predict.frames(predictor, todo(), config.eval):
            video = event.video
            if isinstance(event, predict.Finished):
                view = video.output_view()
                pred_ids = written.pop(video.name, [])
                speed, seen = event.speed, len(video.frame_names)
                writer.submit(markers.score_and_mark, marker, view, pred_ids, speed, seen)
                continue
            # All-frames protocol: the model runs on every frame (the recurrent state advances
            # on each); only the output frames are merged, written and scored.
            n, probs, extras = event.index, event.probs, event.extras
            if video.output is not None and not video.output[n]:
                continue
            ids = object_merge.merge_probabilities(probs, video.object_ids.tolist())
            written.setdefault(video.name, []).append(ids)
            frame = video.frame_names[n]
            if save_pngs:
                writer.write(storage.join(marker.png_dir, video.name, frame + ".png"), ids)
            for name, out in outputs.items():
                if extras[name]:  # the lowest object id the model stepped on
                    value = extras[name][min(extras[name])]
                    path = storage.join(marker.output_dirs[name], video.name, frame + ".png")
                    writer.submit(_write_encoded, path, out.encode, value, probs.shape[1:])
    if skipped:
        logging.info("resumed: %d of %d videos were already done", skipped, len(names))
    names = share.merge(names)
    if names is None:  # another process merges
        return {}
    result = markers.summarize(marker, names, source.seen_categories)
    result.update(checkpoint=label, split=source.split, num_videos=len(names))
    entries = [marker.load(n) for n in names]
    result.update(timing.summarize([e["speed"] for e in entries if e and "speed" in e]))
    atomic.write_json(storage.join(out_dir, "metrics.json"), result)
    if config.eval.tensorboard:
        timing.write_tensorboard(out_dir, step or 0, result)
    if result.get("scored"):
        logging.info("%s on %s:\n%s", label, source.split, metrics.format_table(result))
    return result


def watch(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates each new checkpoint as training writes it; returns the last metrics.

    Stops after evaluating the final training step's checkpoint (WORKDIR/run.json, written by
    training when it starts; until it exists the final step is unknown), or when no new
    checkpoint has appeared for config.eval.watch_timeout_s seconds (default 3600).
    """
    timeout = float(config.eval.watch_timeout_s)
    poll = float(config.eval.watch_poll_s)
    done, result, predictor = set(), {}, None
    last_new = time.time()
    while True:
        pending = [s for s in checkpoints.committed_steps(workdir) if s not in done]
        if pending:
            step = pending[-1]  # newest first: older ones may be rotated away meanwhile
            if len(pending) > 1:
                logging.info("watch: skipping older checkpoints %s", pending[:-1])
            if predictor is None:  # one predictor: compiled steps are reused across checkpoints
                predictor = predict.predictor(config, None)
            try:  # process 0 alone: the others are not watching
                result = evaluate_checkpoint(
                    config, workdir, step, predictor=predictor, process_index=0, process_count=1
                )
            except (FileNotFoundError, ValueError):
                if step in checkpoints.committed_steps(workdir):
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
    out_dir = storage.join(workdir, EVAL_DIR, result["split"])
    atomic.write_json(storage.join(out_dir, f"metrics_{step}.json"), result)
    keys = ("J_mean", "F_mean", "JF_mean", "overall", "scored", "object_frames_per_sec")
    line = {"step": step, **{k: result[k] for k in keys if k in result}}
    storage.append_text(storage.join(out_dir, "metrics_history.jsonl"), json.dumps(line) + "\n")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Entry of ``--mode=eval``: one checkpoint (every process evaluates its share of the
    videos), or every new one with config.eval.watch (process 0 alone)."""
    if config.eval.watch:
        if jax.process_index() != 0:
            logging.info("watching evaluation runs on process 0 only")
            return {}
        return watch(config, workdir)
    return evaluate_checkpoint(config, workdir, config.eval.step)


def _write_encoded(path: str, encode, value, size) -> None:
    """One frame of a model's extra output (FrameOutput.encode), written atomically."""
    storage.write_bytes(path, encode(value, size))
