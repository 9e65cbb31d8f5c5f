"""Constant folding: every value computed only from constants and frozen parameters/buffers is
evaluated once, at compile time, and stored in the plan as a constant.

Frozen is what PEFT makes most of a model, so a training step recomputes a lot that never
changes: the folded conv weights and biases of fold_batchnorm, BatchNorm's rsqrt(var + eps) scale
in its backward, transposes of frozen weights that feed backward GEMMs, reshapes of frozen biases.
A node is foldable when every input is a const, or a param/buffer that no assignment updates,
(transitively) — and not an update or random op. The result is computed with the op's numpy
reference (the same oracle every backend is checked against), in float64 for float values, and
becomes a `const` source rounded once to its dtype (_exact).

Memory: a folded value is persistent, and the frozen parameters it came from stay resident too
(they are the model's state_dict, and backward often still reads them: conv2d_grad_input reads
the original conv weight). So baking a result larger than FOLD_LIMIT_BYTES that is as big as a
parameter it derives from — a BN-scaled or transposed weight — stores that weight twice
(ResNet-18: +43 MiB); leaving it as one element-wise pass per step instead costs arena bytes only
while it is live (right before its reader). The pass plans both and keeps the policy with the
lower planned total (persistent + arena). Small derived values (scales, shifts, folded biases)
are always baked.

Baked parameters: the values of the frozen params a const was computed from are now part of the
plan. Loading different values for them later (Session.load_state_dict) would leave the consts
stale, so the program lists them (`graph.baked`) and the Session refuses such a load.

Assumes: params/buffers without an assignment never change between steps. Changes values into
consts and drops the nodes that made them (dead code elimination runs after every pass).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, NameGen, numpy_dtype
from ..ops.registry import run_reference

FOLD_LIMIT_BYTES = 64 << 10
NEVER_FOLD = frozenset({"dropout", "sgd_update", "adamw_update"})


def run(g: Graph, ctx=None) -> str:
    """Fold; with a backend to plan for, try both policies for transformed weights and keep the
    one with the lower planned total (persistent + arena; a tie bakes: no per-step pass)."""
    if ctx is None or getattr(ctx, "workspace_bytes", None) is None:
        return fold(g, bake_weights=False)
    import copy
    from .dce import dead_code_elimination
    from ..analysis.memory_plan import plan_memory
    trials = []
    for bake in (True, False):
        trial = copy.deepcopy(g)
        note = fold(trial, bake_weights=bake)
        dead_code_elimination(trial)
        plan = plan_memory(trial, ctx.workspace_bytes)
        trials.append((plan.persistent_bytes + plan.arena_bytes, not bake, trial, note))
    total, per_step, best, note = min(trials, key=lambda t: t[:2])
    g.__dict__.update(best.__dict__)
    how = "weight transforms computed per step" if per_step else "weight transforms baked"
    return f"{note}; {how} (lower planned total: {total / 2**20:.1f} MiB)"


def _exact(arr: np.ndarray) -> np.ndarray:
    """Folded arithmetic runs in float64 and each baked const is rounded once, to its value's
    dtype, at the end: a folded BatchNorm weight W * gamma / sqrt(var + eps) is then the float32
    nearest the exact product, where float32 evaluation rounded at every op. (EfficientNet-Lite0
    bias-only in eval mode, 3 SGD steps, float32 cpu vs the -O0 program's float64 run: the update
    is 1.5e-6 off with float32 folding, 1.3e-6 with this; -O0 itself 1.2e-6.)"""
    return arr.astype(np.float64) if arr.dtype in (np.float32, np.float16) else arr


def fold(g: Graph, bake_weights: bool) -> str:
    assigned = set(g.assigns)
    known: dict[int, np.ndarray] = {}
    origin: dict[int, frozenset] = {}  # id(value) -> the params/buffers its value was computed from
    for name, v in g.sources.items():
        if v.kind == "const" or (v.kind in ("param", "buffer") and not v.trainable and name not in assigned):
            known[id(v)] = _exact(g.initial[name])
            origin[id(v)] = frozenset([name]) if v.kind != "const" else frozenset()
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
        param_bytes = max((v.type.nbytes for v in n.inputs if v.kind in ("param", "buffer")), default=0)
        if not bake_weights and out_bytes > FOLD_LIMIT_BYTES and out_bytes >= param_bytes > 0:
            continue  # a transformed weight: baking it would store the weight twice (see above)
        if out_bytes > FOLD_LIMIT_BYTES and out_bytes > sum(v.type.nbytes for v in n.inputs):
            continue  # e.g. an expand of a frozen vector: cheaper to compute than to store
        results = run_reference(n.op, [known[id(v)] for v in n.inputs], n.attrs)
        for o, r in zip(n.outputs, results):
            known[id(o)] = np.asarray(r)
            origin[id(o)] = frozenset().union(*(origin[id(v)] for v in n.inputs))
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
                    g.baked |= origin[id(v)]
                n.inputs[k] = consts[id(v)]
    return f"{folded} nodes evaluated at compile time, {len(consts)} consts ({folded_bytes / 2**20:.2f} MiB)"
