"""What each optimisation pass buys: step time and planned memory of -O0, -O0 + one pass, -O2, -O3.

    python -m edgetune.benchmarks.ablation                   # mobilenet_v2, resnet18, bert x bias-only, sparse (~15 min)
    python -m edgetune.benchmarks.ablation --smoke           # tiny MLP, 2 steps, O0 / each pass alone / O2 (CI)
    python -m edgetune.benchmarks.ablation --models mobilenet_v2 --schemes bias-only --steps 2 --resolution 64

Per (model, scheme) one process (runners/ablation_prepare.py) builds the model (seed 0), compiles it
ONCE at -O0 and derives every configuration with `et.optimize` — "O0", "O0 + <pass>" for each pass in
et.PASS_NAMES (select_kernels alone measures its kernels), "O2" and "O3" (all passes, kernels
measured) — so all of them start from the same graph and weights; it writes one plan per
configuration and records the planned arena / persistent bytes, op count and pass notes. Each plan
is then timed in a FRESH process by the C++ runtime (runners/edgetune_runner.py: no torch in that
process, so its peak RSS is the runtime's): median ms/step after warm-up, peak RSS (VmHWM), losses.
PyTorch eager on the same model, mode, batch and trainable set runs once per (model, scheme) as
the "vs PyTorch" baseline.

BatchNorm mode: --bn eval (the default here) compiles inference-mode BN with frozen running
statistics, the only BN that fold_batchnorm can fold; --bn train keeps batch statistics (then the
pass has nothing to fold). The whole model is put in that mode, for edgetune and PyTorch alike.

Correctness guard: every configuration trains the same batch from the same weights, so its
first-step loss must equal O0's within 1e-4 relative; a row that does not is marked FAIL.
A configuration whose passes raise (or whose runner fails) records the error in its row and the
run goes on.

Results: RESULTS/ablation.md (one table per model x scheme), ablation.json, ablation.png (step
time and planned arena per configuration, one panel per model x scheme). Subprocesses run with
OMP_WAIT_POLICY=PASSIVE unless --omp-active (see bench.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from . import bench  # CASES, the fresh-process runner, table helpers
from .locations import RUNNERS

SCHEMES = ["bias-only", "sparse"]
DEFAULT_MODELS = ["mobilenet_v2", "resnet18", "bert"]
SMOKE = {"models": ["mlp"], "schemes": ["sparse"], "warmup": 1, "steps": 2}
LOSS_RTOL = 1e-4  # first-step loss of every configuration vs O0 (same batch, same weights)


# ---------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------

def configurations(pass_names: list[str], smoke: bool) -> list[dict]:
    """O0, O0 + each pass alone, O2, and (not in smoke runs) O3; each as what et.optimize needs."""
    confs = [{"name": "O0", "slug": "O0", "opt_level": 0, "passes": None, "kernel_selection": None}]
    for p in pass_names:
        confs.append({"name": f"O0 + {p}", "slug": f"O0+{p}", "opt_level": 0, "passes": [p],
                      "kernel_selection": "measure" if p == "select_kernels" else None})
    confs.append({"name": "O2", "slug": "O2", "opt_level": 2, "passes": None, "kernel_selection": "cost"})
    if not smoke:
        confs.append({"name": "O3", "slug": "O3", "opt_level": 3, "passes": None, "kernel_selection": "measure"})
    return confs


CONFIG_NOTES = {"O0": "as autodiff wrote it (dead-code elimination only)",
                "O2": "all -O2 passes, kernels by the cost model",
                "O3": "all passes, kernels measured on this machine"}


def check_losses(rows_configs: list[dict]) -> None:
    """Mark each configuration's first-step loss against O0's (in place: conf["check"])."""
    ref = next((c for c in rows_configs if c["name"] == "O0"), None)
    ref_loss = (ref or {}).get("result", {}).get("loss_first")
    for c in rows_configs:
        res = c.get("result", {})
        if res.get("status") != "ok":
            c["check"] = {"status": "n/a", "reason": "did not run"}
            continue
        loss = res.get("loss_first")
        if ref_loss is None or not math.isfinite(ref_loss):
            c["check"] = {"status": "n/a", "reason": "no O0 loss to compare with"}
        elif loss is None or not math.isfinite(loss):
            c["check"] = {"status": "FAIL", "reason": f"first loss {loss}"}
        else:
            rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
            c["check"] = {"status": "ok" if rel <= LOSS_RTOL else "FAIL", "rel_diff": rel,
                          "loss_first": loss, "o0_loss_first": ref_loss}


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _mib(n):
    return bench._fmt(n / 2**20, 2) if isinstance(n, (int, float)) and n >= 0 else "–"


def _row_note(c: dict) -> str:
    if c.get("status") != "ok":
        return "n/a: " + bench._short(c.get("reason", "?"), 120)
    res = c.get("result", {})
    if res.get("status") != "ok":
        return "run failed: " + bench._short(res.get("reason", "?"), 120)
    if c["name"] in CONFIG_NOTES:
        return CONFIG_NOTES[c["name"]]
    notes = [r.get("note", "") for r in c.get("pass_report") or []]
    return bench._short("; ".join(n for n in notes if n) or "–", 140)


def _check_text(chk: dict) -> str:
    if chk.get("status") == "ok":
        return "ok"
    if chk.get("status") != "FAIL":
        return "–"
    if "rel_diff" in chk:
        return f"**FAIL** (rel. diff {chk['rel_diff']:.1e})"
    return f"**FAIL** ({chk.get('reason')})"


def write_markdown(report: dict, path: str) -> None:
    cfg = report["config"]
    bn = cfg["bn"]
    bn_text = ("BatchNorm in **eval mode** (frozen running statistics; the whole model in eval mode, "
               "edgetune and PyTorch alike): fold_batchnorm only folds inference-mode BN with frozen "
               "statistics, so this is the mode in which it can act."
               if bn == "eval" else
               "BatchNorm in **train mode** (batch statistics): fold_batchnorm has nothing to fold here; "
               "run with --bn eval to see it act.")
    machine = (f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; {cfg['threads']} threads, "
               f"batch {cfg['batch']}, {cfg['optimizer']} (momentum {cfg['momentum']}), median of {cfg['steps']} "
               f"steps after {cfg['warmup']} warm-up; every configuration a fresh process on the C++ runtime; "
               f"OMP_WAIT_POLICY={cfg.get('omp_wait_policy') or 'unset'}.  ")
    guard = ("Every configuration is derived from one -O0 compile with `et.optimize` (same graph, same "
             f"weights, same batch), so each must reproduce O0's first-step loss within {LOSS_RTOL:g} relative "
             "(column *check*). Speed-up and *vs PyTorch* are the other's step time over the row's (> 1: the row "
             "is faster). Planned bytes are the compiler's memory plan: the arena holds activations, gradients "
             "and workspaces; persistent holds parameters, buffers and optimizer state.")
    lines = [f"# edgetune optimisation ablation ({report['started']})", "", machine, bn_text, "", guard, "",
             "## Passes", "", "| pass | level | what it does |", "|---|---|---|"]
    lines += [f"| {name} | -O{lvl} | {desc} |" for name, lvl, desc in report.get("pipeline", [])]
    lines.append("")
    head = ["config", "ops", "planned arena MiB", "planned persistent MiB", "ms/step", "speed-up vs O0",
            "vs PyTorch", "peak RSS MB", "check", "note"]
    for row in report["rows"]:
        torch_res = row.get("pytorch", {})
        res_text = (f"PyTorch eager: {bench._fmt(torch_res.get('step_ms'))} ms/step, "
                    f"{bench._fmt(torch_res.get('peak_rss_mb'), 0)} MB peak RSS"
                    if torch_res.get("status") == "ok" else
                    f"PyTorch eager: n/a: {bench._short(torch_res.get('reason', '?'))}")
        prog = row.get("program", {})
        lines += [f"## {row['model']} / {row['scheme']}", ""]
        if row.get("error"):
            lines += [f"prepare failed: {row['error']}", ""]
            continue
        intro = (f"{prog.get('params_trainable', 0):,} trainable parameters; -O0 compile "
                 f"{bench._fmt(prog.get('compile_s'))} s. {res_text}.")
        lines += [intro, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        o0 = next((c for c in row["configs"] if c["name"] == "O0"), {}).get("result", {})
        for c in row["configs"]:
            res = c.get("result", {})
            ran = res.get("status") == "ok"
            ms = res.get("step_ms") if ran else None
            speed = (f"{o0['step_ms'] / ms:.2f}×" if ms and o0.get("status") == "ok" else "–")
            vs_torch = (f"{torch_res['step_ms'] / ms:.2f}×" if ms and torch_res.get("status") == "ok" else "–")
            check = _check_text(c.get("check", {}))
            lines.append("| " + " | ".join([
                c["name"], str(c.get("ops", "–")), _mib(c.get("arena_bytes")), _mib(c.get("persistent_bytes")),
                bench._fmt(ms), speed, vs_torch, bench._fmt(res.get("peak_rss_mb"), 0) if ran else "–",
                check, _row_note(c)]) + " |")
        details = []
        for c in row["configs"]:
            if c["name"] in ("O2", "O3") and c.get("status") == "ok":
                steps = [f"{r['name']} ({r.get('note') or '–'})" for r in c.get("pass_report") or []]
                details.append(f"- {c['name']}: " + "; ".join(steps))
        if details:
            lines += ["", "Passes run by the levels, in order:", ""] + details
        lines.append("")
    if report.get("plots"):
        lines += ["## Plot", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in report["plots"]]
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_plot(report: dict, path: str) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("configs")]
    if not rows:
        return None
    n_confs = max(len(r["configs"]) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(9, 0.75 * n_confs + 3), 4.2 * len(rows)), squeeze=False)
    width = 0.4
    for ax, row in zip(axes[:, 0], rows):
        confs = row["configs"]
        xs = list(range(len(confs)))
        ms = [c.get("result", {}).get("step_ms") if c.get("result", {}).get("status") == "ok" else 0.0
              for c in confs]
        arena = [c["arena_bytes"] / 2**20 if c.get("status") == "ok" and c.get("arena_bytes", -1) >= 0 else 0.0
                 for c in confs]
        ax.bar([x - width / 2 for x in xs], ms, width, color="tab:blue", label="step time (ms)")
        torch_res = row.get("pytorch", {})
        title = f"{row['model']} / {row['scheme']}"
        if torch_res.get("status") == "ok":
            if torch_res["step_ms"] <= 3 * max(ms + [1e-9]):
                ax.axhline(torch_res["step_ms"], color="tab:blue", ls="--", lw=1, label="PyTorch eager (ms)")
            else:  # a line far above the bars would squash them flat
                title += f" (PyTorch eager: {bench._fmt(torch_res['step_ms'])} ms/step, off scale)"
        ax.set_ylabel("median step time (ms)", color="tab:blue")
        ax2 = ax.twinx()
        ax2.bar([x + width / 2 for x in xs], arena, width, color="tab:orange", label="planned arena (MiB)")
        ax2.set_ylabel("planned arena (MiB)", color="tab:orange")
        for x, c in zip(xs, confs):  # configurations that could not run, or whose loss disagrees
            mark = "×" if c.get("result", {}).get("status") != "ok" else (
                "FAIL" if c.get("check", {}).get("status") == "FAIL" else "")
            if mark:
                ax.text(x, 0, mark, ha="center", va="bottom", color="red", fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels([c["name"].replace("O0 + ", "+") for c in confs], rotation=35, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        handles = ax.get_legend_handles_labels()
        handles2 = ax2.get_legend_handles_labels()
        ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=7, loc="upper right")
    cfg = report["config"]
    fig.suptitle(f"optimisation ablation: batch {cfg['batch']}, {cfg['threads']} threads, BN {cfg['bn']} mode "
                 f"(× = did not run; see ablation.md)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="ablation", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny MLP, 2 steps, O0 / each pass alone / O2 (a CI check)")
    ap.add_argument("--models", type=bench._csv(None), help=f"comma-separated (default: {', '.join(DEFAULT_MODELS)})")
    ap.add_argument("--schemes", type=bench._csv(bench.SCHEMES), help=f"comma-separated (default: {', '.join(SCHEMES)})")
    ap.add_argument("--bn", choices=["eval", "train"], default="eval",
                    help="model mode: eval (default; BN folding only applies to frozen inference-mode BN) or train")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--resolution", type=int, help="image side for the vision models (default 224; for quick checks)")
    ap.add_argument("--seq-len", type=int, help="sequence length for the text models (default 128)")
    ap.add_argument("--threads", type=int, default=2)
    bench.add_run_options(ap, "ablation", "configuration")
    ap.add_argument("--keep-plans", action="store_true", help="keep every configuration's plan.etp after timing it")
    args = ap.parse_args(argv)
    bench.apply_run_defaults(args, SMOKE)
    if args.warmup < 1 and args.steps < 1:
        ap.error("need at least one step (the first-step loss is the correctness guard)")
    args.models = args.models or list(DEFAULT_MODELS)
    args.schemes = args.schemes or list(SCHEMES)
    bench.set_run_folders(args, "ablation")
    return args


def cell_config(args, model: str, scheme: str, confs: list[dict]) -> dict:
    case = json.loads(json.dumps(bench.CASES.get(model, {"model_kwargs": {}})))
    if args.resolution and "resolution" in case:
        case["resolution"] = args.resolution
    if args.seq_len and "seq_len" in case:
        case["seq_len"] = args.seq_len
    return {"model": model, "scheme": scheme, "bn": args.bn, "batch": args.batch, "threads": args.threads,
            "warmup": args.warmup, "steps": args.steps, "optimizer": args.optimizer, "lr": args.lr,
            "momentum": args.momentum, **case, "configs": confs}


def run_pair(args, cell: str, cfg: dict, progress, task, timeout: int) -> dict:
    """Prepare, PyTorch baseline and every configuration of one (model, scheme)."""
    model, scheme = cfg["model"], cfg["scheme"]
    env = bench._env(args.threads)
    row = {"model": model, "scheme": scheme, "configs": []}
    progress.update(task, description=f"{model} / {scheme}: compile -O0 + derive")
    rc, tail = bench._run([sys.executable, os.path.join(RUNNERS, "ablation_prepare.py"), cell], cell, timeout, env)
    progress.advance(task)
    meta_path = os.path.join(cell, "meta.json")
    if rc != 0 or not os.path.exists(meta_path):
        row["error"] = f"compile failed: {tail}" if rc != 124 else f"compile timed out after {timeout} s"
        progress.advance(task, 1 + len(cfg["configs"]))
        return row
    with open(meta_path) as f:
        meta = json.load(f)
    row["program"] = {k: meta[k] for k in ("spec", "train_mode", "params_trainable", "params_frozen",
                                           "flops_per_step", "compile_s") if k in meta}
    progress.update(task, description=f"{model} / {scheme}: PyTorch eager")
    rc, tail = bench._run([sys.executable, os.path.join(RUNNERS, "ablation_prepare.py"), cell, "pytorch"],
                          cell, timeout, env)
    row["pytorch"] = bench._result(cell, "pytorch", rc, tail, timeout)
    row["pytorch"].pop("traceback", None)
    progress.advance(task)
    for conf in meta["configs"]:
        progress.update(task, description=f"{model} / {scheme}: {conf['name']}")
        if conf.get("status") == "ok":
            conf_dir = os.path.join(cell, "configs", conf["slug"])
            rc, tail = bench._run([sys.executable, os.path.join(RUNNERS, "edgetune_runner.py"), conf_dir],
                                  conf_dir, timeout, env)
            res = bench._result(conf_dir, "edgetune", rc, tail, timeout)
            res.pop("traceback", None)
            conf["result"] = res
            if not args.keep_plans:  # a resnet18 plan is ~50 MB; a dozen per cell add up
                try:
                    os.remove(os.path.join(conf_dir, "plan.etp"))
                except OSError:
                    pass
        else:
            conf["result"] = {"status": "error", "reason": conf.get("reason", "not prepared")}
        row["configs"].append(conf)
        progress.advance(task)
    check_losses(row["configs"])
    return row


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    bench.OMP_WAIT_POLICY = None if args.omp_active else "PASSIVE"  # bench._env reads it
    from edgetune.compiler.passes.pipeline import PASS_NAMES, PIPELINE
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    present = bench.available_models()
    unknown = [m for m in args.models if m not in present]
    if unknown:
        console.print(f"[red]unknown model(s) {unknown}; edgetune.models has {present}")
        return 2
    confs = configurations(list(PASS_NAMES), args.smoke)
    bench.make_run_folders(args)
    t_start = time.perf_counter()
    report = {"started": bench.utc_now(),
              "machine": bench.machine_info(args.threads),
              "config": {"models": args.models, "schemes": args.schemes, "bn": args.bn, "batch": args.batch,
                         "resolution": args.resolution, "seq_len": args.seq_len, "threads": args.threads,
                         "warmup": args.warmup, "steps": args.steps, "optimizer": args.optimizer, "lr": args.lr,
                         "momentum": args.momentum, "smoke": args.smoke, "loss_rtol": LOSS_RTOL,
                         "configs": [c["name"] for c in confs],
                         "omp_wait_policy": bench.OMP_WAIT_POLICY or os.environ.get("OMP_WAIT_POLICY")},
              "pipeline": [list(p) for p in PIPELINE],
              "rows": []}
    pairs = [(m, s) for m in args.models for s in args.schemes]
    with Progress(TextColumn("[bold]{task.description:<52}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("ablation", total=len(pairs) * (2 + len(confs)))
        for model, scheme in pairs:
            cell = os.path.join(args.work, f"{model}__{scheme}")
            os.makedirs(cell)
            cfg = cell_config(args, model, scheme, confs)
            with open(os.path.join(cell, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
            report["rows"].append(run_pair(args, cell, cfg, progress, task, args.timeout))
    report["wall_s"] = time.perf_counter() - t_start
    if not args.no_plots:
        try:
            plot = write_plot(report, os.path.join(args.out, "ablation.png"))
            report["plots"] = [plot] if plot else []
        except ImportError as e:
            console.print(f"[yellow]no plot: {e} (pip install matplotlib)")
    with open(os.path.join(args.out, "ablation.json"), "w") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, os.path.join(args.out, "ablation.md"))
    confs_all = [c for row in report["rows"] for c in row["configs"]]
    ran = sum(c.get("result", {}).get("status") == "ok" for c in confs_all)
    failed = [f"{row['model']}/{row['scheme']}/{c['name']}" for row in report["rows"] for c in row["configs"]
              if c.get("check", {}).get("status") == "FAIL"]
    console.print(f"{ran}/{len(confs_all)} configurations ran; {len(failed)} loss check(s) FAILED"
                  f"{': ' + ', '.join(failed) if failed else ''}; {report['wall_s']:.0f} s; "
                  f"results in {args.out}/ablation.md, ablation.json")
    with open(os.path.join(args.out, "ablation.md")) as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
