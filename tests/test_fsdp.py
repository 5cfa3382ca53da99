"""FSDP (config.mesh.fsdp): the layout rule, sharded step == replicated step, checkpoint layouts.

On the 8 fake CPU devices of conftest.py, with the tiny S2S of its demo config (at 32x64, 2-frame
clips) and an FSDP threshold low enough (256 elements) that its kernels fall in all three cases
of the rule: split on the output channels, replicated for being small, replicated for an
indivisible last axis. S2S rather than HS2S: the training step is generic, and the smaller model
compiles its two steps (replicated and sharded) and its init in a third of HS2S's time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from rnn_vos_jax import models
from rnn_vos_jax.configs import s2s
from rnn_vos_jax.runtime import checkpoints
from rnn_vos_jax.training import schedules, sharding, train_state

MIN_SIZE = 256
FSDP = sharding.Fsdp(min_size=MIN_SIZE)


def test_rule_splits_large_divisible_kernels_on_output_channels():
    assert FSDP.spec((3, 3, 64, 32), 8) == PartitionSpec(None, None, None, "data")
    assert FSDP.spec((64, 32), 8) == PartitionSpec(None, "data")
    # 288 elements: split from a threshold of 288 on, replicated above it.
    assert sharding.Fsdp(288).spec((3, 3, 4, 8), 8) == PartitionSpec(None, None, None, "data")
    assert sharding.Fsdp(289).spec((3, 3, 4, 8), 8) == PartitionSpec()
    assert FSDP.spec((3, 3, 4, 8), 4) == PartitionSpec(None, None, None, "data")
    assert FSDP.spec((5, 5, 8, 4), 8) == PartitionSpec()  # 4 channels over 8 devices
    assert FSDP.spec((4096,), 8) == PartitionSpec()  # biases, BatchNorm: never split
    assert FSDP.spec((), 8) == PartitionSpec()
    with pytest.raises(ValueError, match="fsdp_min_size=0"):
        sharding.Fsdp(0)


def _config():
    config = s2s.get_config("demo")
    config.unlock()
    config.data.image_size = (32, 64)
    return config


def test_fsdp_from_config():
    config = _config()
    assert config.mesh.fsdp is False
    assert sharding.fsdp_from_config(config.mesh) is None
    config.mesh.fsdp = True
    assert sharding.fsdp_from_config(config.mesh) == sharding.Fsdp(
        2**18
    )  # the default, configs/common.py
    config.mesh.fsdp_min_size = 1000
    assert sharding.fsdp_from_config(config.mesh).min_size == 1000


@pytest.fixture(scope="module")
def setup():
    config = _config()
    # Adam's eps = 1 turns its update into ~lr * gradient, so comparing updated parameters
    # compares gradients; with eps 1e-8 the update is ~lr * sign(gradient), and the sign of a
    # zero-mean gradient (a bias feeding BatchNorm) flips with the summation order.
    config.train.adam.eps = 1.0
    config.train.learning_rate = 1.0
    # Clipping by the global norm (a reduction over every shard of every gradient), active:
    # the step's gradient norm is ~0.09.
    config.train.grad_clip_norm = 0.05
    model = models.build(config.model)
    schedule = schedules.learning_rate_fn(config.train, 2.0)
    tx = train_state.make_optimizer(config.train, schedule)
    mesh = sharding.make_mesh(8)
    return config, model, tx, schedule, mesh


def _batch(config, rng):
    b, t, (h, w) = 8, 2, config.data.image_size
    masks = np.zeros((b, t, h, w, 1), np.float32)
    masks[:, :, 8:24, 16:40] = 1.0
    return {
        "frames": rng.integers(0, 256, (b, t, h, w, 3), dtype=np.uint8),
        "masks": masks,
        "distance": rng.integers(0, 6, (b, t, h, w)).astype(np.int32),  # unused by S2S
        "valid": np.array([[True, True]] * 6 + [[True, False]] * 2),
    }


def _shard_shapes(tree):
    """keystr -> (global shape, per-device shard shape) of every array leaf."""
    return {
        jax.tree_util.keystr(p): (x.shape, x.sharding.shard_shape(x.shape))
        for p, x in jax.tree_util.tree_leaves_with_path(tree)
    }


def _assert_layout(state):
    """Every leaf of a TrainState is laid out as the rule says; some are really split."""
    split = 0
    for key, (shape, shard) in _shard_shapes(state).items():
        if FSDP.spec(shape, 8) == PartitionSpec():
            assert shard == shape, key
        else:
            assert shard == (*shape[:-1], shape[-1] // 8), key
            split += 1
    return split


def _assert_equal_trees(a, b, atol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def states(setup):
    """The same fresh state, replicated and FSDP-sharded, on the 8-device mesh."""
    config, model, tx, _, mesh = setup
    # One init compile (the tests' slowest part): the replicated copy is moved, not re-made.
    fsdp = train_state.create_train_state(
        model, tx, 0, tuple(config.data.image_size), mesh, fsdp=FSDP
    )
    rep = jax.device_put(fsdp, sharding.replicated(mesh))
    return rep, fsdp


def test_fresh_state_is_sharded_like_the_rule(states):
    _, fsdp = states
    split = _assert_layout(fsdp)
    # params, Adam mu and nu: each of the 35 kernels of >= 256 elements with 8 | out channels.
    assert split == 3 * 35
    kernel = fsdp.params["convlstm"]["conv"]["kernel"]  # (3, 3, 64, 128)
    assert kernel.sharding.spec == PartitionSpec(None, None, None, "data")
    c = kernel.shape[-1]
    assert {s.data.shape for s in kernel.addressable_shards} == {(*kernel.shape[:-1], c // 8)}
    assert sorted(s.index[-1].start for s in kernel.addressable_shards) == list(range(0, c, c // 8))
    mu = fsdp.opt_state[1][0].mu["convlstm"]["conv"]["kernel"]  # (clip, adam): adam's mu
    assert mu.sharding == kernel.sharding
    indivisible = fsdp.params["decoder"]["conv_44"]["kernel"]  # (5, 5, 8, 4): 4 over 8 devices
    small = fsdp.params["decoder"]["conv_4"]["kernel"]  # (1, 1, 16, 8): 128 < 256 elements
    for x in (indivisible, small, fsdp.params["convlstm"]["conv"]["bias"], fsdp.rng):
        assert x.sharding.spec == PartitionSpec() and x.sharding.is_fully_replicated


def test_fsdp_step_equals_replicated_step(setup, states):
    config, model, tx, schedule, mesh = setup
    batch = sharding.global_batch(_batch(config, np.random.default_rng(0)), mesh)
    start = jax.device_get(states[0])
    results = []
    for fsdp in (None, FSDP):
        layout = sharding.state_shardings(start, mesh, fsdp)
        step = train_state.jit_train_step(
            model, tx, config.train.loss, schedule, mesh, True, state_sharding=layout
        )
        # A fresh copy: the step donates its input, and the fixture's states are shared.
        s1, metrics = step(jax.device_put(start, layout), batch, jnp.float32(0.5))
        if fsdp is not None:
            assert _assert_layout(s1) == 3 * 35  # the step keeps the layout
        results.append(jax.device_get((s1, metrics)))
    (s_rep, m_rep), (s_fsdp, m_fsdp) = results
    assert {"loss", "bce", "jaccard", "grad_norm"} <= set(m_rep)
    assert m_rep["grad_norm"] > config.train.grad_clip_norm
    for key in m_rep:
        np.testing.assert_allclose(m_rep[key], m_fsdp[key], rtol=1e-6, err_msg=key)
    _assert_equal_trees(s_rep.params, s_fsdp.params, atol=1e-6)
    _assert_equal_trees(s_rep.opt_state, s_fsdp.opt_state, atol=1e-6)
    _assert_equal_trees(s_rep.batch_stats, s_fsdp.batch_stats, atol=1e-6)
    np.testing.assert_array_equal(s_rep.rng, s_fsdp.rng)
    moved = max(
        np.abs(x - y).max()
        for x, y in zip(jax.tree.leaves(s_rep.params), jax.tree.leaves(start.params))
    )
    assert moved > 1e-3  # the step did update the parameters


def test_replicated_checkpoint_restores_sharded_and_back(setup, states, tmp_path):
    config, model, tx, _, mesh = setup
    size = tuple(config.data.image_size)
    rep, _ = states
    # Not the fresh state: distinct values everywhere, so a misplaced shard would show. (Made
    # on the host: a jax op per leaf shape would compile a program each.)
    rng = np.random.default_rng(1)
    expected = jax.tree.map(
        lambda x: x + rng.normal(size=x.shape).astype(x.dtype) if x.dtype == np.float32 else x,
        jax.device_get(rep),
    )
    saved = jax.device_put(expected, sharding.replicated(mesh))

    def fresh(fsdp):
        return lambda: train_state.create_train_state(model, tx, 0, size, mesh, fsdp=fsdp)

    ckpt = checkpoints.TrainCheckpointer(str(tmp_path / "a"), save_interval_steps=1, max_to_keep=2)
    ckpt.save(1, saved)
    ckpt.wait()
    sharded = ckpt.restore(1, train_state.abstract_state(fresh(FSDP), mesh, FSDP))
    ckpt.close()
    assert _assert_layout(sharded) == 3 * 35
    _assert_equal_trees(jax.device_get(sharded), expected)

    # Saved from the sharded layout, restored replicated (e.g. to train without FSDP) ...
    ckpt = checkpoints.TrainCheckpointer(str(tmp_path / "b"), save_interval_steps=1, max_to_keep=2)
    ckpt.save(2, sharded)
    ckpt.wait()
    back = ckpt.restore(2, train_state.abstract_state(fresh(None), mesh))
    ckpt.close()
    assert all(s.sharding.spec == PartitionSpec() for s in jax.tree.leaves(back))
    _assert_equal_trees(jax.device_get(back), expected)
    # ... and read by evaluation, init_from and the API as host arrays.
    variables = checkpoints.load_variables(str(tmp_path / "b"))
    _assert_equal_trees(variables["params"], expected.params)
    _assert_equal_trees(variables["batch_stats"], expected.batch_stats)
