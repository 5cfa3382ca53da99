"""Continuous batching of a streaming model over many videos (`SlotRunner`): a fixed number of
object slots, each with its own frame and carry, stepped together by one compiled step.

Video-at-a-time inference (predictors.StreamingPredictor) steps the objects of one video as a
batch, so a one-object video runs a batch of one and leaves an accelerator mostly idle, and the
next video waits for the last frame of this one. Here a video is admitted as soon as enough slots
are free for all of its objects; each slot steps its own video's current frame, so videos of
different lengths and sizes run side by side, and when a video ends its slots take the next
video's objects. The step always has `num_slots` rows: one compilation, whatever the mix.

A video's objects stay in lockstep (they step the same frame together), so its frames come out
whole, one merged PNG at a time, and the rules that couple its objects hold as in
video-at-a-time inference: an object starts at its first frame (its slot is reserved from the
video's admission and idles until then), and with config.eval.feedback='exclusive' objects
compete for pixels only with the objects of their own video (object_merge.exclusive_masks with
the video as the group). Its objects take free slots in ascending order, so the earlier object
of a tie keeps the pixel, as in video-at-a-time inference. Results equal video-at-a-time
inference within float rounding of a different batch size (tests/test_eval_slots.py).

Memory: each video is resized to the model's input size when admitted (its original frames can go
then); the carry has `num_slots` rows whatever the number of videos.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Iterator, Mapping

import jax.numpy as jnp
import numpy as np

from rnn_vos_jax.inference.object_merge import exclusive_masks
from rnn_vos_jax.inference.predictor_inputs import check_frame, first_mask, resize_frame
from rnn_vos_jax.inference.tracker import _probabilities, compiled_slots


@dataclasses.dataclass(frozen=True)
class SlotVideo:
    """A video to segment: `key` is handed back with each of its frames.

    Attributes:
      frames: uint8[N, H0, W0, 3], or N frames uint8[H0, W0, 3]; read when the video is admitted.
      first_masks: object id -> (index of its first frame, bool[H0, W0] mask on that frame).
    """

    key: Hashable
    frames: Iterable[np.ndarray]
    first_masks: Mapping[int, tuple[int, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class SlotFrame:
    """One frame of one video, as StreamingPredictor.predict_with_outputs yields it.

    Attributes:
      key: the SlotVideo's key.
      index: the frame's index in its video.
      last: whether it is the video's last frame.
      probs: float32[K, H0, W0], objects in ascending id order: 0 before an object's first
        frame, exactly its given mask on that frame, the model's probability afterwards.
      extras: {output name: {object id: float32[H, W, C]}} at the model size, for the objects
        stepped on this frame.
    """

    key: Hashable
    index: int
    last: bool
    probs: np.ndarray
    extras: dict


class _Video:
    """An admitted video: its frames at the model size, objects, slots and next frame."""

    def __init__(self, video: SlotVideo, image_size, slots: list[int]):
        self.key = video.key
        self.small, size = [], None
        for t, frame in enumerate(video.frames):
            frame = check_frame(t, frame)
            if size is not None and frame.shape[:2] != size:
                raise ValueError(
                    f"video {video.key}: frame {t} is {frame.shape[:2]}, earlier frames {size}"
                )
            size = frame.shape[:2]
            self.small.append(resize_frame(frame, image_size))
        if size is None:
            raise ValueError(f"video {video.key}: no frames")
        self.size = size
        self.object_ids = sorted(int(o) for o in video.first_masks)
        self.slots = np.asarray(slots, np.int64)  # object i runs in slot slots[i]
        self.starts = np.asarray([int(video.first_masks[o][0]) for o in self.object_ids])
        if len(self.starts) and self.starts.max() >= len(self.small):
            raise ValueError(
                f"video {video.key}: an object starts after its last frame "
                f"(first frames {self.starts.tolist()}, {len(self.small)} frames)"
            )
        self.masks = [
            first_mask(o, t, m, size, image_size)
            for o, (t, m) in ((o, video.first_masks[o]) for o in self.object_ids)
        ]
        self.t = 0

    @property
    def done(self) -> bool:
        return self.t >= len(self.small)


class SlotRunner:
    """Segments a stream of videos with `num_slots` object slots (the module docstring).

    Args:
      predictor: a StreamingPredictor: its model, variables, input size, per-frame outputs and
        fed-back mask rule (feedback) are the runner's.
      num_slots: S, the object slots stepped together; no video may have more objects.
    """

    def __init__(self, predictor, num_slots: int):
        if num_slots < 1:
            raise ValueError(f"num_slots={num_slots}: needs at least one object slot")
        self.predictor = predictor
        self.num_slots = int(num_slots)
        self._init, self._step, self._step_outputs = compiled_slots(predictor.model)
        self._carry = None

    def run(self, videos: Iterable[SlotVideo]) -> Iterator[list[SlotFrame]]:
        """Segments `videos`, admitting each (in order) once its objects fit in the free slots.

        Yields:
          per step of the slots, the SlotFrame of each video in it (every frame of every video
          comes out once, in frame order within its video; a video with no objects comes out
          at once, all zeros).

        Raises:
          ValueError: naming the video: more objects than slots, or bad frames or masks.
        """
        p = self.predictor
        pending, queue = None, iter(videos)
        free, active = list(range(self.num_slots)), []
        exhausted = False
        while True:
            while not exhausted:  # admit what fits, in order
                if pending is None:
                    pending = next(queue, None)
                    if pending is None:
                        exhausted = True
                        break
                n = len(pending.first_masks)
                if n > self.num_slots:
                    raise ValueError(
                        f"video {pending.key} has {n} objects but there are {self.num_slots} "
                        "object slots (config.eval.object_slots): set it to at least the "
                        "largest number of objects in a video"
                    )
                if n > len(free):
                    break
                if n == 0:  # nothing to segment: all-background frames
                    yield from self._empty(pending)
                else:
                    free.sort()
                    active.append(_Video(pending, p.image_size, free[:n]))
                    del free[:n]
                pending = None
            if not active:
                return
            yield self._advance(active)
            for video in [v for v in active if v.done]:
                active.remove(video)
                free.extend(video.slots.tolist())

    def _empty(self, video: SlotVideo) -> Iterator[list[SlotFrame]]:
        frames = list(video.frames)
        for t, frame in enumerate(frames):
            size = check_frame(t, frame).shape[:2]
            probs = np.zeros((0, *size), np.float32)
            extras = {name: {} for name in self.predictor.outputs}
            yield [SlotFrame(video.key, t, t == len(frames) - 1, probs, extras)]

    def _advance(self, active: list[_Video]) -> list[SlotFrame]:
        """Steps every active video by one frame; the same order of operations as
        tracker.Tracker.step: step the running objects, then start those starting here."""
        p, s = self.predictor, self.num_slots
        frames = np.zeros((s, *p.image_size, 3), np.uint8)
        for v in active:
            frames[v.slots] = v.small[v.t]
        frames = jnp.asarray(frames)
        if self._carry is None:
            self._carry = p._empty_carry(p.variables, frames[0], s)
        running = [v.starts < v.t for v in active]
        values = {}
        if any(r.any() for r in running):
            if p.outputs:
                self._carry, logits, more = self._step_outputs(p.variables, self._carry, frames)
                values = {name: np.asarray(more[name]) for name in p.outputs}
            else:
                self._carry, logits = self._step(p.variables, self._carry, frames)
        masks = np.zeros((s, *p.image_size), np.float32)
        start = np.zeros((s,), bool)
        group = np.full((s,), -1, np.int32)
        out = []
        for i, (v, run) in enumerate(zip(active, running)):
            probs = np.zeros((len(v.object_ids), *v.size), np.float32)
            if run.any():
                probs[run] = np.asarray(_probabilities(logits, v.size, v.slots))[run]
            for j in np.flatnonzero(v.starts == v.t):
                probs[j], masks[v.slots[j]] = v.masks[j]
                start[v.slots[j]] = True
            group[v.slots] = i
            extras = {
                name: {v.object_ids[j]: x[v.slots[j]] for j in np.flatnonzero(run)}
                for name, x in values.items()
            }
            extras.update({name: {} for name in p.outputs if name not in extras})
            out.append(SlotFrame(v.key, v.t, v.t == len(v.small) - 1, probs, extras))
        if start.any():
            self._carry = self._init(
                p.variables, frames, jnp.asarray(masks), jnp.asarray(start), self._carry
            )
        if p.feedback == "exclusive":
            live = np.zeros((s,), bool)
            for v in active:
                live[v.slots[v.starts <= v.t]] = True
            key = p.fed_back_mask
            fed = exclusive_masks(self._carry[key], jnp.asarray(live), jnp.asarray(group))
            self._carry = dict(self._carry, **{key: fed})
        for v in active:
            v.t += 1
        return out
