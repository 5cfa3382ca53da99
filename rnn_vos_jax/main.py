r"""Entry point: train or evaluate a config in a workdir.

  python -m rnn_vos_jax.main --config=configs/hs2s.py[:ARG] --workdir=DIR [--mode=train|eval] \
      [--config.KEY=VALUE ...]

With a demo config (config.demo.enabled) --mode=train runs the whole demo: synthetic data ->
conversion -> training -> evaluation -> J&F table.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "What to run.")
CONFIG = config_flags.DEFINE_config_file("config", None, "Config file [:arg].", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _hide_accelerators_from_tensorflow() -> None:
    # TensorFlow is only needed by the input pipeline; without it there is nothing to hide.
    try:
        from rnn_vos_jax import input_pipeline
    except ImportError:
        return
    input_pipeline.hide_accelerators_from_tensorflow()


def _maybe_initialize_distributed() -> None:
    # Multi-process runs announce themselves: explicit coordinator variables (launch/gpu.sh), or
    # JAX_DISTRIBUTED=auto where JAX detects the cluster itself (TPU pods: launch/tpu_pod.sh; SLURM).
    import jax

    env = os.environ
    if int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif env.get("JAX_DISTRIBUTED") == "auto":
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _hide_accelerators_from_tensorflow()
    # Orbax logs each checkpoint write in detail at INFO; keep the progress lines readable.
    logging.get_absl_logger().addFilter(lambda r: r.levelno >= 30 or "orbax" not in r.pathname)
    _maybe_initialize_distributed()
    import jax

    logging.info(
        "JAX process %d/%d, %d local / %d global devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices(),
    )
    config, workdir = CONFIG.value, FLAGS.value
    if MODE.value == "eval":
        from rnn_vos_jax import evaluate

        evaluate.run(config, workdir)
    elif config.demo.enabled:
        from rnn_vos_jax import demo

        demo.run(config, workdir)
    else:
        from rnn_vos_jax import train

        train.run(config, workdir)


if __name__ == "__main__":
    app.run(main)
