"""Memory-aware scheduling: among the valid orders of the backward/update region, pick one with a
lower planned arena peak.

Greedy list scheduling (the classic register-pressure heuristic): at each step, among the nodes
whose dependences are met (analysis/schedule.py: data + old-state readers before in-place updates), run
the one that frees the most arena bytes net of what it allocates — an update (frees its
gradient, allocates nothing: it writes the parameter in place) first, then consumers that are
the last reader of a big activation, and producers of big temporaries last. Ties keep the
incoming order. The memory planner then runs on both orders and the new one is kept only if its
planned peak is lower — the pass can never make a plan worse.

Assumes: forward and loss nodes form a prefix (left alone; the runtime's forward() runs them).
Changes only the node order.
"""

from __future__ import annotations

from ..ir import Graph
from ..analysis.memory_plan import plan_memory
from ..analysis.schedule import list_schedule, region_predecessors, split_region


def _arena_bytes(v, state_outputs) -> int:
    return 0 if id(v) in state_outputs else v.type.nbytes


def greedy_order(g: Graph, region, preds):
    pos = {id(n): i for i, n in enumerate(region)}
    pinned = {id(v) for v in g.outputs.values()} | {id(v) for v in g.assigns.values()}
    state_outputs = {id(v) for v in g.assigns.values()}  # written in place or copied: not freed early
    remaining_readers: dict[int, int] = {}
    values = {}
    for n in region:
        for v in set(map(id, n.inputs)):
            remaining_readers[v] = remaining_readers.get(v, 0) + 1
        for v in n.inputs:
            values[id(v)] = v
    # values produced before the region (kept forward activations) count as freeable too
    prefix_made = {id(v) for n in g.nodes if id(n) not in pos for v in n.outputs}

    def gain(i, done):
        n = region[i]
        freed = 0
        for vid in set(map(id, n.inputs)):
            v = values[vid]
            produced_here = v.producer is not None and (id(v.producer) in pos or vid in prefix_made)
            if produced_here and vid not in pinned and remaining_readers[vid] == 1:
                freed += v.type.nbytes
        alloc = sum(_arena_bytes(o, state_outputs) for o in n.outputs)
        return freed - alloc

    def pick(ready, done):
        best = max(ready, key=lambda i: (gain(i, done), -i))
        for vid in set(map(id, region[best].inputs)):
            remaining_readers[vid] -= 1
        return best

    return list_schedule(region, preds, pick=pick)


def run(g: Graph, ctx) -> str:
    prefix, region = split_region(g)
    if not region or ctx is None or ctx.workspace_bytes is None:
        return "nothing to schedule"
    before = plan_memory(g, ctx.workspace_bytes).arena_bytes
    original = list(g.nodes)
    g.nodes = prefix + greedy_order(g, region, region_predecessors(g, region))
    after = plan_memory(g, ctx.workspace_bytes).arena_bytes
    if after >= before:
        g.nodes = original
        return f"kept the incoming order (greedy order planned {after / 2**20:.1f} MiB >= {before / 2**20:.1f} MiB)"
    return f"arena {before / 2**20:.1f} -> {after / 2**20:.1f} MiB"
