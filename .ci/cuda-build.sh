#!/usr/bin/env bash
# CI stage "CUDA build": compiles the CUDA backend (csrc/kernels/cuda/) with the machine's nvcc for
# every architecture of cmake/cuda.cmake, host and device warnings as errors, in build/ci-cuda
# (EDGETUNE_CUDA=ON, EDGETUNE_PYTHON=OFF; with the GPU check's op runner, benchmarks/gpu/), then runs
# what runs without a GPU: the registry parity test (every cpu kernel name has a cuda kernel) and the
# GPU kernel and runtime tests (they skip without a GPU).
# nvcc missing is a failure here (CI machines have /usr/local/cuda). cuBLAS: the toolkit's when it
# ships it, otherwise PyPI's nvidia-cublas wheel installed into CI_VENV (default .venv).
# Env: CI_VENV, CI_JOBS (default 2), CUDA_HOME (default /usr/local/cuda), CI_CUDA_ARCHS (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CI_VENV:-.venv}
JOBS=${CI_JOBS:-2}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if [ -f "$VENV/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
fi
NVCC=$(command -v nvcc || true)
[ -n "$NVCC" ] || NVCC=$CUDA_HOME/bin/nvcc
[ -x "$NVCC" ] || { echo "nvcc not found (PATH, $CUDA_HOME/bin): the CUDA build stage needs the CUDA toolkit" >&2; exit 1; }
"$NVCC" --version | tail -n 2
PYTHON=$(command -v python3 || command -v python)
if ! ls "$CUDA_HOME"/lib64/libcublas.so* >/dev/null 2>&1; then
  echo "no cuBLAS in $CUDA_HOME: installing PyPI's nvidia-cublas (headers + libraries, no torch) into $VENV"
  "$PYTHON" -m pip install -q --no-deps nvidia-cublas
fi
args=(-DEDGETUNE_CUDA=ON -DEDGETUNE_PYTHON=OFF -DEDGETUNE_TESTS=ON -DEDGETUNE_GPU_CHECK=ON -DCMAKE_BUILD_TYPE=Release
      -DCMAKE_CUDA_COMPILER="$NVCC" -DEDGETUNE_CUDA_PYTHON="$PYTHON" -DPython_EXECUTABLE="$PYTHON")
[ -n "${CI_CUDA_ARCHS:-}" ] && args+=(-DCMAKE_CUDA_ARCHITECTURES="$CI_CUDA_ARCHS")
cmake -S . -B build/ci-cuda -G Ninja "${args[@]}"
t0=$SECONDS
cmake --build build/ci-cuda -j "$JOBS" --target edgetune_runtime edgetune-train edgetune_cuda_registry_parity \
  edgetune_cuda_kernel_tests edgetune_cuda_runtime_tests edgetune-gpu-op-check
echo "CUDA build: $((SECONDS - t0))s on $JOBS jobs"
./build/ci-cuda/csrc/edgetune_cuda_registry_parity
./build/ci-cuda/csrc/edgetune_cuda_kernel_tests --gtest_brief=1
./build/ci-cuda/csrc/edgetune_cuda_runtime_tests --gtest_brief=1
