#!/usr/bin/env bash
# Train (or evaluate) on a Cloud TPU VM pod slice: copy this repository to every worker, make a
# venv there, install the package with TPU JAX, then start the same command on all workers at once
# (JAX_DISTRIBUTED=auto: main.py calls jax.distributed.initialize(), which finds the hosts itself).
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/hs2s.py gs://BUCKET/runs/hs2s \
#       --config.data.train_records=gs://BUCKET/ytvos/train [--mode=eval] [--config.KEY=VALUE ...]
#
# WORKDIR and the records must be on storage every worker sees (gs://); orbax writes checkpoints
# from all hosts. Set SKIP_SETUP=1 to reuse the venv of an earlier launch. Stop the run with
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone=ZONE --worker=all --command="pkill -f rnn_vos_jax.main"
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,12p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO=$(cd "$(dirname "$0")/.." && pwd)
SSH=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all)

if [[ "${SKIP_SETUP:-0}" != 1 ]]; then
  tar -C "$REPO" --exclude=.git --exclude=runs -czf /tmp/rnn_vos_jax.tgz .
  gcloud compute tpus tpu-vm scp /tmp/rnn_vos_jax.tgz "$TPU_NAME":~/ --zone="$ZONE" --worker=all
  "${SSH[@]}" --command="set -e; rm -rf ~/rnn_vos_jax && mkdir ~/rnn_vos_jax && \
    tar -xzf ~/rnn_vos_jax.tgz -C ~/rnn_vos_jax && python3 -m venv ~/venv && \
    ~/venv/bin/pip install -q -U pip && ~/venv/bin/pip install -q -e ~/rnn_vos_jax 'jax[tpu]'"
fi
printf -v ARGS '%q ' "$@"
"${SSH[@]}" --command="cd ~/rnn_vos_jax && JAX_DISTRIBUTED=auto ~/venv/bin/python -m rnn_vos_jax.main \
  --config=$CONFIG --workdir=$WORKDIR $ARGS 2>&1 | tee -a ~/rnn_vos_jax_run.log"
