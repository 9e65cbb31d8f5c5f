"""`edgetune bench`'s LLM row on a tiny config: `--smoke --models llama_hf_tiny --runtimes
edgetune,pytorch` runs the whole path the ~106M `llama_hf` row takes — a `transformers`
LlamaForCausalLM from a config, compiled with loss="causal_lm" and LoRA r=8 on q_proj/v_proj, the
edgetune runner on its plan, PyTorch + PEFT on the same adapters from the same initial values —
in seconds. Checks: both cells ran, the same first loss, tokens/s and peak RSS (whole process and
steps) are reported, the LLM table is in bench.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_llm_smoke(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    p = subprocess.run([sys.executable, "-m", "edgetune.benchmarks.bench", "--smoke", "--models", "llama_hf_tiny",
                        "--runtimes", "edgetune,pytorch", "--threads", "1", "--out", str(out),
                        "--work", str(tmp_path / "cells")],
                       cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, f"bench exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    report = json.loads((out / "bench.json").read_text())
    (row,) = report["rows"]
    assert (row["model"], row["scheme"]) == ("llama_hf_tiny", "lora")
    prog = row["program"]
    assert prog["tokens_per_step"] == 2 * 32 and prog["params_total"] > prog["params_trainable"] > 0
    assert prog["trainable_tensors"] == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (lora_A, lora_B)
    assert prog["compile_s"] > 0 and prog["planned_total_bytes"] > 0
    for rt in ("edgetune", "pytorch"):
        res = row["results"][rt]
        assert res["status"] == "ok", (rt, res)
        assert res["step_ms"] > 0 and res["peak_rss_mb"] >= res["peak_rss_steps_mb"] > 0, (rt, res)
    assert "PEFT" in row["results"]["pytorch"]["note"]
    first = [row["results"][rt]["loss_first"] for rt in ("edgetune", "pytorch")]
    assert abs(first[0] - first[1]) < 1e-4, first  # same weights, ids and (B = 0) adapters
    md = (out / "bench.md").read_text()
    assert "## LLM: LoRA on a LLaMA-style decoder" in md and "| llama_hf_tiny | " in md
    assert (out / "bench_llama_hf_tiny.png").stat().st_size > 1000
