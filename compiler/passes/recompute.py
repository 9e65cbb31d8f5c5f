"""Recomputation: a cheap forward value that backward reads is computed again in backward instead
of being kept across the forward/backward gap, when that lowers the planned arena peak.

Candidate: a forward value v read by a backward node, made by a cheap element-wise op (or an
inference BatchNorm, or a fused element-wise node) whose inputs are graph sources or values that
stay alive until v's first backward reader anyway (kept for backward themselves). The producer is
cloned right before v's first backward reader and backward reads the clone; v then dies with its
last forward reader. Each candidate is tried on its own and kept only if the memory planner's peak
drops — recomputation costs time, so it is never applied for nothing.

Assumes: runs after fusion/compression (it sees their ops) and before scheduling; the memory
plan of the current order is the judge (needs ctx.workspace_bytes).
"""

from __future__ import annotations

from ..ir import Graph, NameGen, Node, Value
from ..ops.registry import infer_types
from ..analysis.memory_plan import plan_memory

CHEAP_OPS = frozenset({
    "add", "sub", "mul", "div", "neg", "relu", "hardtanh", "hardsigmoid", "hardswish", "sigmoid", "tanh",
    "silu", "gelu", "exp", "sqrt", "rsqrt", "pow_scalar", "batch_norm_infer", "fused_elementwise", "reshape",
})


def _candidates(g: Graph):
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    users = g.users()
    last_use = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            last_use[id(v)] = i
    out = []
    for n in g.nodes:
        if n.section != "forward" or n.op not in CHEAP_OPS or len(n.outputs) != 1:
            continue
        v = n.outputs[0]
        back = [u for u in users.get(id(v), []) if u.section != "forward"]
        if not back:
            continue
        first_back = min(back, key=lambda u: pos[id(u)])
        inputs_alive = all(x.producer is None or last_use.get(id(x), -1) >= pos[id(first_back)] for x in n.inputs)
        if inputs_alive:
            out.append((n, back, first_back))
    return out


def _apply(g: Graph, node: Node, back: list[Node], first_back: Node, names: NameGen) -> Value:
    v = node.outputs[0]
    clone = Node(node.op, list(node.inputs), [], dict(node.attrs), "backward", node.source)
    t = infer_types(node.op, [x.type for x in node.inputs], node.attrs)[0]
    new = Value(names(f"{v.name}.recomputed."), t, "activation", producer=clone)
    clone.outputs = [new]
    g.nodes.insert(next(i for i, n in enumerate(g.nodes) if n is first_back), clone)
    for u in back:
        u.inputs = [new if x is v else x for x in u.inputs]
    return new


def run(g: Graph, ctx) -> str:
    if ctx is None or ctx.workspace_bytes is None:
        return "needs a backend to plan memory"
    names = NameGen(g)
    peak = plan_memory(g, ctx.workspace_bytes).arena_bytes
    start = peak
    applied = 0
    for node, back, first_back in _candidates(g):
        saved_nodes = list(g.nodes)
        saved_inputs = [(u, list(u.inputs)) for u in back]
        _apply(g, node, back, first_back, names)
        new_peak = plan_memory(g, ctx.workspace_bytes).arena_bytes
        if new_peak < peak:
            peak = new_peak
            applied += 1
        else:
            g.nodes = saved_nodes
            for u, ins in saved_inputs:
                u.inputs = ins
    if not applied:
        return "no recomputation lowers the peak"
    return f"{applied} values recomputed in backward, arena {start / 2**20:.1f} -> {peak / 2**20:.1f} MiB"
