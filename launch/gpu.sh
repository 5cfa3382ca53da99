#!/usr/bin/env bash
# Train (or evaluate) on GPUs. One process per host drives all of that host's GPUs.
#
# Single host (all visible GPUs; pick some with CUDA_VISIBLE_DEVICES=0,1):
#   launch/gpu.sh configs/hs2s.py runs/hs2s --config.data.train_records=DATA/train
# Several hosts: run the same command on every host with
#   NUM_HOSTS=2 HOST_ID=<0..NUM_HOSTS-1> COORDINATOR=<host 0 address>:12345 launch/gpu.sh ...
# (WORKDIR must then be on a filesystem all hosts share). Install first, once per host:
#   pip install -e . "jax[cuda12]"
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,10p' "$0"; exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."
if [[ "${NUM_HOSTS:-1}" -gt 1 ]]; then
  # Read by rnn_vos_jax/main.py, which then calls jax.distributed.initialize.
  export JAX_COORDINATOR_ADDRESS=${COORDINATOR:?set COORDINATOR=host:port}
  export JAX_NUM_PROCESSES=$NUM_HOSTS
  export JAX_PROCESS_ID=${HOST_ID:?set HOST_ID}
fi
# Let XLA take most of GPU memory up front; TensorFlow (input pipeline) is kept off the GPUs.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m rnn_vos_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
