"""Epilogue fusion: an activation becomes part of the GEMM-based kernel next to it.

Forward — the bias and the activation are applied where the conv/linear GEMM writes its output:

    z = conv2d(x, W, b);  y = hardtanh(z, 0, 6)    =>   y = conv2d(x, W, b) {activation="hardtanh", act_min=0, act_max=6}

Batch norm the same way, where the normalising loop writes y (train-mode BN + ReLU6 is
MobileNetV2's every block: one pass over the tensor instead of two, and the pre-activation z is
never stored):

    z, mean, invstd, rm, rv = batch_norm_train(x, ...);  y = relu(z)
        =>  y, mean, invstd, rm, rv = batch_norm_train(x, ...) {activation="relu"}

Backward — the activation derivative of the layer *below* is applied where the grad-input kernel
writes dx, instead of in a separate pass over dx:

    dx = conv2d_grad_input(dy, W);  dz = mask_grad(dx, bits)          =>  dz = conv2d_grad_input(dy, W, bits)
    dx = matmul(dy, W);             dz = relu_backward(dx, y)         =>  dz = matmul(dy, W, y) {mask_min=0}

Conditions: the intermediate (z, dx) has no other reader and is not a graph output; the kernel
has no epilogue yet. Activations supported by the kernels: relu, hardtanh (covers ReLU6).

Assumes: runs after autodiff and after compress_activations (so it sees mask_grad where masks
were made). The fused forward op keeps y (the activation's output) as its output name.
"""

from __future__ import annotations

from ..ir import Graph, NameGen
from ..rewrite import EmitBefore, is_pinned, remove_node, replace_uses

FORWARD_KERNELS = ("conv2d", "linear")
NORM_KERNELS = ("batch_norm_train", "batch_norm_infer")  # activation on output 0, other outputs kept
GRAD_INPUT_KERNELS = ("conv2d_grad_input", "matmul")
ACTIVATIONS = ("relu", "hardtanh")
DERIVATIVES = ("mask_grad", "relu_backward", "hardtanh_backward")


def _activation_attrs(act) -> dict:
    if act.op == "relu":
        return {"activation": "relu"}
    return {"activation": "hardtanh", "act_min": float(act.attrs["min"]), "act_max": float(act.attrs["max"])}


def _mask_attrs(der) -> dict:
    if der.op == "relu_backward":
        return {"mask_min": 0.0}
    if der.op == "hardtanh_backward":
        return {"mask_min": float(der.attrs["min"]), "mask_max": float(der.attrs["max"])}
    return {}  # u8 bits carry their own meaning


def _replace(g, names, old_node, op, inputs, attrs, source):
    out = old_node.outputs[0]
    with EmitBefore(g, old_node, names) as b:
        new = b.emit1(op, inputs, attrs, source=source)
    replace_uses(g, out, new)
    remove_node(g, old_node)
    new.name = out.name
    return new


def _fuse_into_norm(g, norm, act) -> None:
    """norm's output 0 becomes act's output: same node, same place, the clamp in its attrs."""
    z, y = norm.outputs[0], act.outputs[0]
    norm.attrs = {**norm.attrs, **_activation_attrs(act)}
    replace_uses(g, y, z)
    remove_node(g, act)
    z.name = y.name


def run(g: Graph, ctx=None) -> str:
    names = NameGen(g)
    forward = backward = 0
    users = g.users()
    for act in [n for n in g.nodes if n.op in ACTIVATIONS]:
        z = act.inputs[0]
        layer = z.producer
        if layer is None or layer.op not in FORWARD_KERNELS + NORM_KERNELS or layer.attrs.get("activation"):
            continue
        if len(users.get(id(z), [])) != 1 or is_pinned(g, z) or z.dtype != "f32":
            continue
        if layer.op in NORM_KERNELS:
            if layer.outputs[0] is not z:
                continue
            _fuse_into_norm(g, layer, act)
        else:
            _replace(g, names, act, layer.op, list(layer.inputs), {**layer.attrs, **_activation_attrs(act)},
                     layer.source)
            remove_node(g, layer)
        forward += 1
        users = g.users()
    for der in [n for n in g.nodes if n.op in DERIVATIVES]:
        dx, mask = der.inputs
        gi = dx.producer
        if gi is None or gi.op not in GRAD_INPUT_KERNELS or len(gi.inputs) != 2:
            continue
        if len(users.get(id(dx), [])) != 1 or is_pinned(g, dx) or dx.dtype != "f32":
            continue
        if gi.op == "matmul" and "weight_grad" in gi.tags:
            continue
        _replace(g, names, der, gi.op, list(gi.inputs) + [mask], {**gi.attrs, **_mask_attrs(der)}, gi.source)
        remove_node(g, gi)
        backward += 1
        users = g.users()
    if not forward and not backward:
        return "no activation next to a conv/linear/batch-norm/grad-input kernel"
    return f"{forward} activations fused into conv/linear/batch norm, {backward} derivatives into grad-input kernels"
