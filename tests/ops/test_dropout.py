"""Dropout masks from the counter-based stream: keep rate, scaling, determinism, independence of
counters/streams/seeds, portability of the stream (an independent pure-Python splitmix64), and
the gradient dy * mask through autodiff."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.autodiff import differentiate
from edgetune.compiler.errors import ShapeError
from edgetune.compiler.ir import Graph, TensorType
from edgetune.compiler.ops import REGISTRY
from edgetune.compiler.ops.dropout import splitmix64, uniform_stream
from edgetune.compiler.ops.registry import Builder
from edgetune.runtime.reference import ReferenceExecutor

DROPOUT = REGISTRY["dropout"]
N = 10_000


def _run(x, counter, p, stream=0, seed=None):
    attrs = {"p": p, "stream": stream}
    if seed is not None:
        attrs["seed"] = seed
    y, mask = DROPOUT.reference([x, np.array(counter, dtype=np.int64)], attrs)
    return y, mask


def _x(shape=(100, 100), seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keep_rate_and_scale(p):
    x = _x()
    y, mask = _run(x, counter=7, p=p)
    assert mask.shape == x.shape and mask.dtype == np.float32 and y.dtype == np.float32
    kept = mask != 0
    sigma = np.sqrt(p * (1 - p) / N)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma, f"keep rate {kept.mean():.4f}, expected {1 - p}"
    np.testing.assert_allclose(mask[kept], np.float32(1 / (1 - p)), rtol=1e-6)
    assert np.all(mask[~kept] == 0)
    np.testing.assert_array_equal(y, x * mask)
    np.testing.assert_array_equal(y[~kept], 0)


def test_expectation_is_preserved():
    """E[y] = x: averaging over many counters recovers x (inverted dropout)."""
    x = np.full((50,), 2.0, np.float32)
    ys = np.stack([_run(x, counter=c, p=0.4)[0] for c in range(400)])
    assert abs(ys.mean() - 2.0) < 0.05


def test_p_zero_is_identity():
    x = _x((4, 5))
    y, mask = _run(x, counter=3, p=0.0)
    np.testing.assert_array_equal(mask, np.ones_like(x))
    np.testing.assert_array_equal(y, x)


def test_same_counter_same_mask():
    x = _x()
    _, m1 = _run(x, counter=11, p=0.3, stream=2)
    _, m2 = _run(x, counter=11, p=0.3, stream=2)
    np.testing.assert_array_equal(m1, m2)
    # the mask depends on positions, not on the values of x
    _, m3 = _run(_x(seed=5), counter=11, p=0.3, stream=2)
    np.testing.assert_array_equal(m1, m3)


def _agreement(m1, m2):
    return np.mean((m1 != 0) == (m2 != 0))


@pytest.mark.parametrize("change", ["counter", "stream", "seed"])
def test_different_counter_stream_or_seed_gives_an_independent_mask(change):
    p = 0.3
    x = _x()
    base = dict(counter=5, p=p, stream=1, seed=0)
    other = dict(base)
    other[change] += 1
    _, m1 = _run(x, **base)
    _, m2 = _run(x, **other)
    assert not np.array_equal(m1, m2)
    # independent Bernoulli(1-p) masks agree on p^2 + (1-p)^2 of the elements
    expected = p * p + (1 - p) * (1 - p)
    sigma = np.sqrt(expected * (1 - expected) / N)
    assert abs(_agreement(m1, m2) - expected) < 5 * sigma


def test_consecutive_counters_are_all_distinct():
    x = _x((64,))
    masks = {_run(x, counter=c, p=0.5)[1].tobytes() for c in range(50)}
    assert len(masks) == 50


def test_mask_depends_on_flat_element_index_only():
    """Backends index the stream by flat element index, whatever the shape."""
    _, m_2d = _run(_x((4, 5)), counter=9, p=0.3, stream=3)
    _, m_1d = _run(_x((20,)), counter=9, p=0.3, stream=3)
    np.testing.assert_array_equal(m_2d.reshape(-1), m_1d)


# ---------------------------------------------------------------------------------------------
# the stream itself: an independent pure-Python implementation (what a C++ backend reproduces)
# ---------------------------------------------------------------------------------------------
_M = (1 << 64) - 1


def _py_splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M
    return z ^ (z >> 31)


def _py_uniform(n, seed, stream, counter):
    key = _py_splitmix64(seed ^ _py_splitmix64(stream ^ _py_splitmix64(counter)))
    return [(_py_splitmix64((key + i) & _M) >> 40) / float(1 << 24) for i in range(n)]


def test_splitmix64_is_the_standard_one():
    # first output of the reference splitmix64 generator seeded with 0 (Vigna's splitmix64.c)
    assert int(splitmix64(np.uint64(0))) == 0xE220A8397B1DCDAF == _py_splitmix64(0)
    zs = np.array([1, 2, 12345, (1 << 63) + 17, _M], dtype=np.uint64)
    assert [int(v) for v in splitmix64(zs)] == [_py_splitmix64(int(z)) for z in zs]


@pytest.mark.parametrize("seed,stream,counter", [(0, 0, 0), (0, 1, 3), (42, 7, 123456), (2**40, 2**33, 2**62)])
def test_uniform_stream_matches_pure_python(seed, stream, counter):
    u = uniform_stream(37, seed, stream, counter)
    assert u.dtype == np.float64 and u.shape == (37,)
    assert np.all((u >= 0) & (u < 1))
    assert u.tolist() == _py_uniform(37, seed, stream, counter)


# ---------------------------------------------------------------------------------------------
# types and gradient
# ---------------------------------------------------------------------------------------------
def test_infer_rejects_bad_counter_and_p():
    x = TensorType((3, 4), "f32")
    assert DROPOUT.infer([x, TensorType((), "i64")], {"p": 0.2}) == [x, x]
    with pytest.raises(ShapeError):
        DROPOUT.infer([x, TensorType((), "f32")], {"p": 0.2})
    with pytest.raises(ShapeError):
        DROPOUT.infer([x, TensorType((1,), "i64")], {"p": 0.2})
    with pytest.raises(ShapeError):
        DROPOUT.infer([x, TensorType((), "i64")], {"p": 1.0})


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_gradient_is_dy_times_mask(p):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(6, 7)).astype(np.float32)
    R = rng.uniform(-1, 1, size=(6, 7)).astype(np.float32)
    g = Graph("dropout")
    xin = g.add_input("x", TensorType(x.shape, "f32"))
    cin = g.add_input("counter", TensorType((), "i64"))
    y, mask = Builder(g, "forward").emit("dropout", [xin, cin], {"p": p, "stream": 4})
    lb = Builder(g, "loss")
    loss = lb.emit1("sum", [lb.emit1("mul", [y, lb.const(R, "f32", R.shape)])], {"dims": [0, 1], "keepdim": False})
    grads = differentiate(g, loss, [xin])
    # backward keeps only the mask, never x
    assert not any(xin in n.inputs for n in g.section_nodes("backward"))
    g.outputs["dx"] = grads["x"]
    g.outputs["mask"] = mask
    feeds = {"x": x, "counter": np.array(12, dtype=np.int64)}
    outs, _ = ReferenceExecutor(g).run(feeds, {})
    _, expect_mask = _run(x, counter=12, p=p, stream=4)
    np.testing.assert_array_equal(outs["mask"], expect_mask)
    np.testing.assert_array_equal(outs["dx"], R * expect_mask)
    if p:
        assert (outs["dx"] == 0).any() and (outs["dx"] != 0).any()
