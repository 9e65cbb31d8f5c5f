"""`Spec`: what a parameter-efficient fine-tuning spec is. Selections (compiler/peft.py:
Full, BiasOnly, LastK, Select, Union, FreezeEmbeddings) choose existing parameters; adapters
(compiler/adapters/: LoRA, SSF, IA3, Channels) rewrite the graph. Both subclass this, which is why
it lives apart from either."""

from __future__ import annotations

from .errors import SpecError
from .ir import Graph, NameGen, Value


class Spec:
    """Base class of fine-tuning specs. `select` returns the names of existing params to train;
    an adapter spec (compiler/adapters/) returns none and instead `rewrite`s the graph, adding
    new trainable params and the ops that use them; `adapters()` lists the adapter specs inside
    a spec (itself, or a Union's members)."""

    def select(self, graph: Graph) -> list[str]:
        raise NotImplementedError

    def adapters(self) -> list["Spec"]:
        return []

    def rewrite(self, graph: Graph, names: NameGen) -> list[Value]:
        return []

    def apply(self, graph: Graph, names: NameGen | None = None) -> list[Value]:
        """Mark the trainable params (selections are read on the graph as imported, before any
        adapter rewrites it) and apply the adapters; returns the trainable params."""
        chosen = set(self.select(graph))
        added: list[Value] = []
        names = names or NameGen(graph)
        for spec in self.adapters():
            added += spec.rewrite(graph, names)
        if not chosen and not added:
            raise SpecError(f"{self!r} selects no parameter of '{graph.name}' "
                            f"({len(graph.params())} parameters: {_preview([p.name for p in graph.params()])})")
        new = {id(v) for v in added}
        for p in graph.params():
            p.trainable = p.name in chosen or id(p) in new
        return [p for p in graph.params() if p.trainable]


def _preview(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")
