"""Kernel selection (backend switching): choose, per node, which of the target's implementations
of its op runs it, and record the choice in the node (`node.kernel`, written into the plan; the
runtime just runs it).

An op's implementations are the kernels the target (compiler/target.py) offers under its name and
"op.variant" names (conv2d, conv2d.im2col, conv2d.pointwise, conv2d.depthwise, conv2d.winograd,
...). A candidate must accept the node: the target's own check (for cpu the C++ kernel's `check`,
exactly as at plan load) says whether it can run these shapes and attrs. Among the accepted ones:

  measure  (-O3, compiling for this machine) the target times each candidate on the node's shapes
           (median of a few runs after a warm-up, the thread count the plan will use) and the
           fastest wins. Timings are cached on disk by the target's cache key (machine + kernel
           build), kernel, shapes, attrs and threads ($EDGETUNE_CACHE_DIR or
           ~/.cache/edgetune/kernel_times.json), so recompiling is free.
  cost     (-O2, a target that cannot measure, or cross-compiling for another architecture) the
           target's cost model (compiler/analysis/cost_model.py for the CPU).

Memory comes first: when a faster kernel's larger workspace (Winograd's transformed tiles) would
raise the planned arena peak, the choice reverts to the incoming kernel, biggest extra workspace
first, until the peak is back where it was. Ops with one implementation keep the default
(`node.kernel` None). A target with no variants (the built-in one) changes nothing.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..analysis.memory_plan import plan_memory
from ..ir import Graph, Node


def _specs(node: Node):
    ins = [(v.dtype, list(v.shape)) for v in node.inputs]
    outs = [(v.dtype, list(v.shape)) for v in node.outputs]
    return ins, outs


# ---- measurement cache ------------------------------------------------------------------------
def _cache_path() -> str:
    root = os.environ.get("EDGETUNE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "edgetune")
    return os.path.join(root, "kernel_times.json")


def _load_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: str, cache: dict) -> None:
    from ..files import write_bytes_atomic
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes_atomic(path, json.dumps(cache, indent=0).encode())


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def measure(node: Node, kernels: list[str], target, threads: int, cache: dict) -> dict[str, float]:
    ins, outs = _specs(node)
    out = {}
    for k in kernels:
        key = json.dumps([target.cache_key(), k, ins, outs, sorted((a, _plain(v)) for a, v in node.attrs.items()),
                          threads])
        if key not in cache:
            cache[key] = target.measured_seconds(k, node, threads)
        out[k] = cache[key]
    return out


def run(g: Graph, ctx) -> str:
    target = ctx.target
    mode = ctx.kernel_selection if target.can_measure else "cost"
    threads = ctx.threads or (os.cpu_count() or 1)
    cache_path = _cache_path()
    cache = _load_cache(cache_path) if mode == "measure" else {}
    cached_before = len(cache)
    workspace = ctx.workspace_bytes
    arena_before = plan_memory(g, workspace).arena_bytes
    extra_workspace: list[tuple[int, Node, str | None]] = []  # (bytes over the incoming kernel's, node, old)
    for node in g.nodes:
        cands = target.kernels_for(node)
        if len(cands) <= 1:
            continue
        if mode == "measure":
            times = measure(node, cands, target, threads, cache)
        else:
            times = {k: target.estimated_seconds(k, node) for k in cands}
        best = min(cands, key=lambda k: (times[k], k == node.op, k))  # ties: name the variant
        extra = target.workspace_bytes(best, node) - target.workspace_bytes(node.kernel or node.op, node)
        if extra > 0:
            extra_workspace.append((extra, node, node.kernel))
        # by cost model, the op's default kernel winning over an unpinned node leaves it unpinned:
        # the plan runs the same kernel, and the program reads the same whether or not the build
        # offers variants (matmul.own / linear.own exist only with a GEMM library)
        node.kernel = None if mode == "cost" and best == node.op and node.kernel is None else best
    # Memory first: a faster kernel whose workspace raises the planned peak (Winograd's transformed
    # tiles) goes back to the incoming choice, biggest extra first, until the peak is what it was.
    reverted = 0
    if extra_workspace:
        extra_workspace.sort(key=lambda t: -t[0])
        while plan_memory(g, workspace).arena_bytes > arena_before and reverted < len(extra_workspace):
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
        why = f" ({target.why})" if getattr(target, "why", "") else ""
        return f"no op with several kernels on {target.name}{why}"
    how = "measured" if mode == "measure" else f"cost model ({target.arch})"
    kept = f"; {reverted} faster choices dropped to keep the planned peak" if reverted else ""
    return f"{how}: " + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items())) + kept
