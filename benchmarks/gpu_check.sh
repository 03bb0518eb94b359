#!/usr/bin/env bash
# GPU readiness check for rnn_jax (issue 3, item 5). Run from the repository root on a
# machine with a CUDA GPU and JAX (CUDA build) + PyTorch (CUDA build) installed:
#     bash benchmarks/gpu_check.sh
# 1. checks rnn_jax on the GPU against the float64 NumPy reference and the hand-written
#    backward pass against jax.grad of the plain scan (the test files, run on the GPU);
# 2. times W1-W5 for rnn_jax, Flax and PyTorch nn.RNN (cuDNN) with the CPU harness.
# Everything is written under $OUT (default ./gpu_out).
set -uo pipefail
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY="${PYTHON:-.venv/bin/python}"
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.backends.cudnn.version())" 2>&1
} | tee "$OUT/machine.txt"

# 1. correctness on the GPU (JAX picks the GPU by default when one is present). float32
#    matmuls on NVIDIA GPUs default to TF32 (10-bit mantissa): the float64-reference tests
#    check float32 rounding, so ask for full float32 precision here.
JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/test_recurrence.py tests/test_network.py tests/test_bptt.py tests/test_long.py \
  tests/test_lookup.py tests/test_cells.py tests/test_seq2seq.py tests/test_parallel.py \
  2>&1 | tee "$OUT/tests.txt"
echo "tests exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/tests.txt"

# 2. timings: the same harness, PyTorch models moved to CUDA (cuDNN RNN)
RNN_JAX_BENCH_DEVICE=cuda "$PY" -m benchmarks.run --workloads W1 W2 W3 W4 W5 \
  --impls rnn_jax flax torch --reps 20 --no-memory --no-ablations --out "$OUT" \
  2>&1 | tee "$OUT/bench.txt"
echo "bench exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/bench.txt"
