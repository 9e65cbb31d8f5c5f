"""edgetune against PyTorch eager, ONNX Runtime training and TVM Relax training, per model and scheme.

    python -m edgetune.benchmarks.bench                      # the full grid (not a test: tens of minutes)
    python -m edgetune.benchmarks.bench --smoke              # tiny MLP, 2 steps, every runtime (CI: tests/benchmarks)
    python -m edgetune.benchmarks.bench --models mobilenet_v2 --schemes bias-only,sparse
    edgetune bench --help                             # `edgetune bench` calls main(argv) here
    python -m edgetune.benchmarks.ablation                   # what each optimisation pass buys (O0 / O0 + pass / O2 / O3)

Every (model, scheme, runtime) cell runs in a fresh process (benchmarks/runners/): `prepare.py`
compiles the model with edgetune for the scheme and writes the batch, the plan file, an ONNX
export and the trainable set; each runtime then trains the same model, batch and trainable set
with the same optimizer and thread count. Per cell: median step time after warm-up and the peak
RSS (VmHWM) of the measuring process; for edgetune also the planned arena and persistent bytes.
FLOPs per step are edgetune's count for the scheme's program (the work a sparse step needs), so
GFLOP/s compares runtimes on equal work; the machine's sgemm peak is measured once per run.
The peers run in their own venvs under build/peers/ (made on first use, see peers_env.py).

Schemes: full; bias-only; last-k (LastK(4)); sparse (all biases + the weights of the last 2
layers: BiasOnly() | LastK(2)); head-only (LastK(1): the classifier / LM head).

The LLM row (LLM_CASES, scheme "lora"): a LLaMA-style decoder built by `transformers` from a
config (random weights, seed 0), a batch of random token ids, the causal-LM loss, LoRA r=8
alpha=16 on q_proj/v_proj (nothing else trains), against PyTorch + Hugging Face PEFT training the
same adapters from the same initial values (train mode; ONNX Runtime and TVM cells say n/a).
Reported besides the step: tokens/s, the peak RSS of the whole process and of the steps alone
(the count is reset after the model is loaded/built), the compile time. `llama_hf_tiny` is the
same path on a tiny config (the CI smoke test, tests/benchmarks/test_bench_llm_smoke.py).
Results: RESULTS/bench.json, bench.md, bench_<model>.png (latency and peak RSS per scheme).
A cell a runtime cannot run says why, in its place in the table.

Known differences, noted per cell: ORT's SGD has no momentum; TVM runs untuned llvm schedules and
gets a few same-math ONNX rewrites it needs to differentiate (Clip -> Relu form, 1-d Gather
indices, an erf gradient; Dropout as Identity) — see runners/tvm_runner.py. Subprocesses run with
OMP_WAIT_POLICY=PASSIVE unless --omp-active (spinning OpenMP threads collapse on shared cores).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from . import peers_env
from .locations import RUNNERS, results_dir, work_root

RUNTIMES = ["edgetune", "pytorch", "ort", "tvm"]
LABELS = {"edgetune": "edgetune", "pytorch": "PyTorch", "ort": "ORT", "tvm": "TVM"}
SCHEMES = ["full", "bias-only", "last-k", "sparse", "head-only"]
SCHEME_LABELS = {"full": "full", "bias-only": "bias-only", "last-k": "last 4", "sparse": "sparse",
                 "head-only": "head-only", "lora": "LoRA r=8 q,v"}
# model name -> build kwargs and input size (batch from --batch)
CASES = {
    "mobilenet_v2": {"model_kwargs": {"num_classes": 1000}, "resolution": 224},
    "resnet18": {"model_kwargs": {"num_classes": 1000}, "resolution": 224},
    "efficientnet_lite0": {"model_kwargs": {"num_classes": 1000}, "resolution": 224},
    "bert": {"model_kwargs": {}, "seq_len": 128},
    "llama": {"model_kwargs": {}, "seq_len": 128},
    "mlp": {"model_kwargs": {}},
}
DEFAULT_MODELS = ["mobilenet_v2", "resnet18", "efficientnet_lite0", "bert", "llama", "llama_hf"]
SMOKE = {"models": ["mlp"], "schemes": ["full", "sparse"], "warmup": 1, "steps": 2}

# LLM rows: a `transformers` causal LM from a config (random weights), LoRA adapters, batch and
# sequence fixed here (not --batch). llama_hf: 105.8M parameters (untied LM head, as LLaMA;
# 24.6M of them the embedding, 24.6M the head), 8 layers of hidden 768, 12 heads, SwiGLU 2048.
LLM_LORA = {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}
LLM_SCHEMES = ["lora"]
LLM_CASES = {
    "llama_hf": {"hf_class": "LlamaForCausalLM", "hf_config_class": "LlamaConfig",
                 "hf_config": {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048,
                               "num_hidden_layers": 8, "num_attention_heads": 12, "num_key_value_heads": 12,
                               "max_position_embeddings": 256, "tie_word_embeddings": False},
                 "seq_len": 256, "batch": 4, "schemes": LLM_SCHEMES, "lora": LLM_LORA},
    "llama_hf_tiny": {"hf_class": "LlamaForCausalLM", "hf_config_class": "LlamaConfig",
                      "hf_config": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
                                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                                    "max_position_embeddings": 32, "tie_word_embeddings": False},
                      "seq_len": 32, "batch": 2, "schemes": LLM_SCHEMES, "lora": LLM_LORA},
}


def available_models() -> list[str]:
    from edgetune import models
    return list(models.MODELS)


def llm_missing() -> str | None:
    """Why the LLM rows cannot run in this environment (transformers / peft missing), or None."""
    import importlib.util
    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    return f"needs {' and '.join(missing)} (pip install {' '.join(missing)})" if missing else None


def schemes_for(model: str, schemes: list[str], given: bool) -> list[str]:
    """The schemes a model runs: an LLM case its own (those of --schemes among them, when given),
    any other model the --schemes that are not LLM-only."""
    if model in LLM_CASES:
        own = LLM_CASES[model]["schemes"]
        return [s for s in own if s in schemes] if given else list(own)
    return [s for s in schemes if s in SCHEMES]


# ---------------------------------------------------------------------------------------------
# running one process
# ---------------------------------------------------------------------------------------------

def _run(cmd, cell, timeout, env=None) -> tuple[int, str]:
    """Run cmd; (exit code, the tail of its stderr). Output goes to CELL/<tag>.log."""
    tag = os.path.basename(cmd[1]).replace(".py", "") + ("_" + cmd[3] if len(cmd) > 3 else "")
    log = os.path.join(cell, f"{tag}.log")
    with open(log, "w") as f:
        try:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=env)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = 124
    with open(log, errors="replace") as f:
        tail = [ln for ln in f.read().strip().splitlines() if ln.strip()][-1:]
    return rc, (tail[0][:300] if tail else "")


def _result(cell, name, rc, tail, timeout) -> dict:
    path = os.path.join(cell, f"{name}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    if rc == 124:
        return {"status": "error", "reason": f"timed out after {timeout} s"}
    if rc < 0 or rc in (137, 139):
        return {"status": "error", "reason": f"process killed (exit {rc}; out of memory?) {tail}".strip()}
    return {"status": "error", "reason": f"exit {rc}: {tail}"}


OMP_WAIT_POLICY = "PASSIVE"  # set by main(); see --omp-active


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS"):
        env[k] = str(threads)
    # PyTorch's OpenMP threads spin at every barrier: when another process holds one of the cores,
    # each parallel region waits for a time slice (MobileNetV2 bias-only: 6 s/step instead of 0.4 s
    # on a shared 2-core machine). Passive waiting keeps the comparison about the runtimes.
    if OMP_WAIT_POLICY:
        env["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    env.pop("PYTHONPATH", None)
    return env


def run_cell(runtime, cell, meta, pythons, timeout) -> dict:
    env = _env(meta["threads"])
    if runtime == "edgetune":
        rc, tail = _run([sys.executable, os.path.join(RUNNERS, "edgetune_runner.py"), cell], cell, timeout, env)
        return _result(cell, "edgetune", rc, tail, timeout)
    if runtime == "pytorch":
        rc, tail = _run([sys.executable, os.path.join(RUNNERS, "torch_runner.py"), cell], cell, timeout, env)
        return _result(cell, "pytorch", rc, tail, timeout)
    python, why = pythons[runtime]
    if python is None:
        return {"status": "error", "reason": why}
    if "onnx" not in meta:
        return {"status": "error", "reason": meta.get("onnx_error", "no ONNX export")}
    script = os.path.join(RUNNERS, f"{runtime}_runner.py")
    rc, tail = _run([python, script, cell, "build"], cell, timeout, env)
    built = _result(cell, f"{runtime}_build", rc, tail, timeout)
    if built.get("status") != "ok":
        return {"status": "error", "reason": f"build: {built.get('reason', '?')}"}
    rc, tail = _run([python, script, cell, "run"], cell, timeout, env)
    return _result(cell, runtime, rc, tail, timeout)


def gemm_peak(threads: int) -> dict:
    try:
        from edgetune.runtime.native import native
        path = native().__file__
    except Exception:  # noqa: BLE001
        path = ""
    try:
        p = subprocess.run([sys.executable, os.path.join(RUNNERS, "gemm_peak.py"), str(threads), path],
                           capture_output=True, text=True, timeout=300, env=_env(threads))
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        return {"gflops": None, "how": f"not measured: {e}"}


def machine_info(threads) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _fmt(v, nd=1):
    if v is None:
        return "–"
    if v != 0 and abs(v) < 10 ** -nd * 10:  # tiny values keep 2 significant digits
        return f"{v:.2g}"
    return f"{v:.{nd}f}"


def _short(reason: str, n: int = 90) -> str:
    r = " ".join(str(reason).split()).replace("|", "/")
    return r if len(r) <= n else r[:n - 1] + "…"


def _cell_text(res: dict, key: str, nd=1) -> str:
    if res.get("status") == "ok":
        return _fmt(res.get(key), nd)
    return "n/a: " + _short(res.get("reason", "?"))


def write_markdown(report: dict, path: str) -> None:
    runtimes = report["config"]["runtimes"]
    peak = report["gemm_peak"].get("gflops")
    lines = [f"# edgetune bench ({report['started']})", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
             f"{report['config']['threads']} threads, batch {report['config']['batch']}, "
             f"{report['config']['optimizer']} (momentum {report['config']['momentum']}), "
             f"median of {report['config']['steps']} steps after {report['config']['warmup']} warm-up, "
             f"each cell a fresh process; OMP_WAIT_POLICY={report['config'].get('omp_wait_policy') or 'unset'}.  ",
             f"sgemm peak: {_fmt(peak)} GFLOP/s ({report['gemm_peak'].get('how', '')}, 1024³).", "",
             "## Step time (ms) and peak RSS (MB)", ""]
    head = ["model", "scheme", "trainable", "GFLOP/step"] + [f"{LABELS[r]} ms" for r in runtimes]
    if "edgetune" in runtimes:
        head += [f"vs {LABELS[r]}" for r in ("pytorch", "ort") if r in runtimes]
    head += [f"{LABELS[r]} RSS MB" for r in runtimes]
    if "edgetune" in runtimes:
        head += ["planned arena MiB", "planned persistent MiB", "edgetune GFLOP/s", "% of sgemm peak"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for row in report["rows"]:
        res = row["results"]
        prog = row.get("program") or {}
        flops = prog.get("flops_per_step")
        cells = [row["model"], SCHEME_LABELS.get(row["scheme"], row["scheme"]),
                 f"{prog['params_trainable']:,}" if "params_trainable" in prog else "–",
                 _fmt(flops / 1e9, 2) if flops else "–"]
        cells += [_cell_text(res[r], "step_ms") for r in runtimes]
        et = res.get("edgetune", {})
        if "edgetune" in runtimes:
            for r in ("pytorch", "ort"):
                if r not in runtimes:
                    continue
                other = res[r]
                if et.get("status") == "ok" and other.get("status") == "ok":
                    cells.append(f"{other['step_ms'] / et['step_ms']:.2f}×")
                else:
                    cells.append("–")
        cells += [_cell_text(res[r], "peak_rss_mb", 0) for r in runtimes]
        if "edgetune" in runtimes:
            cells += [_fmt(prog["planned_arena_bytes"] / 2**20) if "planned_arena_bytes" in prog else "–",
                      _fmt(prog["planned_persistent_bytes"] / 2**20) if "planned_persistent_bytes" in prog else "–"]
            if et.get("status") == "ok" and flops:
                gf = flops / (et["step_ms"] / 1e3) / 1e9
                cells += [_fmt(gf), f"{100 * gf / peak:.1f}%" if peak else "–"]
            else:
                cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
        for r in runtimes:
            if res[r].get("status") != "ok":
                notes.append(f"- {row['model']} / {row['scheme']} / {LABELS[r]}: {res[r].get('reason', '?')}")
            elif res[r].get("note"):
                notes.append(f"- {row['model']} / {row['scheme']} / {LABELS[r]}: {res[r]['note']}")
    lines += ["", "Ratios are the other runtime's step time over edgetune's (> 1: edgetune is faster). "
              "GFLOP/s uses edgetune's FLOP count for the scheme's sparse program.", ""]
    lines += llm_markdown(report)
    if notes:
        lines += ["## Notes per cell", ""] + notes + [""]
    plots = report.get("plots") or []
    if plots:
        lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def llm_markdown(report: dict) -> list[str]:
    """The LLM rows' own table: tokens/s and peak memory, edgetune vs PyTorch + PEFT."""
    rows = [r for r in report["rows"] if (r.get("program") or {}).get("tokens_per_step")]
    if not rows:
        return []
    lines = ["## LLM: LoRA on a LLaMA-style decoder (edgetune vs PyTorch + PEFT)", "",
             "Random-weight `transformers` decoder, causal-LM loss, LoRA on q_proj/v_proj only; PyTorch + PEFT "
             "trains the same adapters from the same initial values (train mode). Peak RSS: the whole process "
             "(edgetune: the plan's bytes are held while it loads) / the training steps alone. Compile: "
             "`et.compile` (capture, autodiff, passes, memory plan) and the compiling process's peak RSS "
             "(the torch model included), then writing the plan file.", "",
             "| model | params | trainable | batch × seq | compile s (peak RSS MB) | plan save s | edgetune tokens/s | "
             "PyTorch + PEFT tokens/s | vs PyTorch | edgetune peak RSS MB (steps) | PyTorch peak RSS MB (steps) | "
             "planned total MiB | first loss edgetune / PyTorch |",
             "|" + "---|" * 13]
    for row in rows:
        prog, res = row["program"], row["results"]
        et, pt = res.get("edgetune", {}), res.get("pytorch", {})
        tok = prog["tokens_per_step"]

        def tps(r):
            if r.get("status") != "ok":
                return "n/a: " + _short(r.get("reason", "?"), 60)
            return f"{tok / (r['step_ms'] / 1e3):,.0f}"

        def rss(r):
            if r.get("status") != "ok":
                return "–"
            steps = r.get("peak_rss_steps_mb")
            return f"{r['peak_rss_mb']:.0f}" + (f" ({steps:.0f})" if steps is not None else "")

        both = et.get("status") == "ok" and pt.get("status") == "ok"
        cfg = row.get("case", {})
        lines.append("| " + " | ".join([
            row["model"], f"{prog.get('params_total', 0) / 1e6:.1f}M", f"{prog['params_trainable']:,}",
            f"{cfg.get('batch', '?')} × {cfg.get('seq_len', '?')}",
            _fmt(prog.get("compile_s")) + (f" ({prog['compile_peak_rss_mb']:,.0f})" if prog.get("compile_peak_rss_mb")
                                           else ""),
            _fmt(prog.get("plan_save_s")), tps(et), tps(pt),
            f"{pt['step_ms'] / et['step_ms']:.2f}×" if both else "–", rss(et), rss(pt),
            _fmt(prog["planned_total_bytes"] / 2**20) if "planned_total_bytes" in prog else "–",
            f"{_fmt(et.get('loss_first'), 4)} / {_fmt(pt.get('loss_first'), 4)}" if both else "–"]) + " |")
    lines.append("")
    return lines


def write_plots(report: dict, out: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = report["config"]["runtimes"]
    paths = []
    for model in dict.fromkeys(r["model"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["model"] == model]
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(rows) * 2), 4))
        width = 0.8 / len(runtimes)
        for ax, key, title in ((axes[0], "step_ms", "median step time (ms)"),
                               (axes[1], "peak_rss_mb", "peak RSS of the process (MB)")):
            for i, rt in enumerate(runtimes):
                xs, ys = [], []
                for j, row in enumerate(rows):
                    res = row["results"][rt]
                    if res.get("status") == "ok" and res.get(key) is not None:
                        xs.append(j + (i - (len(runtimes) - 1) / 2) * width)
                        ys.append(res[key])
                ax.bar(xs, ys, width, label=LABELS[rt])
            for j, row in enumerate(rows):  # mark cells a runtime could not run
                for i, rt in enumerate(runtimes):
                    if row["results"][rt].get("status") != "ok":
                        ax.text(j + (i - (len(runtimes) - 1) / 2) * width, 0, "×", ha="center", va="bottom",
                                color="grey", fontsize=9)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([SCHEME_LABELS.get(r["scheme"], r["scheme"]) for r in rows])
            heights = [row["results"][rt][key] for row in rows for rt in runtimes
                       if row["results"][rt].get("status") == "ok" and row["results"][rt].get(key)]
            if heights and max(heights) / min(heights) > 30:
                ax.set_yscale("log")
                title += ", log scale"
            ax.set_title(title)
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{model}, batch {report['config']['batch']}, {report['config']['threads']} threads "
                     f"(× = could not run; see bench.md)")
        fig.tight_layout()
        path = os.path.join(out, f"bench_{model}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def _csv(choices):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if choices is not None and t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {choices}")
        return items
    return parse


def add_run_options(ap: argparse.ArgumentParser, name: str, unit: str) -> None:
    """The options every benchmark driver shares (bench.py, ablation.py): steps, optimizer,
    folders (under `name`), timeouts, plots."""
    ap.add_argument("--warmup", type=int, default=None, help="default 2 (smoke 1)")
    ap.add_argument("--steps", type=int, default=None, help=f"timed steps per {unit}, default 5 (smoke 2)")
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--out", help=f"results folder (default benchmarks/results; smoke: build/{name}/smoke)")
    ap.add_argument("--work", help=f"per-cell files (default build/{name}/cells[-smoke])")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per process")
    ap.add_argument("--omp-active", action="store_true",
                    help="leave OMP_WAIT_POLICY alone (default: PASSIVE, robust when the cores are shared)")
    ap.add_argument("--no-plots", action="store_true")


def apply_run_defaults(args, smoke: dict) -> None:
    """--smoke's models, schemes and step counts where not given; 2 warm-up + 5 timed steps else."""
    if args.smoke:
        args.models = args.models or smoke["models"]
        args.schemes = args.schemes or smoke["schemes"]
        args.warmup = smoke["warmup"] if args.warmup is None else args.warmup
        args.steps = smoke["steps"] if args.steps is None else args.steps
    args.warmup = 2 if args.warmup is None else args.warmup
    args.steps = 5 if args.steps is None else args.steps


def set_run_folders(args, name: str) -> None:
    args.out = args.out or (os.path.join(work_root(), name, "smoke") if args.smoke else results_dir())
    args.work = args.work or os.path.join(work_root(), name, "cells-smoke" if args.smoke else "cells")


def make_run_folders(args) -> None:
    """The results folder (kept) and an empty work folder (cells of an earlier run removed)."""
    os.makedirs(args.out, exist_ok=True)
    if os.path.exists(args.work):
        shutil.rmtree(args.work)
    os.makedirs(args.work)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="edgetune bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny MLP, 2 steps, every runtime (a CI check)")
    ap.add_argument("--models", type=_csv(None), help=f"comma-separated (default: {', '.join(DEFAULT_MODELS)}"
                    " where present in edgetune.models)")
    ap.add_argument("--schemes", type=_csv(SCHEMES + LLM_SCHEMES),
                    help=f"comma-separated from {', '.join(SCHEMES + LLM_SCHEMES)} (default: all; an LLM case "
                         f"({', '.join(LLM_CASES)}) runs {', '.join(LLM_SCHEMES)}, the others the rest)")
    ap.add_argument("--runtimes", type=_csv(RUNTIMES), default=list(RUNTIMES), help="default: all four")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    add_run_options(ap, "bench", "cell")
    ap.add_argument("--peers-dir", default=peers_env.DEFAULT_ROOT, help="where the peers' venvs live")
    args = ap.parse_args(argv)
    args.schemes_given = args.schemes is not None  # an LLM case runs its own schemes unless told
    apply_run_defaults(args, SMOKE)
    args.schemes = args.schemes or list(SCHEMES)
    args.runtimes = [r for r in RUNTIMES if r in args.runtimes]  # table columns in a fixed order
    set_run_folders(args, "bench")
    return args


def main(argv=None) -> int:
    global OMP_WAIT_POLICY
    args = parse_args(sys.argv[1:] if argv is None else argv)
    OMP_WAIT_POLICY = None if args.omp_active else "PASSIVE"
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    present = available_models() + list(LLM_CASES)
    if args.models:
        unknown = [m for m in args.models if m not in present]
        if unknown:
            console.print(f"[red]unknown model(s) {unknown}; edgetune.models has {present}")
            return 2
        model_names = args.models
    else:
        model_names = [m for m in DEFAULT_MODELS if m in present]
        missing = [m for m in DEFAULT_MODELS if m not in present]
        if missing:
            console.print(f"not in edgetune.models yet, skipped: {', '.join(missing)}")
        why = llm_missing()
        if why and any(m in LLM_CASES for m in model_names):
            console.print(f"LLM rows skipped: {why}")
            model_names = [m for m in model_names if m not in LLM_CASES]
    make_run_folders(args)
    t_start = time.perf_counter()
    report = {"started": utc_now(),
              "machine": machine_info(args.threads),
              "config": {"models": model_names, "schemes": args.schemes, "runtimes": args.runtimes,
                         "batch": args.batch, "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
                         "optimizer": args.optimizer, "lr": args.lr, "momentum": args.momentum,
                         "smoke": args.smoke, "omp_wait_policy": OMP_WAIT_POLICY or os.environ.get("OMP_WAIT_POLICY")},
              "rows": []}
    peers = [r for r in args.runtimes if r in peers_env.PEERS]
    pairs = [(m, s) for m in model_names for s in schemes_for(m, args.schemes, args.schemes_given)]
    for m in model_names:
        if not schemes_for(m, args.schemes, args.schemes_given):
            console.print(f"{m}: none of --schemes applies (it runs "
                          f"{', '.join(LLM_CASES[m]['schemes'] if m in LLM_CASES else SCHEMES)})")
    total = 1 + len(peers) + len(pairs) * (1 + len(args.runtimes))
    with Progress(TextColumn("[bold]{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("sgemm peak", total=total)
        report["gemm_peak"] = gemm_peak(args.threads)
        progress.advance(task)
        pythons = {}
        if peers:  # both venvs at once (pip mostly waits on the network)
            progress.update(task, description=f"{' + '.join(peers)} venvs (build/peers; first use only)")
            with ThreadPoolExecutor(len(peers)) as pool:
                futures = {name: pool.submit(peers_env.ensure_venv, name, args.peers_dir) for name in peers}
                for name in peers:
                    pythons[name] = futures[name].result()
                    report.setdefault("peers", {})[name] = pythons[name][0] or pythons[name][1]
                    progress.advance(task)
        for model, scheme in pairs:
            cell = os.path.join(args.work, f"{model}__{scheme}")
            os.makedirs(cell)
            case = LLM_CASES.get(model) or CASES.get(model, {"model_kwargs": {}})
            cfg = {"model": model, "scheme": scheme, "batch": args.batch, "threads": args.threads,
                   "warmup": args.warmup, "steps": args.steps, "optimizer": args.optimizer, "lr": args.lr,
                   "momentum": args.momentum, **case}
            with open(os.path.join(cell, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
            progress.update(task, description=f"{model} / {scheme}: compile + export")
            rc, tail = _run([sys.executable, os.path.join(RUNNERS, "prepare.py"), cell], cell, args.timeout,
                            _env(args.threads))
            progress.advance(task)
            row = {"model": model, "scheme": scheme, "results": {}}
            if model in LLM_CASES:
                row["case"] = {k: case[k] for k in ("hf_class", "hf_config", "seq_len", "batch", "lora")}
            meta_path = os.path.join(cell, "meta.json")
            if rc != 0 or not os.path.exists(meta_path):
                why = f"compile failed: {tail}" if rc != 124 else f"compile timed out after {args.timeout} s"
                row["results"] = {r: {"status": "error", "reason": why} for r in args.runtimes}
                progress.advance(task, len(args.runtimes))
                report["rows"].append(row)
                continue
            with open(meta_path) as f:
                meta = json.load(f)
            row["program"] = {k: meta[k] for k in (
                "spec", "params_trainable", "params_frozen", "flops_per_step", "flops_by_section",
                "planned_arena_bytes", "planned_persistent_bytes", "planned_input_bytes", "planned_total_bytes",
                "compile_s", "plan_save_s", "plan_bytes", "params_total", "tokens_per_step", "attn_implementation",
                "rss_before_compile_mb", "compile_peak_rss_mb")
                if k in meta}
            row["program"]["trainable_tensors"] = len(meta["trainable_names"])
            for rt in args.runtimes:
                progress.update(task, description=f"{model} / {scheme}: {LABELS[rt]}")
                res = run_cell(rt, cell, meta, pythons, args.timeout)
                res.pop("traceback", None)
                res.pop("runtime_memory", None) if rt != "edgetune" else None
                row["results"][rt] = res
                progress.advance(task)
            report["rows"].append(row)
    report["wall_s"] = time.perf_counter() - t_start
    if not args.no_plots:
        try:
            report["plots"] = write_plots(report, args.out)
        except ImportError as e:
            console.print(f"[yellow]no plots: {e} (pip install matplotlib)")
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, os.path.join(args.out, "bench.md"))
    ok = sum(res.get("status") == "ok" for row in report["rows"] for res in row["results"].values())
    n = sum(len(row["results"]) for row in report["rows"])
    console.print(f"{ok}/{n} cells ran; {report['wall_s']:.0f} s; results in {args.out}/bench.md, bench.json")
    with open(os.path.join(args.out, "bench.md")) as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
