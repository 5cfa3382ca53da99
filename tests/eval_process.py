"""One process of a multi-process evaluation (tests/test_eval_protocols.py starts two).

    python tests/eval_process.py CONFIG.pkl WORKDIR PORT PROCESS_ID NUM_PROCESSES

Joins the JAX distributed runtime on localhost:PORT (CPU) and runs `job.run`, as
`python -m rnn_vos_jax.main --mode=eval` does on each host of a pod.
"""

import pickle
import sys


def main(config_path, workdir, port, process_id, num_processes):
    import jax

    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}",
        num_processes=int(num_processes),
        process_id=int(process_id),
    )
    from rnn_vos_jax.evaluation import job

    with open(config_path, "rb") as f:
        config = pickle.load(f)
    job.run(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])
