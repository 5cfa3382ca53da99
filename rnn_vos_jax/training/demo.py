"""The demo job: synthetic data -> TFRecords -> training -> evaluation -> J&F table.

    python -m rnn_vos_jax.main --config=configs/hs2s.py:demo --workdir=runs/demo

Everything lives in the workdir: data/raw/{train,valid} (YouTube-VOS layout), data/records/
{train,valid} (TFRecord shards), checkpoints/, metrics.jsonl, eval/valid/metrics.json and
demo_summary.json; the workdir may be a bucket (gs://...). Every stage skips work that is already
complete, so rerunning the command resumes an interrupted demo (or only reprints the table of a
finished one). With several processes, process 0 makes the data and the others wait for it.
"""

from __future__ import annotations

import copy
import time

import jax
import ml_collections
from absl import logging

from rnn_vos_jax.runtime import atomic, storage
from rnn_vos_jax.scoring import metrics as metrics_lib

SUMMARY_FILE = "demo_summary.json"


def prepare_data(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """Makes and converts the synthetic dataset (once) and points a copy of `config` at it.

    Args:
      config: a config with config.demo (size of the synthetic dataset).
      workdir: the demo's workdir.

    Returns:
      A copy of `config` whose data.train_records / data.eval_records / eval.train_meta name the
      demo's data (values already set in `config` are kept).
    """
    from rnn_vos_jax.data.conversion import convert
    from rnn_vos_jax.data.synthetic import generate

    demo = config.demo
    raw = storage.join(workdir, "data", "raw")
    records = storage.join(workdir, "data", "records")
    if jax.process_index() == 0:
        splits = generate.make_dataset(
            raw,
            num_train=demo.num_train,
            num_valid=demo.num_valid,
            seed=demo.seed,
            frame_sizes=[tuple(demo.frame_size)],
            num_frames=tuple(demo.num_frames),
            num_objects=tuple(demo.num_objects),
            contrast=demo.contrast,
        )
        for split, folder in splits.items():
            out = storage.join(records, split)
            if not storage.exists(storage.join(out, "dataset_info.json")):
                logging.info("Converting %s -> %s", folder, out)
                convert.convert(folder, out, num_shards=demo.num_shards, workers=1)
    _wait_for_process_0("demo_data_ready")
    config = copy.deepcopy(config)
    config.data.train_records = config.data.train_records or storage.join(records, "train")
    if not (config.data.eval_records or config.data.eval_dir):
        config.data.eval_records = storage.join(records, "valid")
    config.eval.train_meta = config.eval.train_meta or storage.join(raw, "train", "meta.json")
    return config


def _wait_for_process_0(name: str) -> None:
    """Every process waits here until all, process 0 included, have arrived (a barrier of the
    run's processes; nothing to wait for with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        logging.info("Process %d waits for process 0 (%s)", jax.process_index(), name)
        multihost_utils.sync_global_devices(name)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) the whole demo and prints the J&F table.

    Returns:
      The evaluation metrics dict (metrics-JSON schema, with a "baseline" block).
    """
    from rnn_vos_jax.evaluation import job
    from rnn_vos_jax.training import loop

    t0 = time.time()
    config = prepare_data(config, workdir)
    t_data = time.time()
    loop.run(config, workdir)
    t_train = time.time()
    result = job.run(config, workdir)
    t_eval = time.time()
    if jax.process_index() != 0:
        return result
    summary = {
        "JF_mean": result["JF_mean"],
        "J_mean": result["J_mean"],
        "F_mean": result["F_mean"],
        "baseline_JF_mean": result.get("baseline", {}).get("JF_mean"),
        "num_objects": result["num_objects"],
        "seconds": {
            "data": t_data - t0,
            "train": t_train - t_data,
            "eval": t_eval - t_train,
            "total": t_eval - t0,
        },
    }
    atomic.write_json(storage.join(workdir, SUMMARY_FILE), summary)
    table = metrics_lib.format_table(result)
    seconds = summary["seconds"]
    print(
        f"\nDemo J&F on the synthetic valid split (workdir {workdir}):\n{table}\n"
        f"time this run: data {seconds['data']:.0f} s, train {seconds['train']:.0f} s, "
        f"eval {seconds['eval']:.0f} s, total {seconds['total']:.0f} s",
        flush=True,
    )
    return result
