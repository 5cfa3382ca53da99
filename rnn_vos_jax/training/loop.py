"""Training loop: resume, sharded steps, logging, checkpoints, NaN guard.

Resume order (first that exists wins):
  1. WORKDIR/checkpoints/<latest>  -> continues the same run: step, params, BatchNorm statistics,
     optimizer, rng, and the data position (the pipeline restarts at batch `step`);
  2. config.init_from              -> params + batch_stats only (an orbax variables directory, e.g.
                                      from convert_torch, or another workdir), fresh optimizer;
  3. scratch, with config.model.backbone_init (torchvision ImageNet weights) loaded into the
     backbones when set, and the family's own weight files (Family.init_files, e.g.
     config.model.raft_init) when set.

A non-finite loss or gradient stops the run with FloatingPointError; metrics are checked before
every save, so the bad state is never written and the last good checkpoint stays the latest.

SIGTERM / SIGINT during the steps (preemption, Ctrl-C): the run finishes the current step (all
processes agree on which: preemption.py), saves a checkpoint at it, and exits with status 143 /
130 (`preemption.Preempted`). A latest checkpoint that does not restore is skipped with a warning
(checkpoints.TrainCheckpointer.restore_latest).
"""

from __future__ import annotations

import math
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from rnn_vos_jax import models
from rnn_vos_jax.data import distance
from rnn_vos_jax.runtime import (
    atomic,
    checkpoints,
    metric_writer,
    preemption,
    run_info,
    storage,
    throughput,
)
from rnn_vos_jax.training import schedules, sharding, train_state


def resolve_steps_per_epoch(config: ml_collections.ConfigDict) -> float:
    """config.train.steps_per_epoch, or (when <= 0) the training records' (video, object) pairs
    (as the pipeline counts them) divided by the global batch size."""
    if config.train.steps_per_epoch > 0:
        return float(config.train.steps_per_epoch)
    from rnn_vos_jax.data import (
        record_files,  # TensorFlow: only where records are read
        record_io,
    )

    files = record_files.record_files(config.data.train_records)
    policy = record_io.Policy.of(config.data)
    pairs = record_files.samples_per_epoch(files, int(config.data.min_object_frames), policy)
    if pairs == 0:
        raise ValueError(f"no (video, object) training pairs in {config.data.train_records!r}")
    return pairs / int(config.data.batch_size)


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: float) -> int:
    """config.train.num_steps if > 0, else ceil(num_epochs * steps_per_epoch)."""
    if config.train.num_steps > 0:
        return int(config.train.num_steps)
    return math.ceil(int(config.train.num_epochs) * steps_per_epoch - 1e-6)


def check_distance_classes(config: ml_collections.ConfigDict) -> None:
    """Raises unless config.model.num_classes (when the model has one) is the number of distance
    classes that config.data.border / bin_size give the labels (the configs derive it)."""
    if "num_classes" not in config.model:  # a family without the distance head (S2S)
        return
    k = config.model.num_classes
    want = distance.num_distance_classes(int(config.data.border), int(config.data.bin_size))
    if int(k) != want:
        raise ValueError(
            f"config.model.num_classes={k}, but config.data.border={config.data.border} and "
            f"config.data.bin_size={config.data.bin_size} label {want} distance classes; set "
            "the data keys (num_classes follows them) or make them agree"
        )


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes WORKDIR/config.json (process 0)."""
    if jax.process_index() != 0:
        return
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    atomic.write_text(storage.join(workdir, "config.json"), text)


def _train_batches(config, start_batch: int, local_batch_size: int):
    # Imported here: the input pipeline is the only TensorFlow user on the training path.
    from rnn_vos_jax.data import pipeline, record_files

    data = ml_collections.ConfigDict(config.data.to_dict())
    data.batch_size = local_batch_size  # the pipeline batches per process
    where = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    splits = record_files.process_files(data, **where)
    names = [[storage.basename(f) for f in files] for files in splits]
    logging.info(f"Process {jax.process_index()} reads {len(splits)} file split(s): {names}")
    return pipeline.train_iterator(data, seed=int(config.seed), start_batch=start_batch, **where)


def _initial_state(config, model, tx, mesh, ckpt, log) -> train_state.TrainState:
    image_size = tuple(config.data.image_size)
    fsdp = sharding.fsdp_from_config(config.mesh)

    def fresh(variables=None):
        return train_state.create_train_state(
            model, tx, config.seed, image_size, mesh, variables, fsdp=fsdp
        )

    if ckpt.latest_step() is not None:
        # Orbax reads the arrays into this layout whatever layout they were saved from.
        step, state = ckpt.restore_latest(train_state.abstract_state(fresh, mesh, fsdp))
        log(f"Resuming from {ckpt.directory}/{step}")
        return state
    if config.init_from:
        log(f"Initialising params/batch_stats from {config.init_from} (fresh optimizer)")
        return fresh(checkpoints.load_variables(config.init_from))
    from rnn_vos_jax.weights import backbone_init

    files = backbone_init.init_file_keys(config.model)
    if config.model.backbone_init or files:
        sources = [f"{key} {config.model[key]}" for key in files]
        if config.model.backbone_init:
            sources.insert(0, f"backbones from {config.model.backbone_init}")
        log(f"Training from scratch, {', '.join(sources)}")
        return fresh(scratch_variables(config, model))
    log("Training from scratch")
    return fresh()


def scratch_variables(config: ml_collections.ConfigDict, model) -> dict:
    """Freshly initialised variables with the ImageNet backbone file config.model.backbone_init
    loaded into the backbones (backbone_init.apply; the authors' new layers keep their init),
    then the family's own weight files (backbone_init.apply_init_files, e.g. raft_init)."""
    from rnn_vos_jax.weights import backbone_init

    key = jax.random.key(int(config.seed), impl="rbg")  # as create_train_state's own init
    image_size = tuple(config.data.image_size)
    variables = jax.jit(lambda k: models.init_variables(model, k, image_size))(key)
    variables = backbone_init.apply(
        jax.device_get(variables), config.model.backbone_init, config.model
    )
    return backbone_init.apply_init_files(variables, config.model)


class _Progress:
    """Accumulates per-step device metrics and turns them into log lines (one host sync each).

    Rates are over the steps since the last flush: steps/s, clips/s, ETA and, when the steps'
    FLOPs are known (throughput.StepCost), achieved FLOP/s over all devices and MFU (against
    `peak_flops`, the mesh's peak bf16 FLOP/s; None on CPU / unknown devices).
    """

    def __init__(self, total: int, global_batch: int, peak_flops: float | None = None):
        self.total, self.global_batch, self.peak_flops = total, global_batch, peak_flops
        self.pending: list[dict] = []
        self.flops: list[float | None] = []
        self.t0, self.step0 = None, None

    def add(self, metrics, flops: float | None = None):
        self.pending.append(metrics)
        self.flops.append(flops)

    def flush(self, step: int) -> dict[str, float]:
        """Host-fetches pending metrics; raises FloatingPointError on a non-finite value."""
        rows = jax.device_get(self.pending)
        flops, self.pending, self.flops = self.flops, [], []
        for i, row in enumerate(rows):
            bad = {k: float(v) for k, v in row.items() if not np.isfinite(v)}
            if bad:
                raise FloatingPointError(
                    f"non-finite training metrics at step {step - len(rows) + i + 1}: {bad}. "
                    "Stopping; the last good checkpoint is kept (lower the learning rate, check "
                    "the data, or resume from it)."
                )
        means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
        now = time.time()
        if self.t0 is not None and step > self.step0:
            seconds = now - self.t0
            rate = (step - self.step0) / seconds
            means["steps_per_sec"] = rate
            means["clips_per_sec"] = rate * self.global_batch
            means["eta_min"] = (self.total - step) / rate / 60
            if flops and all(f is not None for f in flops):
                means["flops_per_sec"] = sum(flops) / seconds
                if self.peak_flops:
                    means["mfu"] = means["flops_per_sec"] / self.peak_flops
        self.t0, self.step0 = now, step
        return means


def run(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains `config` in `workdir` until the last step; resumes whatever is there.

    Args:
      config: a full config (configs/*.py get_config).
      workdir: run directory: checkpoints/, metrics.jsonl, tensorboard/, config.json.

    Returns:
      The final TrainState (on the mesh: replicated, or sharded with config.mesh.fsdp).
    """
    log = logging.info
    check_distance_classes(config)
    mesh = sharding.make_mesh(config.mesh.num_devices)
    model = models.build(config.model)
    steps_per_epoch = resolve_steps_per_epoch(config)
    num_steps = total_steps(config, steps_per_epoch)
    global_batch = int(config.data.batch_size)
    local_batch = sharding.local_batch_size(global_batch, mesh)
    schedule = schedules.learning_rate_fn(config.train, steps_per_epoch)
    tx = train_state.make_optimizer(config.train, schedule)
    save_config(config, workdir)
    if jax.process_index() == 0:
        run_info.write(workdir, num_steps=num_steps, steps_per_epoch=steps_per_epoch)

    ckpt_cfg = config.train.checkpoint
    ckpt = checkpoints.TrainCheckpointer(
        workdir,
        save_interval_steps=ckpt_cfg.every_steps,
        max_to_keep=ckpt_cfg.keep,
        use_async=ckpt_cfg.use_async,
    )
    writer = metric_writer.MetricWriter(workdir, tensorboard=config.train.tensorboard)
    state = _initial_state(config, model, tx, mesh, ckpt, log)
    start = int(jax.device_get(state.step))
    log(
        f"steps {start}->{num_steps} ({steps_per_epoch:.2f} steps/epoch), global batch {global_batch} "
        f"over {mesh.devices.size} devices, {jax.process_count()} processes"
    )
    if start >= num_steps:
        log("Nothing to do: the run is complete")
        ckpt.close()
        writer.close()
        return state

    layout = sharding.state_shardings(state, mesh, sharding.fsdp_from_config(config.mesh))
    step_fns = {
        bn: train_state.jit_train_step(
            model, tx, config.train.loss, schedule, mesh, bn, state_sharding=layout
        )
        for bn in (True, False)
    }
    costs: dict[tuple, throughput.StepCost] = {}  # per compiled step: BatchNorm mode, shapes
    chip_peak = throughput.peak_flops_per_chip(mesh.devices.flat[0].device_kind)
    progress = _Progress(num_steps, global_batch, chip_peak and chip_peak * mesh.devices.size)
    batches = _train_batches(config, start, local_batch)
    stop_requests = preemption.StopRequests()
    try:
        with stop_requests:
            for step in range(start, num_steps):
                host_batch = next(batches)
                batch = sharding.global_batch(host_batch, mesh)
                p = schedules.sample_prob(step, config.train, steps_per_epoch)
                bn_train = schedules.batchnorm_train(step, config.train, steps_per_epoch)
                p = jnp.float32(p)
                key = (bn_train, batch["frames"].shape)  # clip lengths may vary: one step each
                if key not in costs:  # compiles the step (jit's own cache entry) once
                    costs[key] = throughput.step_cost(
                        step_fns[bn_train], state, batch, p, num_devices=mesh.devices.size
                    )
                    mode = "BatchNorm " + ("batch statistics" if bn_train else "frozen")
                    log(costs[key].describe(f"train step ({mode}, frames {list(key[1])})"))
                state, metrics = step_fns[bn_train](state, batch, p)
                progress.add(metrics, costs[key].flops)
                done = step + 1
                stop = stop_requests.poll(done)  # SIGTERM / SIGINT: save this step and exit
                is_last = done == num_steps
                saving = is_last or stop is not None or done % ckpt_cfg.every_steps == 0
                if saving or done % config.train.log_every_steps == 0 or done == start + 1:
                    means = progress.flush(done)  # raises before a bad state can be saved
                    means["epoch"] = done / steps_per_epoch
                    if config.data.on_corrupt == "skip":
                        means["skipped_records"] = _skipped_records()
                    writer.write(done, means)
                    log(_progress_line(done, num_steps, means))
                if saving:
                    ckpt.save(done, state, force=is_last or stop is not None)
                if stop is not None and not is_last:
                    ckpt.wait()
                    logging.warning(
                        "Stopped by %s at step %d (signal seen at step %d): checkpoint %s/%d "
                        "saved %.1f s after the signal; exiting with status %d (rerun the same "
                        "command to resume)",
                        signal.Signals(stop).name,
                        done,
                        stop_requests.received_step,
                        ckpt.directory,
                        done,
                        stop_requests.seconds_since_signal(),
                        preemption.exit_status(stop),
                    )
                    raise preemption.Preempted(stop, done)
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()
    return state


_NOT_LOSS_PARTS = {
    "loss",
    "epoch",
    "grad_norm",
    "learning_rate",
    "sample_prob",
    "steps_per_sec",
    "clips_per_sec",
    "flops_per_sec",
    "mfu",
    "eta_min",
    "skipped_records",
}


def _skipped_records() -> float:
    """Damaged records skipped so far by the input pipelines of all processes (each reads its
    own files; one all-gather, only when config.data.on_corrupt='skip')."""
    from rnn_vos_jax.data import record_io

    mine = np.int64(record_io.skipped_records())
    if jax.process_count() == 1:
        return float(mine)
    from jax.experimental import multihost_utils

    return float(np.sum(multihost_utils.process_allgather(mine)))


def _progress_line(step: int, total: int, m: dict[str, float]) -> str:
    parts = [f"step {step}/{total}", f"epoch {m['epoch']:.2f}", f"loss {m['loss']:.4f}"]
    # The loss's own parts (the family's), then the optimizer's.
    parts += [f"{k} {v:.4f}" for k, v in m.items() if k not in _NOT_LOSS_PARTS]
    parts.append(f"lr {m['learning_rate']:.2e}")
    if m.get("sample_prob", 0) > 0:
        parts.append(f"sample_prob {m['sample_prob']:.3f}")
    if m.get("skipped_records", 0) > 0:
        parts.append(f"skipped {m['skipped_records']:.0f} damaged records")
    if "steps_per_sec" in m:
        parts.append(f"{m['steps_per_sec']:.2f} steps/s, {m['clips_per_sec']:.1f} clips/s")
        if "flops_per_sec" in m:
            rate = throughput.format_flops(m["flops_per_sec"]) + "/s"
            parts.append(rate + (f", MFU {100 * m['mfu']:.1f}%" if "mfu" in m else ""))
        parts.append(f"ETA {m['eta_min']:.1f} min")
    return " | ".join(parts)
