"""Training: sharded step == single-device step, resume == uninterrupted, SIGTERM + resume in a
bucket == uninterrupted on local disk, NaN guard.

Every run uses the tiny HS2S of the demo config on the session's synthetic records. The session's
persistent compilation cache (conftest) lets the many identical runs compile the step once.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_run

from rnn_vos_jax import models
from rnn_vos_jax.runtime import checkpoints, metric_writer, storage
from rnn_vos_jax.training import loop, schedules, sharding, train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def records(synthetic):
    return synthetic.train_records


_config = tiny_run.tiny_config


def _losses(workdir):
    return {row["step"]: row["loss"] for row in metric_writer.read_metrics(workdir)}


def _assert_close_trees(a, b, atol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_sharded_step_equals_single_device_step(records):
    config = _config(records)
    # Adam's eps = 1 turns its update into ~lr * gradient, so the comparison checks gradients;
    # with eps 1e-8 the sign of a zero-mean gradient (a bias feeding BatchNorm) decides it.
    config.train.adam.eps = 1.0
    config.train.learning_rate = 1.0
    model = models.build(config.model)
    schedule = schedules.learning_rate_fn(config.train, 2.0)
    tx = train_state.make_optimizer(config.train, schedule)
    rng = np.random.default_rng(0)
    b, t, (h, w) = 8, 3, config.data.image_size
    masks = np.zeros((b, t, h, w, 1), np.float32)
    masks[:, :, 8:24, 16:40] = 1.0
    batch = {
        "frames": rng.integers(0, 256, (b, t, h, w, 3), dtype=np.uint8),
        "masks": masks,
        "distance": rng.integers(0, config.model.num_classes, (b, t, h, w)).astype(np.int32),
        "valid": np.array([[True] * t] * 6 + [[True, True, False]] * 2),
    }
    mesh1 = sharding.make_mesh(1)
    state = jax.device_get(train_state.create_train_state(model, tx, 0, (h, w), mesh1))
    results = []
    for n in (1, 8):
        mesh = sharding.make_mesh(n)
        step = train_state.jit_train_step(model, tx, config.train.loss, schedule, mesh, True)
        s0 = jax.device_put(state, sharding.replicated(mesh))
        gbatch = sharding.global_batch(batch, mesh)
        assert gbatch["frames"].sharding.spec == jax.sharding.PartitionSpec("data")
        s1, metrics = step(s0, gbatch, jnp.float32(0.5))
        results.append(jax.device_get((s1, metrics)))
    (s_1, m_1), (s_8, m_8) = results
    assert int(s_1.step) == int(s_8.step) == 1
    for key in ("loss", "bce", "jaccard", "distance", "grad_norm"):
        np.testing.assert_allclose(m_1[key], m_8[key], rtol=1e-5, err_msg=key)
    _assert_close_trees(s_1.params, s_8.params, atol=1e-5)
    _assert_close_trees(s_1.batch_stats, s_8.batch_stats, atol=1e-5)
    np.testing.assert_array_equal(s_1.rng, s_8.rng)
    moved = max(
        np.abs(x - y).max()
        for x, y in zip(jax.tree.leaves(s_1.params), jax.tree.leaves(state.params))
    )
    assert moved > 1e-3  # the step did update the parameters


@pytest.fixture(scope="module")
def uninterrupted(records, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    loop.run(_config(records), workdir)
    return workdir


def test_run_writes_logs_config_and_checkpoints(uninterrupted):
    losses = _losses(uninterrupted)
    assert sorted(losses) == list(range(1, tiny_run.STEPS + 1))
    assert all(np.isfinite(v) for v in losses.values())
    rows = metric_writer.read_metrics(uninterrupted)
    assert {"bce", "jaccard", "distance", "learning_rate", "sample_prob", "epoch"} <= set(rows[0])
    assert rows[-1]["sample_prob"] == pytest.approx(0.5)  # epoch 2: min(0.5, 0.25 * 2)
    # Throughput: rates from the second log on; FLOP/s but no MFU on CPU. Each row covers one
    # step, so FLOP/s over steps/s is that step's FLOP count, which depends only on the
    # BatchNorm mode and the clip length (1 or 2 frames): at most 4 values, within 2x.
    assert "flops_per_sec" not in rows[0] and not any("mfu" in r for r in rows)
    per_step = [r["flops_per_sec"] / r["steps_per_sec"] for r in rows[1:]]
    assert len({round(f) for f in per_step}) <= 4
    assert 0 < max(per_step) < 2 * min(per_step)
    assert os.listdir(os.path.join(uninterrupted, "tensorboard"))
    with open(os.path.join(uninterrupted, "config.json")) as f:
        assert json.load(f)["train"]["num_steps"] == tiny_run.STEPS
    ckpt = checkpoints.TrainCheckpointer(uninterrupted, save_interval_steps=2, max_to_keep=10)
    assert ckpt.all_steps() == [2, 4, 6]
    ckpt.close()


def test_resumed_run_equals_uninterrupted_run(records, uninterrupted, tmp_path):
    workdir = str(tmp_path)
    loop.run(_config(records, **{"train.num_steps": 3}), workdir)
    assert sorted(_losses(workdir)) == [1, 2, 3]
    state = loop.run(_config(records), workdir)  # resumes from the step-3 checkpoint
    assert int(state.step) == tiny_run.STEPS
    full, resumed = _losses(uninterrupted), _losses(workdir)
    for step in range(1, tiny_run.STEPS + 1):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5), step
    _assert_close_trees(
        checkpoints.load_variables(workdir), checkpoints.load_variables(uninterrupted), atol=1e-6
    )
    # A finished run has nothing left to do.
    assert int(loop.run(_config(records), workdir).step) == tiny_run.STEPS


def test_sigterm_in_a_bucket_then_resume_equals_local_uninterrupted(
    synthetic, uninterrupted, gcs_emulator
):
    """Records and workdir in a bucket (the GCS emulator): `main` stopped by SIGTERM after a
    random step saves there and exits 143; resuming from the bucket gives the local uninterrupted
    run's losses and parameters."""
    bucket = gcs_emulator.bucket("train")
    records = storage.join(bucket, "records")
    for name in ("dataset_info.json", *(f"train-0000{i}-of-00002.tfrecord" for i in (0, 1))):
        storage.copy(os.path.join(synthetic.train_records, name), storage.join(records, name))
    workdir = storage.join(bucket, "run")
    args = tiny_run.command_line(**{"train.num_steps": 1000000, "data.train_records": records})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnn_vos_jax.main",
            "--config=configs/hs2s.py:demo",
            f"--workdir={workdir}",
            "--config.demo.enabled=False",
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop_after = random.Random().randint(1, tiny_run.STEPS - 2)
    deadline = time.time() + 300
    while (
        max(_losses(workdir), default=0) < stop_after
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err.decode()[-3000:]
    stopped_at = checkpoints.committed_steps(workdir)[-1]
    assert stopped_at >= stop_after and stopped_at == max(_losses(workdir))
    state = loop.run(
        _config(records, **{"train.num_steps": max(tiny_run.STEPS, stopped_at)}), workdir
    )
    if stopped_at <= tiny_run.STEPS:
        _assert_close_trees(
            jax.device_get(state.params),
            checkpoints.load_variables(uninterrupted)["params"],
            atol=1e-6,
        )
    full = _losses(uninterrupted)
    resumed = _losses(workdir)
    for step in range(1, tiny_run.STEPS + 1):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5), step
    # TensorBoard's events went to the bucket too (tensorboardX through google-cloud-storage).
    assert any(
        n.startswith("events.out.tfevents") for n in storage.listdir(workdir + "/tensorboard")
    )


def test_nan_loss_stops_and_keeps_last_good_checkpoint(records, tmp_path, monkeypatch):
    original = loop._train_batches

    def poisoned(config, start_batch, local_batch_size):
        for i, batch in enumerate(original(config, start_batch, local_batch_size)):
            if start_batch + i == 2:  # the third step (step 3) sees a NaN first mask
                batch = dict(batch, masks=np.full_like(batch["masks"], np.nan))
            yield batch

    monkeypatch.setattr(loop, "_train_batches", poisoned)
    workdir = str(tmp_path)
    with pytest.raises(FloatingPointError, match="non-finite training metrics at step 3"):
        loop.run(_config(records, **{"train.log_every_steps": 2}), workdir)
    ckpt = checkpoints.TrainCheckpointer(workdir, save_interval_steps=2, max_to_keep=10)
    assert ckpt.all_steps() == [2]  # the NaN state (step 4) was never written
    ckpt.close()
    good = checkpoints.load_variables(workdir)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(good))


def test_resume_order_workdir_then_init_from_then_scratch(records, uninterrupted, tmp_path):
    config = _config(records, **{"train.num_steps": 1})
    model = models.build(config.model)
    schedule = schedules.learning_rate_fn(config.train, 2.0)
    tx = train_state.make_optimizer(config.train, schedule)
    mesh = sharding.make_mesh(2)

    def initial(cfg, workdir):
        ckpt = checkpoints.TrainCheckpointer(workdir, save_interval_steps=1, max_to_keep=1)
        try:
            return jax.device_get(loop._initial_state(cfg, model, tx, mesh, ckpt, print))
        finally:
            ckpt.close()

    trained = checkpoints.load_variables(uninterrupted)
    resumed = initial(config, uninterrupted)  # 1. the workdir's own latest checkpoint
    assert int(resumed.step) == tiny_run.STEPS
    assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(resumed.opt_state))
    config.init_from = uninterrupted
    warm = initial(config, str(tmp_path / "a"))  # 2. init_from: variables, fresh optimizer
    assert int(warm.step) == 0
    _assert_close_trees({"params": warm.params, "batch_stats": warm.batch_stats}, trained, 0)
    assert all(np.abs(x).max() == 0 for x in jax.tree.leaves(warm.opt_state))
    config.init_from = ""
    scratch = initial(config, str(tmp_path / "b"))  # 3. scratch
    assert int(scratch.step) == 0
    assert not np.allclose(
        jax.tree.leaves(scratch.params)[0], jax.tree.leaves(trained["params"])[0]
    )
    config.model.width_divisor = 8
    wider = models.build(config.model)
    with pytest.raises(ValueError, match=r"(?s)does not fit the model \(HS2S\):.*mis-shaped"):
        train_state.create_train_state(wider, tx, 0, config.data.image_size, mesh, trained)
