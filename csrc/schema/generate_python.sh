#!/usr/bin/env bash
# Regenerates the Python reader/builder of the plan schema (edgetune/plan/, committed) with
# Debian's flatc. Run after editing plan.fbs; tests/runtime/test_plan_file.py fails when the
# committed code is stale. (The C++ header is generated at build time by CMake.)
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flatc --python -o "$tmp" csrc/schema/plan.fbs
rm -rf edgetune/plan
cp -r "$tmp/edgetune/plan" edgetune/plan
