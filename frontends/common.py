"""What every frontend hands the compiler, and helpers they share.

A frontend turns a foreign model into an `ImportedModel`: a `Graph` holding only forward
nodes, its data inputs, params (all frozen — the PEFT spec decides later), buffers (with
assignments for buffers the model updates, e.g. BatchNorm running stats) and consts, plus
`outputs` ("output" or "output0", "output1", ...). Nothing else crosses the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..compiler.ir import Graph, Value


@dataclass
class ImportedModel:
    graph: Graph
    frontend: str  # "torch" or "onnx"
    input_names: list[str] = field(default_factory=list)
    output_values: list[Value] = field(default_factory=list)
    train_mode: bool = False


def resolve_shape(shape, numel: int, where: str) -> list[int]:
    """Resolve one -1 in a reshape target."""
    from ..compiler.errors import ShapeError
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise ShapeError(f"{where}: more than one -1 in shape {shape}")
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if known == 0 or numel % known:
            raise ShapeError(f"{where}: cannot infer -1 in {shape} for {numel} elements")
        shape[shape.index(-1)] = numel // known
    return shape


def norm_dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d
