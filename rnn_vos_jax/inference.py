"""Streaming per-video inference: all objects of a video in one batch, one jitted step per frame.

Frames are resized to the model's input size (bilinear, PIL, as the authors' torchvision
``Resize``), first masks with nearest neighbour. Each object starts its recurrent carry at its own
first frame (``model.init_carry``) and is advanced by ``model.step`` on every later frame; the
sigmoid probabilities are resized bilinearly back to the original frame size on device. Memory does
not grow with video length: only the carry lives across frames.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

BACKGROUND_SCORE = 0.5


def merge_probabilities(probs: np.ndarray, object_ids: Sequence[int]) -> np.ndarray:
    """Merges per-object probabilities into an id map (the authors' evaluation rule).

    A pixel takes the object with the largest probability if that exceeds the background score
    0.5; ties go to the background, then to the earlier object.

    Args:
      probs: float32[K, H, W] per-object foreground probabilities.
      object_ids: K object ids (1..254), in the order of ``probs``.

    Returns:
      uint8[H, W] ids (0 = background).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != len(object_ids):
        raise ValueError(f"probs {probs.shape} do not match {len(object_ids)} object ids")
    ids = np.asarray([0, *object_ids], np.uint8)
    background = np.full((1, *probs.shape[1:]), BACKGROUND_SCORE, probs.dtype)
    return ids[np.argmax(np.concatenate([background, probs]), axis=0)]


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8[H0, W0, 3] -> uint8[H, W, 3], bilinear (antialiased when shrinking, as PIL)."""
    if frame.shape[:2] == tuple(size):
        return frame
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool[H0, W0] -> bool[H, W], nearest neighbour."""
    if mask.shape == tuple(size):
        return mask.astype(bool)
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(im.resize((size[1], size[0]), Image.NEAREST)) > 127


def _bucket(k: int) -> int:
    # Pad the object batch to a power of two so videos with 3 or 4 objects share one compilation.
    return 1 << max(0, (k - 1).bit_length())


@functools.lru_cache(maxsize=16)
def _compiled(model):
    """Jitted (init, step) for a model; cached so predictors of equal models share compilations."""

    def init(variables, frame, masks, start, carry):
        k = masks.shape[0]
        frames = jnp.broadcast_to(frame[None], (k, *frame.shape))
        fresh = model.apply(variables, frames, masks[..., None], method="init_carry")
        # Only objects starting on this frame take the fresh carry.
        return jax.tree.map(
            lambda new, old: jnp.where(start.reshape((k,) + (1,) * (new.ndim - 1)), new, old),
            fresh,
            carry,
        )

    def step(variables, carry, frame):
        k = jax.tree.leaves(carry)[0].shape[0]
        frames = jnp.broadcast_to(frame[None], (k, *frame.shape))
        return model.apply(variables, carry, frames, method="step")

    def empty_carry(variables, frame, k):
        frames = jax.ShapeDtypeStruct((k, *frame.shape), frame.dtype)
        masks = jax.ShapeDtypeStruct((k, *frame.shape[:2], 1), jnp.float32)
        shapes = jax.eval_shape(
            lambda v, f, m: model.apply(v, f, m, method="init_carry"), variables, frames, masks
        )
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    return jax.jit(init), jax.jit(step), empty_carry


@functools.partial(jax.jit, static_argnums=(1,))
def _probabilities(logits, size):
    probs = jax.nn.sigmoid(logits[..., 0].astype(jnp.float32))
    # Clipped: the resampling kernel's float rounding can step a hair outside [0, 1].
    return jnp.clip(jax.image.resize(probs, (probs.shape[0], *size), "bilinear"), 0.0, 1.0)


class VideoPredictor:
    """Runs a model with ``init_carry``/``step`` methods over videos, frame by frame.

    Attributes:
      model: Flax module (contract: ``init_carry(frame0 [N,H,W,3], mask0 [N,H,W,1]) -> carry``,
        ``step(carry, frame [N,H,W,3]) -> (carry, logits f32[N,H,W,1])``).
      variables: its variables ({'params', 'batch_stats'}), placed on device.
      image_size: (H, W) model input size.
    """

    def __init__(self, model, variables, image_size: Sequence[int]):
        self.model = model
        self.set_variables(variables)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._init, self._step, self._empty_carry = _compiled(model)

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
        starts = np.array([int(first_masks[o][0]) for o in object_ids])
        k, kp = len(object_ids), _bucket(len(object_ids))
        carry = None
        for t, frame in enumerate(frames):
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(
                    f"frame {t}: expected uint8[H, W, 3], got {frame.dtype}{frame.shape}"
                )
            size = frame.shape[:2]
            small = jnp.asarray(resize_frame(frame, self.image_size))
            out = np.zeros((k, *size), np.float32)
            running = np.flatnonzero(starts < t)
            if len(running):
                carry, logits = self._step(self.variables, carry, small)
                out[running] = np.asarray(_probabilities(logits, size))[running]
            starting = np.flatnonzero(starts == t)
            if len(starting):
                masks = np.zeros((kp, *self.image_size), np.float32)
                start = np.zeros((kp,), bool)
                for i in starting:
                    mask = np.asarray(first_masks[object_ids[i]][1], bool)
                    if mask.shape != size:
                        raise ValueError(
                            f"object {object_ids[i]}: first mask {mask.shape} does not match "
                            f"frame {t} of size {size}"
                        )
                    if not mask.any():
                        raise ValueError(
                            f"object {object_ids[i]}: first mask on frame {t} is empty"
                        )
                    masks[i] = resize_mask(mask, self.image_size)
                    out[i] = mask
                    start[i] = True
                if carry is None:
                    carry = self._empty_carry(self.variables, small, kp)
                carry = self._init(self.variables, small, jnp.asarray(masks), start, carry)
            yield out
        if carry is None and len(starts):
            raise ValueError(f"no object starts within the video (first frames {starts.tolist()})")
