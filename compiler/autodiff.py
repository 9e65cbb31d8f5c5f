"""Ahead-of-time reverse-mode autodiff that only ever builds the *sparse* backward graph.

    differentiate(graph, loss, wrt) -> {param name: gradient Value}

Two walks over the forward+loss nodes:

1. forward: `requires_grad` starts at the trainable params (`wrt`) and spreads to the float
   outputs of every differentiable op that reads one. Everything upstream of the first
   trainable param stays False — that is where backprop stops.
2. reverse: from d(loss)/d(loss) = 1, visit only nodes that have an output gradient *and* an
   input that requires one; call that op's gradient rule with `needs` = which inputs require
   grad. Rules emit only what is needed (no conv2d_grad_weight for a frozen weight, no
   conv2d_grad_input into the first layer), so pruning is by construction, not by a later DCE.

A node tagged "stop_gradient" passes no gradient (DoRA's weight norm, compiler/adapters/lora.py:
PEFT detaches it): its outputs never require one, so nothing upstream is differentiated through it.

A value read by several nodes (a residual, a tied weight) gets the sum of its gradients.
Backward nodes go in section "backward"; nodes producing a weight's gradient are tagged
"weight_grad" for summary().
"""

from __future__ import annotations

from .errors import IRError
from .ir import Graph, NameGen, Value
from .ops.registry import Builder, GradContext, get_op


def requires_grad_set(graph: Graph, wrt: list[Value]) -> set[int]:
    req = {id(v) for v in wrt}
    for node in graph.nodes:
        if node.section not in ("forward", "loss"):
            continue
        if "stop_gradient" in node.tags:
            continue
        if get_op(node.op).differentiable and any(id(v) in req for v in node.inputs):
            req.update(id(o) for o in node.outputs if o.type.is_float)
    return req


def differentiate(graph: Graph, loss: Value, wrt: list[Value], names: NameGen | None = None) -> dict[str, Value]:
    if loss.type.shape != ():
        raise IRError(f"loss %{loss.name} must be a scalar, got {loss.type}")
    req = requires_grad_set(graph, wrt)
    b = Builder(graph, "backward", names)
    grads: dict[int, Value] = {id(loss): b.const(1.0, loss.dtype)}
    forward = [n for n in graph.nodes if n.section in ("forward", "loss")]
    for node in reversed(forward):
        douts = [grads.get(id(o)) for o in node.outputs]
        if all(d is None for d in douts):
            continue
        needs = [id(v) in req and v.type.is_float for v in node.inputs]
        if not any(needs):
            continue
        op = get_op(node.op)
        if not op.differentiable:
            raise IRError(f"gradient reaches non-differentiable op {node.op} producing %{node.outputs[0].name}")
        if douts[0] is None:
            raise IRError(f"gradient flows only through an auxiliary output of {node.op} "
                          f"(%{node.outputs[0].name}); not supported")
        results = op.grad(GradContext(node, douts, needs, b))
        if len(results) != len(node.inputs):
            raise IRError(f"gradient rule of {node.op} returned {len(results)} grads for {len(node.inputs)} inputs")
        for value, need, grad in zip(node.inputs, needs, results):
            if not need or grad is None:
                continue
            if grad.type != value.type:
                raise IRError(f"gradient rule of {node.op} gave {grad.type} for input %{value.name}: {value.type}")
            if value.kind == "param" and value.type.rank >= 2 and grad.producer is not None:
                grad.producer.tags.add("weight_grad")
            previous = grads.get(id(value))
            grads[id(value)] = grad if previous is None else b.emit1("add", [previous, grad])
    return {p.name: grads[id(p)] for p in wrt if id(p) in grads}
