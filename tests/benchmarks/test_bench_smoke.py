"""`benchmarks/bench.py --smoke`: the whole harness on a tiny MLP, 2 steps, every runtime.

Runs it as a user would (a subprocess from the repo root). On first use it makes the peers'
venvs under build/peers/ (ONNX Runtime training, TVM; about a minute, then cached), so in a
fresh CI clone this test takes 1–3 minutes; with the venvs cached, well under one.
Checks: every runtime has a numeric step time for every smoke cell (or, only for a peer whose
venv cannot be made here, a reason string), and the JSON, markdown and PNG plots exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIMES = ["edgetune", "pytorch", "ort", "tvm"]


def test_bench_smoke(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "edgetune.benchmarks.bench", "--smoke", "--out", str(out),
                        "--work", str(tmp_path / "cells")],
                       cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, f"bench --smoke exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    report = json.loads((out / "bench.json").read_text())
    assert report["config"]["smoke"] and report["config"]["runtimes"] == RUNTIMES
    assert report["gemm_peak"]["gflops"] > 0
    rows = report["rows"]
    assert rows and {r["model"] for r in rows} == {"mlp"}
    peers = report.get("peers", {})
    for row in rows:
        assert row["program"]["flops_per_step"] > 0 and row["program"]["planned_arena_bytes"] > 0
        for rt in RUNTIMES:
            res = row["results"][rt]
            venv_failed = rt in ("ort", "tvm") and not str(peers.get(rt, "")).endswith("python")
            if res["status"] == "ok":
                assert isinstance(res["step_ms"], float) and res["step_ms"] > 0, (rt, res)
                assert res["peak_rss_mb"] > 0, (rt, res)
                assert res["loss_first"] == res["loss_first"], (rt, res)  # not NaN
            else:
                # only a peer whose venv could not be made may be missing, and it must say why
                assert venv_failed and isinstance(res.get("reason"), str) and res["reason"], (row["scheme"], rt, res)
        # all runtimes train the same model on the same batch: the same first loss
        losses = [row["results"][rt]["loss_first"] for rt in RUNTIMES if row["results"][rt]["status"] == "ok"]
        assert max(losses) - min(losses) < 1e-3 * max(1.0, abs(losses[0])), (row["scheme"], losses)
    md = (out / "bench.md").read_text()
    assert "| model | scheme |" in md and "edgetune ms" in md
    pngs = sorted(out.glob("bench_*.png"))
    assert pngs and all(png.stat().st_size > 1000 for png in pngs)
    print(f"bench --smoke: {wall:.0f} s")
