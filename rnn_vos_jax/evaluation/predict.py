"""What evaluation runs: the family's predictor with the per-frame outputs config.eval asks for
(`predictor`), and every frame of every video (`frames`): one video at a time (`probabilities`,
its objects in groups of config.eval.batch_objects), or several videos side by side in
config.eval.object_slots object slots (inference/slots.py).
"""

import dataclasses
from collections.abc import Iterable, Iterator

import ml_collections
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.data.eval_video import EvalVideo
from rnn_vos_jax.evaluation import timing
from rnn_vos_jax.inference import predictors, slots
from rnn_vos_jax.models.family import FrameOutput


def frame_outputs(config: ml_collections.ConfigDict) -> dict[str, FrameOutput]:
    """The per-frame outputs of config.model's family that config.eval asks to be written:
    name -> FrameOutput (Family.frame_outputs) of those whose switch (e.g. save_flow) is on.

    Raises:
      ValueError: a switch is on that another family's output has but this family has not.
    """
    fam = models.family(config.model.name)
    own = {out.switch for out in fam.frame_outputs.values()}
    for other in models.families():
        for name, out in other.frame_outputs.items():
            if out.switch not in own and config.eval[out.switch]:
                raise ValueError(
                    f"config.eval.{out.switch}=True, but model family {fam.name!r} has no "
                    f"{name!r} output (its per-frame outputs: {list(fam.frame_outputs) or 'none'})"
                )
    return {name: out for name, out in fam.frame_outputs.items() if config.eval[out.switch]}


def predictor(config: ml_collections.ConfigDict, variables) -> predictors.Predictor:
    """The family's predictor for config.model, with the per-frame outputs config.eval asks for.

    Raises:
      ValueError: e.g. config.eval.save_flow for a model family that outputs no flow, or
        config.eval.feedback='exclusive' with objects split into batches.
    """
    model = models.build(config.model)
    outputs = tuple(frame_outputs(config))
    options = predictors.predictor_options(config)
    if options["feedback"] == "exclusive" and config.eval.batch_objects > 0:
        raise ValueError(
            f"config.eval.feedback='exclusive' with config.eval.batch_objects="
            f"{config.eval.batch_objects}: objects compete for pixels only within one batch; "
            "set batch_objects to 0 (all objects of a video at once)"
        )
    built = predictors.predictor_for(model, variables, config.data.image_size, outputs, **options)
    if config.eval.object_slots > 0:
        if config.eval.batch_objects > 0:
            raise ValueError(
                f"config.eval.object_slots={config.eval.object_slots} with config.eval."
                f"batch_objects={config.eval.batch_objects}: object slots step all objects of a "
                "video together; set batch_objects to 0"
            )
        if not isinstance(built, predictors.StreamingPredictor):
            raise ValueError(
                f"config.eval.object_slots={config.eval.object_slots}: model family "
                f"{config.model.name!r} segments whole clips, not frame by frame; object slots "
                "are for streaming families (set object_slots to 0)"
            )
    return built


@dataclasses.dataclass(frozen=True)
class Frame:
    """Frame `index` of `video` (without its frames): float32[K, H0, W0] `probs` for its objects
    and the per-frame `extras` ({name: {object id: float32[H, W, C]}})."""

    video: EvalVideo
    index: int
    probs: np.ndarray
    extras: dict


@dataclasses.dataclass(frozen=True)
class Finished:
    """`video` (without its frames) is done; `speed` is its timing entry (timing.py)."""

    video: EvalVideo
    speed: dict


def frames(
    predictor, videos: Iterable[EvalVideo], eval_config: ml_collections.ConfigDict
) -> Iterator[Frame | Finished]:
    """Every frame of every video in frame order within each video, each video followed by its
    Finished once the consumer has handled its last Frame (so its time is counted).

    With eval_config.object_slots, videos run side by side and their frames interleave; each is
    read (at admission) and then held only at the model's input size.
    """
    if eval_config.object_slots > 0:
        yield from _slotted(predictor, videos, eval_config.object_slots)
        return
    for video in videos:
        light, clock = video.without_frames(), timing.VideoClock()
        for n, (probs, extras) in enumerate(
            probabilities(predictor, video, eval_config.batch_objects)
        ):
            yield Frame(light, n, probs, extras)
        yield Finished(light, clock.record(len(video.frame_names), video.first_frame))


def _slotted(predictor, videos, num_slots) -> Iterator[Frame | Finished]:
    held = {}  # video name -> the video without its frames, while it runs

    def admitted():
        for video in videos:
            held[video.name] = video.without_frames()
            yield slots.SlotVideo(video.name, video.frames, first_masks(video))

    clock = timing.SlotClock()
    for step in slots.SlotRunner(predictor, num_slots).run(admitted()):
        for f in step:
            yield Frame(held[f.key], f.index, f.probs, f.extras)
        clock.lap({f.key: len(f.probs) for f in step})
        for f in step:
            if f.last:
                video = held.pop(f.key)
                speed = clock.record(f.key, len(video.frame_names), video.first_frame)
                yield Finished(video, speed)


def first_masks(video: EvalVideo) -> dict[int, tuple[int, np.ndarray]]:
    """object id -> (its first frame, bool[H0, W0] mask there); raises naming the video and frame
    when a mask is empty."""
    out = {
        o: (int(f), video.annotations[int(f)] == o)
        for o, f in zip(video.object_ids, video.first_frame)
    }
    for o, (f, mask) in out.items():
        if not mask.any():
            raise ValueError(
                f"video {video.name}: object {o} has an empty mask on its first listed frame "
                f"{video.frame_names[f]} (annotation or meta.json is wrong)"
            )
    return {int(o): v for o, v in out.items()}


def probabilities(
    predictor, video: EvalVideo, batch_objects: int
) -> Iterator[tuple[np.ndarray, dict]]:
    """Per-frame (float32[K, H0, W0] for all objects, extras) in groups of batch_objects run in
    lockstep; extras as StreamingPredictor.predict_with_outputs ({} without outputs)."""
    ids = [int(i) for i in video.object_ids]
    given = first_masks(video)
    outputs = getattr(predictor, "outputs", ())
    if not ids:  # nothing to segment: all-background frames
        for frame in video.frames:
            yield np.zeros((0, *frame.shape[:2]), np.float32), {name: {} for name in outputs}
        return
    size = batch_objects if batch_objects > 0 else len(ids)
    groups = [ids[i : i + size] for i in range(0, len(ids), size)]

    def stream(group):
        masks = {o: given[o] for o in group}
        if outputs:
            return predictor.predict_with_outputs(video.frames, masks)
        return ((p, {}) for p in predictor.predict(video.frames, masks))

    for parts in zip(*map(stream, groups)):
        extras = {name: {} for name in outputs}
        for _, more in parts:
            for name, per_object in more.items():
                extras[name].update(per_object)
        yield np.concatenate([p for p, _ in parts]), extras
