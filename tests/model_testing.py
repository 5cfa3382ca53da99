"""Shared by the model tests: random clips and random variables of any model."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rnn_vos_jax.configs import hs2s as hs2s_config


def clip(b=2, t=3, h=64, w=64, seed=0):
    """(frames uint8[b,t,h,w,3], masks float32[b,t,h,w,1]): noise frames, one box per frame."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (b, t, h, w, 3)).astype(np.uint8)
    masks = np.zeros((b, t, h, w, 1), np.float32)
    for i in range(b):
        for j in range(t):
            y, x = rng.integers(h // 16, h // 2, 2)
            masks[i, j, y : y + h // 3, x : x + w // 4] = 1.0
    return jnp.asarray(frames), jnp.asarray(masks)


def batch(frames, masks, num_classes=42, seed=1):
    """A training batch around a clip: random distance labels, every frame valid."""
    b, t, h, w = masks.shape[:4]
    labels = np.random.default_rng(seed).integers(0, num_classes, (b, t, h, w))
    return {
        "frames": frames,
        "masks": masks,
        "distance": jnp.asarray(labels, jnp.int32),
        "valid": jnp.ones((b, t), bool),
    }


def abstract_variables(model, frames, masks):
    """Variable shapes of a family model (no compilation)."""
    return _shapes(model, frames, masks, sample_prob=0.0, train=False)


def _shapes(module, *args, **kwargs):
    rngs = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    return jax.eval_shape(lambda *a: module.init(rngs, *a, **kwargs), *args)


def random_variables(model, frames, masks, seed=0):
    """He-scaled random variables of a family model (see random_variables_of)."""
    return random_variables_of(model, frames, masks, seed=seed, sample_prob=0.0, train=False)


def random_variables_of(module, *args, seed=0, **kwargs):
    """He-scaled random parameters and plausible BatchNorm statistics, without running init.

    Shapes come from `module.init(rngs, *args, **kwargs)` under jax.eval_shape. At tiny widths
    the authors' from-scratch inits shrink activations several times per layer, so some
    gradients would underflow to zero; He scaling keeps every layer alive.
    """
    rng = np.random.default_rng(seed)
    shapes = _shapes(module, *args, **kwargs)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.8, 1.2, leaf.shape).astype(np.float32)
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.uniform(-0.05, 0.05, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def save_random_checkpoint(path, model_config, seed=0):
    """Saves fan-in-scaled random variables of `model_config`'s model (its own variable tree,
    without compiling model.init) as an orbax variables directory; returns `path`."""
    from rnn_vos_jax import models
    from rnn_vos_jax.models import torch_keys
    from rnn_vos_jax.runtime import checkpoints

    rng = np.random.default_rng(seed)
    flat = {}
    for p, s in models.expected_variables(models.build(model_config)).items():
        scale = 1.0 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.05
        flat[p] = rng.normal(0.0, scale, s.shape).astype(np.float32)
        if p[-1] == "var":  # BatchNorm variances must be positive
            flat[p] = np.abs(flat[p]) + 0.5
    checkpoints.save_variables(path, torch_keys.unflatten_variables(flat))
    return path


def assert_close(got, want, rtol=1e-5):
    """Equal up to float32 reassociation: `rtol` of the reference's scale (at least 1)."""
    want = np.asarray(want)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got), want, atol=rtol * scale, rtol=0)


def config_with_model(model_fields, **overrides):
    """A full config (configs/hs2s.py: every key with its one default) whose config.model is
    exactly `model_fields` (the model's other fields keep their defaults), with dotted-key
    `overrides` ({'data.eval_dir': ..., 'eval.feedback': ...}) applied; unlocked."""
    config = hs2s_config.get_config()
    config.unlock()
    config.model = ml_collections.ConfigDict(dict(model_fields))
    config.update_from_flattened_dict(overrides)
    return config
