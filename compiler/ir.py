"""edgetune's IR: one typed, static-shape graph for the whole training step.

A `Graph` holds
  * values: named, typed tensors (`TensorType` = static shape + dtype). A value is produced by
    exactly one node, or it is a graph-level source: an *input* (data fed each step), a *param*
    (model weight, trainable or frozen), a *buffer* (model state that is not a weight, e.g.
    BatchNorm running stats), a *state* (optimizer state created by the compiler), or a *const*
    (a small tensor known at compile time);
  * nodes, in one topological order, each tagged with the *section* it belongs to
    (forward / loss / backward / update);
  * outputs (e.g. the loss) and *assignments*: at the end of a step, state name <- value.
    That is how parameter updates, optimizer state and running stats persist across steps
    without mutation inside the graph (the graph itself stays SSA).

Weights are not part of the IR; they travel beside it (`Graph.initial` for params, buffers,
states and consts) so the text form stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .errors import IRError

# dtype names used in the IR, and their numpy equivalents. float16/bfloat16/int8 are named
# already so plans and the text IR can carry them once kernels exist.
DTYPES: dict[str, Any] = {
    "f32": np.float32,
    "f64": np.float64,
    "f16": np.float16,
    "bf16": None,  # no numpy dtype; reserved for the runtime
    "i64": np.int64,
    "i32": np.int32,
    "i8": np.int8,
    "u8": np.uint8,
    "bool": np.bool_,
}
FLOAT_DTYPES = ("f32", "f64", "f16", "bf16")

SECTIONS = ("forward", "loss", "backward", "update")
SOURCE_KINDS = ("input", "param", "buffer", "state", "const")


def dtype_of_numpy(dt) -> str:
    dt = np.dtype(dt)
    for name, np_dt in DTYPES.items():
        if np_dt is not None and np.dtype(np_dt) == dt:
            return name
    raise IRError(f"numpy dtype {dt} has no IR dtype")


def numpy_dtype(name: str):
    np_dt = DTYPES.get(name)
    if np_dt is None:
        raise IRError(f"IR dtype '{name}' has no numpy equivalent")
    return np_dt


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in DTYPES:
            raise IRError(f"unknown dtype '{self.dtype}'")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        itemsize = 2 if self.dtype == "bf16" else np.dtype(DTYPES[self.dtype]).itemsize
        return self.numel * itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


class Value:
    """A tensor in the graph. `producer` is None for graph sources (inputs, params, ...)."""

    __slots__ = ("name", "type", "kind", "producer", "trainable")

    def __init__(self, name: str, type: TensorType, kind: str = "activation",
                 producer: "Node | None" = None, trainable: bool = False):
        self.name = name
        self.type = type
        self.kind = kind  # one of SOURCE_KINDS or "activation"
        self.producer = producer
        self.trainable = trainable

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return self.type.rank

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    __slots__ = ("op", "inputs", "outputs", "attrs", "section", "source", "tags", "kernel")

    def __init__(self, op: str, inputs: list[Value], outputs: list[Value], attrs: dict | None = None,
                 section: str = "forward", source: str | None = None, kernel: str | None = None):
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.section = section
        self.source = source  # "file.py:LINE module.path" for frontends, None for compiler-made
        self.tags: set[str] = set()  # analysis marks, e.g. "weight_grad"; not semantics
        # the kernel that runs this node ("conv2d.winograd"), chosen by compiler/passes/select_kernels.py;
        # None = the op's default kernel, registered under the op's own name
        self.kernel = kernel

    def __repr__(self) -> str:
        outs = ", ".join(repr(v) for v in self.outputs)
        ins = ", ".join(f"%{v.name}" for v in self.inputs)
        return f"{outs} = {self.op}({ins})"


@dataclass
class Graph:
    """The whole program. See the module docstring for the meaning of each field."""

    name: str = "main"
    inputs: list[Value] = field(default_factory=list)
    sources: dict[str, Value] = field(default_factory=dict)  # params, buffers, states, consts
    nodes: list[Node] = field(default_factory=list)
    outputs: dict[str, Value] = field(default_factory=dict)  # output name -> value
    assigns: dict[str, Value] = field(default_factory=dict)  # source name -> new value
    initial: dict[str, np.ndarray] = field(default_factory=dict)  # source name -> data
    aliases: dict[str, str] = field(default_factory=dict)  # extra state_dict name -> source name
    # frozen params/buffers whose values were folded into consts at compile time (fold_constants)
    baked: set[str] = field(default_factory=set)
    # what the adapters a spec inserted export (compiler/adapters/export.py ExportTable), else None
    adapters: Any = None

    # ---- construction -------------------------------------------------------------------
    def _taken(self, name: str) -> bool:
        return name in self._names()

    def _names(self) -> set[str]:
        names = {v.name for v in self.inputs} | set(self.sources)
        for n in self.nodes:
            names.update(v.name for v in n.outputs)
        return names

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(name, type, "input")
        self.inputs.append(v)
        return v

    def add_source(self, name: str, kind: str, data: np.ndarray | None, type: TensorType | None = None,
                   trainable: bool = False) -> Value:
        if kind not in SOURCE_KINDS or kind == "input":
            raise IRError(f"bad source kind '{kind}' for '{name}'")
        if name in self.sources:
            raise IRError(f"source '{name}' defined twice")
        if type is None:
            type = TensorType(data.shape, dtype_of_numpy(data.dtype))
        v = Value(name, type, kind, trainable=trainable)
        self.sources[name] = v
        if data is not None:
            self.initial[name] = np.array(data, order="C")  # (ascontiguousarray would make 0-d 1-d)
        return v

    def params(self) -> list[Value]:
        return [v for v in self.sources.values() if v.kind == "param"]

    def trainable_params(self) -> list[Value]:
        return [v for v in self.params() if v.trainable]

    def section_nodes(self, section: str) -> list[Node]:
        return [n for n in self.nodes if n.section == section]

    def users(self) -> dict[int, list[Node]]:
        """id(value) -> nodes reading it."""
        out: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(id(v), []).append(n)
        return out

    def all_values(self) -> Iterable[Value]:
        yield from self.inputs
        yield from self.sources.values()
        for n in self.nodes:
            yield from n.outputs


class NameGen:
    """Fresh value names: '<prefix><n>' that do not collide with names already in the graph."""

    def __init__(self, graph: Graph):
        self.used = graph._names()
        self.counters: dict[str, int] = {}  # per prefix, so t0, t1, ... stay dense beside c0, c1, ...

    def __call__(self, prefix: str = "t") -> str:
        n = self.counters.get(prefix, 0)
        while f"{prefix}{n}" in self.used:
            n += 1
        self.counters[prefix] = n + 1
        self.used.add(f"{prefix}{n}")
        return f"{prefix}{n}"

    def reserve(self, name: str) -> str:
        """Use `name` itself when free, else a numbered variant of it."""
        if name not in self.used:
            self.used.add(name)
            return name
        i = 1
        while f"{name}_{i}" in self.used:
            i += 1
        self.used.add(f"{name}_{i}")
        return f"{name}_{i}"
