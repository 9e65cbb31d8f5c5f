"""The Winograd kernels (csrc/kernels/cpu/conv_winograd.cc) against the numpy references.

`conv2d.winograd` and `conv2d_grad_input.winograd` are alternatives of the conv kernels for 3x3,
stride-1, undilated, ungrouped convs with padding 0..2. Winograd's transforms round differently
from a direct sum, so results are compared with a float64 reference, with a tolerance scaled to
the output's magnitude (|error| <= TOL * max|reference|). Also covered: the fused activation and
the gradient's activation mask, thread-count independence (bitwise), that every other geometry is
refused by `check`, and the error on ResNet-18-sized channels (what chose F(4x4,3x3)).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.ops import REGISTRY
from edgetune.runtime.native import native

TOL = 1e-4  # of max|reference|; measured errors are ~1e-6..3e-5 (see test_error_on_resnet_channels)

CONV = "conv2d.winograd"
GRAD = "conv2d_grad_input.winograd"


def _attrs(padding=1, stride=1, dilation=1, groups=1, **extra):
    return {"stride": [stride] * 2, "padding": [padding] * 2, "dilation": [dilation] * 2, "groups": groups, **extra}


def _data(rng, n, c, h, w, o, bias):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((o, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)  # He init
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    return x, wt, b


def _conv_ref64(x, w, b, attrs):
    ins = [x.astype(np.float64), w.astype(np.float64)] + ([b.astype(np.float64)] if b is not None else [])
    return REGISTRY["conv2d"].reference(ins, attrs)[0]


def _grad_ref64(dy, w, attrs):
    return REGISTRY["conv2d_grad_input"].reference([dy.astype(np.float64), w.astype(np.float64)], attrs)[0]


def _run_conv(x, w, b, attrs, threads=1, kernel=CONV):
    ph, pw = attrs["padding"] if isinstance(attrs["padding"], list) else [attrs["padding"]] * 2
    n, _, h, wd = x.shape
    out = [n, w.shape[0], h + 2 * ph - 2, wd + 2 * pw - 2]
    ins = [x, w] + ([b] if b is not None else [])
    return native().run_kernel("cpu", kernel, ins, [("f32", out)], attrs, threads)[0]


def _run_grad(dy, w, attrs, mask=None, threads=1, kernel=GRAD):
    ins = [dy, w] + ([mask] if mask is not None else [])
    return native().run_kernel("cpu", kernel, ins, [("f32", list(attrs["input_shape"]))], attrs, threads)[0]


def _assert_close(got, ref, what, tol=TOL):
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs {ref.shape}"
    assert got.dtype == np.float32
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(got.astype(np.float64) - ref).max()) / scale
    assert err <= tol, f"{what}: max error {err:.3g} of max|ref| > {tol}"
    return err


CASES = [  # n, c, h, w, o, padding, bias
    (1, 3, 8, 8, 4, 1, True),
    (1, 3, 7, 9, 5, 0, False),
    (3, 8, 11, 10, 16, 2, True),
    (3, 16, 5, 5, 8, 1, False),
    (1, 32, 13, 6, 24, 0, True),
    (3, 64, 9, 9, 64, 1, True),
    (1, 64, 3, 3, 32, 2, False),  # one tile, mostly padding
    (3, 5, 20, 17, 7, 2, True),
    (1, 40, 16, 16, 48, 1, True),
    (1, 1, 3, 3, 1, 0, False),  # 1x1 output
]


@pytest.mark.parametrize("n,c,h,w,o,padding,bias", CASES)
def test_conv_matches_reference(n, c, h, w, o, padding, bias):
    rng = np.random.default_rng(hash((n, c, h, w, o, padding)) & 0xFFFF)
    x, wt, b = _data(rng, n, c, h, w, o, bias)
    attrs = _attrs(padding=padding)
    _assert_close(_run_conv(x, wt, b, attrs), _conv_ref64(x, wt, b, attrs), "conv2d.winograd")


def test_scalar_attrs_and_rectangular_padding():
    rng = np.random.default_rng(1)
    x, wt, b = _data(rng, 2, 6, 10, 7, 5, True)
    attrs = {"stride": [1, 1], "padding": [0, 2], "dilation": [1, 1], "groups": 1}
    _assert_close(_run_conv(x, wt, b, attrs), _conv_ref64(x, wt, b, attrs), "padding (0, 2)")
    scalar = {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}
    _assert_close(_run_conv(x, wt, b, scalar), _conv_ref64(x, wt, b, _attrs(padding=1)), "scalar attrs")


@pytest.mark.parametrize("act,extra,fn", [
    ("relu", {}, lambda y: np.maximum(y, 0)),
    ("hardtanh", {"act_min": 0.0, "act_max": 6.0}, lambda y: np.clip(y, 0, 6)),
    ("hardtanh", {"act_min": -0.5, "act_max": 0.25}, lambda y: np.clip(y, -0.5, 0.25)),
    ("none", {}, lambda y: y),
])
def test_fused_activation(act, extra, fn):
    rng = np.random.default_rng(2)
    x, wt, b = _data(rng, 2, 12, 9, 10, 8, True)
    attrs = _attrs(padding=1, activation=act, **extra)
    ref = fn(_conv_ref64(x, wt, b, _attrs(padding=1)))
    got = _run_conv(x, wt, b, attrs)
    _assert_close(got, ref, act)
    if act == "relu":
        assert (got >= 0).all()


GRAD_CASES = [  # n, c, h, w, o, padding
    (1, 3, 8, 8, 4, 1),
    (3, 8, 9, 7, 16, 0),
    (3, 16, 6, 11, 8, 2),
    (1, 64, 10, 10, 32, 1),
    (2, 24, 13, 13, 48, 1),
]


def _grad_data(rng, n, c, h, w, o, padding):
    attrs = _attrs(padding=padding, input_shape=[n, c, h, w])
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    dy = rng.standard_normal((n, o, ho, wo)).astype(np.float32)
    wt = (rng.standard_normal((o, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    return dy, wt, attrs


@pytest.mark.parametrize("n,c,h,w,o,padding", GRAD_CASES)
def test_grad_input_matches_reference(n, c, h, w, o, padding):
    rng = np.random.default_rng(hash((n, c, h, w, o, padding)) & 0xFFFF)
    dy, wt, attrs = _grad_data(rng, n, c, h, w, o, padding)
    _assert_close(_run_grad(dy, wt, attrs), _grad_ref64(dy, wt, attrs), "conv2d_grad_input.winograd")


def test_grad_input_bit_mask():
    rng = np.random.default_rng(3)
    dy, wt, attrs = _grad_data(rng, 2, 10, 9, 9, 12, 1)
    keep = rng.random(tuple(attrs["input_shape"])) < 0.5
    bits = np.packbits(keep.reshape(-1), bitorder="little")  # bit i of element i, LSB first
    assert bits.shape == ((keep.size + 7) // 8,)
    got = _run_grad(dy, wt, attrs, mask=bits)
    _assert_close(got, _grad_ref64(dy, wt, attrs) * keep, "bit mask")
    assert (got[~keep] == 0).all()


@pytest.mark.parametrize("extra,keep_fn", [
    ({"mask_min": 0.0}, lambda y: y > 0),
    ({"mask_min": -0.5, "mask_max": 0.5}, lambda y: (y > -0.5) & (y < 0.5)),
])
def test_grad_input_value_mask(extra, keep_fn):
    rng = np.random.default_rng(4)
    dy, wt, attrs = _grad_data(rng, 2, 6, 8, 10, 9, 2)
    y = rng.standard_normal(tuple(attrs["input_shape"])).astype(np.float32)
    got = _run_grad(dy, wt, {**attrs, **extra}, mask=y)
    _assert_close(got, _grad_ref64(dy, wt, attrs) * keep_fn(y), "value mask")


def test_bands_of_tiles():
    """More tiles than one band holds: several bands, the last one partial."""
    rng = np.random.default_rng(5)
    x, wt, b = _data(rng, 3, 64, 62, 45, 64, True)
    attrs = _attrs(padding=1)
    ws = native().workspace_bytes("cpu", CONV, [("f32", list(x.shape)), ("f32", list(wt.shape)), ("f32", [64])],
                                  [("f32", [3, 64, 62, 45])], attrs)
    u_bytes = 36 * 64 * 64 * 4
    tiles = 3 * 16 * 12
    assert ws < u_bytes + 36 * 128 * 4 * tiles, "expected a band smaller than all tiles"
    _assert_close(_run_conv(x, wt, b, attrs), _conv_ref64(x, wt, b, attrs), "banded")


def test_two_threads_equal_one():
    rng = np.random.default_rng(6)
    x, wt, b = _data(rng, 3, 24, 17, 14, 40, True)
    attrs = _attrs(padding=1)
    np.testing.assert_array_equal(_run_conv(x, wt, b, attrs, threads=1), _run_conv(x, wt, b, attrs, threads=2))
    dy, wt, gattrs = _grad_data(rng, 3, 24, 17, 14, 40, 1)
    np.testing.assert_array_equal(_run_grad(dy, wt, gattrs, threads=1), _run_grad(dy, wt, gattrs, threads=2))
    np.testing.assert_array_equal(_run_grad(dy, wt, gattrs, threads=1), _run_grad(dy, wt, gattrs, threads=3))


@pytest.mark.parametrize("wshape,attrs,reason", [
    ((4, 3, 3, 3), _attrs(stride=2), "only stride 1"),
    ((4, 3, 5, 5), _attrs(padding=2), "only 3x3"),
    ((4, 3, 1, 1), _attrs(padding=0), "only 3x3"),
    ((4, 2, 3, 3), _attrs(groups=2), "only groups 1"),
    ((4, 3, 3, 3), _attrs(dilation=2, padding=2), "only dilation 1"),
    ((4, 3, 3, 3), _attrs(padding=3), "padding must be 0..2"),
    ((4, 3, 3, 3), _attrs(padding=0, activation="gelu"), "unknown activation"),
])
def test_conv_rejects_other_geometry(wshape, attrs, reason):
    x = np.zeros((1, 3, 12, 12), np.float32)
    w = np.zeros(wshape, np.float32)
    err = native().NativeError
    with pytest.raises(err, match=reason):
        native().run_kernel("cpu", CONV, [x, w], [("f32", [1, 4, 10, 10])], attrs, 1)


@pytest.mark.parametrize("attrs,reason", [
    (_attrs(stride=2, input_shape=[1, 3, 12, 12]), "only stride 1"),
    (_attrs(groups=3, input_shape=[1, 3, 12, 12]), "only groups 1"),
    (_attrs(dilation=2, input_shape=[1, 3, 12, 12]), "only dilation 1"),
])
def test_grad_rejects_other_geometry(attrs, reason):
    dy = np.zeros((1, 4, 12, 12), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(native().NativeError, match=reason):
        native().run_kernel("cpu", GRAD, [dy, w], [("f32", [1, 3, 12, 12])], attrs, 1)


def test_grad_rejects_bad_mask():
    dy = np.zeros((1, 4, 12, 12), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    attrs = _attrs(input_shape=[1, 3, 12, 12])
    with pytest.raises(native().NativeError, match="mask bits"):
        native().run_kernel("cpu", GRAD, [dy, w, np.zeros(7, np.uint8)], [("f32", [1, 3, 12, 12])], attrs, 1)
    with pytest.raises(native().NativeError, match="needs attr mask_min"):
        native().run_kernel("cpu", GRAD, [dy, w, np.zeros((1, 3, 12, 12), np.float32)], [("f32", [1, 3, 12, 12])],
                            attrs, 1)


@pytest.mark.parametrize("c,hw", [(64, 14), (128, 14), (256, 14), (512, 7)])
def test_error_on_resnet_channels(c, hw):
    """F(4x4,3x3) in float32 on ResNet-18's channel counts: error vs float64, beside the default
    (im2col + GEMM) kernel's own float32 error for scale."""
    rng = np.random.default_rng(c)
    x, wt, b = _data(rng, 1, c, hw, hw, c, True)
    x = np.maximum(x, 0)  # post-ReLU activations, as in the network
    attrs = _attrs(padding=1)
    ref = _conv_ref64(x, wt, b, attrs)
    err = _assert_close(_run_conv(x, wt, b, attrs), ref, f"{c} channels")
    direct = _assert_close(_run_conv(x, wt, b, attrs, kernel="conv2d"), ref, "direct")
    print(f"\n{c}ch {hw}x{hw}: winograd error {err:.2e} of max|y|, im2col {direct:.2e}")
    dy = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    gattrs = _attrs(padding=1, input_shape=[1, c, hw, hw])
    gerr = _assert_close(_run_grad(dy, wt, gattrs), _grad_ref64(dy, wt, gattrs), f"grad {c} channels")
    print(f"{c}ch {hw}x{hw}: grad_input winograd error {gerr:.2e}")
