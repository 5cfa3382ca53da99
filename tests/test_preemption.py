"""Preemption pieces in one process: caught signals, incomplete and unreadable checkpoints.

The signal reaching a real training run (two processes agreeing on the step, the checkpoint at
that step, the resumed losses) is tested in test_multiprocess.py.
"""

import glob
import logging
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_vos_jax.runtime import checkpoints, preemption
from rnn_vos_jax.training import sharding, train_state


def test_signals_are_recorded_and_handlers_restored():
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    with preemption.StopRequests() as requests:
        assert requests.poll(5) is None
        os.kill(os.getpid(), signal.SIGINT)  # handled before kill returns (main thread)
        assert requests.poll(6) == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal: logged, the first one stays
        assert requests.poll(7) == signal.SIGINT
        assert requests.received_step == 6
        assert requests.seconds_since_signal() >= 0
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
    with preemption.StopRequests() as requests:
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.poll() == signal.SIGTERM
    assert preemption.exit_status(signal.SIGTERM) == 143
    assert preemption.exit_status(signal.SIGINT) == 130
    stop = preemption.Preempted(signal.SIGTERM, 7)
    assert isinstance(stop, SystemExit) and not isinstance(stop, Exception)
    assert (stop.code, stop.step) == (143, 7)


def _state(mesh, scale):
    params = {"conv": {"kernel": jnp.arange(12.0).reshape(3, 4) * scale}, "b": jnp.ones(5)}
    state = train_state.TrainState(
        step=jnp.int32(scale),
        params=params,
        batch_stats={"bn": {"mean": jnp.full((4,), 0.5 * scale)}},
        opt_state=optax.adam(1e-3).init(params),
        rng=jax.random.PRNGKey(3),
    )
    return jax.device_put(state, sharding.replicated(mesh))


@pytest.fixture
def workdir(tmp_path):
    """A workdir with committed checkpoints of steps 2, 4 and 6 (state.step = the step)."""
    mesh = sharding.make_mesh(2)
    ckpt = checkpoints.TrainCheckpointer(str(tmp_path), save_interval_steps=2, max_to_keep=5)
    for step in (2, 4, 6):
        ckpt.save(step, _state(mesh, step))
    ckpt.wait()
    ckpt.close()
    return str(tmp_path)


def _restore_latest(workdir):
    mesh = sharding.make_mesh(2)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
        _state(mesh, 1),
    )
    ckpt = checkpoints.TrainCheckpointer(workdir, save_interval_steps=2, max_to_keep=5)
    try:
        return ckpt, ckpt.restore_latest(target)
    except BaseException:
        ckpt.close()
        raise


def _truncate_arrays(step_dir):
    """Cuts every array data file of a checkpoint to a few bytes (as a disk-full write would)."""
    files = [
        f for f in glob.glob(f"{step_dir}/default/**/d/*", recursive=True) if os.path.isfile(f)
    ]
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(3)


def test_an_incomplete_save_is_never_the_latest(workdir):
    root = os.path.join(workdir, "checkpoints")
    # What a kill during the save of step 8 leaves: orbax's temporary folder, never renamed.
    partial = os.path.join(root, "8.orbax-checkpoint-tmp-1234567")
    shutil.copytree(os.path.join(root, "6"), partial)
    os.remove(os.path.join(partial, "commit_success.txt"))
    _truncate_arrays(partial)
    ckpt, (step, state) = _restore_latest(workdir)
    assert ckpt.latest_step() == step == int(state.step) == 6
    ckpt.close()
    np.testing.assert_array_equal(
        checkpoints.load_variables(workdir)["batch_stats"]["bn"]["mean"], np.full(4, 3.0)
    )


# A failed orbax read leaves a tensorstore callback that finds its asyncio loop closed.
_LATE_CALLBACK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_LATE_CALLBACK
def test_an_unreadable_latest_falls_back_with_a_warning(workdir, caplog):
    root = os.path.join(workdir, "checkpoints")
    _truncate_arrays(os.path.join(root, "6"))
    with caplog.at_level(logging.WARNING):
        ckpt, (step, state) = _restore_latest(workdir)
    assert step == int(state.step) == 4
    np.testing.assert_array_equal(state.params["conv"]["kernel"], np.arange(12.0).reshape(3, 4) * 4)
    warned = [r.getMessage() for r in caplog.records]
    assert any(f"Checkpoint {root}/6 does not restore" in m for m in warned), warned
    assert any(f"Moved the unreadable checkpoint {root}/6 to" in m for m in warned), warned
    # Moved aside: the run can save step 6 again, and readers skip the bad copy.
    (moved,) = glob.glob(os.path.join(root, "6.corrupt-*"))
    assert ckpt.all_steps() == [2, 4]
    assert ckpt.save(6, _state(sharding.make_mesh(2), 60), force=True)
    ckpt.wait()
    ckpt.close()
    np.testing.assert_array_equal(
        checkpoints.load_variables(workdir)["batch_stats"]["bn"]["mean"], np.full(4, 30.0)
    )
    assert os.path.isdir(moved)


@_LATE_CALLBACK
def test_no_readable_checkpoint_names_them_all(workdir):
    root = os.path.join(workdir, "checkpoints")
    for step in (2, 4, 6):
        _truncate_arrays(os.path.join(root, str(step)))
    with pytest.raises(
        RuntimeError, match=rf"no checkpoint in {root} restores: {root}/6: .*{root}/2"
    ):
        _restore_latest(workdir)
    assert sorted(os.listdir(root)) == ["2", "4", "6"]  # nothing moved when nothing restores
