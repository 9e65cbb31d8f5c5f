"""Reorder updates: every optimizer update runs as soon as its gradient is final.

Autodiff emits the whole backward and the optimizer then appends every update at the end, so each
gradient buffer lives from the node that makes it to the end of the step: the arena must hold all
gradients of the trainable parameters at once. Here the backward/update region is re-listed with
updates first among the ready nodes, so an update runs right after its gradient (and after the
last reader of the old weight — conv2d_grad_input reads it), writes the parameter in place (see
memory_plan.py), and the gradient's bytes are free for the rest of backward. Within backward,
the weight-gradient computations (nodes tagged "weight_grad" and the reshapes/transposes that
only feed them) run before other ready nodes, so the activation they read dies sooner and the
update can follow at once — when the memory planner confirms that lowers the peak (it does not
when the update must wait anyway for a grad-input kernel reading the old weight); the order with
the lowest planned peak wins, the incoming one included.

Assumes: forward and loss nodes form a prefix (left alone). Changes only the node order.
"""

from __future__ import annotations

from ..ir import Graph
from ..analysis.memory_plan import plan_memory
from ..analysis.schedule import list_schedule, region_predecessors, split_region


def weight_grad_chain(region) -> set[int]:
    """Region indices of weight-gradient nodes and of nodes whose outputs feed only them."""
    chain = {i for i, n in enumerate(region) if "weight_grad" in n.tags}
    users: dict[int, list[int]] = {}
    pos = {id(n): i for i, n in enumerate(region)}
    for i, n in enumerate(region):
        for v in n.inputs:
            if v.producer is not None and id(v.producer) in pos:
                users.setdefault(pos[id(v.producer)], []).append(i)
    for i in range(len(region) - 1, -1, -1):
        u = users.get(i)
        if u and all(j in chain for j in u):
            chain.add(i)
    return chain


def run(g: Graph, ctx=None) -> str:
    prefix, region = split_region(g)
    if not region:
        return "no backward"
    preds = region_predecessors(g, region)
    chain = weight_grad_chain(region)

    def order(weight_grads_first: bool):
        def priority(i):
            n = region[i]
            return (0 if n.section == "update" else 1 if weight_grads_first and i in chain else 2, i)
        return prefix + list_schedule(region, preds, priority=priority)

    candidates = [order(True), order(False)]
    if ctx is not None and getattr(ctx, "workspace_bytes", None):
        # Weight gradients first helps when the activation they read dies at once; when the update
        # must still wait (a trainable weight read by the grad-input kernel) it only stretches the
        # gradient's life. The planner decides, and the incoming order stays if neither is better.
        original = list(g.nodes)
        peaks = []
        for nodes in candidates + [original]:
            g.nodes = nodes
            peaks.append(plan_memory(g, ctx.workspace_bytes).arena_bytes)
        best = min(range(3), key=lambda k: (peaks[k], k))
        g.nodes = (candidates + [original])[best]
        if best == 2:
            return "kept the incoming order (no reordering lowers the planned peak)"
    else:
        g.nodes = candidates[0]
    ordered = g.nodes[len(prefix):]
    moved = sum(1 for a, b in zip(region, ordered) if a is not b)
    updates = sum(1 for n in region if n.section == "update")
    return f"{updates} updates placed after their gradients, {moved} nodes moved"
