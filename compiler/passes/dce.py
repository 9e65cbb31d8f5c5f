"""Dead code elimination.

Removes nodes none of whose outputs is read by another node, named as a graph output, or
assigned to state, and consts nobody reads. Params, buffers and optimizer states stay even
when unused: they are part of the model's state_dict. Assumes a topologically ordered graph;
leaves ordering and memory to later passes. Autodiff already emits only needed backward nodes,
so on a fresh program this mostly drops forward values only a frozen path would have used.
"""

from __future__ import annotations

from ..ir import Graph


def live_nodes(g: Graph) -> tuple[list, set[int]]:
    """The nodes whose outputs something reads (in order), and the ids of every value read."""
    live = {id(v) for v in g.outputs.values()} | {id(v) for v in g.assigns.values()}
    kept = []
    for node in reversed(g.nodes):
        if any(id(v) in live for v in node.outputs):
            kept.append(node)
            live.update(id(v) for v in node.inputs)
    return kept[::-1], live


def dead_code_elimination(g: Graph) -> Graph:
    g.nodes, live = live_nodes(g)
    for name in [n for n, v in g.sources.items() if v.kind == "const" and id(v) not in live]:
        del g.sources[name]
        g.initial.pop(name, None)
    return g
