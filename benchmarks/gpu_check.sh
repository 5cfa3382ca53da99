#!/usr/bin/env bash
# The accelerator figures of benchmarks/RESULTS.md in one go (a GPU or TPU; ~8 min on one H200):
#   benchmarks/gpu_check.sh              # output on stdout, and in $OUT/gpu_check.txt if OUT is set
#   GPU_CHECK_SMOKE=1 benchmarks/gpu_check.sh   # the same commands on tiny demo models (CPU check)
# Each benchmark runs under its own time limit, so one that hangs or runs out of memory cannot
# take the rest down; their lines follow the format of benchmarks/train_step.py, with achieved
# TFLOP/s and MFU (against the chip's peak bf16 rate, rnn_vos_jax/runtime/throughput.py).
# Needs JAX with CUDA (or TPU), flax, optax; imports no TensorFlow.
set -uo pipefail
cd "$(dirname "$0")/.."
# The package (and configs/, installed as rnn_vos_jax.configs) must be installed; offline is fine.
python -c "import rnn_vos_jax.configs" 2>/dev/null ||
  python -m pip install -q --no-deps --no-build-isolation -e . || exit 1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu_check.txt") 2>&1
fi
SIZE=256,448 DEMO="" LIMIT=1
if [[ -n "${GPU_CHECK_SMOKE:-}" ]]; then
  SIZE=32,32 DEMO=":demo" LIMIT=3  # CPU compiles slowly: longer limits, tiny models
fi
python -c "import jax; print('jax', jax.__version__, jax.devices())"
backend=$(python -c "import jax; print(jax.default_backend())")
if [[ "$backend" == cpu && -z "${GPU_CHECK_SMOKE:-}" ]]; then
  echo "no GPU or TPU visible: the full-size figures would take hours on CPU (GPU_CHECK_SMOKE=1 checks the script)"
  exit 1
fi
run() {  # run SECONDS ARGS...: one benchmark command under a time limit
  local limit=$(($1 * LIMIT)); shift
  echo "+ python benchmarks/train_step.py $* (limit ${limit} s)"
  timeout "$limit" python benchmarks/train_step.py --image_size="$SIZE" --repeats=5 "$@"
  local rc=$?
  [[ $rc -eq 0 ]] || echo "! exit status $rc (124: over the time limit)"
}
start=$(date +%s)
# The headline: HS2S in bfloat16, 4 clips per step, 4 objects per inference step.
run 170 --configs=hs2s$DEMO --dtype=bfloat16 --batch=4 --frames=3 --objects=4
# The CPU rows' setting (float32, batch 1, one object), for a like-for-like speed-up.
run 110 --configs=hs2s$DEMO --dtype=float32 --batch=1 --frames=3 --objects=1
# The other families in bfloat16, batched.
run 110 --configs=s2s_pp$DEMO,s2s$DEMO --dtype=bfloat16 --batch=4 --frames=3 --objects=4
# Evaluation: object-frames/s against the number of object slots (config.eval.object_slots).
echo "+ python benchmarks/slots.py (limit $((150 * LIMIT)) s)"
timeout $((150 * LIMIT)) python benchmarks/slots.py --config=hs2s$DEMO --image_size="$SIZE" \
  --dtype=bfloat16 --slots=0,1,4,16,32 --videos=32 --frames=12 || echo "! slots: exit status $?"
# Cold and warm start-up of segment (the compilation cache); train needs TensorFlow's records.
echo "+ python benchmarks/startup.py --what=segment (limit $((150 * LIMIT)) s)"
timeout $((150 * LIMIT)) python benchmarks/startup.py --configs=hs2s$DEMO --what=segment ||
  echo "! startup: exit status $?"
echo "gpu_check: done in $(($(date +%s) - start)) s"
