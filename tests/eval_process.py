"""One process of a multi-process evaluation (tests/test_eval_protocols.py starts two).

    python tests/eval_process.py CONFIG.pkl WORKDIR PORT PROCESS_ID NUM_PROCESSES

Joins the JAX distributed runtime on localhost:PORT (CPU) and runs `evaluate.run`, as
`python -m rnn_vos_jax.main --mode=eval` does on each host of a pod.
"""

import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(config_path, workdir, port, process_id, num_processes):
    import jax

    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}",
        num_processes=int(num_processes),
        process_id=int(process_id),
    )
    from rnn_vos_jax import evaluate

    with open(config_path, "rb") as f:
        config = pickle.load(f)
    evaluate.run(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])
