"""Fused epilogues of the CPU kernels against the unfused ops they replace.

Forward: conv2d / linear with `activation` (relu, hardtanh) must equal the plain kernel followed
by the `relu` / `hardtanh` kernel, bit for bit: the clamp is exact, so fusing it into the GEMM
write-back or the depthwise register loop may not change a single value. Covered on every conv
path (pointwise, depthwise, im2col; through the auto kernel and each variant) and on products long
enough in K that the GEMM accumulates over several K blocks (the clamp belongs on the last).

Backward: conv2d_grad_input / matmul with a mask input must equal `hardtanh_backward` /
`relu_backward` of the unmasked kernel's result, for the u8 bit form (built here with
np.packbits(..., bitorder="little"), activation_mask's format) and the f32 activation-output
form. Plus: 2 threads == 1 thread, and the kernels' checks reject a bad activation or mask.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from edgetune.compiler.ir import TensorType, dtype_of_numpy
from edgetune.compiler.ops import REGISTRY
from edgetune.runtime.native import native

HARDTANH6 = {"activation": "hardtanh", "act_min": 0.0, "act_max": 6.0}
ACTIVATIONS = {
    "relu": ({"activation": "relu"}, "relu", {}),
    "hardtanh6": (HARDTANH6, "hardtanh", {"min": 0.0, "max": 6.0}),
    "hardtanh-1-1": ({"activation": "hardtanh", "act_min": -1.0, "act_max": 1.0}, "hardtanh",
                     {"min": -1.0, "max": 1.0}),
}


def _op_of(kernel: str) -> str:
    return kernel.split(".")[0]


def _out_specs(kernel, inputs, attrs):
    types = [TensorType(x.shape, dtype_of_numpy(x.dtype)) for x in inputs]
    return [(t.dtype, list(t.shape)) for t in REGISTRY[_op_of(kernel)].infer(types, attrs)]


def run(kernel, inputs, attrs, threads=1):
    inputs = [np.asarray(x) for x in inputs]
    return native().run_kernel("cpu", kernel, inputs, _out_specs(kernel, inputs, attrs), attrs, threads)[0]


def workspace(kernel, inputs, attrs, out_shape=None):
    specs = [(dtype_of_numpy(x.dtype), list(x.shape)) for x in inputs]
    outs = _out_specs(kernel, inputs, attrs) if out_shape is None else [("f32", list(out_shape))]
    return native().workspace_bytes("cpu", kernel, specs, outs, attrs)


def exact(rng, *shape, scale=1.0):
    """Multiples of 1/8 in [-1, 1] (times scale): sums stay exact whatever their order."""
    return (scale * rng.integers(-8, 9, size=shape) / 8).astype(np.float32)


def conv_attrs(stride=1, padding=0, groups=1):
    return {"stride": [stride] * 2, "padding": [padding] * 2, "dilation": [1, 1], "groups": groups}


# name -> (x shape, w shape, attrs, kernels that can run it besides the auto one)
CONVS = {
    "pointwise": ((2, 24, 9, 9), (20, 24, 1, 1), conv_attrs(),
                  ["conv2d.pointwise", "conv2d.pointwise_batched", "conv2d.im2col"]),
    "depthwise-s1": ((2, 16, 12, 12), (16, 1, 3, 3), conv_attrs(padding=1, groups=16),
                     ["conv2d.depthwise", "conv2d.im2col"]),
    "depthwise-s2": ((2, 16, 13, 13), (32, 1, 3, 3), conv_attrs(stride=2, padding=1, groups=16),
                     ["conv2d.depthwise", "conv2d.im2col"]),
    "general-3x3": ((2, 8, 10, 10), (12, 8, 3, 3), conv_attrs(padding=1), ["conv2d.im2col"]),
    "general-3x3-s2-grouped": ((1, 8, 11, 11), (12, 4, 3, 3), conv_attrs(stride=2, padding=1, groups=2),
                               ["conv2d.im2col"]),
    "general-K576": ((2, 64, 8, 8), (40, 64, 3, 3), conv_attrs(padding=1), ["conv2d.im2col"]),  # 3 K blocks
}


def _conv_case(rng, name, bias=True):
    xs, ws, attrs, kernels = CONVS[name]
    x = rng.uniform(-3, 3, size=xs).astype(np.float32)
    w = rng.uniform(-1, 1, size=ws).astype(np.float32)
    ins = [x, w] + ([rng.uniform(-1, 1, size=ws[0]).astype(np.float32)] if bias else [])
    return ins, attrs, ["conv2d"] + kernels


# ---- forward ------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("conv", sorted(CONVS))
def test_conv2d_activation_equals_conv_then_activation(conv, act):
    rng = np.random.default_rng(zlib.crc32(f"{conv}/{act}".encode()))
    fused_attrs, op, op_attrs = ACTIVATIONS[act]
    for bias in (True, False):
        ins, attrs, kernels = _conv_case(rng, conv, bias)
        for kernel in kernels:
            plain = run(kernel, ins, attrs)
            expected = run(op, [plain], op_attrs)
            fused = run(kernel, ins, {**attrs, **fused_attrs})
            np.testing.assert_array_equal(fused, expected, err_msg=f"{kernel} {act} bias={bias}")
            assert (plain != expected).any(), "the activation should change something in this case"


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 7), (64, 300), (130, 520)], ids=str)
def test_linear_activation_equals_linear_then_activation(shape, act):
    rng = np.random.default_rng(sum(shape))
    fused_attrs, op, op_attrs = ACTIVATIONS[act]
    x = rng.uniform(-3, 3, size=shape).astype(np.float32)
    w = (rng.uniform(-1, 1, size=(37, shape[-1])) / np.sqrt(shape[-1] / 8)).astype(np.float32)
    b = rng.uniform(-1, 1, size=37).astype(np.float32)
    for ins in ([x, w, b], [x, w]):
        plain = run("linear", ins, {})
        np.testing.assert_array_equal(run("linear", ins, fused_attrs), run(op, [plain], op_attrs))


def test_activation_none_is_identity_and_nan_passes_through():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(4, 9)).astype(np.float32)
    x[1, 2] = np.nan
    w = rng.uniform(-1, 1, size=(6, 9)).astype(np.float32)
    plain = run("linear", [x, w], {})
    np.testing.assert_array_equal(run("linear", [x, w], {"activation": "none"}), plain)
    for fused_attrs, op, op_attrs in ACTIVATIONS.values():
        fused = run("linear", [x, w], fused_attrs)
        np.testing.assert_array_equal(fused, run(op, [plain], op_attrs))  # NaN row stays NaN, like np.clip
        assert np.isnan(fused[1]).all()


# ---- backward: output masks -----------------------------------------------------------------------
def _masks(rng, shape, relu):
    """(y, attrs, bits) of one activation: the f32 output form and the equivalent bit form."""
    y = rng.uniform(-2, 8, size=shape).astype(np.float32)
    y.ravel()[::7] = 0.0  # exactly on the relu/hardtanh kink: dropped (strict inequality)
    y.ravel()[3::11] = 6.0
    keep = (y > 0) if relu else (y > 0) & (y < 6)
    attrs = {"mask_min": 0.0} if relu else {"mask_min": 0.0, "mask_max": 6.0}
    return y, attrs, np.packbits(keep.ravel(), bitorder="little")


def _activation_backward(dx, y, relu):
    return run("relu_backward", [dx, y], {}) if relu else run("hardtanh_backward", [dx, y], {"min": 0.0, "max": 6.0})


GRAD_INPUT_KERNELS = {
    "pointwise": ["conv2d_grad_input.pointwise", "conv2d_grad_input.pointwise_batched", "conv2d_grad_input.im2col"],
    "depthwise-s1": ["conv2d_grad_input.depthwise", "conv2d_grad_input.im2col"],
    "depthwise-s2": ["conv2d_grad_input.depthwise", "conv2d_grad_input.im2col"],
    "general-3x3": ["conv2d_grad_input.im2col"],
    "general-3x3-s2-grouped": ["conv2d_grad_input.im2col"],
    "general-K576": ["conv2d_grad_input.im2col"],
}


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "hardtanh"])
@pytest.mark.parametrize("conv", sorted(CONVS))
def test_conv2d_grad_input_mask_equals_activation_backward(conv, relu):
    rng = np.random.default_rng(len(conv) + relu)
    xs, ws, attrs, _ = CONVS[conv]
    w = rng.uniform(-1, 1, size=ws).astype(np.float32)
    ho_wo = run("conv2d", [np.zeros(xs, np.float32), w], attrs).shape
    dy = rng.uniform(-1, 1, size=ho_wo).astype(np.float32)
    gattrs = {**attrs, "input_shape": list(xs)}
    y, mask_attrs, bits = _masks(rng, xs, relu)
    for kernel in ["conv2d_grad_input"] + GRAD_INPUT_KERNELS[conv]:
        plain = run(kernel, [dy, w], gattrs)
        expected = _activation_backward(plain, y, relu)
        np.testing.assert_array_equal(run(kernel, [dy, w, y], {**gattrs, **mask_attrs}), expected,
                                      err_msg=f"{kernel} f32 mask")
        np.testing.assert_array_equal(run(kernel, [dy, w, bits], gattrs), expected, err_msg=f"{kernel} bits")


MATMULS = {
    "2-d": ((13, 9), (9, 11)),
    "folded-into-M": ((3, 40, 96), (96, 70)),
    "bmm": ((2, 50, 300), (2, 300, 40)),  # K over one K block
    "broadcast": ((1, 5, 6), (3, 6, 7)),
    "broadcast-weight": ((2, 3, 17, 9), (9, 33)),
}


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "hardtanh"])
@pytest.mark.parametrize("case", sorted(MATMULS))
def test_matmul_mask_equals_activation_backward(case, relu):
    rng = np.random.default_rng(len(case) * 2 + relu)
    xs, ws = MATMULS[case]
    a = rng.uniform(-1, 1, size=xs).astype(np.float32)
    b = rng.uniform(-1, 1, size=ws).astype(np.float32)
    plain = run("matmul", [a, b], {})
    y, mask_attrs, bits = _masks(rng, plain.shape, relu)
    expected = _activation_backward(plain, y, relu)
    np.testing.assert_array_equal(run("matmul", [a, b, y], mask_attrs), expected)
    np.testing.assert_array_equal(run("matmul", [a, b, bits], {}), expected)


def test_masked_elements_are_zero_even_when_inf_or_nan():
    a = np.ones((4, 3), np.float32)
    a[1] = np.inf
    a[2, 0] = np.nan
    b = np.ones((3, 5), np.float32)
    keep = np.ones((4, 5), bool)
    keep[1:3] = False
    out = run("matmul", [a, b, np.packbits(keep.ravel(), bitorder="little")], {})
    np.testing.assert_array_equal(out, np.where(keep, 3.0, 0.0).astype(np.float32))


# ---- threads --------------------------------------------------------------------------------------
def test_two_threads_equal_one():
    rng = np.random.default_rng(7)
    cases = []
    for conv in ("pointwise", "depthwise-s2", "general-K576"):
        ins, attrs, kernels = _conv_case(rng, conv)
        cases += [(k, ins, {**attrs, **HARDTANH6}) for k in kernels]
        xs = ins[0].shape
        dy = rng.uniform(-1, 1, size=run("conv2d", ins, attrs).shape).astype(np.float32)
        y, mask_attrs, bits = _masks(rng, xs, relu=False)
        gattrs = {**attrs, "input_shape": list(xs)}
        for k in ["conv2d_grad_input"] + GRAD_INPUT_KERNELS[conv]:
            cases += [(k, [dy, ins[1], y], {**gattrs, **mask_attrs}), (k, [dy, ins[1], bits], gattrs)]
    x, w = exact(rng, 96, 700), exact(rng, 130, 700)
    cases.append(("linear", [x, w, exact(rng, 130)], HARDTANH6))
    a, b = exact(rng, 2, 120, 300), exact(rng, 2, 300, 90)
    y, mask_attrs, bits = _masks(rng, (2, 120, 90), relu=True)
    cases += [("matmul", [a, b, y], mask_attrs), ("matmul", [a, b, bits], {})]
    for kernel, ins, attrs in cases:
        np.testing.assert_array_equal(run(kernel, ins, attrs, threads=2), run(kernel, ins, attrs, threads=1),
                                      err_msg=kernel)


# ---- checks -----------------------------------------------------------------------------------------
def _expect_rejected(kernel, ins, attrs, match, out_shape):
    err = native().NativeError
    with pytest.raises(err, match=match):
        workspace(kernel, ins, attrs, out_shape)
    specs = [("f32", list(out_shape))]
    with pytest.raises(err, match=match):
        native().run_kernel("cpu", kernel, ins, specs, attrs, 1)


def test_bad_activation_is_rejected():
    rng = np.random.default_rng(1)
    x, w, b = exact(rng, 1, 4, 5, 5), exact(rng, 6, 4, 3, 3), exact(rng, 6)
    attrs = conv_attrs(padding=1)
    for kernel in ("conv2d", "conv2d.im2col"):
        _expect_rejected(kernel, [x, w, b], {**attrs, "activation": "gelu"}, "unknown activation 'gelu'",
                         (1, 6, 5, 5))
        _expect_rejected(kernel, [x, w, b], {**attrs, "activation": "hardtanh"}, "act_min", (1, 6, 5, 5))
        _expect_rejected(kernel, [x, w], {**attrs, "activation": "hardtanh", "act_min": 6.0, "act_max": 0.0},
                         "above act_max", (1, 6, 5, 5))
    xl, wl = exact(rng, 3, 5), exact(rng, 4, 5)
    _expect_rejected("linear", [xl, wl], {"activation": "Relu"}, "unknown activation 'Relu'", (3, 4))
    _expect_rejected("linear", [xl, wl], {"activation": 1}, "must be a string", (3, 4))


def test_bad_mask_is_rejected():
    rng = np.random.default_rng(2)
    dy, w = exact(rng, 2, 6, 5, 5), exact(rng, 6, 4, 3, 3)
    gattrs = {**conv_attrs(padding=1), "input_shape": [2, 4, 5, 5]}  # dx has 200 elements: 25 bytes
    for kernel in ("conv2d_grad_input", "conv2d_grad_input.im2col"):
        _expect_rejected(kernel, [dy, w, np.zeros(24, np.uint8)], gattrs, r"bit mask u8\[24\]", (2, 4, 5, 5))
        _expect_rejected(kernel, [dy, w, np.zeros((2, 4, 5, 4), np.float32)], {**gattrs, "mask_min": 0.0},
                         "not shaped like output", (2, 4, 5, 5))
        _expect_rejected(kernel, [dy, w, np.zeros((2, 4, 5, 5), np.float32)], gattrs, "mask_min", (2, 4, 5, 5))
        _expect_rejected(kernel, [dy, w, np.zeros((2, 4, 5, 5), np.int32)], gattrs, "u8 bits or an f32",
                         (2, 4, 5, 5))
    a, b = exact(rng, 3, 4), exact(rng, 4, 5)  # 15 elements: 2 bytes
    _expect_rejected("matmul", [a, b, np.zeros(3, np.uint8)], {}, r"want u8\[2\]", (3, 5))
    _expect_rejected("matmul", [a, b, np.zeros((5, 3), np.float32)], {"mask_min": 0.0}, "not shaped like", (3, 5))
