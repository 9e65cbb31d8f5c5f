"""The op sweep: every registered op, every one of its samples.

For each (op, sample):
  * forward: the numpy reference against the op's `torch_fn`, and `infer` against the
    reference's actual output shapes/dtypes;
  * for differentiable ops, the gradient *as autodiff emits it* (a tiny IR graph: the op, then
    loss = sum(out0 * R), then `differentiate`, run by the ReferenceExecutor) against
      - torch autograd of `torch_fn` on the same loss, in float32, and
      - central finite differences of the float64 reference (the IR run in float64);
  * for differentiable ops, the gradient rule called with a one-hot `needs` emits nothing
    that the requested gradient does not use (sparse backprop by construction).

Backward ops (NOT_DIFFERENTIABLE) are covered by the forward check. Plus a few targeted
pruning tests (conv2d / linear / batch_norm / layer_norm with only one input needing grad).
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest
import torch

from edgetune.compiler.autodiff import differentiate
from edgetune.compiler.ir import Graph, TensorType, Value, dtype_of_numpy, numpy_dtype
from edgetune.compiler.ops import REGISTRY
from edgetune.compiler.ops.registry import Builder, GradContext, OpDef, Sample
from edgetune.runtime.reference import ReferenceExecutor

FWD_RTOL, FWD_ATOL = 1e-4, 1e-5  # float32 reference vs torch
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-5  # float32 IR gradient vs torch autograd
FD_RTOL, FD_ATOL, FD_EPS = 1e-5, 1e-6, 1e-6  # float64 IR gradient vs central differences


# ---------------------------------------------------------------------------------------------
# collecting the cases
# ---------------------------------------------------------------------------------------------
def _seed(*parts) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def _slug(note: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", note).strip("-").lower()


def _samples(op: OpDef) -> list[Sample]:
    return op.samples(np.random.default_rng(_seed("samples", op.name)))


def _cases():
    cases = []
    for name in sorted(REGISTRY):
        op = REGISTRY[name]
        for i, s in enumerate(_samples(op)):
            sid = f"{name}-{i}" + (f"-{_slug(s.note)}" if s.note else "")
            cases.append(pytest.param(name, i, s, id=sid))
    return cases


CASES = _cases()
GRAD_CASES = [c for c in CASES if REGISTRY[c.values[0]].differentiable]


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def _wrt_indices(s: Sample) -> list[int]:
    float_inputs = [i for i, x in enumerate(s.inputs) if _is_float(x)]
    if s.grad_inputs is None:
        return float_inputs
    return [i for i in s.grad_inputs if i in float_inputs]


def _torch_inputs(s: Sample, requires_grad=()) -> list[torch.Tensor]:
    out = []
    for i, x in enumerate(s.inputs):
        t = torch.from_numpy(np.array(x, copy=True))
        if i in requires_grad:
            t.requires_grad_(True)
        out.append(t)
    return out


def _torch_dtype_name(t: torch.Tensor) -> str:
    return dtype_of_numpy(torch.empty((), dtype=t.dtype).numpy().dtype)


# ---------------------------------------------------------------------------------------------
# 1. forward: reference vs torch, infer vs reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,idx,sample", CASES)
def test_forward(name, idx, sample):
    op = REGISTRY[name]
    before = [np.array(x, copy=True) for x in sample.inputs]
    ref = [np.asarray(r) for r in op.reference([np.asarray(x) for x in sample.inputs], dict(sample.attrs))]
    for b, x in zip(before, sample.inputs):  # references must not write into their inputs
        np.testing.assert_array_equal(b, x, err_msg=f"{name}: reference mutated an input")

    # infer agrees with what the reference actually produces
    types = op.infer([TensorType(np.shape(x), dtype_of_numpy(np.asarray(x).dtype)) for x in sample.inputs],
                     dict(sample.attrs))
    assert len(types) == len(ref), f"{name}: infer gives {len(types)} outputs, reference {len(ref)}"
    for k, (t, r) in enumerate(zip(types, ref)):
        assert t.shape == r.shape, f"{name} out{k}: infer {t.shape} vs reference {r.shape}"
        assert t.dtype == dtype_of_numpy(r.dtype), f"{name} out{k}: infer {t.dtype} vs reference {r.dtype}"

    if op.torch_fn is None:
        pytest.skip(f"{name} has no torch_fn")
    try:  # not under no_grad: some backward ops' torch_fn call torch.autograd themselves
        expect = op.torch_fn(_torch_inputs(sample), dict(sample.attrs))
    except NotImplementedError as e:
        pytest.skip(f"torch_fn: {e}")
    assert len(expect) == len(ref), f"{name}: torch gives {len(expect)} outputs, reference {len(ref)}"
    for k, (e, r) in enumerate(zip(expect, ref)):
        e = torch.as_tensor(e)
        assert tuple(e.shape) == r.shape, f"{name} out{k}: torch {tuple(e.shape)} vs reference {r.shape}"
        assert _torch_dtype_name(e) == dtype_of_numpy(r.dtype), f"{name} out{k}: torch {e.dtype} vs reference {r.dtype}"
        if _is_float(r):
            np.testing.assert_allclose(r, e.detach().numpy(), rtol=FWD_RTOL, atol=FWD_ATOL,
                                       err_msg=f"{name} out{k} reference vs torch")
        else:
            np.testing.assert_array_equal(r, e.numpy(), err_msg=f"{name} out{k} reference vs torch")


# ---------------------------------------------------------------------------------------------
# 2. gradients through the IR: autodiff + ReferenceExecutor vs torch autograd and finite differences
# ---------------------------------------------------------------------------------------------
class GradProgram:
    """op(in0, in1, ...) -> loss = sum(out0 * R), differentiated w.r.t. the chosen inputs."""

    def __init__(self, op: OpDef, s: Sample, wrt: list[int], rng: np.random.Generator):
        g = Graph(f"grad_{op.name}")
        ins = [g.add_input(f"in{i}", TensorType(np.shape(x), dtype_of_numpy(np.asarray(x).dtype)))
               for i, x in enumerate(s.inputs)]
        outs = Builder(g, "forward").emit(op.name, ins, dict(s.attrs))
        out0 = outs[0]
        self.R = rng.uniform(-1.0, 1.0, size=out0.shape).astype(np.float64)
        lb = Builder(g, "loss")
        prod = lb.emit1("mul", [out0, lb.const(self.R, out0.dtype, out0.shape)])
        loss = lb.emit1("sum", [prod], {"dims": list(range(out0.type.rank)), "keepdim": False}) \
            if out0.type.rank else prod
        grads = differentiate(g, loss, [ins[i] for i in wrt])
        g.outputs["loss"] = loss
        for i in wrt:
            if f"in{i}" in grads:
                g.outputs[f"grad_in{i}"] = grads[f"in{i}"]
        self.graph, self.op, self.sample, self.wrt = g, op, s, wrt
        self.R = self.R.astype(numpy_dtype(out0.dtype))  # exactly the values the const holds

    def run(self, compute_dtype=None, inputs=None):
        inputs = self.sample.inputs if inputs is None else inputs
        feeds = {f"in{i}": np.asarray(x) for i, x in enumerate(inputs)}
        outs, _, env = ReferenceExecutor(self.graph, compute_dtype=compute_dtype).run(feeds, {}, collect=True)
        for node in self.graph.nodes:  # every value the references produce has its inferred type
            for v in node.outputs:
                got = env[v.name]
                assert got.shape == v.shape, f"{node!r}: reference produced shape {got.shape}"
                if compute_dtype is None:
                    assert dtype_of_numpy(got.dtype) == v.dtype, f"{node!r}: reference produced {got.dtype}"
        grads = {}
        for i in self.wrt:
            x = np.asarray(inputs[i])
            grads[i] = outs.get(f"grad_in{i}", np.zeros(x.shape, dtype=compute_dtype or x.dtype))
        return outs["loss"], grads


def _diff_output_ok(op: OpDef, s: Sample) -> bool:
    types = op.infer([TensorType(np.shape(x), dtype_of_numpy(np.asarray(x).dtype)) for x in s.inputs], s.attrs)
    return types[0].is_float


def _grad_setup(name, idx, s):
    op = REGISTRY[name]
    wrt = _wrt_indices(s)
    if not wrt:
        pytest.skip("no float input to differentiate")
    if not _diff_output_ok(op, s):
        pytest.skip("output 0 is not float")
    return op, wrt, GradProgram(op, s, wrt, np.random.default_rng(_seed("R", name, idx)))


@pytest.mark.parametrize("name,idx,sample", GRAD_CASES)
def test_grad_vs_torch(name, idx, sample):
    op, wrt, prog = _grad_setup(name, idx, sample)
    loss, grads = prog.run()
    if op.torch_fn is None:
        pytest.skip(f"{name} has no torch_fn")
    tin = _torch_inputs(sample, requires_grad=wrt)
    try:
        out0 = op.torch_fn(tin, dict(sample.attrs))[0]
    except NotImplementedError as e:
        pytest.skip(f"torch_fn: {e}")
    tloss = (out0 * torch.from_numpy(prog.R)).sum()
    np.testing.assert_allclose(loss, tloss.detach().numpy(), rtol=FWD_RTOL, atol=FWD_ATOL, err_msg=f"{name} loss")
    tgrads = torch.autograd.grad(tloss, [tin[i] for i in wrt], allow_unused=True, materialize_grads=True)
    for i, tg in zip(wrt, tgrads):
        assert grads[i].shape == tuple(tg.shape), f"{name} grad in{i}: shape {grads[i].shape} vs {tuple(tg.shape)}"
        assert grads[i].dtype == np.asarray(sample.inputs[i]).dtype, f"{name} grad in{i}: dtype {grads[i].dtype}"
        np.testing.assert_allclose(grads[i], tg.numpy(), rtol=GRAD_RTOL, atol=GRAD_ATOL,
                                   err_msg=f"{name} grad of in{i}: IR vs torch autograd")


def _loss64(op: OpDef, inputs: list[np.ndarray], attrs: dict, R: np.ndarray) -> float:
    out0 = np.asarray(op.reference(inputs, dict(attrs))[0])
    return float(np.sum(out0.astype(np.float64) * R.astype(np.float64)))


def _by_convention(name: str, s: Sample, i: int, fd: np.ndarray) -> np.ndarray:
    """Where the defined gradient differs from the true derivative on purpose (as in PyTorch)."""
    if name == "embedding" and i == 0 and s.attrs.get("padding_idx") is not None:
        fd = fd.copy()
        fd[s.attrs["padding_idx"]] = 0.0  # the padding row's embedding is looked up but never trained
    return fd


@pytest.mark.parametrize("name,idx,sample", GRAD_CASES)
def test_grad_vs_finite_differences(name, idx, sample):
    op, wrt, prog = _grad_setup(name, idx, sample)
    inputs64 = [np.asarray(x).astype(np.float64) if _is_float(x) else np.asarray(x) for x in sample.inputs]
    _, grads = prog.run(compute_dtype=np.float64, inputs=inputs64)
    # a `cast` to f32 inside the program pins that part to float32 even under compute_dtype=float64
    pinned = any(n.op == "cast" and n.attrs["dtype"] != "f64" for n in prog.graph.nodes)
    for i in wrt:
        if not pinned:
            assert grads[i].dtype == np.float64, f"{name} grad in{i} computed in {grads[i].dtype}, not float64"
        x = inputs64[i]
        fd = np.zeros(x.shape, dtype=np.float64)
        for j in np.ndindex(*x.shape):
            plus, minus = [a.copy() for a in inputs64], [a.copy() for a in inputs64]
            plus[i][j] += FD_EPS
            minus[i][j] -= FD_EPS
            fd[j] = (_loss64(op, plus, sample.attrs, prog.R) - _loss64(op, minus, sample.attrs, prog.R)) / (2 * FD_EPS)
        fd = _by_convention(name, sample, i, fd)
        np.testing.assert_allclose(grads[i], fd, rtol=FD_RTOL, atol=FD_ATOL,
                                   err_msg=f"{name} grad of in{i}: IR (float64) vs finite differences")


# ---------------------------------------------------------------------------------------------
# 3. sparse backprop: with one input needing a gradient, the rule emits nothing else
# ---------------------------------------------------------------------------------------------
def _call_rule(op: OpDef, s: Sample, needs: list[bool]):
    """Call op.grad directly on a fresh graph; returns (graph, node, results, emitted nodes)."""
    g = Graph("rule")
    ins = [g.add_input(f"in{i}", TensorType(np.shape(x), dtype_of_numpy(np.asarray(x).dtype)))
           for i, x in enumerate(s.inputs)]
    outs = Builder(g, "forward").emit(op.name, ins, dict(s.attrs))
    node = outs[0].producer
    douts = [g.add_input("dy0", outs[0].type)] + [None] * (len(outs) - 1)
    n_before = len(g.nodes)
    results = op.grad(GradContext(node, douts, needs, Builder(g, "backward")))
    return g, node, results, g.nodes[n_before:]


def _one_hot_cases():
    cases = []
    for c in GRAD_CASES:
        name, idx, s = c.values
        if not _diff_output_ok(REGISTRY[name], s):
            continue
        for i in _wrt_indices(s):
            cases.append(pytest.param(name, idx, s, i, id=f"{c.id}-in{i}"))
    return cases


@pytest.mark.parametrize("name,idx,sample,which", _one_hot_cases())
def test_rule_emits_only_what_is_needed(name, idx, sample, which):
    op = REGISTRY[name]
    needs = [i == which for i in range(len(sample.inputs))]
    g, node, results, emitted = _call_rule(op, sample, needs)
    assert len(results) == len(sample.inputs), f"{name}: rule returned {len(results)} grads"
    for i, r in enumerate(results):
        if i != which:
            assert r is None, f"{name}: computed a gradient for in{i} which was not asked for"
    grad = results[which]
    assert isinstance(grad, Value), f"{name}: no gradient for in{which}"
    assert grad.type == node.inputs[which].type, f"{name}: grad type {grad.type} vs {node.inputs[which].type}"
    # every output of every emitted node must feed the returned gradient
    used = {id(grad)}
    for n in reversed(emitted):
        if any(id(o) in used for o in n.outputs):
            used.update(id(v) for v in n.inputs)
    for n in emitted:
        for o in n.outputs:
            assert id(o) in used, f"{name} with only in{which} needing grad: wasted node {n!r} (output %{o.name} unused)"
        assert n.section == "backward"


UNDER_TEST = "op-under-test"


def _backward_ops(g: Graph) -> list[str]:
    """Backward nodes emitted by the gradient rule of the op under test (rules pass the forward
    node's `source` on), leaving out the backward of the loss's own `sum`."""
    return [n.op for n in _rule_nodes(g)]


def _rule_nodes(g: Graph):
    return [n for n in g.section_nodes("backward") if n.source == UNDER_TEST]


def _build_param_graph(op_name: str, x: np.ndarray, params: list[np.ndarray], attrs: dict, trainable: list[bool],
                       x_needs_grad: bool):
    """x is a graph input; weights are params (trainable per flag). Differentiates loss = sum(out0)."""
    g = Graph("prune")
    xin = g.add_input("x", TensorType(x.shape, "f32"))
    ps = [g.add_source(f"p{i}", "param", p, trainable=t) for i, (p, t) in enumerate(zip(params, trainable))]
    y = Builder(g, "forward").emit(op_name, [xin] + ps, attrs, source=UNDER_TEST)[0]
    lb = Builder(g, "loss")
    loss = lb.emit1("sum", [y], {"dims": list(range(y.type.rank)), "keepdim": False})
    wrt = ([xin] if x_needs_grad else []) + [p for p in ps if p.trainable]
    grads = differentiate(g, loss, wrt)
    return g, grads


def _rng():
    return np.random.default_rng(1234)


def _f(rng, *shape):
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


CONV_ATTRS = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}


def test_conv2d_bias_only_emits_only_a_sum():
    r = _rng()
    g, grads = _build_param_graph("conv2d", _f(r, 2, 3, 6, 6), [_f(r, 4, 3, 3, 3), _f(r, 4)], CONV_ATTRS,
                                  [False, True], x_needs_grad=False)
    assert set(grads) == {"p1"}
    ops = _backward_ops(g)
    assert "conv2d_grad_input" not in ops and "conv2d_grad_weight" not in ops, ops
    assert ops == ["sum"], ops


def test_conv2d_weight_only_has_no_grad_input():
    r = _rng()
    g, grads = _build_param_graph("conv2d", _f(r, 2, 3, 6, 6), [_f(r, 4, 3, 3, 3), _f(r, 4)], CONV_ATTRS,
                                  [True, False], x_needs_grad=False)
    assert set(grads) == {"p0"}
    assert _backward_ops(g) == ["conv2d_grad_weight"]
    assert "weight_grad" in grads["p0"].producer.tags


def test_conv2d_input_only_has_no_grad_weight():
    r = _rng()
    g, grads = _build_param_graph("conv2d", _f(r, 2, 3, 6, 6), [_f(r, 4, 3, 3, 3), _f(r, 4)], CONV_ATTRS,
                                  [False, False], x_needs_grad=True)
    assert _backward_ops(g) == ["conv2d_grad_input"]
    assert not any("weight_grad" in n.tags for n in g.nodes)


def test_conv2d_frozen_first_layer_has_empty_backward():
    """Nothing upstream of the first trainable value: no gradient, no backward node at all."""
    r = _rng()
    g, grads = _build_param_graph("conv2d", _f(r, 1, 3, 5, 5), [_f(r, 4, 3, 3, 3), _f(r, 4)], CONV_ATTRS,
                                  [False, False], x_needs_grad=False)
    assert grads == {}
    assert _backward_ops(g) == []


@pytest.mark.parametrize("xshape", [(4, 3), (2, 5, 3)], ids=["2d", "3d"])
def test_linear_input_only_has_no_weight_grad(xshape):
    r = _rng()
    g, grads = _build_param_graph("linear", _f(r, *xshape), [_f(r, 6, 3), _f(r, 6)], {}, [False, False],
                                  x_needs_grad=True)
    assert set(grads) == {"x"}
    assert not any("weight_grad" in n.tags for n in g.nodes)
    assert _backward_ops(g) == ["matmul"]  # dy @ W, nothing else


def test_linear_bias_only_emits_only_a_sum():
    r = _rng()
    g, grads = _build_param_graph("linear", _f(r, 2, 5, 3), [_f(r, 6, 3), _f(r, 6)], {}, [False, True],
                                  x_needs_grad=False)
    assert set(grads) == {"p1"}
    assert _backward_ops(g) == ["sum"]


def test_linear_weight_only_is_tagged_and_has_no_input_grad():
    r = _rng()
    g, grads = _build_param_graph("linear", _f(r, 4, 3), [_f(r, 6, 3), _f(r, 6)], {}, [True, False],
                                  x_needs_grad=False)
    assert set(grads) == {"p0"}
    assert "weight_grad" in grads["p0"].producer.tags
    assert sorted(_backward_ops(g)) == ["matmul", "permute"]


def _bn_params(r, c):
    return [r.uniform(0.5, 1.5, c).astype(np.float32), _f(r, c), np.zeros(c, np.float32), np.ones(c, np.float32)]


def _bn_graph(trainable, x_needs_grad=False, op="batch_norm_train"):
    r = _rng()
    attrs = {"momentum": 0.1, "eps": 1e-5} if op == "batch_norm_train" else {"eps": 1e-5}
    return _build_param_graph(op, _f(r, 2, 3, 4, 4), _bn_params(r, 3), attrs, trainable + [False, False],
                              x_needs_grad)


def test_batch_norm_train_bias_only_emits_only_a_sum():
    g, grads = _bn_graph([False, True])
    assert set(grads) == {"p1"}
    assert _backward_ops(g) == ["sum"]
    assert _rule_nodes(g)[0].attrs["dims"] == [0, 2, 3]


def test_batch_norm_train_weight_only_masks_the_backward():
    g, grads = _bn_graph([True, False])
    assert _backward_ops(g) == ["batch_norm_backward"]
    assert _rule_nodes(g)[0].attrs["output_mask"] == [False, True, False]


def test_batch_norm_infer_bias_only_emits_only_a_sum():
    g, grads = _bn_graph([False, True], op="batch_norm_infer")
    assert set(grads) == {"p1"}
    assert _backward_ops(g) == ["sum"]


def test_batch_norm_infer_input_only_reads_no_activation():
    """Inference-mode BN is affine: dx = dy * (w * invstd), so x itself is not read in backward."""
    g, grads = _bn_graph([False, False], x_needs_grad=True, op="batch_norm_infer")
    assert set(grads) == {"x"}
    x = g.inputs[0]
    assert not any(x in n.inputs for n in _rule_nodes(g))
    assert "sum" not in _backward_ops(g)


def _ln_graph(trainable, x_needs_grad=False):
    r = _rng()
    return _build_param_graph("layer_norm", _f(r, 2, 3, 6), [r.uniform(0.5, 1.5, 6).astype(np.float32), _f(r, 6)],
                              {"normalized_shape": [6], "eps": 1e-5}, trainable, x_needs_grad)


def test_layer_norm_bias_only_emits_only_a_sum():
    g, grads = _ln_graph([False, True])
    assert set(grads) == {"p1"}
    assert _backward_ops(g) == ["sum"]
    assert _rule_nodes(g)[0].attrs["dims"] == [0, 1]


def test_layer_norm_input_only_masks_the_backward():
    g, grads = _ln_graph([False, False], x_needs_grad=True)
    assert _backward_ops(g) == ["layer_norm_backward"]
    assert _rule_nodes(g)[0].attrs["output_mask"] == [True, False, False]


def test_embedding_frozen_weight_has_no_backward():
    r = _rng()
    g = Graph("emb")
    idx = g.add_input("idx", TensorType((2, 3), "i64"))
    w = g.add_source("w", "param", _f(r, 5, 4), trainable=False)
    h = g.add_source("h", "param", _f(r, 4, 2), trainable=True)
    e = Builder(g, "forward").emit1("embedding", [w, idx], {"padding_idx": None})
    y = Builder(g, "forward").emit1("matmul", [e, h])
    loss = Builder(g, "loss").emit1("sum", [y], {"dims": [0, 1, 2], "keepdim": False})
    grads = differentiate(g, loss, [h])
    assert set(grads) == {"h"}
    ops = [n.op for n in g.section_nodes("backward")]
    assert "embedding_backward" not in ops and ops, ops


# ---------------------------------------------------------------------------------------------
# rank-0 values (scalar losses, scalar consts) keep rank 0 through the data-movement ops
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,x,attrs", [
    ("sum_to", np.ones((2, 3), np.float32), {"shape": []}),
    ("sum_to", np.float32(1.5).reshape(()), {"shape": []}),
    ("expand", np.float32(1.5).reshape(()), {"shape": []}),
    ("permute", np.float32(1.5).reshape(()), {"dims": []}),
    ("reshape", np.ones((1, 1), np.float32), {"shape": []}),
    ("sum", np.ones((2, 3), np.float32), {"dims": [0, 1], "keepdim": False}),
    ("mean", np.ones((2, 3), np.float32), {"dims": [0, 1], "keepdim": False}),
], ids=["sum_to-2d", "sum_to-0d", "expand-0d", "permute-0d", "reshape", "sum", "mean"])
def test_rank0_outputs_stay_rank0(name, x, attrs):
    op = REGISTRY[name]
    (t,) = op.infer([TensorType(x.shape, "f32")], attrs)
    (y,) = op.reference([x], attrs)
    assert t.shape == () and np.shape(y) == (), f"{name}: infer {t.shape}, reference {np.shape(y)}"
    assert np.asarray(y).dtype == np.float32
