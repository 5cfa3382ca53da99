"""Joining the processes of a multi-host run, and leaving it at once when one of them fails.

Multi-process runs announce themselves through the environment: explicit coordinator variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (launch/gpu.sh,
launch/local_multiprocess.sh), or JAX_DISTRIBUTED=auto where JAX finds the cluster itself (Cloud
TPU pods: launch/tpu_pod.sh; SLURM). On CPU the processes' collectives run over gloo (JAX's
default CPU collectives), needing nothing more.

JAX's own preemption service is turned off: its SIGTERM handler (for orbax's reached_preemption)
swallows the signal outside the training loop, so a job stopped while compiling would keep
running. Without it a signal before the first step ends the process as usual, and during the
steps rnn_vos_jax/runtime/preemption.py handles SIGTERM and SIGINT in every process alike.
"""

from __future__ import annotations

import contextlib
import os
import sys

from absl import logging


def initialize() -> None:
    """Calls jax.distributed.initialize when the environment describes several processes."""
    import jax

    env = os.environ
    jax.config.update("jax_enable_preemption_service", False)
    if int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    elif env.get("JAX_DISTRIBUTED") == "auto":
        jax.distributed.initialize()


@contextlib.contextmanager
def exit_on_failure():
    """In a multi-process run, an exception logs its traceback and exits with status 1 at once.

    Left to propagate, it would make the process wait at exit for the others (jax.distributed's
    shutdown barrier, up to 5 minutes) while they wait for it in a collective; exiting lets the
    launcher or the cluster stop the rest. Preempted (a SystemExit) and single-process runs pass
    through unchanged.
    """
    import jax

    from rnn_vos_jax.runtime import storage

    try:
        yield
    except Exception as e:
        if jax.process_count() == 1:
            raise
        if storage.is_fatal(e):  # a full disk or a refused write: one line, as in one process
            print(f"error: {e}", file=sys.stderr, flush=True)
            os._exit(storage.EXIT_STORAGE)
        logging.exception("Process %d failed; exiting now", jax.process_index())
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
