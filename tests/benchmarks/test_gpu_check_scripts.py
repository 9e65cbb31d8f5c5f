"""The GPU check's two Python halves (benchmarks/gpu/), end to end on the cpu backend, so they do
not rot between GPU runs: prepare_cases.py --quick --backend cpu makes correctness and benchmark
cases, run_cases.py --backend cpu --skip-torch runs them with edgetune-train and scores them. The
scoring must pass every correctness case (the cpu backend against the numpy reference), and the
report must have a time and a memory figure for every benchmark case."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edgetune.runtime import binary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p


def test_prepare_and_run_cases_on_the_cpu_backend(tmp_path):
    cases, out = tmp_path / "cases", tmp_path / "out"
    _run("benchmarks/gpu/prepare_cases.py", cases, "--quick", "--backend", "cpu")
    listed = json.loads((cases / "cases.json").read_text())
    assert listed["backend"] == "cpu" and {c["kind"] for c in listed["cases"]} == {"correctness", "bench"}
    _run("benchmarks/gpu/run_cases.py", "--train", binary.find_train_binary(), "--cases", cases, "--out", out,
         "--backend", "cpu", "--skip-torch", "--bench-steps", "3")
    results = json.loads((out / "gpu_results.json").read_text())
    assert results["correctness"] and all(r["ok"] for r in results["correctness"].values()), results["correctness"]
    for name, r in results["bench"].items():
        assert r["edgetune"]["ok"] and r["edgetune"]["ms_per_step"] > 0 and r["edgetune"]["device_bytes"] > 0, name
    report = (out / "gpu_report.md").read_text()
    assert "## Correctness" in report and "## Time per step" in report
