r"""Start-up time of the commands with a cold and a warm compilation cache (not a test).

    python benchmarks/startup.py [--configs=hs2s:demo,hs2s] [--what=train,segment] [--workdir=DIR]

For each config, the real commands as a user types them, each run twice with one fresh
compilation cache (RNN_VOS_JAX_COMPILATION_CACHE=DIR/cache): cold (empty cache), then warm.

- train: `python -m rnn_vos_jax.main` on synthetic records (made once in --workdir), one
  training step, batch 1, clips of 2 frames (the full model at its 256x448 on CPU needs no more
  to show its compile); timed from the process start to the line that reports the compiled step
  (its FLOPs: the step traced and compiled, or loaded from the cache) and to the first step's
  log line (that step run once: on 2 CPU cores the full model's first step takes minutes by
  itself). Each run gets a fresh workdir, so nothing resumes.
- segment: `python -m rnn_vos_jax.segment` on a 6-frame synthetic video at 480x854 with random
  weights (speed does not depend on them); timed from the process start to the first predicted
  frame's PNG (frame 1: the model started on frame 0 and stepped once).

Printed per run: seconds to those points, and the cache's size after it. Run it on an otherwise idle
machine; both commands also restart themselves once for huge pages (runtime/host_memory.py),
which both cold and warm runs pay.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from rnn_vos_jax.runtime.config_files import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_SIZE = (480, 854)


def _config_arg(spec: str) -> str:
    name, _, arg = spec.partition(":")
    return f"configs/{name}.py" + (f":{arg}" if arg else "")


def _timed(cmd: list[str], env: dict, done, ready=None) -> tuple[float | None, float]:
    """Seconds from starting `cmd` to `ready(line)` on one of its stderr lines (None without
    `ready`), and to `done(line)`, or to `done(None)` polled every 0.2 s; the process is
    stopped then (what follows is not start-up)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    seen = threading.Event()
    tail: list[str] = []
    ready_at = []

    def read():
        for line in proc.stderr:
            tail[:] = [*tail[-30:], line]
            if ready and not ready_at and ready(line):
                ready_at.append(time.perf_counter() - start)
            if done(line):
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    while not seen.is_set() and not done(None):
        if proc.poll() is not None and not seen.is_set() and not done(None):
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{''.join(tail)}")
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    proc.kill()
    proc.wait()
    return (ready_at[0] if ready_at else None), seconds


def _records(workdir: str, train: bool) -> str:
    """The synthetic valid split; with `train`, the train split's records too (TensorFlow)."""
    from rnn_vos_jax.data.synthetic import generate

    raw = os.path.join(workdir, "raw")
    splits = generate.make_dataset(
        raw, 4, 1, seed=0, frame_sizes=[FRAME_SIZE], num_frames=(6, 6), num_objects=(1, 1)
    )
    out = os.path.join(workdir, "records")
    if train and not os.path.exists(os.path.join(out, "dataset_info.json")):
        from rnn_vos_jax.data.conversion import convert

        convert.convert(splits["train"], out, num_shards=1, workers=1)
    return splits["valid"]


def _checkpoint(workdir: str, spec: str) -> str:
    """Random variables of the config's model, saved once (the time is not measured)."""
    import jax

    from rnn_vos_jax import models
    from rnn_vos_jax.runtime import checkpoints

    path = os.path.join(workdir, "checkpoints", spec.replace(":", "_"))
    if not os.path.exists(path):
        config = load_config(spec)
        model = models.build(config.model)
        size = tuple(config.data.image_size)
        shapes = jax.eval_shape(lambda k: models.init_variables(model, k, size), jax.random.key(0))
        rng = np.random.default_rng(0)
        values = jax.tree.map(
            lambda s: (0.02 * rng.standard_normal(s.shape)).astype(np.float32) + 0.5, shapes
        )
        checkpoints.save_variables(path, values)
    return path


def _train_cmd(spec: str, records: str, workdir: str) -> tuple[list[str], object]:
    cmd = [sys.executable, "-m", "rnn_vos_jax.main", f"--config={_config_arg(spec)}"]
    cmd += [f"--workdir={workdir}", "--config.demo.enabled=False"]
    cmd += [f"--config.data.train_records={records}", "--config.data.batch_size=1"]
    cmd += ["--config.data.min_clip_len=1", "--config.data.max_clip_len=1"]
    cmd += ["--config.mesh.num_devices=1", "--config.train.num_steps=1"]
    cmd += ["--config.train.steps_per_epoch=1", "--config.train.log_every_steps=1"]
    return cmd, lambda line: line is not None and "step 1/1" in line


def _segment_cmd(spec: str, valid: str, checkpoint: str, out: str) -> tuple[list[str], object]:
    video = os.path.join(valid, "JPEGImages")
    video = os.path.join(video, min(os.listdir(video)))
    masks = os.path.join(valid, "Annotations", os.path.basename(video))
    first = min(os.listdir(masks))
    cmd = [sys.executable, "-m", "rnn_vos_jax.segment", f"--config={_config_arg(spec)}"]
    cmd += [f"--checkpoint={checkpoint}", f"--video={video}"]
    cmd += [f"--masks={os.path.join(masks, first)}", f"--output={out}", "--overlay=none"]
    second = sorted(os.listdir(video))[1].rsplit(".", 1)[0] + ".png"
    png = os.path.join(out, "Annotations", second)
    return cmd, lambda line: line is None and os.path.exists(png)


def _size(folder: str) -> str:
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    return f"{total / 2**20:.0f} MiB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="hs2s:demo,hs2s")
    p.add_argument("--what", default="train,segment")
    p.add_argument("--workdir", default=None, help="default: a temporary folder, removed after")
    args = p.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="startup_")
    print(f"command: python benchmarks/startup.py {' '.join(argv or sys.argv[1:])}")
    print(f"{os.cpu_count()} host CPUs; workdir {workdir}", flush=True)
    try:
        valid = _records(workdir, "train" in args.what.split(","))
        for spec in args.configs.split(","):
            for what in args.what.split(","):
                cache = os.path.join(workdir, "cache", f"{spec}_{what}".replace(":", "_"))
                shutil.rmtree(cache, ignore_errors=True)
                env = dict(os.environ, RNN_VOS_JAX_COMPILATION_CACHE=cache)
                for run in ("cold", "warm"):
                    out = os.path.join(workdir, "runs", f"{spec}_{what}_{run}".replace(":", "_"))
                    shutil.rmtree(out, ignore_errors=True)
                    ready = None
                    if what == "train":
                        cmd, done = _train_cmd(spec, os.path.join(workdir, "records"), out)
                        point = "first training step"
                        ready = lambda line: "train step (" in line
                    else:
                        cmd, done = _segment_cmd(spec, valid, _checkpoint(workdir, spec), out)
                        point = "first segmented frame"
                    compiled, seconds = _timed(cmd, env, done, ready)
                    head = f"{compiled:7.1f} s to the compiled step, " if compiled else ""
                    print(
                        f"{spec:12s} {what:8s} {run}: {head}{seconds:7.1f} s to the {point} "
                        f"(cache {_size(cache)})",
                        flush=True,
                    )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
