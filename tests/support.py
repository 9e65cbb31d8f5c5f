"""Helpers shared by the whole-model tests: run the same fine-tuning in PyTorch and in edgetune.

`torch_reference_run` mirrors a compiled program in PyTorch: the same params are trainable
(read from the program, so the spec under test decides), the same torch.optim optimizer
trains them on the same batches. Tests then compare every parameter and buffer.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

import edgetune as et


def torch_optimizer(opt, params):
    if isinstance(opt, et.optim.SGD):
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=opt.dampening,
                               weight_decay=opt.weight_decay, nesterov=opt.nesterov, foreach=False)
    return torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay,
                             foreach=False)


def torch_loss(loss, out, target):
    if loss == "cross_entropy":
        if out.dim() > 2 and target.shape == out.shape[:-1]:  # language-model layout, classes last
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
        return F.cross_entropy(out, target)
    if loss == "mse":
        return F.mse_loss(out, target)
    return loss(out, target)


def torch_reference_run(model, prog, batches, loss="cross_entropy"):
    """Train a deep copy of `model` like `prog` does; returns (losses, state_dict as numpy)."""
    model = copy.deepcopy(model)
    trainable = set(prog.trainable_names)
    aliases = prog.graph.aliases
    params = []
    for name, p in model.named_parameters(remove_duplicate=False):
        canonical = aliases.get(name, name)
        p.requires_grad_(canonical in trainable)
    for name, p in model.named_parameters():
        if p.requires_grad:
            params.append(p)
    opt = torch_optimizer(prog.optimizer, params)
    losses = []
    for inputs, target in batches:
        opt.zero_grad()
        out = model(*inputs)
        value = torch_loss(loss, out, target)
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    return losses, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def edgetune_run(prog, batches, compute_dtype=None, backend="reference"):
    sess = et.Session(prog, backend=backend, compute_dtype=compute_dtype)
    losses = [sess.step(*inputs, target) for inputs, target in batches]
    return losses, sess.state_dict(), sess


def assert_training_matches_torch(model, prog, batches, loss="cross_entropy", rtol=1e-4, atol=1e-6):
    """Run both sides and compare losses and every state_dict entry."""
    ours, ours_state, _ = edgetune_run(prog, batches)
    theirs, their_state = torch_reference_run(model, prog, batches, loss=loss)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for k in their_state:
        np.testing.assert_allclose(ours_state[k], their_state[k], rtol=rtol, atol=atol, err_msg=k)


# ---- structural graph comparison ------------------------------------------------------------------
def _graph_of(g):
    return getattr(g, "graph", g)  # a Program or a Graph


def _attrs_equal(x, y) -> bool:
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_attrs_equal(p, q) for p, q in zip(x, y))
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True  # nan
    return isinstance(x, bool) == isinstance(y, bool) and x == y  # True is not 1


def assert_graph_equal(a, b, sources: bool = False, const_data: bool = True) -> None:
    """Assert that graphs (or Programs) `a` and `b` are the same program up to value names.

    Values are matched by definition, not by name: model inputs by position, consts in their
    order of definition, node outputs by (node position, output position). Params, buffers and
    optimizer states are matched by name (their state_dict / state names are part of the
    program), as are aliases, output keys and assignment targets. Compared: the graph name, every
    source's kind, type and trainable flag (and const data unless const_data=False), each node's
    op, section, attrs, kernel, output types and input wiring, the outputs and the assignments;
    node sources ("models.py:12 conv1") only with sources=True. The first difference is reported
    with both sides' names, e.g. "node 3 (conv2d -> %t4 vs %b): input 1 is %w vs %c0".
    """
    a, b = _graph_of(a), _graph_of(b)
    where = f"graph {a.name!r} vs {b.name!r}"
    assert a.name == b.name, f"{where}: names differ"
    mapping: dict[int, object] = {}  # id(value in a) -> value in b

    def same_type(va, vb, what):
        assert va.type == vb.type, f"{what}: %{va.name}: {va.type} vs %{vb.name}: {vb.type}"

    assert len(a.inputs) == len(b.inputs), f"inputs: {[v.name for v in a.inputs]} vs {[v.name for v in b.inputs]}"
    for i, (va, vb) in enumerate(zip(a.inputs, b.inputs)):
        same_type(va, vb, f"input {i}")
        mapping[id(va)] = vb

    named_a = {k: v for k, v in a.sources.items() if v.kind != "const"}
    named_b = {k: v for k, v in b.sources.items() if v.kind != "const"}
    assert sorted(named_a) == sorted(named_b), (
        f"params/buffers/states: only in a {sorted(set(named_a) - set(named_b))}, "
        f"only in b {sorted(set(named_b) - set(named_a))}")
    for name, va in named_a.items():
        vb = named_b[name]
        assert (va.kind, va.trainable) == (vb.kind, vb.trainable), \
            f"%{name}: {va.kind}{' trainable' * va.trainable} vs {vb.kind}{' trainable' * vb.trainable}"
        same_type(va, vb, va.kind)
        mapping[id(va)] = vb
    consts_a = [v for v in a.sources.values() if v.kind == "const"]
    consts_b = [v for v in b.sources.values() if v.kind == "const"]
    assert len(consts_a) == len(consts_b), \
        f"consts: {[v.name for v in consts_a]} vs {[v.name for v in consts_b]}"
    for i, (va, vb) in enumerate(zip(consts_a, consts_b)):
        same_type(va, vb, f"const {i}")
        if const_data and va.name in a.initial and vb.name in b.initial:
            assert np.array_equal(a.initial[va.name], b.initial[vb.name], equal_nan=True), \
                f"const {i}: data of %{va.name} vs %{vb.name} differ"
        mapping[id(va)] = vb
    assert a.aliases == b.aliases, f"aliases: {a.aliases} vs {b.aliases}"

    def wired(va, vb) -> bool:
        return mapping.get(id(va)) is vb

    assert len(a.nodes) == len(b.nodes), (
        f"{len(a.nodes)} vs {len(b.nodes)} nodes: {[n.op for n in a.nodes]} vs {[n.op for n in b.nodes]}")
    for i, (na, nb) in enumerate(zip(a.nodes, b.nodes)):
        what = f"node {i} ({na.op} -> %{na.outputs[0].name if na.outputs else '?'} vs " \
               f"{nb.op} -> %{nb.outputs[0].name if nb.outputs else '?'})"
        assert (na.op, na.section, na.kernel) == (nb.op, nb.section, nb.kernel), \
            f"{what}: op/section/kernel {na.op}/{na.section}/{na.kernel} vs {nb.op}/{nb.section}/{nb.kernel}"
        assert sorted(na.attrs) == sorted(nb.attrs) and all(_attrs_equal(na.attrs[k], nb.attrs[k]) for k in na.attrs), \
            f"{what}: attrs {na.attrs} vs {nb.attrs}"
        if sources:
            assert na.source == nb.source, f"{what}: source {na.source!r} vs {nb.source!r}"
        assert len(na.inputs) == len(nb.inputs), f"{what}: {len(na.inputs)} vs {len(nb.inputs)} inputs"
        for j, (va, vb) in enumerate(zip(na.inputs, nb.inputs)):
            assert wired(va, vb), f"{what}: input {j} is %{va.name} vs %{vb.name}"
        assert len(na.outputs) == len(nb.outputs), f"{what}: {len(na.outputs)} vs {len(nb.outputs)} outputs"
        for j, (va, vb) in enumerate(zip(na.outputs, nb.outputs)):
            same_type(va, vb, f"{what}: output {j}")
            mapping[id(va)] = vb

    assert list(a.outputs) == list(b.outputs), f"output keys: {list(a.outputs)} vs {list(b.outputs)}"
    for key in a.outputs:
        assert wired(a.outputs[key], b.outputs[key]), \
            f"output {key} = %{a.outputs[key].name} vs %{b.outputs[key].name}"
    assert sorted(a.assigns) == sorted(b.assigns), f"assigns: {sorted(a.assigns)} vs {sorted(b.assigns)}"
    for name in a.assigns:
        assert wired(a.assigns[name], b.assigns[name]), \
            f"assign %{name} <- %{a.assigns[name].name} vs %{b.assigns[name].name}"
