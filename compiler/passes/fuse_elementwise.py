"""Element-wise fusion: a chain (or small DAG) of element-wise ops becomes one `fused_elementwise`
node that reads each input once and writes each needed output once, tile by tile in cache,
instead of one full pass over memory per op with a temporary between each.

Typical groups: the folded bias + GELU + dropout-free residual add in a transformer, BatchNorm's
scale/shift arithmetic after a frozen statistics fold, hardswish chains, the
`mul(dy, hardtanh_backward(...))` products of backward.

Grouping (greedy, in program order): a fusable node (compiler/ops/fused.py `can_fuse`: a
supported op, f32, of the group's output shape) joins the group of the node that produced one
of its inputs when both are in the same section and no reader outside the group sits between
them (the fused node takes the place of the group's last member, so every outside reader of a
member's output must come after it). A member's output becomes an output of the fused node when
something outside the group reads it. Groups of one node are left alone.

Assumes: the graph is verified; changes node list and value producers, not semantics (the fused
op's reference runs each member op's own reference).
"""

from __future__ import annotations

from ..ir import Graph, NameGen, Node, Value
from ..ops import fused
from ..ops.registry import infer_types
from ..rewrite import is_pinned, replace_uses


def _groups(g: Graph) -> list[list[Node]]:
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    users = g.users()
    group_of: dict[int, list[Node]] = {}
    groups: list[list[Node]] = []
    for n in g.nodes:
        if not fused.can_fuse(n):
            continue
        shape = n.outputs[0].shape
        joined = None
        for v in n.inputs:
            p = v.producer
            grp = group_of.get(id(p)) if p is not None else None
            if grp is None or grp[0].section != n.section or grp[0].outputs[0].shape != shape:
                continue
            members = {id(m) for m in grp} | {id(n)}
            if any(pos[id(u)] < pos[id(n)] for m in grp for o in m.outputs for u in users.get(id(o), [])
                   if id(u) not in members):
                continue
            joined = grp
            break
        if joined is None:
            joined = []
            groups.append(joined)
        joined.append(n)
        group_of[id(n)] = joined
    return [grp for grp in groups if len(grp) > 1]


def _fuse(g: Graph, grp: list[Node], names: NameGen) -> bool:
    users = g.users()
    members = {id(m) for m in grp}
    outputs = [o for m in grp for o in m.outputs
               if is_pinned(g, o) or any(id(u) not in members for u in users.get(id(o), []))]
    try:
        inputs, attrs = fused.build_fused(grp, outputs, g.initial)
    except fused.FusionTooLarge:
        return False
    last = grp[-1]
    node = Node("fused_elementwise", inputs, [], attrs, last.section, last.source)
    types = infer_types("fused_elementwise", [v.type for v in inputs], attrs)
    node.outputs = [Value(names(), t, "activation", producer=node) for t in types]
    i = next(k for k, n in enumerate(g.nodes) if n is last)
    g.nodes.insert(i + 1, node)
    for old, new in zip(outputs, node.outputs):
        replace_uses(g, old, new)
    g.nodes = [n for n in g.nodes if id(n) not in members]
    for old, new in zip(outputs, node.outputs):
        new.name = old.name
    return True


def run(g: Graph, ctx=None) -> str:
    names = NameGen(g)
    kernels = 0
    removed = 0
    for grp in _groups(g):
        # a group over the kernel's limits is cut from the end until it fits
        while len(grp) > 1 and not _fuse(g, grp, names):
            grp = grp[:-1]
        if len(grp) > 1:
            kernels += 1
            removed += len(grp)
    if not kernels:
        return "no fusable element-wise chain"
    return f"{removed} element-wise nodes fused into {kernels} kernels"
