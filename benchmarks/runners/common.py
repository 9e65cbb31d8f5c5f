"""Helpers shared by every runner. Standard library + numpy only: the runners run in the main
environment *and* in the peers' own virtual environments (ONNX Runtime, TVM), which have neither
torch nor edgetune.

A runner is started as `python benchmarks/runners/<name>.py CELL_DIR` in a fresh process. CELL_DIR
holds what `prepare.py` wrote (x.npy, y.npy, meta.json, plan.etp, model.onnx); the runner writes
`<runtime>.json` there: {"status": "ok", "step_ms": median, ...} or {"status": "error", "reason": ...}.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import sys
import time
import traceback


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM), in MiB; ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> float | None:
    """The peak resident set so far (MiB), then restart the count from the current RSS (Linux:
    /proc/self/clear_refs "5" resets VmHWM), so that a later `peak_rss_mb()` is the peak of what
    ran in between. None (nothing reset) where that is not possible."""
    before = peak_rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return before


def load_meta(cell: str) -> dict:
    with open(os.path.join(cell, "meta.json")) as f:
        return json.load(f)


def time_steps(step, warmup: int, steps: int, budget_s: float = 120.0) -> tuple[list[float], list[float]]:
    """Run `step()` (returns the loss) warmup + steps times; ms of the timed steps and all losses.
    A runtime whose warm-up step is slow (untuned TVM: tens of seconds) gets fewer timed steps,
    so that they fit in about `budget_s` (at least 2)."""
    losses = []
    slowest = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        losses.append(float(step()))
        slowest = max(slowest, time.perf_counter() - t0)
        if slowest > 10.0:  # one warm-up is enough when a step takes this long
            break
    if warmup and slowest * steps > budget_s:
        steps = max(2, min(steps, int(budget_s // max(slowest, 1e-9))))
    ms = []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(float(step()))
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms, losses


def write_result(cell: str, runtime: str, result: dict) -> None:
    path = os.path.join(cell, f"{runtime}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)


def ok_result(ms: list[float], losses: list[float], peak_before_steps_mb: float | None = None, **extra) -> dict:
    """A cell's result. peak_rss_mb: the process's peak RSS over its whole life; with
    `peak_before_steps_mb` (what `reset_peak_rss()` returned before the first step) also
    peak_rss_steps_mb, the peak while the steps ran (the model's load and build excluded)."""
    now = peak_rss_mb()
    out = {"status": "ok", "step_ms": statistics.median(ms), "steps_ms": ms,
           "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
           "peak_rss_mb": now if peak_before_steps_mb is None else max(now, peak_before_steps_mb)}
    if peak_before_steps_mb is not None:
        out["peak_rss_steps_mb"] = now
    return {**out, **extra}


def run_main(runtime: str, body) -> int:
    """Call body(cell, meta) -> result dict; any exception becomes an error result with its reason."""
    cell = sys.argv[1]
    try:
        meta = load_meta(cell)
        result = body(cell, meta)
    except BaseException as e:  # noqa: BLE001 - the reason goes into the table
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        reason = " ".join(f"{type(e).__name__}: {e}".strip().splitlines()[:3])
        m = re.search(r"Attribute (\w+) has not been registered for ([\w.]+)", reason)
        if m:  # TVM's registry check, said plainly
            reason = f"{m.group(2)} has no {m.group(1)} (no gradient rule in Relax)"
        result = {"status": "error", "reason": reason[:400], "traceback": tb[-4000:],
                  "peak_rss_mb": peak_rss_mb()}
    write_result(cell, runtime, result)
    return 0 if result.get("status") == "ok" else 1


def onnx_names(names: list[str], meta: dict, initializers) -> tuple[list[str], list[str]]:
    """edgetune parameter names -> ONNX initializer names (a tied weight may be exported under one
    of its aliases); returns (found, missing)."""
    inits = set(initializers)
    found, missing = [], []
    for n in names:
        cands = [n] + [a for a, t in meta.get("aliases", {}).items() if t == n]
        hit = next((c for c in cands if c in inits), None)
        (found if hit else missing).append(hit or n)
    return found, missing
