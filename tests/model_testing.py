"""Shared by the model tests: random clips, random variables of any module, full configs."""

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


def variable_shapes(module, *args, **kwargs):
    """Variable shapes of `module.init(rngs, *args, **kwargs)` (jax.eval_shape: no compilation).

    A family model takes its clip: variable_shapes(model, frames, masks).
    """
    rngs = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    return jax.eval_shape(lambda *a: module.init(rngs, *a, **kwargs), *args)


def random_variables(module, *args, seed=0, **kwargs):
    """He-scaled random parameters and plausible BatchNorm statistics of any module (a family
    model, a block, a backbone), shaped as `variable_shapes(module, *args, **kwargs)`, without
    compiling or running its init. A family model's `args` default to a 1-sample 2-frame clip at
    64x64; pass its real clip where the parameters depend on the frame size (Axial-DeepLab).

    At tiny widths the authors' from-scratch inits shrink activations several times per layer,
    so some gradients would underflow to zero; He scaling keeps every layer alive.
    """
    rng = np.random.default_rng(seed)

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

    shapes = variable_shapes(module, *(args or clip(1, 2)), **kwargs)
    return jax.tree_util.tree_map_with_path(fill, shapes)


def save_random_checkpoint(path, model_config, seed=0):
    """Saves `random_variables` of `model_config`'s model as an orbax variables directory
    (config.init_from, api.Segmenter.from_checkpoint); returns `path`."""
    from rnn_vos_jax import models
    from rnn_vos_jax.runtime import checkpoints

    checkpoints.save_variables(path, random_variables(models.build(model_config), seed=seed))
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
