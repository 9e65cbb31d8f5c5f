#!/usr/bin/env bash
# GPU-side kernel check (issue 12, part a): on a machine with an NVIDIA GPU and the CUDA toolkit
# (no network needed), build the CUDA backend for this GPU only and run
#   edgetune_cuda_registry_parity   every cpu kernel name has a cuda kernel
#   edgetune_cuda_kernel_tests      every cuda kernel against the cpu kernel (CPU tolerances) and
#                                   twice on the GPU for bit-identical results
# Usage: benchmarks/gpu/kernel_check.sh [ARCH]   (ARCH e.g. 90-real for H100/H200; default: native)
# Env: EDGETUNE_CUBLAS_ROOT / EDGETUNE_CUDA_PYTHON when cuBLAS is not in the toolkit; JOBS.
# Writes build/gpu-check/kernel_check.xml (GoogleTest report) and prints the summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${1:-native}
JOBS=${JOBS:-$(nproc)}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
args=(-DEDGETUNE_CUDA=ON -DEDGETUNE_PYTHON=OFF -DEDGETUNE_TESTS=ON -DCMAKE_BUILD_TYPE=Release
      -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH")
[ -n "${EDGETUNE_CUBLAS_ROOT:-}" ] && args+=(-DEDGETUNE_CUBLAS_ROOT="$EDGETUNE_CUBLAS_ROOT")
[ -n "${EDGETUNE_CUDA_PYTHON:-}" ] && args+=(-DEDGETUNE_CUDA_PYTHON="$EDGETUNE_CUDA_PYTHON")
cmake -S . -B build/gpu-check -G Ninja "${args[@]}"
cmake --build build/gpu-check -j "$JOBS" --target edgetune_cuda_registry_parity edgetune_cuda_kernel_tests
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
./build/gpu-check/csrc/edgetune_cuda_registry_parity
./build/gpu-check/csrc/edgetune_cuda_kernel_tests --gtest_output=xml:build/gpu-check/kernel_check.xml
