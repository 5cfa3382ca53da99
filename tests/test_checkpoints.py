"""Checkpoints: train-state manager round trip on a mesh, standalone variables, path resolution."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_vos_jax.runtime import checkpoints
from rnn_vos_jax.training import sharding, train_state


def _state(mesh, scale=1.0):
    params = {"conv": {"kernel": jnp.arange(12.0).reshape(3, 4) * scale}, "b": jnp.ones(5)}
    stats = {"bn": {"mean": jnp.full((4,), 0.5 * scale), "var": jnp.ones(4)}}
    tx = optax.adam(1e-3)
    state = train_state.TrainState(
        step=jnp.int32(7),
        params=params,
        batch_stats=stats,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(3),
    )
    return jax.device_put(state, sharding.replicated(mesh))


def _assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_manager_round_trip_restores_sharded_state(tmp_path):
    mesh8 = sharding.make_mesh(8)
    state = _state(mesh8)
    ckpt = checkpoints.TrainCheckpointer(
        str(tmp_path), save_interval_steps=2, max_to_keep=2, use_async=True
    )
    assert ckpt.latest_step() is None
    assert ckpt.save(2, state)
    assert not ckpt.save(3, state)  # off the interval
    assert ckpt.save(3, state, force=True)
    for step in (4, 6):
        assert ckpt.save(step, state)
    ckpt.wait()
    assert ckpt.all_steps() == [4, 6] and ckpt.latest_step() == 6  # keeps the newest 2
    # Restore onto a different mesh: arrays land with the requested sharding.
    mesh1 = sharding.make_mesh(1)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh1)),
        state,
    )
    restored = ckpt.restore(6, target)
    ckpt.close()
    assert isinstance(restored, train_state.TrainState)
    _assert_tree_equal(restored, jax.device_get(state))
    assert restored.params["b"].sharding == sharding.replicated(mesh1)


def test_load_variables_from_workdir_step_dir_and_standalone(tmp_path):
    mesh = sharding.make_mesh(2)
    workdir = str(tmp_path / "run")
    ckpt = checkpoints.TrainCheckpointer(workdir, save_interval_steps=1, max_to_keep=3)
    ckpt.save(1, _state(mesh, 1.0))
    ckpt.save(2, _state(mesh, 2.0))
    ckpt.wait()
    ckpt.close()
    latest = checkpoints.load_variables(workdir)
    assert set(latest) == {"params", "batch_stats"}  # optimizer state is not read
    np.testing.assert_array_equal(
        latest["params"]["conv"]["kernel"], np.arange(12.0).reshape(3, 4) * 2
    )
    first = checkpoints.load_variables(workdir, step=1)
    np.testing.assert_array_equal(first["batch_stats"]["bn"]["mean"], np.full(4, 0.5))
    from_dir = checkpoints.load_variables(os.path.join(workdir, "checkpoints", "1"))
    _assert_tree_equal(from_dir, first)
    assert isinstance(from_dir["params"]["b"], np.ndarray)

    out = str(tmp_path / "vars")
    checkpoints.save_variables(out, first)
    _assert_tree_equal(checkpoints.load_variables(out), first)
    # A model without BatchNorm round-trips with an empty batch_stats.
    out2 = str(tmp_path / "vars2")
    checkpoints.save_variables(out2, {"params": first["params"]})
    assert checkpoints.load_variables(out2)["batch_stats"] == {}


def test_bad_paths_and_steps_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoints.load_variables(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no orbax checkpoint"):
        checkpoints.load_variables(str(tmp_path / "empty"))
    workdir = str(tmp_path / "run")
    ckpt = checkpoints.TrainCheckpointer(workdir, save_interval_steps=1, max_to_keep=1)
    ckpt.save(5, _state(sharding.make_mesh(1)))
    ckpt.wait()
    ckpt.close()
    with pytest.raises(FileNotFoundError, match=r"step 4 .*available: \[5\]"):
        checkpoints.load_variables(workdir, step=4)
    with pytest.raises(ValueError, match="params required"):
        checkpoints.save_variables(str(tmp_path / "x"), {"weights": {}})
