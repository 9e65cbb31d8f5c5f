"""`benchmarks/ablation.py --smoke`: the optimisation ablation end to end on the tiny MLP.

Runs it as a user would (a subprocess from the repo root, into a tmp dir): one -O0 compile, O0 / O0 +
each pass alone / O2 derived from it, every plan timed in its own process by the C++ runtime,
PyTorch eager as the baseline. Checks that the JSON has every configuration with a finite step
time, that every configuration reproduces O0's first-step loss (they all train the same batch from
the same weights, so a pass that changes the arithmetic shows up here), and that the markdown and
the plot exist. Takes about 20 s.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ablation_smoke(tmp_path):
    from edgetune import PASS_NAMES

    out = tmp_path / "results"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    p = subprocess.run([sys.executable, "-m", "edgetune.benchmarks.ablation", "--smoke", "--out", str(out),
                        "--work", str(tmp_path / "cells")],
                       check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, f"ablation --smoke exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    report = json.loads((out / "ablation.json").read_text())
    expected = ["O0"] + [f"O0 + {name}" for name in PASS_NAMES] + ["O2"]
    assert report["config"]["smoke"] and report["config"]["configs"] == expected
    assert report["rows"], "no (model, scheme) row"
    for row in report["rows"]:
        where = f"{row['model']} / {row['scheme']}"
        assert not row.get("error"), (where, row.get("error"))
        assert [c["name"] for c in row["configs"]] == expected, where
        o0 = row["configs"][0]["result"]
        for conf in row["configs"]:
            res = conf["result"]
            assert conf["status"] == "ok" and res["status"] == "ok", (where, conf["name"], conf.get("reason"),
                                                                       res.get("reason"))
            assert math.isfinite(res["step_ms"]) and res["step_ms"] > 0, (where, conf["name"], res)
            assert res["peak_rss_mb"] > 0 and conf["ops"] > 0 and conf["arena_bytes"] > 0, (where, conf["name"])
            # same weights, same batch: the same first-step loss as O0
            assert math.isfinite(res["loss_first"]), (where, conf["name"], res)
            assert abs(res["loss_first"] - o0["loss_first"]) <= 1e-4 * abs(o0["loss_first"]), (
                where, conf["name"], res["loss_first"], o0["loss_first"])
            assert conf["check"]["status"] == "ok", (where, conf["name"], conf["check"])
        torch_res = row["pytorch"]
        assert torch_res["status"] == "ok", (where, torch_res.get("reason"))
        assert abs(torch_res["loss_first"] - o0["loss_first"]) < 1e-3 * max(1.0, abs(o0["loss_first"])), (
            where, torch_res["loss_first"], o0["loss_first"])
    md = (out / "ablation.md").read_text()
    assert "| config | ops | planned arena MiB |" in md and "FAIL" not in md
    png = out / "ablation.png"
    assert png.exists() and png.stat().st_size > 1000
