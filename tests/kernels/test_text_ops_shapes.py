"""The text model's layer_norm, gelu and sum kernels (and batch norm on the same float-lane sums) at its own shapes (MiniLM: 32 x 8 tokens of
384, 1536 in the MLP), which the op sweep's small samples do not reach: D = 384 is six blocks of
norm.cc's float-lane sums, 1536-wide sums split their rows. Each against the numpy reference
(with the sweep's tolerances) and 1 thread against 2 bit for bit. Data far from 0 (|mean| >> std)
checks that layer norm's float-lane sums keep the statistics' precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.ir import TensorType, dtype_of_numpy
from edgetune.compiler.ops import REGISTRY
from edgetune.runtime.native import native

RTOL, ATOL = 1e-5, 1e-6


def _run(name, inputs, attrs, threads):
    types = [TensorType(x.shape, dtype_of_numpy(x.dtype)) for x in inputs]
    specs = [(t.dtype, list(t.shape)) for t in REGISTRY[name].infer(types, attrs)]
    return native().run_kernel("cpu", name, inputs, specs, attrs, threads)


def _check(name, inputs, attrs, rtol=RTOL, atol=ATOL):
    expected = REGISTRY[name].reference(inputs, attrs)
    one = _run(name, inputs, attrs, 1)
    two = _run(name, inputs, attrs, 2)
    for i, (e, a, b) in enumerate(zip(expected, one, two)):
        np.testing.assert_allclose(a, np.asarray(e), rtol=rtol, atol=atol, err_msg=f"{name} output {i}")
        np.testing.assert_array_equal(a, b, err_msg=f"{name} output {i}: 2 threads differ from 1")


def _data(rng, *shape, scale=1.0, offset=0.0):
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("D", [384, 1536, 389])
def test_layer_norm_text_shapes(D, offset):
    rng = np.random.default_rng(D + int(offset))
    x = _data(rng, 32, 8, D, offset=offset)
    w, b = _data(rng, D, offset=1.0), _data(rng, D)
    attrs = {"normalized_shape": [D], "eps": 1e-12}
    _check("layer_norm", [x, w, b], attrs)
    _, mean, rstd = REGISTRY["layer_norm"].reference([x, w, b], attrs)
    dy = _data(rng, 32, 8, D)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        # dw sums 256 rows of dy * xhat: compare at the scale of its terms
        _check("layer_norm_backward", [dy, x, w, mean, rstd], {"normalized_shape": [D], "output_mask": mask},
               atol=1e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_text_shapes(approximate):
    rng = np.random.default_rng(7)
    x = _data(rng, 32, 8, 1536, scale=3.0)
    x.reshape(-1)[:6] = [-30.0, -12.0, -5.0, 0.0, 5.0, 30.0]
    dy = _data(rng, 32, 8, 1536)
    attrs = {"approximate": approximate}
    _check("gelu", [x], attrs)
    _check("gelu_backward", [dy, x], attrs)


@pytest.mark.parametrize("shape,dims", [((32, 8, 384), [0, 1]), ((32, 8, 1536), [0, 1]), ((32, 384), [0]),
                                        ((32, 2), [0]), ((256, 1000), [0]), ((7, 3, 5), [0, 1])])
def test_sum_text_shapes(shape, dims):
    rng = np.random.default_rng(len(shape) * 1000 + shape[-1])
    x = _data(rng, *shape)
    attrs = {"dims": dims, "keepdim": False}
    one, two = _run("sum", [x], attrs, 1)[0], _run("sum", [x], attrs, 2)[0]
    np.testing.assert_array_equal(one, two)
    # numpy's reference sums in f32 (pairwise): compare with the exact sum instead, allowing a few
    # f32 roundings of the terms' absolute sum (what any f32 summation may lose)
    exact = x.astype(np.float64).sum(axis=tuple(dims))
    bound = ATOL + RTOL * np.abs(exact) + 4 * 2.0 ** -24 * np.abs(x.astype(np.float64)).sum(axis=tuple(dims))
    assert np.all(np.abs(one - exact) <= bound)
    ref = REGISTRY["sum"].reference([x], attrs)[0]
    assert np.all(np.abs(ref - exact) <= bound)  # the reference itself is within the same bound


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (8, 5, 7, 7), (6, 3, 1, 1)])
def test_batch_norm_float_block_sums(shape, offset):
    """batch_norm_train / _backward sum each (image, channel) plane on the same float-lane blocks
    (64-element blocks of a 784-wide plane, a 49-wide plane below one block, S = 1); data far
    from 0 checks the shifted sums keep the variance."""
    rng = np.random.default_rng(sum(shape) + int(offset))
    C = shape[1]
    x = _data(rng, *shape, offset=offset)
    w, b = _data(rng, C, offset=1.0), _data(rng, C)
    rm, rv = _data(rng, C), np.abs(_data(rng, C)) + 0.5
    attrs = {"eps": 1e-5, "momentum": 0.1}
    _check("batch_norm_train", [x, w, b, rm, rv], attrs)
    _, mean, invstd, _, _ = REGISTRY["batch_norm_train"].reference([x, w, b, rm, rv], attrs)
    dy = _data(rng, *shape)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        _check("batch_norm_backward", [dy, x, w, np.asarray(mean), np.asarray(invstd)], {"output_mask": mask},
               atol=1e-5)
