"""Which object owns a pixel: the merge of per-object probabilities into an id map (the authors'
evaluation rule) and, for fed-back masks, the same competition without a background score.

The fed-back mask choices (config.eval.feedback) live here too: 'exclusive' is this competition.
Evaluation, the segment command and API users merge with `merge_probabilities`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

BACKGROUND_SCORE = 0.5  # what an object's probability must exceed to own a pixel
FEEDBACKS = ("independent", "exclusive")  # config.eval.feedback


def check_feedback(feedback: str) -> str:
    """feedback if it is one of FEEDBACKS, else a ValueError naming config.eval.feedback."""
    if feedback not in FEEDBACKS:
        raise ValueError(f"config.eval.feedback={feedback!r}: expected one of {FEEDBACKS}")
    return feedback


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


@jax.jit
def exclusive_masks(masks: jax.Array, live: jax.Array, group: jax.Array | None = None) -> jax.Array:
    """Each live object's mask, kept only where it is the largest among the live objects of
    its group (its video, when objects of several videos share a batch: inference/slots.py).

    Ties go to the earlier object, as in `merge_probabilities`; there is no background
    competitor (a pixel's low probability stays as it is).

    Args:
      masks: float[K, H, W, 1] per-object probabilities (the carry's fed-back mask,
        Family.fed_back_mask).
      live: bool[K], the objects that compete (started, not padding); the others' masks are
        returned unchanged and take no pixel from anyone.
      group: int[K], which objects compete with each other (default: all of them); within a
        group, a lower index is an earlier object.

    Returns:
      float[K, H, W, 1]: live objects' masks with 0 where another live object of their group
      has a larger one.
    """
    k = masks.shape[0]
    group = jnp.zeros((k,), jnp.int32) if group is None else group
    rivals = live[None, :] & (group[:, None] == group[None, :])  # [object, rival]
    scores = jnp.where(rivals.reshape((k, k, 1, 1, 1)), masks[None], -jnp.inf)
    winner = jnp.argmax(scores, axis=1)  # each object's group's first maximum: [K, H, W, 1]
    own = winner == jnp.arange(k).reshape((k, 1, 1, 1))
    return jnp.where(live.reshape((k, 1, 1, 1)) & ~own, jnp.zeros_like(masks), masks)
