"""Epoch-based training schedules of the authors' recipes, expressed as functions of the step.

The authors count everything in epochs (one pass over the (video, object) pairs). Here an epoch is
`steps_per_epoch` = pairs / global batch optimizer steps (a float: the input pipeline streams
epochs back to back without dropping a partial batch), and the epoch of step s is
floor(s / steps_per_epoch), the epoch the pipeline assigns to the batch's first sample for its
clip-length curriculum, so both stay in lockstep.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections


def epoch_of(step: int, steps_per_epoch: float) -> int:
    """Integer epoch of a host step: floor(step / steps_per_epoch) (= the pipeline's epoch of the
    batch's first sample, floor(step * batch / pairs)); the tiny slack absorbs float rounding."""
    return int(step / steps_per_epoch + 1e-9)


def learning_rate_fn(train_config: ml_collections.ConfigDict, steps_per_epoch: float):
    """Step -> learning rate: constant, then decaying once `lr_decay.after_epoch` is passed.

    lr_decay.kind 'step' (the authors'): they call `StepLR.step()` at the end of every epoch
    e > after_epoch, so during epoch e the scheduler has counted max(0, e - after_epoch - 1)
    epochs and the rate is lr * factor ** (count // every_epochs).
    'cosine': lr * (factor + (1 - factor) * (1 + cos(pi * p)) / 2), p the fraction of the steps
    from after_epoch to the last epoch (num_steps / steps_per_epoch when num_steps > 0, else
    num_epochs) already done (0 before, 1 at the end), so the rate falls
    smoothly, step by step, from lr to factor * lr at the last step.
    lr_warmup_steps W > 0 (not the authors') scales the rate of step s < W by (s + 1) / W.

    Args:
      train_config: config.train with learning_rate, num_epochs, lr_decay.{kind, after_epoch,
        every_epochs, factor} (after_epoch < 0 disables the decay) and optionally
        lr_warmup_steps.
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      A callable (int or int32 scalar step) -> float32 learning rate (an optax schedule).
    """
    base = float(train_config.learning_rate)
    decay = train_config.lr_decay
    kind = decay.kind
    after, every, factor = int(decay.after_epoch), int(decay.every_epochs), float(decay.factor)
    if kind not in ("step", "cosine"):
        raise ValueError(f"config.train.lr_decay.kind must be 'step' or 'cosine', got {kind!r}")
    if kind == "cosine" and after >= 0:
        # The run's last epoch: num_steps (> 0) overrides num_epochs, as in train.total_steps.
        steps = int(train_config.num_steps)
        last = steps / steps_per_epoch if steps > 0 else float(train_config.num_epochs)

    warmup = int(train_config.lr_warmup_steps)
    if warmup < 0:
        raise ValueError(f"config.train.lr_warmup_steps must be >= 0, got {warmup}")

    def schedule(step):
        rate = decayed(step)
        if warmup == 0:
            return rate
        ramp = jnp.minimum((jnp.asarray(step, jnp.float32) + 1.0) / warmup, 1.0)
        return rate * ramp

    def decayed(step):
        if after < 0:
            return jnp.asarray(base, jnp.float32)
        epochs = jnp.asarray(step, jnp.float32) / steps_per_epoch
        if kind == "cosine":
            # A run that ends before after_epoch never decays (as StepLR's would not).
            p = jnp.clip((epochs - after) / max(last - after, 1e-9), 0.0, 1.0)
            shape = factor + (1.0 - factor) * 0.5 * (1.0 + jnp.cos(jnp.pi * p))
            return jnp.float32(base) * shape.astype(jnp.float32)
        epoch = jnp.floor(epochs + 1e-4).astype(jnp.int32)
        count = jnp.maximum(epoch - after - 1, 0) // every
        return jnp.asarray(base, jnp.float32) * jnp.float32(factor) ** count.astype(jnp.float32)

    return schedule


def sample_prob(
    step: int, train_config: ml_collections.ConfigDict, steps_per_epoch: float
) -> float:
    """Scheduled-sampling probability of feeding back the previous prediction at `step`.

    Authors (HS2S): after `offset_epochs`, epsilon = max(floor, 1 - slope * (epoch - offset)) and
    the prediction is used when u > epsilon, i.e. with probability 1 - epsilon.

    Args:
      step: optimizer step (host int).
      train_config: config.train with scheduled_sampling.{enabled, offset_epochs, slope,
        epsilon_floor}.
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      Probability in [0, 1 - epsilon_floor].
    """
    ss = train_config.scheduled_sampling
    if not ss.enabled:
        return 0.0
    epoch = epoch_of(int(step), steps_per_epoch)
    if epoch <= ss.offset_epochs:
        return 0.0
    epsilon = max(float(ss.epsilon_floor), 1.0 - float(ss.slope) * (epoch - ss.offset_epochs))
    return 1.0 - epsilon


def batchnorm_train(
    step: int, train_config: ml_collections.ConfigDict, steps_per_epoch: float
) -> bool:
    """Whether BatchNorm uses batch statistics at `step` (False once frozen, as the authors'
    `model.eval()` after epoch `bn_freeze_after_epoch`; its affine parameters keep training)."""
    after = int(train_config.bn_freeze_after_epoch)
    return after < 0 or epoch_of(int(step), steps_per_epoch) <= after
