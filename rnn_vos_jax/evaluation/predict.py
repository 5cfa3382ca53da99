"""What evaluation runs per video: the family's predictor with the per-frame outputs config.eval
asks for (`predictor`), and every object's probabilities frame by frame (`probabilities`).
"""

from collections.abc import Iterator

import ml_collections
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.data.eval_video import EvalVideo
from rnn_vos_jax.inference import predictors
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
    return predictors.predictor_for(model, variables, config.data.image_size, outputs, **options)


def probabilities(
    predictor, video: EvalVideo, batch_objects: int
) -> Iterator[tuple[np.ndarray, dict]]:
    """Per-frame (float32[K, H0, W0] for all objects, extras) in groups of batch_objects run in
    lockstep; extras as StreamingPredictor.predict_with_outputs ({} without outputs)."""
    ids = [int(i) for i in video.object_ids]
    first_masks = {
        o: (int(f), video.annotations[int(f)] == o) for o, f in zip(ids, video.first_frame)
    }
    for o, (f, mask) in first_masks.items():
        if not mask.any():
            raise ValueError(
                f"video {video.name}: object {o} has an empty mask on its first listed frame "
                f"{video.frame_names[f]} (annotation or meta.json is wrong)"
            )
    outputs = getattr(predictor, "outputs", ())
    if not ids:  # nothing to segment: all-background frames
        for frame in video.frames:
            yield np.zeros((0, *frame.shape[:2]), np.float32), {name: {} for name in outputs}
        return
    size = batch_objects if batch_objects > 0 else len(ids)
    groups = [ids[i : i + size] for i in range(0, len(ids), size)]

    def stream(group):
        masks = {o: first_masks[o] for o in group}
        if outputs:
            return predictor.predict_with_outputs(video.frames, masks)
        return ((p, {}) for p in predictor.predict(video.frames, masks))

    for parts in zip(*map(stream, groups)):
        extras = {name: {} for name in outputs}
        for _, more in parts:
            for name, per_object in more.items():
                extras[name].update(per_object)
        yield np.concatenate([p for p, _ in parts]), extras
