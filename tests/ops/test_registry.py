"""Registry completeness: every op has all its parts, every op a gradient rule emits exists, and
the set of ops is spelled out here so that adding (or losing) an op anywhere fails loudly until
this list — and so the sweep in test_op_sweep.py — is updated on purpose."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from edgetune.compiler.ir import Graph, TensorType, Value, dtype_of_numpy
from edgetune.compiler.ops import REGISTRY
from edgetune.compiler.ops.registry import NOT_DIFFERENTIABLE, Builder, GradContext, OpDef, Sample

# Every registered op. Adding an op = registering it AND adding its name here.
EXPECTED_OPS = {
    # elementwise arithmetic and activations
    "add", "sub", "mul", "div", "neg", "where",
    "relu", "hardtanh", "hardsigmoid", "hardswish", "sigmoid", "tanh", "silu", "gelu",
    "exp", "log", "sqrt", "rsqrt", "pow_scalar",
    "relu_backward", "hardtanh_backward", "hardsigmoid_backward", "hardswish_backward",
    "sigmoid_backward", "tanh_backward", "silu_backward", "gelu_backward",
    # comparisons (bool outputs), prefix sums and gathers along a dim (issue 14)
    "eq", "ne", "lt", "le", "gt", "ge",
    "cumsum", "gather", "gather_backward",
    # matrix products and convolution
    "matmul", "linear",
    "conv2d", "conv2d_grad_input", "conv2d_grad_weight",
    # normalization
    "batch_norm_train", "batch_norm_infer", "batch_norm_backward",
    "layer_norm", "layer_norm_backward",
    # softmax
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    # pooling
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    # reductions and data movement
    "sum", "mean", "reshape", "permute", "expand", "sum_to", "concat", "slice", "slice_backward", "cast",
    # embedding, dropout
    "embedding", "embedding_backward", "dropout",
    # losses
    "cross_entropy", "cross_entropy_backward", "nll_loss", "nll_loss_backward", "mse_loss",
    # optimizer updates
    "sgd_update", "adamw_update",
    # made by optimisation passes (issue 5), after autodiff: fused kernels, 1-bit activation masks
    "fused_elementwise", "activation_mask", "mask_grad",
}

# The coverage the op library must provide (the list).
REQUIRED_OPS = [
    "conv2d", "linear", "matmul", "add", "sub", "mul", "div", "relu", "hardtanh", "hardswish", "hardsigmoid",
    "gelu", "silu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "pow_scalar", "batch_norm_train",
    "batch_norm_infer", "layer_norm", "softmax", "log_softmax", "max_pool2d", "avg_pool2d", "mean", "sum",
    "reshape", "permute", "expand", "concat", "slice", "embedding", "dropout", "where", "cross_entropy",
    "mse_loss", "sgd_update", "adamw_update",
]

# Ops that are neither differentiable nor emitted by any gradient rule: they are put in the
# graph by the optimizer, not by autodiff.
OPTIMIZER_OPS = {"sgd_update", "adamw_update"}
# Ops that only optimisation passes put in the graph (after autodiff), so no rule emits them.
PASS_OPS = {"fused_elementwise", "activation_mask", "mask_grad"}
# Forward ops without a gradient, as in torch: their bool outputs carry none, so no rule emits
# them and autodiff never asks them for one.
NO_GRAD_FORWARD_OPS = {"eq", "ne", "lt", "le", "gt", "ge"}

ROLES = {"weight", "bias", "norm"}


def _samples(op: OpDef) -> list[Sample]:
    return op.samples(np.random.default_rng(zlib.crc32(f"samples/{op.name}".encode())))


def _is_float(a) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def _wrt(s: Sample) -> list[int]:
    floats = [i for i, x in enumerate(s.inputs) if _is_float(x)]
    return floats if s.grad_inputs is None else [i for i in s.grad_inputs if i in floats]


def _type_of(x) -> TensorType:
    return TensorType(np.shape(x), dtype_of_numpy(np.asarray(x).dtype))


OPS = sorted(REGISTRY)
DIFF_OPS = [n for n in OPS if REGISTRY[n].differentiable]


# ---------------------------------------------------------------------------------------------
def test_registered_ops_are_exactly_the_expected_set():
    got = set(REGISTRY)
    missing, extra = sorted(EXPECTED_OPS - got), sorted(got - EXPECTED_OPS)
    assert not missing and not extra, (
        f"registry changed: missing {missing}, unexpected {extra}; update EXPECTED_OPS in {__file__}")
    assert len(REGISTRY) == len(EXPECTED_OPS) == 77


def test_required_coverage():
    missing = [n for n in REQUIRED_OPS if n not in REGISTRY]
    assert not missing, f"required ops not registered: {missing}"
    not_diff = [n for n in REQUIRED_OPS if n not in OPTIMIZER_OPS and not REGISTRY[n].differentiable]
    assert not not_diff, f"required forward ops without a gradient rule: {not_diff}"


@pytest.mark.parametrize("name", OPS)
def test_op_has_every_part(name):
    op = REGISTRY[name]
    assert isinstance(op, OpDef) and op.name == name
    assert callable(op.infer), "infer"
    assert callable(op.reference), "reference"
    assert callable(op.grad) or op.grad == NOT_DIFFERENTIABLE, f"grad is {op.grad!r}"
    assert callable(op.samples), "samples"
    assert callable(op.torch_fn), "torch_fn: every op is checked against PyTorch"
    assert op.flops is None or callable(op.flops)
    for slot, role in op.param_roles.items():
        assert isinstance(slot, int) and slot >= 0 and role in ROLES, (slot, role)

    samples = _samples(op)
    assert isinstance(samples, list) and samples, "samples() must return a non-empty list"
    for k, s in enumerate(samples):
        assert isinstance(s, Sample), f"sample {k} is {type(s)}"
        assert s.inputs, f"sample {k} has no inputs"
        for j, x in enumerate(s.inputs):
            assert isinstance(x, np.ndarray), f"sample {k} input {j} is {type(x)}, not an ndarray"
            dtype_of_numpy(x.dtype)  # raises for dtypes the IR cannot name
        if op.min_inputs is not None:
            assert len(s.inputs) >= op.min_inputs, f"sample {k}: {len(s.inputs)} inputs < min_inputs"
        if s.grad_inputs is not None:
            assert all(0 <= i < len(s.inputs) and _is_float(s.inputs[i]) for i in s.grad_inputs), \
                f"sample {k}: grad_inputs {s.grad_inputs} must index float inputs"
        assert isinstance(s.attrs, dict)
    for slot in op.param_roles:  # every role slot is a real input slot of some sample
        assert any(slot < len(s.inputs) for s in samples), f"param_roles slot {slot} beyond every sample's inputs"

    if op.differentiable:
        assert any(_wrt(s) for s in samples), "differentiable op without a sample that has a float input to check"


@pytest.mark.parametrize("name", OPS)
def test_op_is_compared_with_torch_on_some_sample(name):
    """torch_fn may refuse a sample (NotImplementedError) but not all of them."""
    import torch  # noqa: F401  (torch_fn imports it lazily)
    op = REGISTRY[name]
    compared = 0
    for s in _samples(op):
        try:
            op.torch_fn([torch.from_numpy(np.array(x, copy=True)) for x in s.inputs], dict(s.attrs))
        except NotImplementedError:
            continue
        compared += 1
    assert compared, f"{name}: torch_fn refuses every sample"


# ---------------------------------------------------------------------------------------------
# what the gradient rules emit
# ---------------------------------------------------------------------------------------------
class _RecordingBuilder(Builder):
    def __init__(self, graph):
        super().__init__(graph, "backward")
        self.emitted: list[str] = []

    def emit(self, op, inputs, attrs=None, **kw):
        self.emitted.append(op)
        assert op in REGISTRY, f"gradient rule emits unregistered op '{op}'"
        return super().emit(op, inputs, attrs, **kw)


def _run_rule(op: OpDef, s: Sample, needs: list[bool]) -> tuple[list, list[str], list[Value]]:
    g = Graph("rule")
    ins = [g.add_input(f"in{i}", _type_of(x)) for i, x in enumerate(s.inputs)]
    outs = Builder(g, "forward").emit(op.name, ins, dict(s.attrs))
    # a gradient for every float output (rules must cope with auxiliary outputs having one too)
    douts = [g.add_input(f"dy{k}", o.type) if o.type.is_float else None for k, o in enumerate(outs)]
    b = _RecordingBuilder(g)
    results = op.grad(GradContext(outs[0].producer, douts, needs, b))
    return results, b.emitted, ins


def _needs_variants(s: Sample) -> list[list[bool]]:
    wrt = _wrt(s)
    n = len(s.inputs)
    variants = [[i in wrt for i in range(n)]]
    variants += [[i == j for i in range(n)] for j in wrt]
    return variants


def _emitted_by_rules() -> dict[str, set[str]]:
    """op name emitted -> the forward ops whose rules emit it."""
    out: dict[str, set[str]] = {}
    for name in DIFF_OPS:
        op = REGISTRY[name]
        for s in _samples(op):
            if not _wrt(s) or not op.infer([_type_of(x) for x in s.inputs], s.attrs)[0].is_float:
                continue
            for needs in _needs_variants(s):
                _, emitted, _ = _run_rule(op, s, needs)
                for e in emitted:
                    out.setdefault(e, set()).add(name)
    return out


@pytest.mark.parametrize("name", DIFF_OPS)
def test_grad_rule_emits_registered_ops_with_matching_types(name):
    op = REGISTRY[name]
    for k, s in enumerate(_samples(op)):
        if not _wrt(s) or not op.infer([_type_of(x) for x in s.inputs], s.attrs)[0].is_float:
            continue
        for needs in _needs_variants(s):
            results, emitted, ins = _run_rule(op, s, needs)
            assert len(results) == len(ins), f"sample {k}: {len(results)} grads for {len(ins)} inputs"
            for i, (r, need) in enumerate(zip(results, needs)):
                if not need:
                    assert r is None, f"sample {k} needs={needs}: gradient for in{i}, which was not asked for"
                    continue
                assert isinstance(r, Value), f"sample {k} needs={needs}: no gradient for in{i}"
                assert r.type == ins[i].type, f"sample {k}: grad of in{i} is {r.type}, input is {ins[i].type}"
            unknown = [e for e in emitted if e not in REGISTRY]
            assert not unknown, f"{name} emits unregistered ops {unknown}"


def test_every_backward_op_is_emitted_by_some_rule():
    """A NOT_DIFFERENTIABLE op that no gradient rule emits is dead weight (or a rule is missing it)."""
    emitted = _emitted_by_rules()
    assert set(emitted) <= set(REGISTRY), sorted(set(emitted) - set(REGISTRY))
    orphans = sorted(n for n in OPS if not REGISTRY[n].differentiable and n not in OPTIMIZER_OPS and n not in PASS_OPS
                     and n not in NO_GRAD_FORWARD_OPS and n not in emitted)
    assert not orphans, f"backward ops emitted by no gradient rule: {orphans}"


def test_optimizer_ops_are_not_differentiable():
    for n in OPTIMIZER_OPS:
        assert REGISTRY[n].grad == NOT_DIFFERENTIABLE


def test_comparisons_have_no_gradient_and_stop_requires_grad():
    """A comparison of a value that needs a gradient is no path for one: its bool output never
    requires grad, and autodiff reaches the input only through its differentiable readers."""
    from edgetune.compiler.autodiff import differentiate, requires_grad_set
    for n in NO_GRAD_FORWARD_OPS:
        assert REGISTRY[n].grad == NOT_DIFFERENTIABLE
        assert all(REGISTRY[n].infer([_type_of(x) for x in s.inputs], s.attrs)[0].dtype == "bool"
                   for s in _samples(REGISTRY[n]))
    g = Graph("cmp")
    x = g.add_source("x", "param", np.array([-1.0, 0.5, 2.0], np.float32), trainable=True)
    b = Builder(g, "forward")
    mask = b.emit1("gt", [x, b.const(0.0, "f32")])
    y = b.emit1("where", [mask, x, b.const(0.0, "f32")])
    loss = Builder(g, "loss").emit1("sum", [y], {"dims": [0], "keepdim": False})
    assert id(mask) not in requires_grad_set(g, [x]) and id(y) in requires_grad_set(g, [x])
    grads = differentiate(g, loss, [x])
    assert set(grads) == {"x"}
    assert not [n for n in g.section_nodes("backward") if n.op in NO_GRAD_FORWARD_OPS]
