"""The GPU side of the GPU check: runs what benchmarks/gpu/prepare_cases.py made on the CPU.

    python3 benchmarks/gpu/run_cases.py --train build/gpu-check/csrc/edgetune-train \\
        --cases build/gpu-cases --out OUT [--models-py edgetune/models.py] [--skip-torch]

Needs only numpy (and a CUDA PyTorch for the comparison): it does not import edgetune, so it runs
in whatever Python the GPU machine has.

  correctness  `edgetune-train plan.etp --backend cuda --no-shuffle --steps STEPS` on each case's
               batches; the weights it writes are compared with the numpy reference executor's and
               the cpu backend's (made on the CPU): frozen tensors must be bit-identical to the
               initial ones; trainable ones are scored by the error relative to the update,
               |w_gpu - w_ref| / (|w_ref - w_init| + 1e-6 sqrt(n)) (the cpu backend's own score is
               shown beside it).
  bench        `edgetune-train --backend cuda` time per step (the last of three logged intervals,
               so graph capture and warm-up are left out) and its device memory (the runtime's
               three allocations), against PyTorch CUDA eager on the same model, batch, trainable
               set and optimizer in the same run: ms/step (cuda events) and
               torch.cuda.max_memory_allocated.
Writes OUT/gpu_report.md and OUT/gpu_results.json; exit status 1 when a correctness case fails.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib

import numpy as np

UPDATE_TOLERANCE = 1e-2  # error relative to the update size (trainable tensors, BatchNorm statistics)

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str) -> dict:
    """The tensors of a .safetensors file, with numpy only."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[b:end], dtype=_DTYPES[e["dtype"]]).reshape(e["shape"]).copy()
    return out


def run(cmd, timeout=120, env=None):
    """(CompletedProcess, seconds); a run past `timeout` is a failure (exit 124), not an exception."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        p = subprocess.CompletedProcess(cmd, 124, out, f"timed out after {timeout} s")
    return p, time.perf_counter() - t0


# ---- correctness -----------------------------------------------------------------------------------
def score(got: dict, ref: dict, init: dict, trainable: set, frozen_crc32: dict | None = None) -> dict:
    """got/ref/init: name -> array for the tensors the steps change (and, for frozen ones, init
    here or a CRC-32 of its bytes in frozen_crc32)."""
    worst_update, frozen_bad, buffer_worst = 0.0, [], 0.0
    missing = sorted((set(ref) | set(frozen_crc32 or {})) - set(got))
    for name, r in ref.items():
        if name not in got:
            continue
        g, i = np.asarray(got[name]).astype(np.float64), np.asarray(init[name]).astype(np.float64)
        r = np.asarray(r).astype(np.float64)
        if name in trainable:
            # an absolute floor of 1e-6 RMS: a gradient that is zero in exact arithmetic (an attention
            # key bias) leaves float noise of 1e-13 that no implementation reproduces
            step = np.linalg.norm(r - i) + 1e-6 * np.sqrt(r.size)
            err = np.linalg.norm(g - r) / step
            worst_update = max(worst_update, float(err))
        elif not np.array_equal(r, i):  # a buffer the step updates (BatchNorm statistics): same measure
            buffer_worst = max(buffer_worst, float(np.linalg.norm(g - r) / (np.linalg.norm(r - i) + 1e-6 * np.sqrt(r.size))))
        elif not np.array_equal(got[name], init[name]):
            frozen_bad.append(name)
    for name, crc in (frozen_crc32 or {}).items():
        if name in got and zlib.crc32(np.ascontiguousarray(got[name]).tobytes()) != crc:
            frozen_bad.append(name)
    return {"update_error": worst_update, "buffer_rel_error": buffer_worst, "frozen_changed": frozen_bad,
            "missing": missing}


BACKEND = "cuda"  # --backend cpu: a smoke test of this script on a machine without a GPU


def correctness(train: str, case_dir: str, steps: int) -> dict:
    with open(os.path.join(case_dir, "meta.json")) as f:
        meta = json.load(f)
    out = os.path.join(case_dir, "gpu.safetensors")
    p, secs = run([train, os.path.join(case_dir, "plan.etp"), "--backend", BACKEND, "--inputs",
                   os.path.join(case_dir, "x.npy"), "--targets", os.path.join(case_dir, "y.npy"),
                   "--steps", str(steps), "--no-shuffle", "--log-every", "1", "--out", out])
    result = {"spec": meta["spec"], "optimizer": meta["optimizer"], "seconds": secs, "exit": p.returncode}
    if p.returncode != 0:
        result.update(ok=False, error=(p.stderr or p.stdout).strip()[-2000:])
        return result
    got = read_safetensors(out)
    expected = read_safetensors(os.path.join(case_dir, "expected.safetensors"))
    ref = {k[len("reference/"):]: v for k, v in expected.items() if k.startswith("reference/")}
    init = {k[len("init/"):]: v for k, v in expected.items() if k.startswith("init/")}
    trainable = {meta["aliases"].get(n, n) for n in meta["trainable_names"]} | set(meta["trainable_names"])
    gpu_score = score(got, ref, init, trainable, meta["frozen_crc32"])
    cpu_score = meta["cpu_score"]
    losses = [float(m.group(1)) for m in re.finditer(r"^step \d+/\d+ .* loss (\S+)", p.stdout, re.M)]
    # within the tolerance, or within 10x of what the cpu backend itself is off by (float32 reorderings)
    ref_losses, cpu_losses = meta["losses"]["reference"], meta["losses"]["cpu"]
    loss_ok = len(losses) == len(ref_losses) and all(
        abs(g - r) <= 1e-3 * abs(r) + 10 * abs(c - r) for g, r, c in zip(losses, ref_losses, cpu_losses))
    ok = (gpu_score["update_error"] <= max(UPDATE_TOLERANCE, 10 * cpu_score["update_error"])
          and gpu_score["buffer_rel_error"] <= max(UPDATE_TOLERANCE, 10 * cpu_score["buffer_rel_error"])
          and not gpu_score["frozen_changed"] and not gpu_score["missing"] and loss_ok)
    result.update(ok=bool(ok), gpu=gpu_score, cpu=cpu_score, losses_gpu=losses,
                  losses_reference=meta["losses"]["reference"])
    return result


# ---- benchmark ---------------------------------------------------------------------------------------
def make_batch(case_dir: str) -> None:
    """x.npy / y.npy as meta.json describes them (the values do not change the time per step)."""
    with open(os.path.join(case_dir, "meta.json")) as f:
        meta = json.load(f)
    rng = np.random.default_rng(0)
    for key in ("x", "y"):
        spec = meta[key]
        path = os.path.join(case_dir, f"{key}.npy")
        if os.path.exists(path):
            continue
        if spec["high"]:
            arr = rng.integers(0, spec["high"], size=spec["shape"]).astype(spec["dtype"])
        else:
            arr = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
        np.save(path, arr)


def edgetune_bench(train: str, case_dir: str, steps: int) -> dict:
    make_batch(case_dir)
    plan = os.path.join(case_dir, "plan.etp")
    if not os.path.exists(plan):
        with gzip.open(plan + ".gz", "rb") as src, open(plan, "wb") as dst:
            shutil.copyfileobj(src, dst)
    log_every = steps // 3
    p, secs = run([train, plan, "--backend", BACKEND, "--inputs", os.path.join(case_dir, "x.npy"), "--targets",
                   os.path.join(case_dir, "y.npy"), "--steps", str(steps), "--log-every", str(log_every)])
    if p.returncode != 0:
        return {"ok": False, "error": (p.stderr or p.stdout).strip()[-1500:]}
    intervals = [float(m.group(1)) for m in re.finditer(r"ms/step (\S+)$", p.stdout, re.M)]
    mem = re.search(r"^memory: runtime ([\d.]+) (\w+)", p.stdout, re.M)
    unit = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    return {"ok": True, "ms_per_step": intervals[-1] if intervals else None, "intervals_ms": intervals,
            "device_bytes": float(mem.group(1)) * unit[mem.group(2)] if mem else None, "wall_s": secs}


def torch_bench(models_py: str, case_dir: str, steps: int) -> dict:
    import torch
    spec = importlib.util.spec_from_file_location("_gpu_check_models", models_py)
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    with open(os.path.join(case_dir, "meta.json")) as f:
        meta = json.load(f)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = models.build(meta["model"], **meta["model_kwargs"]).train().to(dev)
    x = torch.from_numpy(np.load(os.path.join(case_dir, "x.npy"))).to(dev)
    y = torch.from_numpy(np.load(os.path.join(case_dir, "y.npy"))).to(dev)
    trainable = set(meta["trainable_names"])
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(meta["aliases"].get(name, name) in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=meta["lr"], momentum=meta["momentum"])

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    return {"ok": True, "ms_per_step": start.elapsed_time(end) / steps,
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(), "torch": torch.__version__}


# ---- report ------------------------------------------------------------------------------------------
def mib(b):
    return "—" if b is None else f"{b / 2**20:.1f}"


def report(results: dict, out_dir: str) -> str:
    lines = [f"# edgetune GPU check — {results['gpu']}", ""]
    lines += ["## Correctness (cuda backend vs the numpy reference executor, made on the CPU)", "",
              "| case | spec | optimizer | ok | update error gpu | cpu | buffers | frozen changed | losses gpu / ref |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["correctness"].items():
        if not r.get("gpu"):
            lines.append(f"| {name} | {r.get('spec', '')} | {r.get('optimizer', '')} | **FAIL** (exit {r.get('exit')}) "
                         f"| | | | | {r.get('error', '')[:200].replace('|', '/')} |")
            continue
        g, c = r["gpu"], r["cpu"]
        lg = ", ".join(f"{v:.4f}" for v in r["losses_gpu"])
        lr = ", ".join(f"{v:.4f}" for v in r["losses_reference"])
        lines.append(f"| {name} | {r['spec']} | {r['optimizer']} | {'ok' if r['ok'] else '**FAIL**'} | "
                     f"{g['update_error']:.2e} | {c['update_error']:.2e} | {g['buffer_rel_error']:.1e} | "
                     f"{len(g['frozen_changed'])} | {lg} / {lr} |")
    lines += ["", "## Time per step and device memory vs PyTorch CUDA eager (same GPU, same run)", "",
              "| model | scheme | edgetune ms/step | PyTorch ms/step | speed-up | edgetune MiB | PyTorch peak MiB | memory ratio |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in results["bench"].items():
        e, t = r["edgetune"], r.get("torch") or {}
        if not e.get("ok"):
            lines.append(f"| {r['model']} | {r['scheme']} | FAIL: {e.get('error', '')[:150].replace('|', '/')} | | | | | |")
            continue
        speed = (t["ms_per_step"] / e["ms_per_step"]) if t.get("ok") and e["ms_per_step"] else None
        ratio = (e["device_bytes"] / t["peak_allocated_bytes"]) if t.get("ok") and e["device_bytes"] else None
        lines.append(f"| {r['model']} | {r['scheme']} | {e['ms_per_step']:.2f} | "
                     f"{t.get('ms_per_step', float('nan')):.2f} | {'—' if speed is None else f'{speed:.2f}x'} | "
                     f"{mib(e['device_bytes'])} | {mib(t.get('peak_allocated_bytes'))} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}'} |")
    lines += ["", "edgetune memory: the runtime's three device allocations (persistent, arena, inputs); PyTorch: "
              "torch.cuda.max_memory_allocated over the timed steps. Neither counts the CUDA context.", ""]
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "gpu_report.md"), "w") as f:
        f.write(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="edgetune-train built with the CUDA backend")
    ap.add_argument("--cases", required=True, help="what prepare_cases.py wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--models-py", default=os.path.join(os.path.dirname(__file__), "..", "..", "edgetune", "models.py"))
    ap.add_argument("--bench-steps", type=int, default=60)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--backend", default="cuda", choices=["cuda", "cpu"], help="cpu: smoke-test this script here")
    args = ap.parse_args(argv)
    global BACKEND
    BACKEND = args.backend
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.cases, "cases.json")) as f:
        cases = json.load(f)
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip() or "unknown GPU"
    except OSError:
        gpu = "no nvidia-smi"
    if BACKEND == "cpu":
        gpu = f"cpu backend (a smoke test of this script; {gpu})"
    results = {"gpu": gpu, "correctness": {}, "bench": {}}
    for c in cases["cases"]:
        d = os.path.join(args.cases, c["dir"])
        t0 = time.perf_counter()
        if c["kind"] == "correctness":
            r = results["correctness"][c["name"]] = correctness(args.train, d, cases["steps"])
            print(f"correctness {c['name']}: {'ok' if r['ok'] else 'FAIL'} ({time.perf_counter() - t0:.1f}s)", flush=True)
        else:
            with open(os.path.join(d, "meta.json")) as f:
                meta = json.load(f)
            r = results["bench"][c["name"]] = {"model": meta["model"], "scheme": meta["scheme"],
                                               "edgetune": edgetune_bench(args.train, d, args.bench_steps)}
            if not args.skip_torch:
                try:
                    r["torch"] = torch_bench(args.models_py, d, args.bench_steps)
                except Exception as e:  # noqa: BLE001 - reported, the rest goes on
                    r["torch"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(f"bench {c['name']}: edgetune {r['edgetune'].get('ms_per_step')} ms, "
                  f"torch {r.get('torch', {}).get('ms_per_step')} ms ({time.perf_counter() - t0:.1f}s)", flush=True)
        with open(os.path.join(args.out, "gpu_results.json"), "w") as f:
            json.dump(results, f, indent=1)
    print(report(results, args.out))
    return 0 if all(r["ok"] for r in results["correctness"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
