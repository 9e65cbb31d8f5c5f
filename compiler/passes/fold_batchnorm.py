"""BatchNorm folding: inference-mode BatchNorm after a convolution (or a 2-d linear) becomes part of
that layer's weights and bias.

    z = conv2d(x, W, cb);  y = batch_norm_infer(z, gamma, beta, mean, var)
 => y = conv2d(x, W * s[:, None, None, None], beta + (cb - mean) * s)     s = gamma / sqrt(var + eps)

One pass over the activation instead of two, and z is never stored. Conditions: W, gamma and the
running statistics are frozen (no gradient, no assignment — eval-mode BN; train-mode BN normalises
with batch statistics and cannot fold), z has no reader but the BatchNorm. beta and the conv bias
may be trainable: the folded bias is then computed each step from them (an [O] vector), and their
gradients, which autodiff already wrote as sums over dy, are untouched — the rewrite changes only
how y is computed, never dy. The frozen arithmetic (s, W*s, mean*s) is left as IR ops for
fold_constants to evaluate at compile time.

The backward folds the same way. Autodiff wrote the BatchNorm's input gradient as dz = dy * s
(a per-channel multiply over the whole activation, _bn_infer_grad) feeding the conv's input
gradient; since conv2d_grad_input(dy * s, W) = conv2d_grad_input(dy, W * s), each such reader
takes dy and the folded weight instead, and the multiply dies (dce) when nothing else reads dz.

Assumes: runs after autodiff (backward nodes read dy, not z, when gamma is frozen).
"""

from __future__ import annotations

from ..ir import Graph, NameGen, Node, Value
from ..rewrite import EmitBefore, is_frozen, is_pinned, remove_node, replace_uses
from .fold_constants import FOLD_LIMIT_BYTES

FOLDABLE_PRODUCERS = ("conv2d", "linear")


def _scale_times_grad(m: Node, gamma: Value, var: Value) -> bool:
    """m = mul(dy, reshape(mul(gamma, rsqrt(add(var, eps))))): this BatchNorm's input gradient."""
    if m.op != "mul" or len(m.inputs) != 2:
        return False
    r = m.inputs[1].producer
    s = r.inputs[0].producer if r is not None and r.op == "reshape" else None
    if s is None or s.op != "mul" or s.inputs[0] is not gamma:
        return False
    inv = s.inputs[1].producer
    add = inv.inputs[0].producer if inv is not None and inv.op == "rsqrt" else None
    return add is not None and add.op == "add" and add.inputs[0] is var


def _fold_input_gradient(g: Graph, users: dict, names: NameGen, gamma: Value, var: Value, w: Value,
                         w_folded: Value) -> int:
    """conv2d_grad_input(dy * s, W) -> conv2d_grad_input(dy, W * s) for every such reader of the
    BatchNorm's input gradient whose weight is no bigger than the gradient (the late layers of a
    network, with small maps and wide weights, keep dy * s: scaling their weight would cost more);
    returns how many readers changed. W * s is emitted again right before the reader rather than
    shared with the forward's folded weight: a value read in both forward and backward lives all
    step (or is baked as a second copy of the weights), a fresh one only while it is read, and
    fold_constants then decides, as for the forward's, whether to bake it. A weight small enough
    that fold_constants always bakes it shares the forward's folded constant instead (one copy)."""
    changed = 0
    for m in [n for n in g.nodes if _scale_times_grad(n, gamma, var)]:
        dz = m.outputs[0]
        if w.type.numel > dz.type.numel:
            continue
        scale = m.inputs[1].producer.inputs[0]  # mul(gamma, invstd), [O]
        for u in users.get(id(dz), []):
            if u.op == "conv2d_grad_input" and u.inputs[0] is dz and u.inputs[1] is w:
                w_scaled = w_folded
                if w.type.nbytes > FOLD_LIMIT_BYTES:
                    with EmitBefore(g, u, names) as b:
                        view = [w.shape[0]] + [1] * (w.rank - 1)
                        w_scaled = b.emit1("mul", [w, b.emit1("reshape", [scale], {"shape": view})])
                u.inputs = [m.inputs[0], w_scaled] + list(u.inputs[2:])
                changed += 1
    return changed


def run(g: Graph, ctx=None) -> str:
    users = g.users()
    names = NameGen(g)
    folded = backward = 0
    for bn in [n for n in g.nodes if n.op == "batch_norm_infer"]:
        z, gamma, beta, mean, var = bn.inputs
        layer = z.producer
        if layer is None or layer.op not in FOLDABLE_PRODUCERS or layer.attrs.get("activation"):
            continue
        if len(users.get(id(z), [])) != 1 or is_pinned(g, z):
            continue
        w = layer.inputs[1]
        if not all(is_frozen(g, v) for v in (w, gamma, mean, var)):
            continue
        if layer.op == "linear" and z.rank != 2:
            continue  # BatchNorm1d normalises dim 1; a 3-d linear output has features last
        y = bn.outputs[0]
        out_channels = w.shape[0]
        view = [out_channels] + [1] * (w.rank - 1)
        with EmitBefore(g, bn, names) as b:
            eps = b.const(float(bn.attrs.get("eps", 1e-5)), var.dtype)
            scale = b.emit1("mul", [gamma, b.emit1("rsqrt", [b.emit1("add", [var, eps])])])
            w_folded = b.emit1("mul", [w, b.emit1("reshape", [scale], {"shape": view})])
            if len(layer.inputs) == 3:  # beta + (cb - mean) * s
                shift = b.emit1("add", [beta, b.emit1("mul", [b.emit1("sub", [layer.inputs[2], mean]), scale])])
            else:  # beta - mean * s
                shift = b.emit1("sub", [beta, b.emit1("mul", [mean, scale])])
            new_y = b.emit1(layer.op, [layer.inputs[0], w_folded, shift], dict(layer.attrs), source=layer.source)
        replace_uses(g, y, new_y)
        remove_node(g, bn)
        new_y.name = y.name
        folded += 1
        if layer.op == "conv2d":
            backward += _fold_input_gradient(g, g.users(), names, gamma, var, w, w_folded)
        users = g.users()
    if not folded:
        return "no foldable inference-mode BatchNorm"
    return f"{folded} BatchNorms folded" + (f", {backward} input gradients with them" if backward else "")
