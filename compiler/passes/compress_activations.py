"""Activation compression: keep for backward only what backward reads, in its smallest exact form.

relu_backward(dy, y) and hardtanh_backward(dy, y) (ReLU6 is hardtanh(0, 6)) read the forward
output y only to test min < y < max: one bit per element. When those are y's only backward
readers, the forward computes the bits right after y,

    bits = activation_mask(y, min, max)      u8[(numel + 7) / 8]
    ...  dx = mask_grad(dy, bits)            instead of hardtanh_backward(dy, y)

and y dies as soon as the forward is done with it: 32x less memory for that activation across
the whole forward/backward gap. Exact — the mask is the very comparison the backward op made.
When a weight gradient also reads y (the next layer is trainable) y is kept anyway and the mask
would only add bytes, so the pass leaves it alone.

Assumes: runs after autodiff; bounds come from the backward op's attrs (relu: min 0, no max).
"""

from __future__ import annotations

from ..ir import Graph, NameGen
from ..rewrite import EmitBefore, is_pinned, remove_node, replace_uses

MASKABLE_BACKWARD = ("relu_backward", "hardtanh_backward")


def _bounds(node) -> dict:
    if node.op == "relu_backward":
        return {"min": 0.0}
    return {"min": float(node.attrs["min"]), "max": float(node.attrs["max"])}


def run(g: Graph, ctx=None) -> str:
    users = g.users()
    names = NameGen(g)
    compressed = 0
    saved = 0
    done: set[int] = set()
    for node in list(g.nodes):
        if node.op not in MASKABLE_BACKWARD or node.section != "backward":
            continue
        y = node.inputs[1]
        if id(y) in done or y.producer is None or y.producer.section != "forward" or is_pinned(g, y):
            continue
        if y.dtype != "f32":
            continue
        backward_readers = [u for u in users.get(id(y), []) if u.section != "forward"]
        bounds = _bounds(node)
        if not all(u.op in MASKABLE_BACKWARD and _bounds(u) == bounds and u.inputs[1] is y
                   for u in backward_readers):
            continue  # y is kept for another backward reader: a mask would only add bytes
        producer = y.producer
        after = g.nodes[g.nodes.index(producer) + 1]
        with EmitBefore(g, after, names, section="forward") as b:
            bits = b.emit1("activation_mask", [y], bounds, source=producer.source)
        for u in backward_readers:
            with EmitBefore(g, u, names) as b:
                dx = b.emit1("mask_grad", [u.inputs[0], bits], source=u.source)
            replace_uses(g, u.outputs[0], dx)
            remove_node(g, u)
            dx.name = u.outputs[0].name
        done.add(id(y))
        compressed += 1
        saved += y.type.nbytes - bits.type.nbytes
        users = g.users()
    if not compressed:
        return "no activation stored only for its derivative"
    return f"{compressed} activations kept as bit masks ({saved / 2**20:.1f} MiB less kept for backward)"
