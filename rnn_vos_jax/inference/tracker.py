"""The tracking state of one video for a streaming model (`Tracker`): objects in, probabilities out,
one frame at a time, with objects added, removed or corrected at any frame, saved and loaded.

    tracker = segmenter.start(frame0, first_mask)     # api.Segmenter: bool or id mask of frame0
    probs = tracker.step(frame)                       # float32[K, H, W], K = len(object_ids)
    probs = tracker.step(frame, add={3: mask3}, correct={1: mask1})
    tracker.remove(2)
    tracker.save("state/")                            # and segmenter.load_tracker("state/")

A recurrent model's whole state is its carry (`Family` contract: `init_carry`/`step`), a few arrays
per object whose size does not depend on the video length, so the tracker holds that carry, the
frame index and which batch slot each object occupies; `StreamingPredictor` runs every video
through one. The objects of a video run as one batch padded to a power of two (`_bucket`);
objects known in advance (`reserve`) take the slot of their rank among them, as the predictor
always did, so a tracker and the predictor compute the same batches, bit for bit. A slot count
never shrinks: results depend on the batch they were computed in, and a saved state keeps it.

Corrections (`step(..., correct=...)`): the object's output on that frame is the given mask, and
from there on the model continues from it as if it had predicted it. Families that feed their
previous mask back (Family.fed_back_mask, e.g. HS2S's prev_pred) get it in place of their own
prediction; the rest of the carry (the recurrent memory, the reference frame's encodings) stays,
so the object keeps what it learnt about its appearance and only its position is reset. Families
that feed back no mask (S2S, S2S++) see a mask only when a carry is initialised, so for them a
correction starts the object's memory afresh from the corrected frame and mask.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.inference import tracker_files
from rnn_vos_jax.inference.object_merge import exclusive_masks
from rnn_vos_jax.inference.predictor_inputs import check_frame, first_mask, resize_frame

MAX_OBJECT_ID = 254  # ids are written to palette PNGs (uint8), where 255 is void


def _bucket(k: int) -> int:
    # Pad the object batch to a power of two so videos with 3 or 4 objects share one compilation.
    return 1 << max(0, (k - 1).bit_length())


def _slot_calls(model):
    """The model's calls over K object slots, each with its own frame uint8[K, H, W, 3]:
    (init(variables, frames, masks f32[K,H,W], start bool[K], carry) -> carry, with only the
    starting slots' carry fresh; step(variables, carry, frames) -> (carry, logits f32[K,H,W,1]);
    step_outputs(...) -> (carry, logits, {name: [K, H, W, C]}))."""

    def init(variables, frames, masks, start, carry):
        fresh = model.apply(variables, frames, masks[..., None], method="init_carry")
        k = masks.shape[0]
        return jax.tree.map(
            lambda new, old: jnp.where(start.reshape((k,) + (1,) * (new.ndim - 1)), new, old),
            fresh,
            carry,
        )

    def step(variables, carry, frames):
        return model.apply(variables, carry, frames, method="step")

    def step_outputs(variables, carry, frames):
        return model.apply(variables, carry, frames, method="step_outputs")

    return init, step, step_outputs


@functools.lru_cache(maxsize=16)
def compiled_slots(model):
    """Jitted `_slot_calls` (init, step, step_outputs): every slot steps its own video's frame
    (inference/slots.py)."""
    return tuple(jax.jit(f) for f in _slot_calls(model))


@functools.lru_cache(maxsize=16)
def _compiled(model):
    """Jitted (init, step, empty_carry) over one frame uint8[H, W, 3] for all K slots; cached so
    predictors of equal models share compilations."""
    slot_init, slot_step, _ = _slot_calls(model)

    def init(variables, frame, masks, start, carry):
        k = masks.shape[0]
        frames = jnp.broadcast_to(frame[None], (k, *frame.shape))
        return slot_init(variables, frames, masks, start, carry)

    def step(variables, carry, frame):
        k = jax.tree.leaves(carry)[0].shape[0]
        return slot_step(variables, carry, jnp.broadcast_to(frame[None], (k, *frame.shape)))

    shapes = {}  # (H, W, k) -> the carry's structure

    def empty_carry(variables, frame, k):
        # eval_shape traces the model: once per input size and slot count, not once per video.
        key = (*frame.shape[:2], k)
        if key not in shapes:
            shapes[key] = carry_shapes(model, variables, frame.shape[:2], k)
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes[key])

    return jax.jit(init), jax.jit(step), empty_carry


def carry_shapes(model, variables, image_size: Sequence[int], k: int):
    """The carry's structure for `k` objects at the model size: a pytree of ShapeDtypeStructs."""
    frames = jax.ShapeDtypeStruct((k, *image_size, 3), jnp.uint8)
    masks = jax.ShapeDtypeStruct((k, *image_size, 1), jnp.float32)
    return jax.eval_shape(
        lambda v, f, m: model.apply(v, f, m, method="init_carry"), variables, frames, masks
    )


@functools.lru_cache(maxsize=16)
def _compiled_outputs(model):
    """Jitted step_outputs: (variables, carry, frame) -> (carry, logits, {name: [K,H,W,C]})."""
    *_, slot_step_outputs = _slot_calls(model)

    def step(variables, carry, frame):
        k = jax.tree.leaves(carry)[0].shape[0]
        frames = jnp.broadcast_to(frame[None], (k, *frame.shape))
        return slot_step_outputs(variables, carry, frames)

    return jax.jit(step)


@functools.partial(jax.jit, static_argnums=(1,))
def _probabilities(logits, size, rows=None):
    """float32[n, *size] from logits [K, h, w, 1]: rows int[n] of them (None: all K)."""
    if rows is not None:  # in the same program: one dispatch per video of a slotted step
        logits = logits[rows]
    probs = jax.nn.sigmoid(logits[..., 0].astype(jnp.float32))
    # Clipped: the resampling kernel's float rounding can step a hair outside [0, 1].
    return jnp.clip(jax.image.resize(probs, (probs.shape[0], *size), "bilinear"), 0.0, 1.0)


@jax.jit
def _replace_masks(masks, new, chosen):
    """masks float[K, H, W, 1] with the chosen objects' replaced by new float32[K, H, W]."""
    return jnp.where(chosen.reshape((-1, 1, 1, 1)), new[..., None].astype(masks.dtype), masks)


def _grow(x, k):
    return jnp.concatenate([x, jnp.zeros((k - x.shape[0], *x.shape[1:]), x.dtype)])


class Tracker:
    """One video's tracking state for a streaming model (the module docstring).

    Build it with `api.Segmenter.start` / `.tracker` / `.load_tracker` (or from a
    `StreamingPredictor`: `Tracker(predictor)`).

    Args:
      predictor: the StreamingPredictor whose model, variables, image size, fed-back mask
        setting (feedback) and per-frame outputs it runs.
      reserve: object ids known in advance: each gets the slot of its rank among them, and the
        batch is sized for all of them from the start (what StreamingPredictor does, so that
        a video's objects run in one batch whatever frame they start on).
      source: where the weights came from (a checkpoint path), recorded by `save`.
      config: the full config the model was built from, recorded by `save`.

    Attributes:
      object_ids: the tracked objects, ascending: the order of `step`'s probabilities.
      frame_index: frames stepped so far (the index the next frame gets).
      frame_size: (H, W) of the frames, fixed by the first frame (None before it).
      probabilities: float32[K, H, W] of the last frame (None before the first).
    """

    def __init__(
        self,
        predictor,
        reserve: Sequence[int] = (),
        *,
        source: str | None = None,
        config: Any = None,
    ):
        self.predictor = predictor
        self.source, self.config = source, config
        self.frame_index = 0
        self.frame_size: tuple[int, int] | None = None
        self.probabilities: np.ndarray | None = None
        self.carry = None  # pytree, leading axis num_slots; None until an object starts
        self.slots: dict[int, int] = {}  # tracked object -> batch slot
        self.reserved = {int(o): i for i, o in enumerate(sorted(set(reserve)))}
        self.num_slots = _bucket(max(1, len(self.reserved)))
        self.info: dict = {}  # what `save` was given as `info`, after `load`

    @property
    def object_ids(self) -> list[int]:
        return sorted(self.slots)

    # -- stepping ------------------------------------------------------------------------------

    def step(
        self,
        frame: np.ndarray,
        add: Mapping[int, np.ndarray] | None = None,
        correct: Mapping[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Segments the next frame.

        Args:
          frame: uint8[H, W, 3] RGB, the size of the earlier frames.
          add: new object id (1..254) -> bool[H, W] mask on this frame: the object starts here.
          correct: tracked object id -> bool[H, W] mask on this frame (a correction: module doc).

        Returns:
          float32[K, H, W] for `object_ids` (after this frame's additions): the model's
          probability, or exactly the given mask (0/1) for an object added or corrected here.

        Raises:
          ValueError: naming the frame or object: a frame of another size or type, an id added
            twice or corrected before it was added, an empty mask or one of another size.
            The state is unchanged then.
        """
        return self.step_with_outputs(frame, add, correct)[0]

    def step_with_outputs(self, frame, add=None, correct=None) -> tuple[np.ndarray, dict]:
        """As `step`, also returning the predictor's extra per-frame outputs:
        {name: {object id: float32[H, W, C]}} at the model size, for the objects stepped (those
        tracked before this frame); StreamingPredictor.predict_with_outputs hands them out."""
        p = self.predictor
        t = self.frame_index
        frame = check_frame(t, frame)
        size = frame.shape[:2]
        if self.frame_size is not None and size != self.frame_size:
            raise ValueError(
                f"frame {t} is {size[0]}x{size[1]} but the tracked frames are "
                f"{self.frame_size[0]}x{self.frame_size[1]} (height x width)"
            )
        add, correct = self._checked(t, size, add or {}, correct or {})
        small = jnp.asarray(resize_frame(frame, p.image_size))
        out = {}
        extras = {name: {} for name in p.outputs}
        if self.slots:
            if p.outputs:
                carry, logits, more = p._step_outputs(p.variables, self.carry, small)
                for name in p.outputs:
                    values = np.asarray(more[name])
                    extras[name] = {o: values[s] for o, s in self.slots.items()}
            else:
                carry, logits = p._step(p.variables, self.carry, small)
            self.carry = carry
            probs = np.asarray(_probabilities(logits, size))
            out = {o: probs[s] for o, s in self.slots.items()}
        if correct:
            masks, chosen = self._given(t, size, correct, out, self.slots)
            if p.fed_back_mask is not None:
                key = p.fed_back_mask
                self.carry = dict(
                    self.carry, **{key: _replace_masks(self.carry[key], masks, chosen)}
                )
            else:  # the mask enters these models only through init_carry
                self.carry = p._init(p.variables, small, jnp.asarray(masks), chosen, self.carry)
        if add:
            starting = self._assign(sorted(add))
            masks, start = self._given(t, size, add, out, starting)
            if self.carry is None:
                self.carry = p._empty_carry(p.variables, small, self.num_slots)
            self.carry = p._init(p.variables, small, jnp.asarray(masks), start, self.carry)
            self.slots.update(starting)
        if p.feedback == "exclusive" and self.carry is not None:
            live = np.zeros((self.num_slots,), bool)
            live[list(self.slots.values())] = True
            key = p.fed_back_mask
            self.carry = dict(self.carry, **{key: exclusive_masks(self.carry[key], live)})
        self.frame_size = size
        self.frame_index = t + 1
        ids = self.object_ids
        self.probabilities = (
            np.stack([out[o] for o in ids]) if ids else np.zeros((0, *size), np.float32)
        )
        return self.probabilities, extras

    def _checked(self, t, size, add, correct):
        """add and correct as {int id: mask}, checked before anything changes."""
        add = {int(o): m for o, m in add.items()}
        correct = {int(o): m for o, m in correct.items()}
        for o in add:
            if not 1 <= o <= MAX_OBJECT_ID:
                raise ValueError(f"frame {t}: object id {o} is not in 1..{MAX_OBJECT_ID}")
            if o in self.slots:
                raise ValueError(
                    f"frame {t}: object {o} is already tracked (since an earlier frame): "
                    "pass its mask as a correction (correct=) instead"
                )
        for o in correct:
            if o not in self.slots:
                raise ValueError(
                    f"frame {t}: object {o} is not tracked (tracked: {self.object_ids}), so it "
                    "cannot be corrected: add it (add=) instead"
                )
        for o, m in (*add.items(), *correct.items()):
            first_mask(o, t, m, size, self.predictor.image_size)  # raises on bad masks
        return add, correct

    def _given(self, t, size, masks_by_id, out, slots):
        """Model-size masks float32[S, H, W] and a bool[S] selection for the given masks of
        frame t (S = num_slots); `out` takes each given mask at the frame size."""
        p = self.predictor
        masks = np.zeros((self.num_slots, *p.image_size), np.float32)
        chosen = np.zeros((self.num_slots,), bool)
        for o, mask in masks_by_id.items():
            given, masks[slots[o]] = first_mask(o, t, mask, size, p.image_size)
            out[o] = given.astype(np.float32)
            chosen[slots[o]] = True
        return masks, chosen

    def _assign(self, new_ids: list[int]) -> dict[int, int]:
        """Slots for objects starting now: their reserved one, else the lowest free one (the
        batch doubles when none is free)."""
        taken = set(self.slots.values()) | {
            s for o, s in self.reserved.items() if o not in self.slots and o not in new_ids
        }
        out = {}
        for o in new_ids:
            slot = self.reserved.get(o)
            if slot is None or slot in taken:
                slot = next(s for s in range(len(taken) + 1) if s not in taken)
            taken.add(slot)
            out[o] = slot
        needed = max(taken) + 1
        if needed > self.num_slots:
            k = _bucket(needed)
            if self.carry is not None:
                self.carry = jax.tree.map(lambda x: _grow(x, k), self.carry)
            self.num_slots = k
        return out

    def remove(self, object_id: int) -> None:
        """Stops tracking an object: it leaves `object_ids` from the next frame on (its slot is
        free for an object added later; the batch keeps its size)."""
        o = int(object_id)
        if o not in self.slots and o not in self.reserved:
            raise ValueError(f"object {o} is not tracked (tracked: {self.object_ids})")
        self.slots.pop(o, None)
        self.reserved.pop(o, None)

    # -- saving --------------------------------------------------------------------------------

    def save(self, folder: str, info: Mapping[str, Any] | None = None) -> str:
        """Saves the state to `folder` (atomically; tracker_files has the layout), with
        `info` (JSON) kept beside it for the caller (the segment command keeps its run there).

        Returns: the folder.
        """
        return tracker_files.write(folder, self.snapshot(info))

    def snapshot(self, info: Mapping[str, Any] | None = None) -> tracker_files.Snapshot:
        """The state as host arrays and a JSON record (what `save` writes; cheap to write on
        another thread while the tracker steps on)."""
        p = self.predictor
        arrays = {}
        if self.carry is not None:
            for path, leaf in jax.tree_util.tree_flatten_with_path(self.carry)[0]:
                arrays[jax.tree_util.keystr(path)] = np.array(leaf)
        record = {
            **tracker_files.origin(p.model, p.variables, p.image_size, p.feedback),
            "checkpoint": self.source,
            "config": tracker_files.config_json(self.config),
            "object_ids": self.object_ids,
            "slots": {str(o): s for o, s in self.slots.items()},
            "reserved": {str(o): s for o, s in self.reserved.items()},
            "num_slots": self.num_slots,
            "frame_index": self.frame_index,
            "frame_size": None if self.frame_size is None else list(self.frame_size),
            "info": dict(info or {}),
        }
        return tracker_files.Snapshot(record, arrays)

    @classmethod
    def load(cls, folder: str, predictor, *, source=None, config=None) -> Tracker:
        """The state saved in `folder`, to step on with `predictor`.

        Raises:
          FileNotFoundError: no saved state there.
          ValueError: a state of another model family, model fields, model size, fed-back mask
            setting or weights (checkpoint), naming the difference; or damaged arrays.
        """
        record, arrays = tracker_files.read(folder)
        p = predictor
        here = tracker_files.origin(p.model, p.variables, p.image_size, p.feedback)
        tracker_files.check_origin(folder, record, here, source)
        tracker = cls(predictor, source=record.get("checkpoint") or source, config=config)
        tracker.num_slots = int(record["num_slots"])
        tracker.slots = {int(o): int(s) for o, s in record["slots"].items()}
        tracker.reserved = {int(o): int(s) for o, s in record["reserved"].items()}
        tracker.frame_index = int(record["frame_index"])
        size = record["frame_size"]
        tracker.frame_size = None if size is None else (int(size[0]), int(size[1]))
        tracker.info = record.get("info", {})
        if arrays:
            shapes = carry_shapes(p.model, p.variables, p.image_size, tracker.num_slots)
            tracker.carry = tracker_files.restore_tree(folder, shapes, arrays)
        return tracker


def check_streaming(model) -> None:
    """Raises a ValueError naming the family when its model does not stream (init_carry/step)."""
    fam = models.family_of(model)
    if fam.prediction != "streaming":
        raise ValueError(
            f"model family {fam.name!r} predicts whole clips (offline, prediction="
            f"{fam.prediction!r}): it has no state to step frame by frame; a tracker needs a "
            f"streaming family ({', '.join(streaming_families())})"
        )


def streaming_families() -> list[str]:
    return [n for n in models.FAMILIES.names() if models.family(n).prediction == "streaming"]
