"""Small graph-editing helpers the rewriting passes share: who reads a value, replace every use
of one value with another, and emit new nodes at a chosen position (the IR's node list is the
execution order, so a rewrite must put new nodes where their inputs exist and their readers
follow)."""

from __future__ import annotations

from .ir import Graph, NameGen, Node, Value
from .ops.registry import Builder


def is_pinned(g: Graph, v: Value) -> bool:
    """A graph output or an assigned state value: its name and lifetime are part of the contract."""
    return any(o is v for o in g.outputs.values()) or any(a is v for a in g.assigns.values())


def replace_uses(g: Graph, old: Value, new: Value) -> None:
    for n in g.nodes:
        n.inputs = [new if v is old else v for v in n.inputs]
    for k, v in list(g.outputs.items()):
        if v is old:
            g.outputs[k] = new
    for k, v in list(g.assigns.items()):
        if v is old:
            g.assigns[k] = new


class EmitBefore:
    """A Builder whose nodes land right before `anchor` (in order) instead of at the end:

        with EmitBefore(g, anchor, names) as b:
            y = b.emit1("conv2d", [...], attrs)
    """

    def __init__(self, g: Graph, anchor: Node, names: NameGen | None = None, section: str | None = None):
        self.g = g
        self.anchor = anchor
        self.b = Builder(g, section or anchor.section, names or NameGen(g))

    def __enter__(self) -> Builder:
        self.start = len(self.g.nodes)
        return self.b

    def __exit__(self, *exc):
        new = self.g.nodes[self.start:]
        del self.g.nodes[self.start:]
        if exc[0] is None:
            i = next(k for k, n in enumerate(self.g.nodes) if n is self.anchor)
            self.g.nodes[i:i] = new
        return False


def remove_node(g: Graph, node: Node) -> None:
    g.nodes = [n for n in g.nodes if n is not node]


def is_frozen(g: Graph, v: Value) -> bool:
    """A param/buffer/const whose value never changes between steps."""
    return v.producer is None and v.kind in ("param", "buffer", "const") and not v.trainable \
        and v.name not in g.assigns
