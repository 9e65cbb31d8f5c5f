"""The IR verifier: run after the frontends, after autodiff and after every pass (tests do).

Checks, naming the node and op on failure:
  * every value is defined once, and every node input is defined before the node reads it
    (a graph source, or an output of an earlier node) — i.e. the node list is topological;
  * every op is registered and its `infer` rule, re-run on the input types, gives exactly the
    recorded output types (so shapes and dtypes can never silently drift after a pass);
  * sections appear in order forward < loss < backward/update (updates may interleave with
    backward nodes once reordered);
  * outputs and assignments name defined values; an assignment targets a param, buffer or
    state with the same type; aliases point at params;
  * every non-input source has initial data of its declared shape and dtype.
"""

from __future__ import annotations

import numpy as np

from .errors import IRError, ShapeError
from .ir import SECTIONS, Graph, numpy_dtype
from .ops.registry import get_op


def verify(g: Graph) -> Graph:
    defined: set[int] = set()
    names: set[str] = set()

    def define(v, where):
        if v.name in names:
            raise IRError(f"{where}: value %{v.name} is defined more than once")
        names.add(v.name)
        defined.add(id(v))

    for v in g.inputs:
        define(v, "input")
    for name, v in g.sources.items():
        define(v, f"{v.kind} %{name}")
        if v.kind == "const" or name in g.initial:
            data = g.initial.get(name)
            if data is None:
                raise IRError(f"const %{name} has no data")
            if tuple(data.shape) != v.shape or (v.dtype != "bf16" and data.dtype != np.dtype(numpy_dtype(v.dtype))):
                raise IRError(f"{v.kind} %{name}: data {data.dtype}{list(data.shape)} does not match declared {v.type}")

    section_rank = -1
    for i, node in enumerate(g.nodes):
        where = f"node {i} ({node.op} -> %{node.outputs[0].name if node.outputs else '?'})"
        if node.section not in SECTIONS:
            raise IRError(f"{where}: unknown section '{node.section}'")
        # update nodes may sit between backward nodes (compiler/passes/reorder_updates.py runs each
        # update as soon as its gradient is final); backward and update rank the same here
        rank = min(SECTIONS.index(node.section), SECTIONS.index("backward"))
        if rank < section_rank:
            raise IRError(f"{where}: section '{node.section}' after a later section")
        section_rank = rank
        op = get_op(node.op)
        for v in node.inputs:
            if id(v) not in defined:
                raise IRError(f"{where}: reads %{v.name} before it is defined")
        try:
            expected = op.infer([v.type for v in node.inputs], node.attrs)
        except ShapeError as e:
            raise ShapeError(f"{where}: {e}") from None
        got = [v.type for v in node.outputs]
        if expected != got:
            raise ShapeError(f"{where}: outputs {[str(t) for t in got]} but {node.op} infers "
                             f"{[str(t) for t in expected]}")
        for v in node.outputs:
            if v.producer is not node:
                raise IRError(f"{where}: output %{v.name} does not point back at its node")
            define(v, where)

    for key, v in g.outputs.items():
        if id(v) not in defined:
            raise IRError(f"output '{key}' names undefined %{v.name}")
    for target, v in g.assigns.items():
        src = g.sources.get(target)
        if src is None or src.kind not in ("param", "buffer", "state"):
            raise IRError(f"assign to %{target}, which is not a param, buffer or state")
        if id(v) not in defined:
            raise IRError(f"assign %{target} <- undefined %{v.name}")
        if v.type != src.type:
            raise ShapeError(f"assign %{target}: {src.type} <- %{v.name}: {v.type}")
    for alias, target in g.aliases.items():
        if target not in g.sources:
            raise IRError(f"alias %{alias} points at unknown %{target}")
    return g
