"""1-bit activation masks (compiler/ops/mask.py, csrc/kernels/cpu/mask.cc).

The point of the ops: mask_grad(dy, activation_mask(y)) must equal relu_backward(dy, y) and
hardtanh_backward(dy, y) exactly, on the reference and on the kernels, including elements
exactly at the bounds, infinities and NaN. Beyond the generic sweep (test_cpu_kernels.py):
sizes spanning many threads' chunks and not a multiple of 8, 2 threads == 1 bit for bit, the
packed layout (LSB first, padding 0), and clear errors for bad inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.errors import ShapeError
from edgetune.compiler.ir import TensorType
from edgetune.compiler.ops import REGISTRY
from edgetune.compiler.ops.registry import run_reference
from edgetune.runtime.native import native

BOUNDS = [({"min": 0.0}, "relu_backward", {}),
          ({"min": 0.0, "max": 6.0}, "hardtanh_backward", {"min": 0.0, "max": 6.0}),
          ({"min": -1.0, "max": 1.0}, "hardtanh_backward", {"min": -1.0, "max": 1.0})]


def _kernel(op, arrays, attrs, threads=1):
    types = [TensorType(a.shape, {np.float32: "f32", np.float64: "f64", np.uint8: "u8"}[a.dtype.type])
             for a in arrays]
    specs = [(t.dtype, list(t.shape)) for t in REGISTRY[op].infer(types, attrs)]
    return native().run_kernel("cpu", op, arrays, specs, attrs, threads)


def _activations(rng, n, attrs):
    """Random values with plenty exactly on the bounds, plus inf, -inf and NaN."""
    y = rng.uniform(-8, 8, size=n).astype(np.float32)
    y[::7] = attrs["min"]
    if "max" in attrs:
        y[3::11] = attrs["max"]
    y[5::101] = np.inf
    y[6::103] = -np.inf
    y[8::107] = np.nan
    return y


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100_003, 262_145])
@pytest.mark.parametrize("attrs,backward,battrs", BOUNDS)
def test_mask_grad_of_mask_is_the_backward_op(n, attrs, backward, battrs):
    rng = np.random.default_rng(n)
    y = _activations(rng, n, attrs).reshape(-1, 1) if n % 2 else _activations(rng, n, attrs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    expect = run_reference(backward, [dy, y], battrs)[0]

    bits_ref = run_reference("activation_mask", [y], attrs)[0]
    assert bits_ref.shape == ((n + 7) // 8,) and bits_ref.dtype == np.uint8
    np.testing.assert_array_equal(run_reference("mask_grad", [dy, bits_ref], {})[0], expect)

    bits = _kernel("activation_mask", [y], attrs)[0]
    np.testing.assert_array_equal(bits, bits_ref)
    got = _kernel("mask_grad", [dy, bits], {})[0]
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(got, _kernel(backward, [dy, y], battrs)[0])

    # two threads: the same bytes, the same gradient
    np.testing.assert_array_equal(_kernel("activation_mask", [y], attrs, threads=2)[0], bits)
    np.testing.assert_array_equal(_kernel("mask_grad", [dy, bits], {}, threads=2)[0], got)


def test_layout_is_lsb_first_with_zero_padding():
    y = np.array([1, -1, 1, 1, -1, -1, -1, 1, 1, 1, -1], dtype=np.float32)  # 11 elements -> 2 bytes
    want = np.array([0b10001101, 0b011], dtype=np.uint8)
    np.testing.assert_array_equal(run_reference("activation_mask", [y], {"min": 0.0})[0], want)
    np.testing.assert_array_equal(_kernel("activation_mask", [y], {"min": 0.0})[0], want)
    # padding bits of the last byte are ignored by mask_grad even when set
    dy = np.arange(1, 12, dtype=np.float32)
    dirty = want | np.array([0, 0b11111000], dtype=np.uint8)
    np.testing.assert_array_equal(_kernel("mask_grad", [dy, dirty], {})[0], np.where(y > 0, dy, 0))


def test_f64_activations():
    y = np.array([-1.0, 0.0, 1e-300, 2.0, 7.0], dtype=np.float64)
    for attrs in ({"min": 0.0}, {"min": 0.0, "max": 6.0}):
        np.testing.assert_array_equal(_kernel("activation_mask", [y], attrs)[0],
                                      run_reference("activation_mask", [y], attrs)[0])


def test_bad_inputs_are_rejected():
    k = native()
    y = np.ones(10, dtype=np.float32)
    with pytest.raises(k.NativeError, match="expected u8\\[2\\]"):
        k.run_kernel("cpu", "activation_mask", [y], [("u8", [3])], {"min": 0.0}, 1)
    with pytest.raises(k.NativeError, match="missing attribute 'min'"):
        k.run_kernel("cpu", "activation_mask", [y], [("u8", [2])], {}, 1)
    with pytest.raises(k.NativeError, match="f32 or f64"):
        k.run_kernel("cpu", "activation_mask", [np.ones(10, dtype=np.int32)], [("u8", [2])], {"min": 0.0}, 1)
    with pytest.raises(k.NativeError, match="bits is u8\\[3\\], expected u8\\[2\\]"):
        k.run_kernel("cpu", "mask_grad", [y, np.zeros(3, dtype=np.uint8)], [("f32", [10])], {}, 1)
    with pytest.raises(k.NativeError, match="bits is f32"):
        k.run_kernel("cpu", "mask_grad", [y, np.zeros(2, dtype=np.float32)], [("f32", [10])], {}, 1)
    with pytest.raises(k.NativeError, match="output"):
        k.run_kernel("cpu", "mask_grad", [y, np.zeros(2, dtype=np.uint8)], [("f32", [5, 2])], {}, 1)
    # and the IR's shape rules say the same
    with pytest.raises(ShapeError, match="u8\\[2\\]"):
        REGISTRY["mask_grad"].infer([TensorType((10,), "f32"), TensorType((3,), "u8")], {})
    with pytest.raises(ShapeError, match="min"):
        REGISTRY["activation_mask"].infer([TensorType((10,), "f32")], {})
