"""Per-video inference: all objects of a video in one batch, probabilities at the original size.

Two predictors share one interface (`predict(frames, first_masks)` yielding per-frame
probabilities, `set_variables`), chosen by the model family's `prediction` (`predictor_for`):

  StreamingPredictor  one jitted `step` per frame with an explicit carry (`init_carry` at each
                      object's first frame), held by a `tracker.Tracker` per video; memory
                      does not grow with the video length.
  ClipPredictor       one jitted `predict_clip` over the whole clip from each object's first
                      frame (offline models, e.g. bidirectional ones); it holds every frame of
                      the video at the model size, so memory grows with its length, unless
                      config.eval.clip_window splits long clips into overlapping windows
                      (`predictor_options`; what that changes: ClipPredictor's docstring).

A streaming predictor built with `outputs` (names from the family's Family.frame_outputs, e.g.
'flow') also hands out those extra per-frame outputs (`predict_with_outputs`).

Fed-back masks (config.eval.feedback, streaming families with a Family.fed_back_mask): each
object's next step sees its own previous probability, whatever the other objects predict there
('independent', the authors' inference), or that probability only where the object wins the
pixel among the video's objects and 0 elsewhere ('exclusive', `exclusive_masks`), so an object
whose mask drifts onto another one is pushed back off it (the merge rule, applied to what the
memories see).

Frames are resized to the model's input size (bilinear, PIL, as the authors' torchvision
``Resize``), first masks with nearest neighbour; the sigmoid probabilities are resized bilinearly
back to the original frame size on device. Objects are padded to a power of two so videos with 3
or 4 objects share one compilation.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.inference.object_merge import check_feedback
from rnn_vos_jax.inference.predictor_inputs import check_frame, first_mask, resize_frame
from rnn_vos_jax.inference.tracker import (
    Tracker,
    _bucket,
    _compiled,
    _compiled_outputs,
    _probabilities,
)


class Predictor:
    """What evaluation and the API use: a model with its variables, segmenting one video at a time.

    Attributes:
      model: Flax module of a registered family (models/family.py).
      variables: its variables ({'params', 'batch_stats'}), placed on device.
      image_size: (H, W) model input size.
    """

    def __init__(self, model, variables, image_size: Sequence[int]):
        self.model = model
        self.set_variables(variables)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def set_variables(self, variables) -> None:
        """Swaps in new variables (same structure: no recompilation), placed on device once."""
        self.variables = jax.device_put(variables)

    def predict(
        self,
        frames: np.ndarray | Iterable[np.ndarray],
        first_masks: Mapping[int, tuple[int, np.ndarray]],
    ) -> Iterator[np.ndarray]:
        """Segments one video, yielding one probability stack per frame.

        Args:
          frames: uint8[N, H0, W0, 3], or an iterable of uint8[H0, W0, 3] frames.
          first_masks: object id -> (index of its first frame, bool[H0, W0] mask on that frame).

        Yields:
          float32[K, H0, W0] per frame, objects in ascending id order: 0 before an object's first
          frame, exactly its given mask on that frame, the model's probability afterwards.
        """
        object_ids = sorted(first_masks)
        if not object_ids:
            raise ValueError("first_masks is empty: nothing to segment")
        return self._predict(frames, first_masks, object_ids)

    def _predict(self, frames, first_masks, object_ids: list[int]) -> Iterator[np.ndarray]:
        raise NotImplementedError


class StreamingPredictor(Predictor):
    """Runs a model with ``init_carry``/``step`` methods over videos, frame by frame.

    The model: ``init_carry(frame0 [N,H,W,3], mask0 [N,H,W,1]) -> carry`` and
    ``step(carry, frame [N,H,W,3]) -> (carry, logits f32[N,H,W,1])``. Only the carry lives
    across frames, so memory does not grow with the video length. Each video runs through a
    `tracker.Tracker` (the state the API hands out to step, correct, save and load).

    Args:
      outputs: extra per-frame outputs to hand out (`predict_with_outputs`), names from the
        family's Family.frame_outputs; the model then runs ``step_outputs`` instead of ``step``.
      feedback: 'independent' or 'exclusive' (FEEDBACKS; the module doc): with 'exclusive',
        after every frame the fed-back mask in the carry (the family's Family.fed_back_mask) of
        the objects started so far goes through `exclusive_masks`; the returned probabilities
        are the model's own either way.

    Raises:
      ValueError: `outputs` the family does not have, or 'exclusive' feedback for a family
        that feeds back no mask.
    """

    def __init__(
        self,
        model,
        variables,
        image_size: Sequence[int],
        outputs: Sequence[str] = (),
        feedback: str = "independent",
    ):
        super().__init__(model, variables, image_size)
        self.outputs = tuple(outputs)
        self.feedback = check_feedback(feedback)
        self._init, self._step, self._empty_carry = _compiled(model)
        fam = models.family_of(model)
        self.fed_back_mask = fam.fed_back_mask
        if self.feedback == "exclusive" and self.fed_back_mask is None:
            raise ValueError(
                f"config.eval.feedback='exclusive': model family {fam.name!r} feeds back no mask "
                "(Family.fed_back_mask); use 'independent'"
            )
        if self.outputs:
            unknown = sorted(set(self.outputs) - set(fam.frame_outputs))
            if unknown:
                raise ValueError(
                    f"model family {fam.name!r} has no per-frame outputs {unknown} "
                    f"(it has {list(fam.frame_outputs) or 'none'})"
                )
            self._step_outputs = _compiled_outputs(model)

    def predict_with_outputs(self, frames, first_masks) -> Iterator[tuple[np.ndarray, dict]]:
        """As `predict`, yielding (probabilities, extras) per frame.

        extras: {name: {object id: float32[H, W, C]}} for each name in `outputs`, at the model's
        input size, for the objects the model stepped on at this frame (those whose first frame
        came earlier); the other objects have no entry.
        """
        object_ids = sorted(first_masks)
        if not object_ids:
            raise ValueError("first_masks is empty: nothing to segment")
        return self._run(frames, first_masks, object_ids)

    def _predict(self, frames, first_masks, object_ids):
        for out, _ in self._run(frames, first_masks, object_ids):
            yield out

    def _run(self, frames, first_masks, object_ids):
        # One Tracker per video, sized for all its objects from the start (`reserve`): the
        # same batches whatever frame each object starts on.
        starts = {o: int(first_masks[o][0]) for o in object_ids}
        rank = {o: i for i, o in enumerate(object_ids)}
        tracker = Tracker(self, reserve=object_ids)
        for t, frame in enumerate(frames):
            add = {o: first_masks[o][1] for o in object_ids if starts[o] == t}
            probs, extras = tracker.step_with_outputs(frame, add=add)
            out = np.zeros((len(object_ids), *probs.shape[1:]), np.float32)
            out[[rank[o] for o in tracker.object_ids]] = probs
            yield out, extras
        if not tracker.slots and object_ids:
            raise ValueError(
                f"no object starts within the video (first frames {list(starts.values())})"
            )


@functools.lru_cache(maxsize=16)
def _compiled_clip(model):
    """Jitted predict_clip: (variables, frames [K,T,H,W,3], masks [K,H,W,1]) -> logits."""

    def run(variables, frames, masks):
        return model.apply(variables, frames, masks, method="predict_clip")

    return jax.jit(run)


def clip_windows(length: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """How ClipPredictor splits a clip of `length` frames into windows of `window` frames.

    Consecutive windows share at least `overlap` frames. Window k covers frames [start, stop)
    and keeps its outputs for frames (start, keep]; the next window starts at `keep`, from this
    window's prediction there (so the hand-over frame's prediction has seen overlap - 1 frames
    after it). The last window is moved back to end on the last frame, so every window has
    exactly `window` frames (one compilation) and the last overlap may be larger.

    Args:
      length: frames of the clip (its first frame holds the given mask).
      window: frames per window; <= 0, or >= length, means one window over the whole clip.
      overlap: frames shared by consecutive windows, 1 <= overlap < window.

    Returns:
      [(start, stop, keep), ...]: the windows in order; their kept ranges (start, keep] tile
      the frames 1..length-1.
    """
    if window <= 0 or length <= window:
        return [(0, length, length - 1)]
    if window < 2 or not 1 <= overlap < window:
        raise ValueError(
            f"config.eval.clip_window={window}, clip_overlap={overlap}: need a window of at least "
            "2 frames and 1 <= overlap < window"
        )
    starts = [0]
    while starts[-1] + window < length:
        starts.append(min(starts[-1] + window - overlap, length - window))
    keeps = [*starts[1:], length - 1]
    return [(a, a + window, k) for a, k in zip(starts, keeps)]


class ClipPredictor(Predictor):
    """Runs a model with a ``predict_clip`` method over whole videos (offline prediction).

    The model: ``predict_clip(frames [N,T,H,W,3], mask0 [N,H,W,1]) -> logits f32[N,T-1,H,W,1]``.
    Objects that start on the same frame run together, on the clip from that frame to the end.
    Every frame of the video is held on the host at the model size.

    Whole-clip mode (window 0, the default): one call per clip, so device memory grows with the
    video length (every frame's features are alive at once in a bidirectional model); one
    compilation per clip length and object bucket.

    Windowed mode (window N > 0, config.eval.clip_window) bounds it for long videos: a clip
    longer than N frames runs as windows of exactly N frames (`clip_windows`), consecutive ones
    sharing `overlap` frames (config.eval.clip_overlap). What changes against the whole clip:
    each window after the first starts afresh from a hand-over frame, with the previous
    window's prediction there, thresholded at 0.5, as its given first mask (the model's memory
    and its frame-0 reference are rebuilt from it; nothing else crosses a window boundary), and
    a frame's prediction sees the future only up to its window's end (at least overlap - 1
    frames for a hand-over frame). Device memory is then that of an N-frame clip whatever the
    video length, and one compilation serves all windows. A clip of at most N frames runs whole,
    exactly as in whole-clip mode.

    Args:
      model, variables, image_size: as Predictor.
      window: frames per window; 0 = whole clips.
      overlap: frames consecutive windows share (1 <= overlap < window).
    """

    def __init__(self, model, variables, image_size: Sequence[int], window=0, overlap=1):
        super().__init__(model, variables, image_size)
        self.window, self.overlap = int(window), int(overlap)
        clip_windows(self.window + 1, self.window, self.overlap)  # bad settings fail here
        self._run = _compiled_clip(model)

    def _clip_logits(self, frames: list[np.ndarray], masks: np.ndarray):
        """Logits [K, T-1, H, W, 1] of frames[1:] from first masks [K, H, W, 1] (T = len(frames)):
        one device array for a whole clip, a host array assembled from windows otherwise."""
        windows = clip_windows(len(frames), self.window, self.overlap)
        k = len(masks)
        if len(windows) == 1:
            clip = jnp.asarray(np.stack(frames))
            return self._run(self.variables, jnp.broadcast_to(clip[None], (k, *clip.shape)), masks)
        out = np.zeros((k, len(frames) - 1, *masks.shape[1:]), np.float32)
        for start, stop, keep in windows:
            clip = jnp.asarray(np.stack(frames[start:stop]))
            clip = jnp.broadcast_to(clip[None], (k, *clip.shape))
            logits = np.asarray(self._run(self.variables, clip, jnp.asarray(masks)))
            # logits[:, i] is frame start + 1 + i; out[:, j] is frame j + 1.
            out[:, start:keep] = logits[:, : keep - start]
            # The hand-over frame's prediction becomes the next window's given (0/1) mask.
            masks = (logits[:, keep - start - 1] > 0.0).astype(np.float32)
        return out

    def _predict(self, frames, first_masks, object_ids):
        sizes, small = [], []
        for t, frame in enumerate(frames):
            frame = check_frame(t, frame)
            sizes.append(frame.shape[:2])
            small.append(resize_frame(frame, self.image_size))
        starts = {o: int(first_masks[o][0]) for o in object_ids}
        late = {o: s for o, s in starts.items() if not 0 <= s < len(small)}
        if late:
            raise ValueError(f"objects start outside the video of {len(small)} frames: {late}")
        given, logits = {}, {}  # object -> given mask / logits [T - start - 1, H, W, 1]
        for s in sorted(set(starts.values())):
            group = [o for o in object_ids if starts[o] == s]
            masks = np.zeros((_bucket(len(group)), *self.image_size, 1), np.float32)
            for i, o in enumerate(group):
                given[o], masks[i, ..., 0] = first_mask(
                    o, s, first_masks[o][1], sizes[s], self.image_size
                )
            if s + 1 == len(small):
                continue  # the object's only frame is its given mask
            out = self._clip_logits(small[s:], masks)
            logits.update({o: out[i] for i, o in enumerate(group)})
        for t, size in enumerate(sizes):
            out = np.zeros((len(object_ids), *size), np.float32)
            for i, o in enumerate(object_ids):
                if t == starts[o]:
                    out[i] = given[o]
                elif t > starts[o]:
                    z = logits[o][t - starts[o] - 1]
                    out[i] = np.asarray(_probabilities(z[None], size))[0]
            yield out


def predictor_options(config) -> dict[str, int | str]:
    """The predictor settings of a full config (its `eval` section), for `predictor_for`:
    config.eval.clip_window (0 = whole clips), config.eval.clip_overlap and config.eval.feedback."""
    return {
        "clip_window": int(config.eval.clip_window),
        "clip_overlap": int(config.eval.clip_overlap),
        "feedback": str(config.eval.feedback),
    }


def predictor_for(
    model,
    variables,
    image_size: Sequence[int],
    outputs: Sequence[str] = (),
    clip_window: int = 0,
    clip_overlap: int = 1,
    feedback: str = "independent",
) -> Predictor:
    """The predictor the model's family asks for (Family.prediction), ready to `predict`.

    Args:
      model, variables, image_size: as Predictor.
      outputs: extra per-frame outputs (Family.frame_outputs) the predictor must hand out.
      clip_window, clip_overlap: windowed mode of whole-clip predictors (ClipPredictor;
        `predictor_options` reads them from config.eval). Streaming predictors already have
        memory flat in the video length, so a window there is an error.
      feedback: what a streaming model's memories see of the previous masks (FEEDBACKS,
        StreamingPredictor); whole-clip families feed back inside predict_clip, so only
        'independent' there.

    Raises:
      ValueError: `outputs` the family does not have (clip families have none), a window for a
        streaming family, an unknown feedback, or 'exclusive' for a whole-clip family.
    """
    fam = models.family_of(model)
    check_feedback(feedback)
    if fam.prediction == "clip":
        if outputs:
            raise ValueError(
                f"model family {fam.name!r} predicts whole clips: no per-frame outputs {list(outputs)}"
            )
        if feedback != "independent":
            raise ValueError(
                f"config.eval.feedback={feedback!r}: model family {fam.name!r} predicts whole "
                "clips and feeds its masks back inside the model; only 'independent' applies"
            )
        return ClipPredictor(model, variables, image_size, clip_window, clip_overlap)
    if clip_window:
        raise ValueError(
            f"config.eval.clip_window={clip_window}: model family {fam.name!r} predicts "
            f"{fam.prediction}, with memory flat in the video length; windows are for whole-clip "
            "families (set it to 0)"
        )
    return StreamingPredictor(model, variables, image_size, outputs, feedback)
