r"""Entry point: train or evaluate a config in a workdir.

  python -m rnn_vos_jax.main --config=configs/hs2s.py[:ARG] --workdir=DIR [--mode=train|eval] \
      [--compilation_cache=DIR|off] [--config.KEY=VALUE ...]

With a demo config (config.demo.enabled) --mode=train runs the whole demo: synthetic data ->
conversion -> training -> evaluation -> J&F table.

Compiled steps are kept in JAX's persistent compilation cache (runtime/compile_cache.py), so a
rerun (resuming, evaluating, another config of the same model) loads them instead of compiling.

WORKDIR (and every data path in the config) may be a local folder or a bucket URL such as
gs://BUCKET/runs/NAME (runtime/storage.py; docs/scale-out.md).

Exit status: 0 when done; 1 on an error; 74 when a full disk or a refused write stopped it (one
line names the path; what was complete stays, so a rerun resumes); 143 / 130 when SIGTERM / SIGINT stopped training after
it saved a checkpoint at the current step (runtime/preemption.py; rerun to resume). Several
processes: runtime/multihost.py.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "What to run.")
CONFIG = config_flags.DEFINE_config_file("config", None, "Config file [:arg].", lock_config=True)
CACHE = flags.DEFINE_string(
    "compilation_cache",
    None,
    "Folder of JAX's persistent compilation cache, or 'off' (default: "
    "$RNN_VOS_JAX_COMPILATION_CACHE, else ~/.cache/rnn_vos_jax/jax_compilation_cache).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _hide_accelerators_from_tensorflow() -> None:
    # TensorFlow is only needed by the input pipeline; without it there is nothing to hide.
    try:
        from rnn_vos_jax.data import pipeline
    except ImportError:
        return
    pipeline.hide_accelerators_from_tensorflow()


def _quiet_orbax(record) -> bool:
    """Orbax logs each checkpoint write in detail at INFO, and the traceback of a failed write in
    each of its threads before the save raises it here: keep its warnings and errors, one line
    each, so the progress lines stay readable and a full disk reads as one line."""
    if "orbax" not in record.pathname:
        return True
    record.exc_info = record.exc_text = None
    return record.levelno >= 30


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _hide_accelerators_from_tensorflow()
    logging.get_absl_logger().addFilter(_quiet_orbax)
    from rnn_vos_jax.runtime import compile_cache, multihost, storage

    multihost.initialize()
    cache = compile_cache.enable(CACHE.value)
    import jax

    logging.info(
        "JAX process %d/%d, %d local / %d global devices: %s; compilation cache %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices(),
        cache or "off",
    )
    config, workdir = CONFIG.value, FLAGS.value
    with storage.exit_on_storage_error(hard=True), multihost.exit_on_failure():
        if MODE.value == "eval":
            from rnn_vos_jax.evaluation import job

            job.run(config, workdir)
        elif config.demo.enabled:
            from rnn_vos_jax.training import demo

            demo.run(config, workdir)
        else:
            from rnn_vos_jax.training import loop

            loop.run(config, workdir)


if __name__ == "__main__":
    from rnn_vos_jax.runtime import host_memory

    host_memory.reexec_with_huge_pages()
    app.run(main)
