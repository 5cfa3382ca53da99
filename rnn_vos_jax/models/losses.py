"""Sequence losses of S2S, S2S++ and HS2S (pure functions, no TensorFlow).

The authors (RS2S and HS2S `train.py`) compute, for every predicted frame, statistics over the
*whole batch* of that frame (not per sample) and then average the per-frame losses:

    L_t = 0.6 * balanced_BCE_t + 0.2 * soft_Jaccard_t + 0.2 * distance_CE_t

* balanced BCE in the OSVOS form: with pos/neg the foreground/background pixel counts and
  N = pos + neg, ``(neg/N * sum_{y=1} -log s(z) + pos/N * sum_{y=0} -log(1 - s(z))) / N``;
* soft Jaccard: ``-log((I + eps) / (U - I + eps))`` with p = s(z), I = sum p*y, U = sum p + sum y;
* distance CE: softmax cross-entropy of the K distance logits, mean over pixels, no class weights.

Paper A (eq. 7) instead writes ``lambda * L_seg + (1 - lambda) * L_dist`` with lambda = 0.8 and
L_seg the balanced BCE (``kind='paper'``). Both kinds average over predicted frames, as the code
does (the paper's eq. 5 sums over time; that only rescales the loss).

Padded frames (``valid`` False) contribute nothing: a frame's statistics are taken over the samples
that are valid at that frame, and frames with no valid sample are left out of the mean. Everything
is computed in float32 whatever the input dtype, with stable log-sigmoid / log-softmax.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

# The authors' epsilon in the Jaccard ratio; representable in float32 (we compute in float32).
JACCARD_EPS = 1e-15

KINDS = ("authors", "paper")


def _frame_weights(valid: jax.Array, ndim: int) -> jax.Array:
    """valid bool[B,T] -> float32 weights broadcastable to a [B,T,...] array of rank ndim."""
    return valid.astype(jnp.float32).reshape(valid.shape + (1,) * (ndim - 2))


def balanced_bce(logits: jax.Array, masks: jax.Array, valid: jax.Array) -> jax.Array:
    """Per-frame class-balanced BCE (OSVOS form), statistics over the valid samples of the batch.

    Args:
      logits: float[B,T,H,W,1] mask logits (any float dtype; computed in float32).
      masks: float[B,T,H,W,1] targets; foreground is ``masks >= 0.5`` (as OSVOS).
      valid: bool[B,T]; samples that are invalid at frame t do not count at frame t.

    Returns:
      float32[T] loss per frame (0 for frames with no valid sample).
    """
    z = logits.astype(jnp.float32)
    y = (masks >= 0.5).astype(jnp.float32)
    w = _frame_weights(valid, z.ndim)
    axes = (0, 2, 3, 4)
    pos = jnp.sum(w * y, axis=axes)
    neg = jnp.sum(w * (1.0 - y), axis=axes)
    total = jnp.maximum(pos + neg, 1.0)
    loss_pos = jnp.sum(w * y * -jax.nn.log_sigmoid(z), axis=axes)
    loss_neg = jnp.sum(w * (1.0 - y) * -jax.nn.log_sigmoid(-z), axis=axes)
    return (neg / total * loss_pos + pos / total * loss_neg) / total


def soft_jaccard(logits: jax.Array, masks: jax.Array, valid: jax.Array) -> jax.Array:
    """Per-frame soft Jaccard loss ``-log((I + eps) / (union + eps))`` over the valid samples.

    The union ``sum p + sum y - I`` is evaluated as ``sum p*(1-y) + sum y`` (the same number without
    the cancellation that can make it slightly negative in low precision).

    Args:
      logits: float[B,T,H,W,1] mask logits.
      masks: float[B,T,H,W,1] targets (foreground ``masks >= 0.5``).
      valid: bool[B,T].

    Returns:
      float32[T] loss per frame (0 for frames with no valid sample: both sums are 0).
    """
    p = jax.nn.sigmoid(logits.astype(jnp.float32))
    y = (masks >= 0.5).astype(jnp.float32)
    w = _frame_weights(valid, p.ndim)
    axes = (0, 2, 3, 4)
    inter = jnp.sum(w * p * y, axis=axes)
    union = jnp.sum(w * p * (1.0 - y), axis=axes) + jnp.sum(w * y, axis=axes)
    return -jnp.log((inter + JACCARD_EPS) / (union + JACCARD_EPS))


def distance_cross_entropy(
    distance_logits: jax.Array, distance_labels: jax.Array, valid: jax.Array
) -> jax.Array:
    """Per-frame softmax cross-entropy of the border-distance classes, mean over valid pixels.

    Args:
      distance_logits: float[B,T,H,W,K] raw logits.
      distance_labels: int[B,T,H,W] class indices in [0, K).
      valid: bool[B,T].

    Returns:
      float32[T] loss per frame (0 for frames with no valid sample).
    """
    logp = jax.nn.log_softmax(distance_logits.astype(jnp.float32), axis=-1)
    # A one-hot product, not take_along_axis: the gather's gradient is a scatter-add, slow on
    # CPU (~10 ms of the demo's ~400 ms step); the product selects the same value exactly.
    onehot = jax.nn.one_hot(distance_labels, logp.shape[-1], dtype=logp.dtype)
    nll = -jnp.sum(logp * onehot, axis=-1)
    w = _frame_weights(valid, nll.ndim)
    axes = (0, 2, 3)
    count = jnp.sum(w * jnp.ones_like(nll), axis=axes)
    return jnp.sum(w * nll, axis=axes) / jnp.maximum(count, 1.0)


def _check_shapes(logits, distance_logits, masks, distance_labels, valid):
    if logits.ndim != 5 or logits.shape[-1] != 1:
        raise ValueError(f"logits must be [B,T,H,W,1], got shape {logits.shape}")
    if masks.shape != logits.shape:
        raise ValueError(f"masks shape {masks.shape} != logits shape {logits.shape}")
    if valid.shape != logits.shape[:2]:
        raise ValueError(f"valid shape {valid.shape} != logits [B,T] {logits.shape[:2]}")
    if distance_logits is not None:
        if distance_labels is None:
            raise ValueError("distance_labels is None but distance_logits were given")
        if distance_logits.shape[:4] != logits.shape[:4]:
            raise ValueError(
                f"distance_logits shape {distance_logits.shape} does not match logits "
                f"{logits.shape} on [B,T,H,W]"
            )
        if distance_labels.shape != logits.shape[:4]:
            raise ValueError(
                f"distance_labels shape {distance_labels.shape} != [B,T,H,W] {logits.shape[:4]}"
            )


def sequence_loss(
    logits: jax.Array,
    distance_logits: jax.Array | None,
    masks: jax.Array,
    distance_labels: jax.Array | None,
    valid: jax.Array,
    *,
    kind: str = "authors",
    bce_weight: float = 0.6,
    jaccard_weight: float = 0.2,
    distance_weight: float = 0.2,
    seg_lambda: float = 0.8,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of a batch of predicted sequences, averaged over the valid predicted frames.

    Args:
      logits: float[B,T,H,W,1] mask logits of the predicted frames.
      distance_logits: float[B,T,H,W,K] distance-branch logits, or None (S2S baseline: the
        distance term is dropped, the other weights are kept as given).
      masks: float[B,T,H,W,1] 0/1 ground truth aligned with ``logits``.
      distance_labels: int[B,T,H,W] distance classes aligned with ``logits`` (None iff
        ``distance_logits`` is None is allowed).
      valid: bool[B,T] real (not padded) frames.
      kind: 'authors' = bce_weight*BCE + jaccard_weight*Jaccard + distance_weight*CE per frame;
        'paper' = seg_lambda*BCE + (1 - seg_lambda)*CE per frame (paper A eq. 7, no Jaccard).
      bce_weight, jaccard_weight, distance_weight: weights of kind 'authors'.
      seg_lambda: lambda of kind 'paper'.

    Returns:
      (loss float32 scalar, parts) with parts {'bce', 'jaccard', 'distance'} float32 scalars: the
      unweighted components averaged over valid frames ('distance' is 0 without distance logits).
    """
    if kind not in KINDS:
        raise ValueError(f"loss kind must be one of {KINDS}, got {kind!r}")
    _check_shapes(logits, distance_logits, masks, distance_labels, valid)
    valid = valid.astype(bool)
    frame_used = jnp.any(valid, axis=0).astype(jnp.float32)  # [T]
    num_frames = jnp.maximum(jnp.sum(frame_used), 1.0)

    def frame_mean(per_frame):
        return jnp.sum(per_frame * frame_used) / num_frames

    bce = frame_mean(balanced_bce(logits, masks, valid))
    jac = frame_mean(soft_jaccard(logits, masks, valid))
    if distance_logits is None:
        dist = jnp.zeros((), jnp.float32)
    else:
        dist = frame_mean(distance_cross_entropy(distance_logits, distance_labels, valid))

    if kind == "authors":
        loss = bce_weight * bce + jaccard_weight * jac + distance_weight * dist
    else:
        loss = seg_lambda * bce + (1.0 - seg_lambda) * dist
    return loss, {"bce": bce, "jaccard": jac, "distance": dist}


def segmentation_loss(
    outputs: Mapping[str, jax.Array | None], batch: Mapping[str, jax.Array], **loss_config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`sequence_loss` of a model's outputs over the predicted frames 1..T-1 of a batch.

    The loss of every family whose outputs are mask logits and optional distance logits (S2S,
    S2S++, HS2S); other families add their own terms to it.

    Args:
      outputs: {'logits': float[B,T-1,H,W,1], 'distance': float[B,T-1,H,W,K] or None/absent}.
      batch: masks float32[B,T,H,W,1], distance int32[B,T,H,W], valid bool[B,T].
      **loss_config: keyword arguments of `sequence_loss` (kind and weights).

    Returns:
      (loss, {'bce', 'jaccard', 'distance'}) as `sequence_loss`.
    """
    dist = outputs.get("distance")
    labels = batch["distance"][:, 1:] if dist is not None else None
    return sequence_loss(
        outputs["logits"], dist, batch["masks"][:, 1:], labels, batch["valid"][:, 1:], **loss_config
    )
