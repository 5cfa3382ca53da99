#!/usr/bin/env bash
# N processes of one run on this machine, as the hosts of a pod would run it: each process gets
# its own CPU devices, jax.distributed joins them (the variables launch/gpu.sh sets), and CPU
# collectives (gloo) run between them. For trying multi-host code paths without a cluster.
#
#   launch/local_multiprocess.sh CONFIG WORKDIR N [--config.KEY=VALUE ...]   (main.py's flags)
#
# WORKDIR may be a bucket (gs://BUCKET/runs/NAME): the processes share it as a pod's hosts do.
# Environment: DEVICES_PER_PROCESS (default 1), PORT (coordinator port; default a free one),
# KILL_AFTER (seconds a process may take to stop after SIGTERM before SIGKILL; default 60),
# LOG_DIR (default WORKDIR/logs, or a new temporary folder when WORKDIR is a URL).
# Output of process i goes to LOG_DIR/process_i.log and, prefixed with [i], to stdout.
# Waits for all; when one fails the others get SIGTERM (then SIGKILL after KILL_AFTER s). SIGTERM
# or SIGINT to this script is passed on as SIGTERM: the processes save a checkpoint and exit 143.
# Exit status: 0 when all succeed, else the status of the first process that failed.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,16p' "$0"; exit 2
fi
CONFIG=$1; WORKDIR=$2; N=$3; shift 3
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then
  echo "N must be a positive number of processes, got '$N'" >&2; exit 2
fi
cd "$(dirname "$0")/.."
PORT=${PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
KILL_AFTER=${KILL_AFTER:-60}
if [[ "$WORKDIR" == *://* ]]; then
  LOG_DIR=${LOG_DIR:-$(mktemp -d -t local_multiprocess.XXXXXX)}
else
  LOG_DIR=${LOG_DIR:-$WORKDIR/logs}
fi
mkdir -p "$LOG_DIR"
echo "local_multiprocess: logs in $LOG_DIR" >&2

export JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$N
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
# Each process's own device count replaces any inherited one.
XLA_FLAGS="$(sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g' <<< "${XLA_FLAGS:-}")"
export XLA_FLAGS="$XLA_FLAGS --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}"

pids=()
for ((i = 0; i < N; i++)); do
  log="$LOG_DIR/process_$i.log"
  JAX_PROCESS_ID=$i python -u -m rnn_vos_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@" \
    > "$log" 2>&1 &
  pids+=($!)
  # The log file is complete when the process ends; the echo follows it and ends with it.
  tail --pid="$!" -n +1 -F "$log" 2> /dev/null | sed -u "s/^/[$i] /" &
done

killer=""
stop_all() {  # SIGTERM to the processes still running, SIGKILL after KILL_AFTER seconds
  kill -TERM "${running[@]}" 2> /dev/null || true
  if [[ -z "$killer" ]]; then
    ( sleep "$KILL_AFTER"; kill -KILL "${running[@]}" 2> /dev/null || true ) &
    killer=$!
  fi
}
trap 'echo "local_multiprocess: passing SIGTERM on to ${running[*]}" >&2; stop_all' TERM INT

running=("${pids[@]}")
status=0
while ((${#running[@]} > 0)); do
  unset done_pid
  if wait -n -p done_pid "${running[@]}"; then rc=0; else rc=$?; fi
  if [[ -z "${done_pid:-}" ]]; then continue; fi  # a trapped signal interrupted the wait
  left=()
  for pid in "${running[@]}"; do [[ $pid == "$done_pid" ]] || left+=("$pid"); done
  running=("${left[@]}")
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "local_multiprocess: process $done_pid exited with $rc; stopping the others" >&2
    ((${#running[@]} == 0)) || stop_all
  fi
done
[[ -z "$killer" ]] || kill "$killer" 2> /dev/null || true
wait  # for the echoes to finish
exit "$status"
