"""Layout planning: the regions of a CNN whose kernels run faster channels-last are stored NHWC.

Frontends give every 4-d activation PyTorch's NCHW order. Two kernel families prefer the channel
last (ops/layout.py): a 1x1 stride-1 convolution is then ONE GEMM over N*H*W rows, [NHW, C] @
[C, O], instead of a GEMM per image over C x H*W (on a network's late 7x7 / 4x4 / 1x1 maps a
matrix-vector product), and depthwise convolution and batch norm vectorise over contiguous
channels instead of along short rows. Element-wise ops do not care, as long as all of their
operands share one order. So the pass partitions the joint (forward + backward) graph into
regions and stores a region NHWC when it pays:

  1. Regions. Each node that can run in either layout ties its 4-d activation operands together
     (union-find): the conv ops on a geometry the NHWC kernels run (`nhwc_geometry`: 1x1
     stride-1, or depthwise with one filter per channel) tie x / y / dy / dx (and an f32 mask);
     the batch-norm ops x / y / dy / dx; element-wise ops (the fusable ops, fused_elementwise,
     mask_grad) all same-shaped operands (scalars and per-image [N,1,1,1] factors read the same
     in either layout and stay as they are); activation_mask ties its input to the
     bit mask it writes, and every reader of the bits to it, since bit i is element i in the
     order the tensor is stored. Every other node that reads or writes a region's value (a 3x3
     conv, pooling, a reshape, the loss) is outside it.
  2. Which regions go NHWC. A region is feasible when nothing outside it reads or writes one of
     its bit masks (bits cannot be permuted), none of its values is a graph output or a state
     assignment, and the target's kernels accept every conv / batch-norm node of it in NHWC
     (the same check the runtime makes when it loads the plan). It is chosen when it holds at
     least one convolution and its borders are cheap: the elements permuted at its borders are
     at most BORDER_FRACTION of the elements its convolutions read and write.
  3. Rewrite. The region's conv / batch-norm nodes get layout="nhwc"; the types of the values its
     nodes write become [N, H, W, C] (fused_elementwise's shape attr too); a value that enters
     from outside (the stem conv's output, a graph input) gets one permute to NHWC just before
     its first reader in the region, and a value that leaves (the head's global pooling reads
     the last activation) one permute back before its first reader outside. Those permutes are
     ordinary nodes: the memory planner places them like any tensor.

MobileNetV2 / EfficientNet-Lite become one region from the stem's output to the head's pooling
(two permutes forward, one backward); ResNet's blocks hold 3x3 convolutions, which stay NCHW,
and their 1x1 downsample convs have stride 2, so ResNet keeps NCHW (no region has a conv).

Runs after the fusions (so activation masks, fused epilogues and fused_elementwise exist and are
tied as they will run) and before reorder_updates / schedule_memory / select_kernels, which then
order and pick kernels for the final graph. Backends without channels-last kernels refuse the
layout in their checks, and the pass then leaves every region NCHW.
"""

from __future__ import annotations

from ..ir import Graph, NameGen, Node, TensorType, Value
from ..ops import fused
from ..ops.conv import nhwc_geometry
from ..ops.layout import NCHW_TO_NHWC, NHWC_TO_NCHW, nhwc_attrs
from ..ops.registry import infer_types
from ..rewrite import EmitBefore, is_pinned
from ..target import BuiltinTarget, KernelRejected

# A region whose border permutes move more than this fraction of the elements its convolutions
# read and write stays NCHW (each permute reads and writes its tensor once, about what a
# depthwise conv or a batch norm costs; MobileNetV2 224 has ~0.3% at its borders).
BORDER_FRACTION = 0.25

CONV_OPS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")
NORM_OPS = ("batch_norm_train", "batch_norm_infer", "batch_norm_backward")
LAYOUT_OPS = CONV_OPS + NORM_OPS  # the ops with a layout attr
ELEMENTWISE_OPS = fused.FUSABLE_OPS | {"fused_elementwise", "mask_grad"}


def _is_act(v: Value) -> bool:
    return v.type.rank == 4 and v.type.is_float


def _is_bits(v: Value) -> bool:
    return v.type.dtype == "u8" and v.type.rank == 1


def _layout_free(v: Value) -> bool:
    """A broadcast operand that reads the same in either layout: a scalar, or one value per image
    ([N,1,1,1]: drop-connect's per-sample factor in EfficientNet's residuals)."""
    return v.type.numel == 1 or (v.type.rank == 4 and v.shape[1:] == (1, 1, 1))


def _tied_slots(node: Node) -> tuple[list[int], list[int]] | None:
    """(input slots, output slots) of the values `node` ties to one layout; None when the node
    runs in NCHW only."""
    op, ins = node.op, node.inputs
    if "layout" in node.attrs:
        return None  # placed already (by hand or an earlier run): left as it is
    if op == "conv2d":
        ok = _is_act(ins[0]) and nhwc_geometry(ins[1].shape, node.attrs)
        return ([0], [0]) if ok else None
    if op == "conv2d_grad_input":
        ok = _is_act(ins[0]) and nhwc_geometry(ins[1].shape, node.attrs)
        return ([0] + ([2] if len(ins) == 3 else []), [0]) if ok else None
    if op == "conv2d_grad_weight":
        ok = _is_act(ins[0]) and nhwc_geometry(node.attrs["weight_shape"], node.attrs)
        return ([0, 1], []) if ok else None
    if op in ("batch_norm_train", "batch_norm_infer"):
        return ([0], [0]) if _is_act(ins[0]) else None
    if op == "batch_norm_backward":
        return ([0, 1], [0] if node.attrs["output_mask"][0] else []) if _is_act(ins[1]) else None
    if op == "activation_mask":
        return ([0], [0]) if _is_act(ins[0]) else None
    if op in ELEMENTWISE_OPS:
        shape = node.outputs[0].shape
        if len(shape) != 4 or any(o.shape != shape for o in node.outputs):
            return None
        tied = []
        for i, v in enumerate(ins):
            if v.shape == shape or (op == "mask_grad" and i == 1):
                tied.append(i)
            elif not _layout_free(v):
                return None  # a per-channel [C,1,1] operand would need its own reshape
        return tied, list(range(len(node.outputs)))
    return None


class _Regions:
    """Union-find over values (by id)."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, k: int) -> int:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _accepts_nhwc(target, node: Node) -> bool:
    """Whether the target's default kernel for node's op runs it channels-last."""
    trial = Node(node.op, [Value(v.name, v.type) for v in node.inputs], [Value(v.name, v.type) for v in node.outputs],
                 nhwc_attrs(node.attrs), node.section)
    for v in _tied_values(trial, _tied_slots(node)):
        v.type = _nhwc_type(v.type)
    try:
        target.workspace_bytes(node.op, trial)
    except KernelRejected:
        return False
    return True


def _tied_values(node: Node, slots) -> list[Value]:
    ins, outs = slots
    return [node.inputs[i] for i in ins] + [node.outputs[i] for i in outs]


def _nhwc_type(t: TensorType) -> TensorType:
    return TensorType(tuple(t.shape[i] for i in NCHW_TO_NHWC), t.dtype) if t.rank == 4 else t


def run(g: Graph, ctx) -> str:
    if isinstance(ctx.target, BuiltinTarget):
        # a plan for a backend that cannot describe its kernels here must run on any of them
        return f"all NCHW: the {ctx.target.name} target describes no kernels here"
    slots = {id(n): s for n in g.nodes if (s := _tied_slots(n)) is not None}
    regions = _Regions()
    values: dict[int, Value] = {}
    for n in g.nodes:
        if id(n) not in slots:
            continue
        tied = _tied_values(n, slots[id(n)])
        for v in tied:
            values[id(v)] = v
            regions.union(id(v), id(tied[0]))
    # readers / writers of each value, and whether each is a tied (in-region) use
    uses: dict[int, list[tuple[Node, int, bool]]] = {}
    for n in g.nodes:
        tied_in = set(slots[id(n)][0]) if id(n) in slots else set()
        for i, v in enumerate(n.inputs):
            if id(v) in values:
                uses.setdefault(id(v), []).append((n, i, i in tied_in))
    members: dict[int, list[Value]] = {}
    for k, v in values.items():
        members.setdefault(regions.find(k), []).append(v)
    region_nodes: dict[int, dict[int, Node]] = {}
    for n in g.nodes:
        if id(n) in slots:
            root = regions.find(id(_tied_values(n, slots[id(n)])[0]))
            region_nodes.setdefault(root, {})[id(n)] = n
    chosen, notes = [], []
    for root, vals in members.items():
        nodes = region_nodes[root]
        verdict = _verdict(g, ctx, vals, nodes, slots, uses)
        if verdict is None:
            chosen.append((vals, nodes))
        elif verdict != "no convolution":
            notes.append(verdict)
    names = NameGen(g)
    convs = 0
    for vals, nodes in chosen:
        convs += _rewrite(g, names, vals, nodes, slots, uses)
    msg = f"{len(chosen)} region(s) NHWC, {convs} conv node(s)"
    return msg + (f"; kept NCHW: {', '.join(sorted(set(notes)))}" if notes else "")


def _enters(v: Value, nodes: dict[int, Node]) -> bool:
    """v is written outside the region (or is a graph input / source)."""
    return v.producer is None or id(v.producer) not in nodes


def _verdict(g: Graph, ctx, vals, nodes, slots, uses) -> str | None:
    """None when the region goes NHWC, else why not."""
    conv_nodes = [n for n in nodes.values() if n.op in CONV_OPS]
    if not conv_nodes:
        return "no convolution"
    for v in vals:
        if is_pinned(g, v):
            return "a graph output inside"
        outside = [u for u in uses.get(id(v), []) if not u[2]]
        if _is_bits(v) and (outside or _enters(v, nodes)):
            return "a bit mask read or written outside"
    for n in nodes.values():
        if n.op in LAYOUT_OPS and not _accepts_nhwc(ctx.target, n):
            return f"target has no NHWC {n.op}"
    border = sum(v.type.numel for v in vals if not _is_bits(v) and
                 (_enters(v, nodes) or any(not u[2] for u in uses.get(id(v), []))))
    conv_traffic = sum(v.type.numel for n in conv_nodes for v in _tied_values(n, slots[id(n)]))
    if border > BORDER_FRACTION * conv_traffic:
        return f"borders move {border / max(conv_traffic, 1):.0%} of the convolutions' traffic"
    return None


def _rewrite(g: Graph, names: NameGen, vals, nodes, slots, uses) -> int:
    """Store the region NHWC; returns how many conv nodes it holds."""
    for n in nodes.values():
        if n.op in LAYOUT_OPS:
            n.attrs = nhwc_attrs(n.attrs)
        elif n.op == "fused_elementwise":
            n.attrs = {**n.attrs, "shape": list(_nhwc_type(n.outputs[0].type).shape)}
    for v in vals:
        if _is_bits(v):
            continue
        readers = uses.get(id(v), [])
        if _enters(v, nodes):  # one permute in, before the first reader in the region
            inside = [(n, i) for n, i, tied in readers if tied]
            with EmitBefore(g, inside[0][0], names) as b:
                v_nhwc = b.emit1("permute", [v], {"dims": list(NCHW_TO_NHWC)})
            for n, i in inside:
                n.inputs[i] = v_nhwc
        else:  # written in the region: stored NHWC; one permute back for readers outside
            v.type = _nhwc_type(v.type)
            outside = [(n, i) for n, i, tied in readers if not tied]
            if outside:
                with EmitBefore(g, outside[0][0], names) as b:
                    v_nchw = b.emit1("permute", [v], {"dims": list(NHWC_TO_NCHW)})
                for n, i in outside:
                    n.inputs[i] = v_nchw
    for n in nodes.values():  # every type the region's nodes write follows from their inputs again
        want = infer_types(n.op, [v.type for v in n.inputs], n.attrs)
        assert [o.type for o in n.outputs] == want, f"plan_layout: {n} re-infers as {want}"
    return sum(n.op in CONV_OPS for n in nodes.values())
