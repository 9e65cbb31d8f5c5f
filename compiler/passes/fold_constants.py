"""Constant folding: every value computed only from constants and frozen parameters/buffers is
evaluated once, at compile time, and stored in the plan as a constant.

Frozen is what PEFT makes most of a model, so a training step recomputes a lot that never
changes: the folded conv weights and biases of fold_batchnorm, BatchNorm's rsqrt(var + eps) scale
in its backward, transposes of frozen weights that feed backward GEMMs, reshapes of frozen biases.
A node is foldable when every input is a const, or a param/buffer that no assignment updates,
(transitively) — and not an update or random op. The result is computed with the op's numpy
reference (the same oracle every backend is checked against) and becomes a `const` source.

Memory: a folded value is persistent. Results larger than FOLD_LIMIT_BYTES are folded only when
their frozen inputs become unread (then the plan carries one tensor where it carried another:
the frozen parameter itself stays, because it is part of the model's state_dict).

Assumes: params/buffers without an assignment never change between steps. Changes values into
consts and drops the nodes that made them (dead code elimination runs after every pass).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, NameGen, numpy_dtype
from ..ops.registry import run_reference

FOLD_LIMIT_BYTES = 1 << 20
NEVER_FOLD = frozenset({"dropout", "sgd_update", "adamw_update"})


def run(g: Graph, ctx=None) -> str:
    assigned = set(g.assigns)
    known: dict[int, np.ndarray] = {}
    for name, v in g.sources.items():
        if v.kind == "const" or (v.kind in ("param", "buffer") and not v.trainable and name not in assigned):
            known[id(v)] = g.initial[name]
    users: dict[int, int] = {}
    for n in g.nodes:
        for v in n.inputs:
            users[id(v)] = users.get(id(v), 0) + 1
    pinned = {id(v) for v in g.outputs.values()} | {id(v) for v in g.assigns.values()}

    folded = 0
    folded_bytes = 0
    replace: dict[int, object] = {}
    for n in g.nodes:
        if n.op in NEVER_FOLD or not n.inputs or not all(id(v) in known for v in n.inputs):
            continue
        out_bytes = sum(o.type.nbytes for o in n.outputs)
        in_bytes = sum(v.type.nbytes for v in n.inputs if v.producer is None)
        if out_bytes > FOLD_LIMIT_BYTES and out_bytes > in_bytes:
            continue  # e.g. an expand of a frozen vector: cheaper to compute than to store
        results = run_reference(n.op, [known[id(v)] for v in n.inputs], n.attrs)
        for o, r in zip(n.outputs, results):
            known[id(o)] = np.asarray(r)
        if any(id(o) in pinned for o in n.outputs):
            continue
        for o in n.outputs:
            replace[id(o)] = o
        folded += 1
    if not replace:
        return "nothing to fold"

    # Only values read by a node we keep become consts; the rest die with their producers.
    names = NameGen(g)
    folded_nodes = {id(o.producer) for o in replace.values()}
    consts: dict[int, object] = {}
    for n in g.nodes:
        if id(n) in folded_nodes:
            continue
        for k, v in enumerate(n.inputs):
            if id(v) in replace:
                if id(v) not in consts:
                    data = np.ascontiguousarray(known[id(v)], dtype=numpy_dtype(v.dtype)).reshape(v.shape)
                    c = g.add_source(names.reserve(f"folded.{v.name}"), "const", data, v.type)
                    consts[id(v)] = c
                    folded_bytes += v.type.nbytes
                n.inputs[k] = consts[id(v)]
    return f"{folded} nodes evaluated at compile time, {len(consts)} consts ({folded_bytes / 2**20:.2f} MiB)"
