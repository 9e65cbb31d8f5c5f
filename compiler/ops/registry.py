"""The op registry: every op edgetune knows is defined once, here-registered, with four parts.

    infer      (input types, attrs) -> output types           shape/dtype rule; raises ShapeError
    reference  (input arrays, attrs) -> output arrays          numpy oracle, keeps the input dtype
    grad       (GradContext) -> one gradient Value|None per input, emitted as IR ops
               or NOT_DIFFERENTIABLE (backward and optimizer ops, integer ops)
    samples    (rng) -> [Sample]                               inputs for the test sweep

plus `torch_fn`, the PyTorch computation the sweep compares the reference against, and
`param_roles`, which input slots hold a layer's weight/bias/norm parameters (read by the PEFT
specs to find "biases" and "layers" from graph structure, not from names).

Adding an op = writing one `register(OpDef(...))` in a file of this folder (+ its kernels in
csrc/ later). tests/ops/test_registry.py fails when an op misses a part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import IRError, ShapeError
from ..ir import Graph, NameGen, Node, TensorType, Value

NOT_DIFFERENTIABLE = "not differentiable"


@dataclass
class Sample:
    """One test case: input arrays plus attrs. `grad_inputs` limits which inputs the
    gradient checks perturb (default: every float input)."""

    inputs: list[np.ndarray]
    attrs: dict = field(default_factory=dict)
    grad_inputs: list[int] | None = None
    note: str = ""


@dataclass
class OpDef:
    name: str
    infer: Callable[[list[TensorType], dict], list[TensorType]]
    reference: Callable[[list[np.ndarray], dict], list[np.ndarray]]
    grad: Callable[["GradContext"], list] | str
    samples: Callable[[np.random.Generator], list[Sample]]
    torch_fn: Callable[[list, dict], list] | None = None
    param_roles: dict[int, str] = field(default_factory=dict)  # slot -> "weight"|"bias"|"norm"
    flops: Callable[[list[TensorType], list[TensorType], dict], int] | None = None
    # inputs whose absence is allowed (e.g. conv bias); the node then has fewer inputs
    min_inputs: int | None = None
    doc: str = ""

    @property
    def differentiable(self) -> bool:
        return self.grad != NOT_DIFFERENTIABLE


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise RuntimeError(f"op '{op.name}' registered twice")
    REGISTRY[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise IRError(f"unknown op '{name}'") from None


def infer_types(op: str, in_types: list[TensorType], attrs: dict) -> list[TensorType]:
    return get_op(op).infer(in_types, attrs)


def run_reference(op: str, arrays: list[np.ndarray], attrs: dict) -> list[np.ndarray]:
    return get_op(op).reference(arrays, attrs)


def default_flops(in_types, out_types, attrs) -> int:
    return sum(t.numel for t in out_types)


def op_flops(node: Node) -> int:
    op = get_op(node.op)
    fn = op.flops or default_flops
    return int(fn([v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs))


# ---------------------------------------------------------------------------------------------
# Building graphs: frontends, autodiff and the optimizer all append nodes through a Builder,
# so every node gets its output types from the op's own `infer` rule.
# ---------------------------------------------------------------------------------------------
class Builder:
    def __init__(self, graph: Graph, section: str = "forward", names: NameGen | None = None):
        self.graph = graph
        self.section = section
        self.names = names or NameGen(graph)
        self._consts: dict[tuple, Value] = {}

    def emit(self, op: str, inputs: list[Value], attrs: dict | None = None, *,
             source: str | None = None, out_names: list[str] | None = None,
             section: str | None = None) -> list[Value]:
        attrs = dict(attrs or {})
        try:
            out_types = infer_types(op, [v.type for v in inputs], attrs)
        except ShapeError as e:
            where = f" at {source}" if source else ""
            args = ", ".join(f"%{v.name}: {v.type}" for v in inputs)
            raise ShapeError(f"{op}({args}) {attrs}{where}: {e}") from None
        node = Node(op, inputs, [], attrs, section or self.section, source)
        for i, t in enumerate(out_types):
            name = self.names.reserve(out_names[i]) if out_names and i < len(out_names) and out_names[i] \
                else self.names()
            node.outputs.append(Value(name, t, "activation", producer=node))
        self.graph.nodes.append(node)
        return node.outputs

    def emit1(self, op: str, inputs: list[Value], attrs: dict | None = None, **kw) -> Value:
        outs = self.emit(op, inputs, attrs, **kw)
        return outs[0]

    def const(self, value, dtype: str = "f32", shape: tuple[int, ...] = ()) -> Value:
        """A compile-time constant (deduplicated). Scalars are the common case."""
        from ..ir import numpy_dtype
        arr = np.full(shape, value, dtype=numpy_dtype(dtype)) if np.isscalar(value) or np.ndim(value) == 0 \
            else np.asarray(value, dtype=numpy_dtype(dtype))
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._consts:
            return self._consts[key]
        if arr.size == 1:  # reuse a scalar const another Builder already made
            for name, v in self.graph.sources.items():
                data = self.graph.initial.get(name)
                if v.kind == "const" and data is not None and data.shape == arr.shape and \
                        data.dtype == arr.dtype and data.tobytes() == arr.tobytes():
                    self._consts[key] = v
                    return v
        v = self.graph.add_source(self.names("c"), "const", arr)
        self._consts[key] = v
        return v


@dataclass
class GradContext:
    """What a gradient rule sees: the forward node, the gradient of each of its outputs (None
    where no gradient flows), which inputs need a gradient, and a Builder that appends
    backward nodes. A rule returns one Value (or None) per input of the node."""

    node: Node
    douts: list[Value | None]
    needs: list[bool]
    b: Builder

    @property
    def inputs(self) -> list[Value]:
        return self.node.inputs

    @property
    def outputs(self) -> list[Value]:
        return self.node.outputs

    @property
    def attrs(self) -> dict:
        return self.node.attrs

    def emit(self, op: str, inputs: list[Value], attrs: dict | None = None) -> list[Value]:
        return self.b.emit(op, inputs, attrs, source=self.node.source)

    def emit1(self, op: str, inputs: list[Value], attrs: dict | None = None) -> Value:
        return self.b.emit1(op, inputs, attrs, source=self.node.source)

    def const(self, value, dtype: str = "f32") -> Value:
        return self.b.const(value, dtype)

    # helpers every broadcasting op needs
    def sum_to(self, v: Value, shape: tuple[int, ...]) -> Value:
        """Reduce a broadcast gradient back to `shape` (identity when shapes already match)."""
        if tuple(v.shape) == tuple(shape):
            return v
        return self.emit1("sum_to", [v], {"shape": list(shape)})


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ShapeError(msg)


def same_dtype(types: list[TensorType]) -> str:
    dts = {t.dtype for t in types}
    check(len(dts) == 1, f"dtype mismatch {[t.dtype for t in types]}")
    return types[0].dtype


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(f"shapes {list(shapes)} do not broadcast") from None


def norm_dims(dims, rank: int) -> list[int]:
    if dims is None:
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    out = []
    for d in dims:
        check(-rank <= d < max(rank, 1), f"dim {d} out of range for rank {rank}")
        out.append(d % rank if rank else 0)
    return sorted(set(out))


def rand(rng: np.random.Generator, *shape, lo=-1.0, hi=1.0, dtype=np.float32) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape).astype(dtype)



def T():
    """torch, imported only when a sweep or frontend needs it (the compiler core runs without)."""
    import torch
    return torch
