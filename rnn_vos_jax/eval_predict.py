"""What evaluation runs per video: the family's predictor with the per-frame outputs config.eval
asks for (`predictor`), and every object's probabilities frame by frame (`probabilities`).
"""

from collections.abc import Iterator

import ml_collections
import numpy as np

from rnn_vos_jax import inference, models
from rnn_vos_jax.eval_video import EvalVideo

# config.eval key -> the per-frame model output (Family.frame_outputs) it writes.
FRAME_OUTPUTS = {"save_flow": "flow"}


def frame_outputs(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The per-frame model outputs config.eval asks to be written (e.g. ('flow',))."""
    return tuple(out for key, out in FRAME_OUTPUTS.items() if config.eval.get(key, False))


def predictor(config: ml_collections.ConfigDict, variables) -> inference.Predictor:
    """The family's predictor for config.model, with the per-frame outputs config.eval asks for.

    Raises:
      ValueError: e.g. config.eval.save_flow for a model family that outputs no flow, or
        config.eval.feedback='exclusive' with objects split into batches.
    """
    model = models.build(config.model)
    outputs = frame_outputs(config)
    fam = models.family_of(model)
    for key, out in FRAME_OUTPUTS.items():
        if out in outputs and out not in fam.frame_outputs:
            raise ValueError(
                f"config.eval.{key}=True, but model family {fam.name!r} ({config.model.name}) "
                f"has no {out!r} output (its per-frame outputs: {list(fam.frame_outputs) or 'none'})"
            )
    options = inference.predictor_options(config)
    if options["feedback"] == "exclusive" and config.eval.get("batch_objects", 0) > 0:
        raise ValueError(
            f"config.eval.feedback='exclusive' with config.eval.batch_objects="
            f"{config.eval.batch_objects}: objects compete for pixels only within one batch; "
            "set batch_objects to 0 (all objects of a video at once)"
        )
    return inference.predictor_for(model, variables, config.data.image_size, outputs, **options)


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
