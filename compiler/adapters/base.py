"""What every adapter shares: finding the layers a spec targets, emitting the adapter's nodes
next to them, and recording how its parameters are exported.

An adapter is a `Spec` whose `rewrite(graph)` inserts new parameters and ops around the layers
its `targets` name (a graph rewrite before autodiff, so the sparse backward, update reordering,
fusion and memory planning treat the adapter like any other part of the model) and returns the
new trainable parameters. Plain specs (`BiasOnly`, `LastK`, ...) *select* existing parameters;
`Union` mixes both kinds (compiler/peft.py).

Targets are globs (fnmatch) over module names: the name of the layer's weight without its
`.weight` suffix (`encoder.layer.0.attention.self.query`), aliases of tied weights included. A
target without a wildcard matches as Hugging Face PEFT's `target_modules` do: the whole name or
its last dotted components (`q_proj` matches `model.layers.0.self_attn.q_proj`).

Each rewrite appends records to `graph.adapters` (an `ExportTable`, compiler/adapters/export.py):
PEFT's adapter_config.json and tensors, edgetune's own adapter file, and the merged weights —
each exported tensor as a small postfix program over the session's state, so the Python session
and the C++ `edgetune-train` compute the same files from the same plan.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass

import numpy as np

from ..errors import SpecError
from ..ir import Graph, NameGen, Node, Value
from ..spec import Spec
from ..rewrite import EmitBefore

LAYER_OPS = ("linear", "matmul", "conv2d", "embedding")


class Adapter(Spec):
    """A spec that rewrites the graph (`rewrite`) instead of selecting existing parameters."""

    def select(self, graph: Graph) -> list[str]:
        return []

    def adapters(self) -> list[Spec]:
        return [self]

    def rewrite(self, graph: Graph, names: NameGen) -> list[Value]:
        raise NotImplementedError


def export_table(graph: Graph):
    """The graph's adapter export table (compiler/adapters/export.py), made on first use."""
    from .export import ExportTable
    if graph.adapters is None:
        graph.adapters = ExportTable()
    return graph.adapters


@dataclass
class Layer:
    """One targetable layer occurrence in the forward graph."""
    node: Node
    module: str           # the name targets match and exports use
    op: str               # linear | matmul | conv2d | embedding
    weight: Value
    bias: Value | None

    @property
    def out_features(self) -> int:
        w = self.weight.type.shape
        return w[1] if self.op in ("matmul", "embedding") else w[0]

    @property
    def in_features(self) -> int:
        w = self.weight.type.shape
        return w[0] if self.op in ("matmul", "embedding") else int(np.prod(w[1:]))

    def describe(self) -> str:
        return f"{self.module} ({self.op} {list(self.weight.type.shape)})"


def module_of(param_name: str) -> str:
    return param_name[: -len(".weight")] if param_name.endswith(".weight") else param_name


def _names_for(graph: Graph, weight: Value, node: Node) -> list[str]:
    """The module names a layer node is known by: its weight's name and aliases (tied weights);
    when a tied weight has several, the one the node's source module path names (the LM head's
    linear is `lm_head`, the lookup `embed_tokens`)."""
    names = [weight.name] + [a for a, t in graph.aliases.items() if t == weight.name]
    modules = [module_of(n) for n in names]
    if len(modules) > 1 and node.source:
        path = node.source.split()[-1]
        hit = [m for m in modules if path == m or path.endswith("." + m) or m.endswith("." + path)]
        if hit:
            return hit[:1]
    return modules


def find_layers(graph: Graph) -> list[Layer]:
    """Every forward node that reads a parameter as a layer weight (linear, matmul with a param
    right operand — ONNX MatMul — conv2d, embedding), in forward order."""
    out = []
    for node in graph.nodes:
        if node.section != "forward" or node.op not in LAYER_OPS:
            continue
        slot = 0 if node.op == "embedding" else 1
        if slot >= len(node.inputs) or node.inputs[slot].kind != "param":
            continue
        w = node.inputs[slot]
        if node.op == "matmul" and (w.type.rank != 2 or node.attrs.get("rhs_shape") or node.attrs.get("lhs_shape")):
            continue
        bias = node.inputs[2] if node.op in ("linear", "conv2d") and len(node.inputs) > 2 else None
        for module in _names_for(graph, w, node):
            out.append(Layer(node, module, node.op, w, bias))
            break
    return out


def matches(pattern: str, module: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module, pattern)
    return module == pattern or module.endswith("." + pattern)


def match_targets(graph: Graph, targets: list[str], exclude: list[str], who: str,
                  ops: tuple[str, ...] = LAYER_OPS) -> list[Layer]:
    """The layers `targets` name (minus `exclude`), one per node. A target matching no layer is a
    SpecError that lists the closest module names; so is a match on a layer kind the adapter
    does not support (say which, rather than silently skipping it)."""
    layers = find_layers(graph)
    modules = list(dict.fromkeys(layer.module for layer in layers))
    chosen: dict[int, Layer] = {}
    for pattern in targets:
        hit = [layer for layer in layers if matches(pattern, layer.module)]
        if not hit:
            near = difflib.get_close_matches(pattern.strip("*."), modules, n=5, cutoff=0.3) or modules[:5]
            raise SpecError(f"{who}: target {pattern!r} matches no layer of '{graph.name}'; "
                            f"closest module names: {', '.join(near) or 'none (the model has no linear/conv/embedding layer)'}")
        for layer in hit:
            chosen.setdefault(id(layer.node), layer)
    for pattern in exclude:
        hit = [k for k, layer in chosen.items() if matches(pattern, layer.module)]
        if not hit:
            raise SpecError(f"{who}: exclude pattern {pattern!r} matches none of the targeted layers "
                            f"({', '.join(sorted({layer.module for layer in chosen.values()})[:6])} ...)")
        for k in hit:
            del chosen[k]
    picked = list(chosen.values())
    if not picked:
        raise SpecError(f"{who}: the exclude patterns remove every targeted layer")
    bad = [layer for layer in picked if layer.op not in ops]
    if bad:
        raise SpecError(f"{who} does not apply to {', '.join(layer.describe() for layer in bad[:4])}"
                        f"{' ...' if len(bad) > 4 else ''}: it supports {', '.join(ops)} layers; "
                        "narrow the targets or add exclude=[...]")
    return picked


def as_list(v, what: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if v is None:
        return []
    v = list(v)
    if not all(isinstance(s, str) and s for s in v):
        raise SpecError(f"{what} must be a list of module-name patterns, got {v!r}")
    return v


def add_param(graph: Graph, name: str, data: np.ndarray, trainable: bool = True) -> Value:
    if name in graph.sources or name in graph.aliases:
        raise SpecError(f"adapter parameter {name!r} already exists in '{graph.name}' "
                        "(two adapters on one layer? apply one adapter kind per layer)")
    return graph.add_source(name, "param", np.ascontiguousarray(data, dtype=np.float32), trainable=trainable)


def dropout_counter(graph: Graph, names: NameGen) -> Value:
    """The program's dropout step counter (an i64 state advanced once per step), created on first
    use the way the torch frontend makes it (frontends/from_torch.py)."""
    from ..ops.registry import Builder
    counter = graph.sources.get("rng.counter")
    if counter is None:
        counter = graph.add_source("rng.counter", "state", np.asarray(0, dtype=np.int64))
        b = Builder(graph, "forward", names)
        graph.assigns["rng.counter"] = b.emit1("add", [counter, b.const(1, "i64")], out_names=["rng.counter.next"])
        # keep the counter's update among the forward nodes (before any loss/backward node)
        node = graph.nodes.pop()
        first_later = next((i for i, n in enumerate(graph.nodes) if n.section != "forward"), len(graph.nodes))
        graph.nodes.insert(first_later, node)
    return counter


def next_dropout_stream(graph: Graph) -> int:
    return max((int(n.attrs.get("stream", 0)) + 1 for n in graph.nodes if n.op == "dropout"), default=0)


def check_free(spec, graph: Graph, layer: Layer) -> None:
    """One adapter per layer: a second one would give its weight two merge recipes."""
    if graph.adapters is not None and layer.weight.name in graph.adapters.merged:
        raise SpecError(f"{spec!r}: {layer.describe()} already has an adapter; apply one adapter kind per layer "
                        "(narrow the targets or add exclude=[...])")


def check_layer(spec, graph: Graph, layer: Layer) -> None:
    """What every output-side adapter (SSF, (IA)³, Channels) needs of a layer: no other adapter,
    an NCHW conv, no fused activation, a weight no other layer reads (a tied weight would fold
    one adapter into both layers)."""
    node, what = layer.node, layer.describe()
    check_free(spec, graph, layer)
    if node.op == "conv2d" and node.attrs.get("layout", "nchw") != "nchw":
        raise SpecError(f"{spec!r}: {what} has layout {node.attrs['layout']!r}; adapters rewrite NCHW convs")
    if node.attrs.get("activation", "none") != "none":
        raise SpecError(f"{spec!r}: {what} has a fused activation")
    readers = sum(1 for n in graph.nodes for v in n.inputs if v is layer.weight)
    if readers > 1 or any(t == layer.weight.name for t in graph.aliases.values()):
        raise SpecError(f"{spec!r}: {what}'s weight is shared (tied) with another layer; merging the adapter "
                        "would change both; exclude it")


def following_bias(graph: Graph, layer: Layer) -> tuple[Node, Value] | None:
    """For an ONNX MatMul layer whose output's only reader is `add(y, b)` with a parameter b of
    [out] elements (the bias of the Linear it was exported from): (that add node, b); else None.
    Adapters that act on the layer's output (SSF, (IA)³) then act after the add, as they would on
    the original Linear, and fold into b when merged."""
    if layer.op != "matmul":
        return None
    y = layer.node.outputs[0]
    if any(v is y for v in graph.outputs.values()):
        return None
    users = [n for n in graph.nodes if any(v is y for v in n.inputs)]
    if len(users) != 1 or users[0].op != "add" or users[0].section != "forward" or len(users[0].inputs) != 2:
        return None
    add = users[0]
    other = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
    if other is y or other.kind != "param" or other.type.numel != layer.out_features \
            or sum(d != 1 for d in other.type.shape) > 1 or add.outputs[0].type.shape != y.type.shape:
        return None
    if other.type.rank > 0 and other.type.shape[-1] != layer.out_features:
        return None  # a [out, 1] vector would broadcast along the wrong dim
    return add, other


class After:
    """Emit nodes right after `node`, then make every other reader of its output read a new value:

        after = After(g, layer.node, names)
        with after as (b, y):
            y2 = b.emit1("add", [y, delta])
        after.repoint(y2)
    """

    def __init__(self, graph: Graph, node: Node, names: NameGen):
        self.graph, self.node, self.names = graph, node, names
        self.made: list[Node] = []

    def __enter__(self):
        i = next(k for k, n in enumerate(self.graph.nodes) if n is self.node)
        if i + 1 >= len(self.graph.nodes):
            raise SpecError("an adapter target cannot be the program's last node")
        self.ctx = EmitBefore(self.graph, self.graph.nodes[i + 1], self.names, section="forward")
        return self.ctx.__enter__(), self.node.outputs[0]

    def __exit__(self, *exc):
        self.made = list(self.graph.nodes[self.ctx.start:])
        return self.ctx.__exit__(*exc)

    def repoint(self, new: Value) -> None:
        old = self.node.outputs[0]
        keep = {id(n) for n in self.made} | {id(self.node)}
        for n in self.graph.nodes:
            if id(n) not in keep:
                n.inputs = [new if v is old else v for v in n.inputs]
        for k, v in list(self.graph.outputs.items()):
            if v is old:
                self.graph.outputs[k] = new


__all__ = ["Adapter", "export_table", "Layer", "check_free", "check_layer", "following_bias", "find_layers", "match_targets", "as_list", "add_param", "dropout_counter",
           "next_dropout_stream", "After", "module_of"]
