"""Strided matmul operands: `permute`/`reshape` copies around a matmul become views it reads or
writes in place (the matmul's lhs_/rhs_/out_ view attrs, compiler/ops/matmul.py).

Attention is the case that matters: per head, Q K^T and P V read Q/K/V as [B, H, T, D] out of
[B, T, H*D] projections, and the context goes back to [B, T, H*D] — in the frontend's graph a
reshape + permute copy per operand, and in the backward autodiff adds a transpose per product
(matmul's gradient rule) plus the permute/reshape chains back to [B, T, H*D]. PyTorch avoids
them with strided views; so does this pass:

    q4 = reshape(q, [B,T,H,D]); qh = permute(q4, [0,2,1,3])           (same for k -> kt = [B,H,D,T])
    s = matmul(qh, kt)                        =>  s = matmul(q, k) {lhs_shape=[B,H,T,D], lhs_strides=[T*H*D, D, H*D, 1],
                                                                    rhs_shape=[B,H,D,T], rhs_strides=[T*H*D, D, 1, H*D]}
    c = matmul(p, vh); c4 = permute(c, [0,2,1,3]); ctx = reshape(c4, [B,T,H*D])
                                              =>  ctx = matmul(p, v) {rhs_..., out_shape=[B,T,H*D], out_strides=[T*H*D, D, H*D, 1]}

Operands: a chain of reshape/permute from a value R to a matmul operand composes into one view of
R's row-major bytes (a reshape composes where PyTorch's `view` would: it only splits or merges
dims that are laid out together). It is folded when the view's matrix is row- or column-major
(a GEMM operand, transposed or not) and every value of the chain below R would die: each of its
readers is another folded matmul operand or a chain link that folds. R is the deepest value that
satisfies this, so no tensor outlives what it did before the pass (the arena peak never grows).

Outputs: a matmul without an output mask whose result is read only by a single-reader chain of
reshape/permute ending in F writes F directly (out_strides = the chain's inverse as a view of F),
where the product's matrices land row- or column-major in F. The chain's nodes are removed; F
keeps its name.

Runs after autodiff and the epilogue fusions (a masked matmul keeps its plain output), before
kernel selection. Every backend implements the view attrs (cpu: kernels/cpu/matmul_views.*,
cuda: kernels/cuda/matmul.cu) and the reference executor (the op's numpy reference).
"""

from __future__ import annotations

from ..analysis.memory_plan import plan_memory
from ..ir import Graph, Value
from ..ops.matmul import covers_once, matrix_ok
from ..rewrite import is_pinned, remove_node
from .dce import live_nodes

VIEW_OPS = ("reshape", "permute")


def contiguous(shape) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def reshape_strides(shape, strides, new_shape) -> list[int] | None:
    """Strides that show `new_shape` over the elements (shape, strides) shows, in the same
    row-major order, or None where that needs a copy (PyTorch's computeStride)."""
    shape, strides, new_shape = list(shape), list(strides), list(new_shape)
    numel = 1
    for d in shape:
        numel *= d
    if numel == 0:
        return contiguous(new_shape)
    if not shape or not new_shape:
        return None
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base = strides[-1]
    tensor_numel = view_numel = 1
    for td in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[td]
        if td == 0 or (shape[td - 1] != 1 and strides[td - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if td > 0:
                chunk_base = strides[td - 1]
                tensor_numel = view_numel = 1
    return new_strides if view_d == -1 else None


def _forward_view(node, shape, strides):
    """The view of node's output, given the view (shape, strides) of its input; None if no view."""
    if node.op == "permute":
        dims = node.attrs["dims"]
        return [shape[d] for d in dims], [strides[d] for d in dims]
    new_shape = list(node.outputs[0].shape)
    st = reshape_strides(shape, strides, new_shape)
    return None if st is None else (new_shape, st)


def _backward_view(node, shape, strides):
    """The view of node's input, given the view (shape, strides) of its output; None if no view."""
    if node.op == "permute":
        dims = node.attrs["dims"]
        inv = [0] * len(dims)
        for i, d in enumerate(dims):
            inv[d] = i
        return [shape[d] for d in inv], [strides[d] for d in inv]
    in_shape = list(node.inputs[0].shape)
    st = reshape_strides(shape, strides, in_shape)
    return None if st is None else (in_shape, st)


def _is_view(v: Value) -> bool:
    return v.producer is not None and v.producer.op in VIEW_OPS and v.dtype == "f32"


def _fold_outputs(g: Graph, users) -> int:
    folded = 0
    for node in list(g.nodes):
        if node.op != "matmul" or len(node.inputs) != 2 or "out_strides" in node.attrs:
            continue
        out = node.outputs[0]
        chain, v = [], out
        while True:
            rs = users.get(id(v), [])
            if len(rs) != 1 or rs[0].op not in VIEW_OPS or is_pinned(g, v):
                break
            chain.append(rs[0])
            v = rs[0].outputs[0]
        # the furthest chain end whose inverse is a GEMM-writable view of the product
        best = None
        for end in range(len(chain), 0, -1):
            F = chain[end - 1].outputs[0]
            view = (list(F.shape), contiguous(F.shape))
            for link in reversed(chain[:end]):
                view = _backward_view(link, *view)
                if view is None:
                    break
            if view is not None and list(view[0]) == list(out.shape) and matrix_ok(*view) \
                    and covers_once(view[0], view[1], F.type.numel):
                best = (end, view[1])
                break
        if best is None:
            continue
        end, strides = best
        F = chain[end - 1].outputs[0]
        for link in chain[:end]:
            remove_node(g, link)
        node.outputs = [F]
        F.producer = node
        node.attrs["out_shape"] = list(F.shape)
        node.attrs["out_strides"] = list(strides)
        folded += 1
        users = g.users()
    return folded


def _fold_inputs(g: Graph) -> int:
    users = g.users()
    slots = [(n, i) for n in g.nodes if n.op == "matmul" for i in (0, 1)
             if ("lhs_strides", "rhs_strides")[i] not in n.attrs and _is_view(n.inputs[i])]

    def view_of(v: Value, absorbable: set[int]):
        """(root, shape, strides): v as a view of the deepest value below it that stays alive."""
        if not (id(v) in absorbable):
            return v, list(v.shape), contiguous(v.shape)
        p = v.producer
        below = view_of(p.inputs[0], absorbable)
        if below is None:
            return None
        view = _forward_view(p, below[1], below[2])
        return None if view is None else (below[0], view[0], view[1])

    # absorbable: view values (not pinned) whose every reader folds; start from all, drop until stable
    absorbable = {id(v) for n in g.nodes if n.op in VIEW_OPS for v in n.outputs if _is_view(v) and not is_pinned(g, v)}
    while True:
        ok_slots = set()
        for n, i in slots:
            got = view_of(n.inputs[i], absorbable) if id(n.inputs[i]) in absorbable else None
            if got is not None and got[0] is not n.inputs[i] and matrix_ok(got[1], got[2]):
                ok_slots.add((id(n), i))
        drop = set()
        for n in g.nodes:
            for v in n.outputs:
                if id(v) not in absorbable:
                    continue
                for r in users.get(id(v), []):
                    fine = (r.op == "matmul" and all((id(r), i) in ok_slots for i in (0, 1) if r.inputs[i] is v)
                            and not any(x is v for x in r.inputs[2:])) or \
                           (r.op in VIEW_OPS and id(r.outputs[0]) in absorbable)
                    if not fine:
                        drop.add(id(v))
                        break
        if not drop:
            break
        absorbable -= drop
    folded = 0
    for n, i in slots:
        if (id(n), i) not in ok_slots:
            continue
        root, shape, strides = view_of(n.inputs[i], absorbable)
        side = ("lhs", "rhs")[i]
        n.inputs[i] = root
        n.attrs[f"{side}_shape"] = list(shape)
        n.attrs[f"{side}_strides"] = list(strides)
        folded += 1
    return folded


def _snapshot(g: Graph):
    """What the folds change (node list, each node's inputs/outputs/attrs, value producers), to undo them."""
    nodes = list(g.nodes)
    fields = [(n, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in nodes]
    producers = [(v, v.producer) for n in nodes for v in n.outputs]

    def restore():
        g.nodes = nodes
        for n, ins, outs, attrs in fields:
            n.inputs, n.outputs, n.attrs = ins, outs, attrs
        for v, p in producers:
            v.producer = p
    return restore


def _planned_peak(g: Graph, workspace) -> int:
    """The arena peak once the copies a fold left dead are gone (what dce after the pass leaves)."""
    nodes, (g.nodes, _) = g.nodes, live_nodes(g)
    try:
        return plan_memory(g, workspace).arena_bytes
    finally:
        g.nodes = nodes


def run(g: Graph, ctx) -> str:
    if not any(n.op == "matmul" for n in g.nodes):
        return ""
    # Memory first: reading a view's root in place keeps the root alive until the product runs,
    # which can outlast the copy it replaces (MiniLM last-k: +0.7 MiB). Output folds, then input
    # folds, are each kept only if the planned arena peak stays at or below the pass's start.
    workspace = getattr(ctx, "workspace_bytes", None)
    peak = (lambda: _planned_peak(g, workspace)) if workspace is not None else (lambda: 0)
    kept, dropped = {}, []
    start = peak()
    for what, fold in (("outputs", lambda: _fold_outputs(g, g.users())), ("operands", lambda: _fold_inputs(g))):
        restore = _snapshot(g)
        count = fold()
        if count and peak() > start:
            restore()
            dropped.append(what)
        elif count:
            kept[what] = count
    if not kept and not dropped:
        return ""
    note = f"{kept.get('outputs', 0)} outputs, {kept.get('operands', 0)} operands read/written in place"
    return note + (f"; {' and '.join(dropped)} left as copies (the views would raise the planned peak)"
                   if dropped else "")
