"""Memory planning: give every tensor of a program a region and a byte offset.

Regions (the Region enum of csrc/schema/plan.fbs):
  persistent  params, buffers, optimizer state, constants — live across steps, laid out one
              after another and initialised from the plan file;
  input       the step's user data (model inputs, target), one after another;
  arena       everything a step computes — activations, gradients, temporaries — plus each
              node's kernel workspace. Offsets come from lifetimes: a value lives from the node
              that produces it to the last node that reads it (graph outputs to the end), a
              workspace only during its node; two tensors may share bytes iff their lifetimes
              do not overlap. Placement is greedy (each tensor at the lowest offset that fits),
              largest first (TFLite's "greedy by size"), in two orders of equal sizes, keeping
              the smaller arena: earliest use first, and latest use first. The second fixes
              chains like EfficientNet's a -> b -> c -> d of 36.8, 36.8, 37.1, 37.4 MiB, each
              alive with the next: d, c, then a (earliest first) under d leaves b no gap above
              a and below c (111 MiB); d, c, b, a alternates them between two slots (74.5).

In-place state updates: an assign `param <- new` whose value comes from an elementwise node
(an optimizer update, the step counter's add) that is the last reader of the old value writes
straight into the state's storage, so the new value needs no arena bytes and no copy at the
end of the step. Every other assign (e.g. BatchNorm running statistics) becomes a copy the
runtime performs after the last node.

Assumes: nodes are in execution order (the verifier's order); kernels never write an output
that overlaps an input unless the op is listed in INPLACE_SAFE. The result's numbers are exactly
what the C++ runtime allocates at load (it checks every offset against them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PlanError
from ..ir import Graph, Value

ALIGNMENT = 64  # bytes: a cache line, and enough for any SIMD load

# Ops whose every output element depends only on the same element of each input of the
# output's shape, so writing the output over such an input is safe.
INPLACE_SAFE = frozenset({
    "sgd_update", "adamw_update", "add", "sub", "mul", "div", "neg",
})


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass
class Placement:
    region: str  # "persistent" | "arena" | "input"
    offset: int
    nbytes: int


@dataclass
class MemoryPlan:
    """Where every value lives, each node's workspace, and the state copies after a step."""

    placements: dict[int, Placement]  # id(value) -> placement
    workspaces: list[tuple[int, int]]  # per node: (arena offset, bytes); (0, 0) when none
    copies: list[tuple[Value, Value]]  # (new value, state source) copied after the last node
    inplace: list[str]  # state names updated in place
    persistent_bytes: int
    arena_bytes: int
    input_bytes: int
    # persistent bytes by kind, for the printed summary
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.persistent_bytes + self.arena_bytes + self.input_bytes

    def __str__(self) -> str:
        def mb(n):
            return f"{n / 2**20:.2f} MiB"

        k = self.by_kind
        return "\n".join([
            "memory plan (exactly what the runtime allocates at load):",
            f"  persistent {mb(self.persistent_bytes):>12}   params {mb(k.get('param', 0))}, "
            + (f"adapter params {mb(k['adapter'])}, " if "adapter" in k else "")
            + (f"adapter export copies {mb(k['export'])}, " if "export" in k else "")
            + f"buffers {mb(k.get('buffer', 0))}, optimizer state {mb(k.get('state', 0))}, "
            f"constants {mb(k.get('const', 0))}",
            f"  arena      {mb(self.arena_bytes):>12}   activations, gradients, workspaces (planned peak)",
            f"  inputs     {mb(self.input_bytes):>12}",
            f"  total      {mb(self.total_bytes):>12}   ({len(self.inplace)} state tensors updated in place, "
            f"{len(self.copies)} copied after the step)",
        ])

    def as_dict(self) -> dict:
        return {"persistent_bytes": self.persistent_bytes, "arena_bytes": self.arena_bytes,
                "input_bytes": self.input_bytes, "total_bytes": self.total_bytes, **{
                    f"{k}_bytes": v for k, v in self.by_kind.items()}}


def _inplace_assigns(g: Graph) -> dict[int, Value]:
    """id(new value) -> state source it may be written over (see the module docstring)."""
    position = {id(n): i for i, n in enumerate(g.nodes)}
    last_read: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            last_read[id(v)] = i
    out: dict[int, Value] = {}
    for name, new in g.assigns.items():
        state = g.sources[name]
        p = new.producer
        if p is None or p.op not in INPLACE_SAFE or new.type != state.type:
            continue
        if id(new) in out or any(o is new for o in g.outputs.values()):
            continue
        i = position[id(p)]
        if last_read.get(id(state), -1) > i:
            continue  # someone reads the old value after the update
        if not any(v is state and v.type == new.type for v in p.inputs):
            continue  # elementwise safety holds only for an input of the output's own shape
        out[id(new)] = state
    return out


def _by_size(t) -> tuple:
    return (-t[2], t[0])


def _by_size_then_latest_use(t) -> tuple:
    return (-t[2], -t[0])


PLACEMENT_ORDERS = (_by_size, _by_size_then_latest_use)


def _greedy_by_size(intervals: list[tuple[int, int, int, object]]) -> tuple[dict[object, int], int]:
    """intervals: (first, last, nbytes, key). Returns key -> offset and the arena size: the best
    of the PLACEMENT_ORDERS (the first on a tie)."""
    best = None
    for order in PLACEMENT_ORDERS:
        offsets, peak = _place_greedy(sorted(intervals, key=order))
        if best is None or peak < best[1]:
            best = (offsets, peak)
    return best


def _place_greedy(order: list[tuple[int, int, int, object]]) -> tuple[dict[object, int], int]:
    """Each interval in turn at the lowest offset clear of those already placed that it overlaps."""
    placed: list[tuple[int, int, int, int]] = []  # (first, last, offset, end)
    offsets: dict[object, int] = {}
    peak = 0
    for first, last, nbytes, key in order:
        size = _align(max(nbytes, 1))
        busy = sorted((o, e) for f, l_, o, e in placed if not (l_ < first or last < f))
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = max(offset, e)
        placed.append((first, last, offset, offset + size))
        offsets[key] = offset
        peak = max(peak, offset + size)
    return offsets, peak


def adapter_sources(g: Graph) -> tuple[set[str], set[str]]:
    """(params the adapters added, export-only weights they keep), from the export table."""
    table = g.adapters
    if table is None:
        return set(), set()
    return set(table.drop_when_merged), set(table.hidden)


def plan_memory(g: Graph, workspace_bytes) -> MemoryPlan:
    """Plan `g`. `workspace_bytes(node) -> int` is the kernel's scratch request (asked from the
    runtime that will run the plan)."""
    placements: dict[int, Placement] = {}
    by_kind: dict[str, int] = {}

    adapter_params, export_only = adapter_sources(g)
    offset = 0
    for name, v in g.sources.items():
        if g.initial.get(name) is None:
            raise PlanError(f"source '{name}' ({v.kind}) has no initial value; cannot build a plan")
        placements[id(v)] = Placement("persistent", offset, v.type.nbytes)
        offset += _align(v.type.nbytes)
        kind = "adapter" if name in adapter_params else "export" if name in export_only else v.kind
        by_kind[kind] = by_kind.get(kind, 0) + v.type.nbytes
    persistent_bytes = offset

    offset = 0
    for v in g.inputs:
        placements[id(v)] = Placement("input", offset, v.type.nbytes)
        offset += _align(v.type.nbytes)
    input_bytes = offset

    inplace = _inplace_assigns(g)
    for new_id, state in inplace.items():
        placements[new_id] = placements[id(state)]

    n_nodes = len(g.nodes)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    values: dict[int, Value] = {}
    for i, node in enumerate(g.nodes):
        for v in node.outputs:
            if id(v) in placements:
                continue
            first[id(v)] = i
            last[id(v)] = i  # an unread output still needs bytes while its node runs
            values[id(v)] = v
        for v in node.inputs:
            if id(v) in first:
                last[id(v)] = i
    for v in list(g.outputs.values()) + list(g.assigns.values()):
        if id(v) in first:
            last[id(v)] = n_nodes  # read after the last node (by the caller or a state copy)

    intervals = [(first[k], last[k], values[k].type.nbytes, ("v", k)) for k in first]
    workspace_sizes = []
    for i, node in enumerate(g.nodes):
        ws = int(workspace_bytes(node))
        workspace_sizes.append(ws)
        if ws:
            intervals.append((i, i, ws, ("w", i)))
    offsets, arena_bytes = _greedy_by_size(intervals)
    for k in first:
        placements[k] = Placement("arena", offsets[("v", k)], values[k].type.nbytes)
    workspaces = [(offsets[("w", i)], ws) if ws else (0, 0) for i, ws in enumerate(workspace_sizes)]

    copies = [(new, g.sources[name]) for name, new in g.assigns.items() if id(new) not in inplace]
    return MemoryPlan(placements, workspaces, copies, [s.name for s in inplace.values()],
                      persistent_bytes, arena_bytes, input_bytes, by_kind)


def check_plan(g: Graph, plan: MemoryPlan) -> None:
    """Independent check of a plan: no two arena tensors with overlapping lifetimes overlap in
    bytes, and everything is inside its region. Used by the tests; cheap enough to run always."""
    n_nodes = len(g.nodes)
    life: dict[int, list[int]] = {}
    for i, node in enumerate(g.nodes):
        for v in node.outputs:
            p = plan.placements[id(v)]
            if p.region == "arena":
                life.setdefault(id(v), [i, i])
        for v in node.inputs:
            if id(v) in life:
                life[id(v)][1] = i
    for v in list(g.outputs.values()) + list(g.assigns.values()):
        if id(v) in life:
            life[id(v)][1] = n_nodes
    items = [(life[k][0], life[k][1], plan.placements[k].offset, plan.placements[k].offset + plan.placements[k].nbytes)
             for k in life]
    items += [(i, i, o, o + b) for i, (o, b) in enumerate(plan.workspaces) if b]
    for f, l_, o, e in items:
        if e > plan.arena_bytes or o % ALIGNMENT:
            raise PlanError(f"arena tensor [{o}, {e}) outside the arena of {plan.arena_bytes} bytes or misaligned")
    items.sort(key=lambda t: t[2])
    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            if items[b][2] >= items[a][3]:
                break
            fa, la, _, _ = items[a]
            fb, lb, _, _ = items[b]
            if not (la < fb or lb < fa):
                raise PlanError(f"arena tensors overlap in bytes and lifetime: {items[a]} and {items[b]}")
