"""Kernel selection (backend switching): choose, per node, which of the backend's implementations
of its op runs it, and record the choice in the node (`node.kernel`, written into the plan; the
runtime just runs it).

An op's implementations are the kernels registered under its name and "op.variant" names
(conv2d, conv2d.im2col, conv2d.pointwise, conv2d.depthwise, conv2d.winograd, ...). A candidate
must accept the node: its own `check` (asked through the native module, exactly as at plan load)
says whether it can run these shapes and attrs. Among the accepted ones:

  measure  (-O3, compiling for this machine) time each candidate on the node's shapes with the
           native module (`time_kernel`: median of a few runs after a warm-up, the thread count
           the plan will use) and take the fastest. Timings are cached on disk by machine, kernel,
           shapes, attrs and threads ($EDGETUNE_CACHE_DIR or ~/.cache/edgetune/kernel_times.json),
           so recompiling is free.
  cost     (-O2, or cross-compiling for another target) a roofline-style model: multiply-adds at a
           per-kernel efficiency of the target's GEMM rate plus the bytes each kernel moves at the
           target's bandwidth. The rates below were measured on the development machine (x86-64
           AVX-512, own GEMM) and scaled for aarch64 (NEON) from its GEMM peak; they rank
           candidates, they do not predict absolute time.

Memory comes first: when a faster kernel's larger workspace (Winograd's transformed tiles) would
raise the planned arena peak, the choice reverts to the incoming kernel, biggest extra workspace
first, until the peak is back where it was. Kernels whose op has one implementation keep the
default (`node.kernel` None).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node


@dataclass(frozen=True)
class TargetRates:
    gemm_gflops: float  # sustained own-GEMM rate on large products, all threads
    direct_gflops: float  # direct (depthwise) loops
    bandwidth_gbs: float  # streaming memory bandwidth


TARGETS = {
    "x86_64": TargetRates(gemm_gflops=300.0, direct_gflops=25.0, bandwidth_gbs=12.0),
    "aarch64": TargetRates(gemm_gflops=40.0, direct_gflops=6.0, bandwidth_gbs=4.0),
}

# Fraction of the GEMM rate each GEMM-based variant reaches, and the multiply count it saves.
WINOGRAD_MULTIPLY_SAVING = 4.0  # F(4x4, 3x3): 36 products per 16 outputs instead of 144
WINOGRAD_EFFICIENCY = 0.5  # its GEMMs are batched 36 ways with K = channels: smaller, less efficient
IM2COL_EFFICIENCY = 0.8
POINTWISE_EFFICIENCY = 0.85


def host_target() -> str:
    m = platform.machine().lower()
    return "aarch64" if m in ("aarch64", "arm64") else "x86_64"


# ---- candidates -------------------------------------------------------------------------------
def _specs(node: Node):
    ins = [(v.dtype, list(v.shape)) for v in node.inputs]
    outs = [(v.dtype, list(v.shape)) for v in node.outputs]
    return ins, outs


def candidates(node: Node, backend: str, kernel_names: list[str]) -> list[str]:
    from ...runtime.native import native
    mod = native()
    names = [k for k in kernel_names if k == node.op or k.startswith(node.op + ".")]
    if len(names) <= 1:
        return names
    ins, outs = _specs(node)
    ok = []
    for k in names:
        try:
            mod.workspace_bytes(backend, k, ins, outs, node.attrs)
        except mod.NativeError:
            continue
        ok.append(k)
    return ok


# ---- cost model -------------------------------------------------------------------------------
def _conv_geometry(node: Node):
    """(N, C, O, KH, KW, HO, WO, groups) of any conv op, from its forward shapes."""
    a = node.attrs
    if node.op == "conv2d":
        x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    elif node.op == "conv2d_grad_input":
        y, w, x = node.inputs[0].shape, node.inputs[1].shape, tuple(a["input_shape"])
    else:  # conv2d_grad_weight(dy, x)
        y, x, w = node.inputs[0].shape, node.inputs[1].shape, tuple(a["weight_shape"])
    return x[0], x[1], w[0], w[2], w[3], y[2], y[3], int(a.get("groups", 1))


def estimated_seconds(node: Node, kernel: str, rates: TargetRates) -> float:
    variant = kernel.split(".", 1)[1] if "." in kernel else None
    if not node.op.startswith("conv2d"):
        return 0.0  # one implementation per op outside convolution today
    n, c, o, kh, kw, ho, wo, groups = _conv_geometry(node)
    macs = n * o * ho * wo * (c // groups) * kh * kw
    out_bytes = 4 * n * o * ho * wo
    in_bytes = 4 * n * c * ho * wo
    depthwise = groups == c and c > 1
    pointwise = kh == kw == 1
    if variant is None:  # the shape-dispatching default behaves like the variant it picks
        variant = "depthwise" if depthwise else "pointwise" if pointwise and \
            node.attrs.get("stride", 1) in (1, [1, 1]) and node.attrs.get("padding", 0) in (0, [0, 0]) else "im2col"
    gemm = rates.gemm_gflops * 1e9
    bw = rates.bandwidth_gbs * 1e9
    if variant == "depthwise":
        return 2 * macs / (rates.direct_gflops * 1e9) + (in_bytes + out_bytes) / bw
    if variant == "pointwise":
        return 2 * macs / (gemm * POINTWISE_EFFICIENCY) + (in_bytes + out_bytes) / bw
    if variant == "im2col":
        col_bytes = 4 * n * (c // groups) * kh * kw * ho * wo * groups
        eff = IM2COL_EFFICIENCY if not depthwise else 0.05  # a K=9 GEMM is all packing
        return 2 * macs / (gemm * eff) + (2 * col_bytes + in_bytes + out_bytes) / bw
    if variant == "winograd":
        # V and M hold 36 values per 16 outputs (4x4 tiles of 6x6 inputs); the transformed weights
        # U (36 per 3x3 filter) are rebuilt every run since weights may train
        transform_bytes = 4 * 36 / 16 * (n * c * ho * wo + n * o * ho * wo)
        weight_bytes = 4 * 36 * o * c
        return 2 * macs / WINOGRAD_MULTIPLY_SAVING / (gemm * WINOGRAD_EFFICIENCY) + \
            (2 * transform_bytes + 2 * weight_bytes + in_bytes + out_bytes) / bw
    return float("inf")  # a variant the model does not know is never chosen by it


# ---- measurement cache ------------------------------------------------------------------------
def _cache_path() -> str:
    root = os.environ.get("EDGETUNE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "edgetune")
    return os.path.join(root, "kernel_times.json")


def _machine_key(mod) -> str:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    native_id = hashlib.sha1(open(mod.__file__, "rb").read()).hexdigest()[:12]
    return f"{platform.machine()}|{model}|{native_id}"


def _load_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def measure(node: Node, kernels: list[str], backend: str, threads: int, cache: dict, machine: str) -> dict[str, float]:
    from ...runtime.native import native
    mod = native()
    ins, outs = _specs(node)
    out = {}
    for k in kernels:
        key = json.dumps([machine, backend, k, ins, outs, sorted((a, _plain(v)) for a, v in node.attrs.items()),
                          threads])
        if key not in cache:
            cache[key] = mod.time_kernel(backend, k, ins, outs, node.attrs, threads, 5)
        out[k] = cache[key]
    return out


def _plain(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    return v


def run(g: Graph, ctx) -> str:
    from ...runtime.native import native
    mod = native()
    backend = ctx.backend
    names = list(mod.kernel_names(backend))
    mode = ctx.kernel_selection
    target = getattr(ctx, "target", None) or host_target()
    if target != host_target():
        mode = "cost"  # cannot time another machine's kernels here
    rates = TARGETS[target]
    threads = getattr(ctx, "threads", 0) or (os.cpu_count() or 1)
    cache_path = _cache_path()
    cache = _load_cache(cache_path) if mode == "measure" else {}
    cached_before = len(cache)
    machine = _machine_key(mod) if mode == "measure" else ""
    from ..analysis.memory_plan import plan_memory
    arena_before = plan_memory(g, ctx.workspace_bytes).arena_bytes if ctx.workspace_bytes else None
    extra_workspace: list[tuple[int, Node, str | None]] = []  # (bytes over the incoming kernel's, node, old)
    for node in g.nodes:
        cands = candidates(node, backend, names)
        if len(cands) <= 1:
            continue
        if mode == "measure":
            times = measure(node, cands, backend, threads, cache, machine)
        else:
            times = {k: estimated_seconds(node, k, rates) for k in cands}
        best = min(cands, key=lambda k: (times[k], k == node.op, k))  # ties: name the variant
        ins, outs = _specs(node)
        extra = mod.workspace_bytes(backend, best, ins, outs, node.attrs) - \
            mod.workspace_bytes(backend, node.kernel or node.op, ins, outs, node.attrs)
        if extra > 0:
            extra_workspace.append((extra, node, node.kernel))
        node.kernel = best
    # Memory first: a faster kernel whose workspace raises the planned peak (Winograd's transformed
    # tiles) goes back to the incoming choice, biggest extra first, until the peak is what it was.
    reverted = 0
    if arena_before is not None and extra_workspace:
        extra_workspace.sort(key=lambda t: -t[0])
        while plan_memory(g, ctx.workspace_bytes).arena_bytes > arena_before and reverted < len(extra_workspace):
            _, node, old = extra_workspace[reverted]
            node.kernel = old
            reverted += 1
    chosen: dict[str, int] = {}
    for node in g.nodes:
        if node.kernel:
            chosen[node.kernel] = chosen.get(node.kernel, 0) + 1
    if mode == "measure" and len(cache) != cached_before:
        _save_cache(cache_path, cache)
    if not chosen:
        return "no op with several kernels"
    how = "measured" if mode == "measure" else f"cost model ({target})"
    kept = f"; {reverted} faster choices dropped to keep the planned peak" if reverted else ""
    return f"{how}: " + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items())) + kept


def _save_cache(path: str, cache: dict) -> None:
    from ..plan_file import write_bytes_atomic
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes_atomic(path, json.dumps(cache, indent=0).encode())
