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

Memory comes first: when faster kernels' larger workspaces (Winograd's transformed tiles) would
raise the planned arena peak, those nodes revert to their incoming kernel and are then offered
their faster kernels again one at a time, biggest saving first; each keeps the fastest one that
leaves the peak where it was (see run). Ops with one implementation keep the default
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
    # nodes whose fastest kernel needs more workspace than the incoming one: (saving, node, incoming,
    # faster kernels fastest first)
    raised: list[tuple[float, Node, str | None, list[str]]] = []
    for node in g.nodes:
        cands = target.kernels_for(node)
        if len(cands) <= 1:
            continue
        if mode == "measure":
            times = measure(node, cands, target, threads, cache)
        else:
            times = {k: target.estimated_seconds(k, node) for k in cands}
        ranked = sorted(cands, key=lambda k: (times[k], k == node.op, k))  # ties: name the variant
        best, old = ranked[0], node.kernel
        old_name = old or node.op
        old_ws = target.workspace_bytes(old_name, node)
        if target.workspace_bytes(best, node) > old_ws:
            old_time = times.get(old_name, times[node.op])
            faster = [k for k in ranked if times[k] < old_time or k == best]
            raised.append((old_time - times[best], node, old, faster))
        # by cost model, the op's default kernel winning over an unpinned node leaves it unpinned:
        # the plan runs the same kernel, and the program reads the same whether or not the build
        # offers variants (matmul.own / linear.own exist only with a GEMM library)
        node.kernel = None if mode == "cost" and best == node.op and node.kernel is None else best
    # Memory first: where the faster kernels' workspaces (Winograd's transformed tiles, batched
    # columns) raise the planned peak, every such node goes back to its incoming kernel, then each
    # is offered its faster kernels again, biggest saving first and fastest kernel first, and keeps
    # the first whose workspace leaves the peak where it was. A workspace only raises the peak if
    # it is live at the peak, so most nodes keep their fastest kernel (the old rule, dropping the
    # biggest workspaces until the peak came back, dropped 19 of ResNet-18's convolutions for 2).
    reverted = 0
    if raised and plan_memory(g, workspace).arena_bytes > arena_before:
        for _, node, old, _ in raised:
            node.kernel = old
        raised.sort(key=lambda t: -t[0])
        for _, node, old, faster in raised:
            old_ws = target.workspace_bytes(old or node.op, node)
            for k in faster:
                node.kernel = k
                if target.workspace_bytes(k, node) <= old_ws or plan_memory(g, workspace).arena_bytes <= arena_before:
                    break
                node.kernel = old
            if node.kernel != faster[0]:
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
    kept = f"; {reverted} nodes kept a slower kernel to keep the planned peak" if reverted else ""
    return f"{how}: " + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items())) + kept
