#!/usr/bin/env bash
# Developer build of the C++ runtime in its own tree, without reinstalling the package:
#   csrc/dev-build.sh NAME [cmake -D options...]
# builds build/dev-NAME (pybind11 module + edgetune-train) and prints the module's path; then
#   EDGETUNE_NATIVE=$(csrc/dev-build.sh k1) python -m pytest tests/kernels
# runs the Python tests against that build (see runtime/native.py).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: csrc/dev-build.sh NAME [cmake options]}; shift
mkdir -p build
dir=build/dev-$name
cmake -S . -B "$dir" -G Ninja -DEDGETUNE_PYTHON=ON -DSKBUILD_SCRIPTS_DIR=bin \
  -Dpybind11_DIR="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')" "$@" >"$dir.log" 2>&1 \
  || { cat "$dir.log" >&2; exit 1; }
cmake --build "$dir" >>"$dir.log" 2>&1 || { grep -E "error|Error" -A3 "$dir.log" | head -60 >&2; exit 1; }
ls "$PWD/$dir"/csrc/_native*.so
