"""The GEMM kernels on the build's GEMM library ("matmul", "linear": sgemm, i.e. MKL / OpenBLAS when
the build linked one, cmake/gemm.cmake) and their built-in twins ("matmul.own", "linear.own":
sgemm_own), against numpy in float64 and against each other.

The kernel-selection pass times both per node and pins the faster, so both must compute the op on
every shape: M/N/K of 1, 3, 17 and sizes past the own kernel's tiles, batched and broadcast matmuls,
linear with and without bias and with its fused activations, matmul with its output masks (u8 bits
and f32 values). Each runs on 1 and 2 threads with bit-identical results. Also: the module names
its GEMM library, and the cpu target offers the ".own" twins exactly when there is a library, with
a cost model that ranks the library first. (csrc/tests/test_kernels_gemm.cc covers sgemm itself:
transposes, beta = 1 accumulation, leading dimensions, every epilogue.)
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgetune.compiler.ir import TensorType, dtype_of_numpy
from edgetune.compiler.ops import REGISTRY
from edgetune.runtime.native import native

pytestmark = pytest.mark.native

DIMS = [1, 3, 17, 70]
RTOL, ATOL = 2e-5, 2e-5


def _specs(op, inputs, attrs):
    types = [TensorType(np.shape(x), dtype_of_numpy(np.asarray(x).dtype)) for x in inputs]
    return [(t.dtype, list(t.shape)) for t in REGISTRY[op].infer(types, attrs)]


def run(kernel, inputs, attrs=None, threads=1):
    attrs = attrs or {}
    inputs = [np.asarray(x) for x in inputs]
    return native().run_kernel("cpu", kernel, inputs, _specs(kernel.split(".")[0], inputs, attrs), attrs,
                               threads)[0]


def both(kernel, inputs, attrs=None):
    """The op-named kernel and its .own twin on 1 and 2 threads: each pair bit-identical."""
    out = {}
    for k in (kernel, kernel + ".own"):
        one, two = run(k, inputs, attrs, 1), run(k, inputs, attrs, 2)
        np.testing.assert_array_equal(one, two, err_msg=f"{k}: 2 threads differ from 1")
        out[k] = one
    return out


def test_backend_is_named_and_the_own_twins_are_registered():
    mod = native()
    assert mod.gemm_backend in ("mkl", "openblas", "own")
    names = set(mod.kernel_names("cpu"))
    assert {"matmul", "matmul.own", "linear", "linear.own"} <= names


@pytest.mark.parametrize("m,n,k", list(itertools.product(DIMS, DIMS, DIMS)), ids=str)
def test_matmul_and_own_match_numpy(m, n, k):
    rng = np.random.default_rng(m * 10000 + n * 100 + k)
    x = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    y = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    want = x.astype(np.float64) @ y.astype(np.float64)
    for kernel, got in both("matmul", [x, y]).items():
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1, k) ** 0.5, err_msg=kernel)


BATCHED = [((2, 3, 17, 5), (5, 3)), ((4, 1, 3, 17), (2, 17, 1)), ((3, 1, 17), (3, 17, 70)),
           ((2, 8, 8, 32), (2, 8, 32, 8)), ((1, 1), (1, 1)), ((6, 300, 40), (40, 33))]


@pytest.mark.parametrize("xs,ys", BATCHED, ids=str)
def test_batched_matmul_and_own_match_numpy(xs, ys):
    rng = np.random.default_rng(sum(xs) + 7 * sum(ys))
    x = rng.uniform(-1, 1, xs).astype(np.float32)
    y = rng.uniform(-1, 1, ys).astype(np.float32)
    want = np.matmul(x.astype(np.float64), y.astype(np.float64))
    for kernel, got in both("matmul", [x, y]).items():
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * 10, err_msg=kernel)


ACTS = {
    "none": ({}, lambda v: v),
    "relu": ({"activation": "relu"}, lambda v: np.maximum(v, 0)),
    "hardtanh": ({"activation": "hardtanh", "act_min": -0.5, "act_max": 0.25}, lambda v: np.clip(v, -0.5, 0.25)),
}


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("xs,outf", [((1, 1), 1), ((3,), 17), ((17, 3), 1), ((2, 3, 17), 3), ((70, 17), 70),
                                     ((257, 300), 37)], ids=str)
def test_linear_and_own_match_numpy(xs, outf, act):
    attrs, f = ACTS[act]
    rng = np.random.default_rng(sum(xs) * 31 + outf)
    x = rng.uniform(-1, 1, xs).astype(np.float32)
    w = rng.uniform(-1, 1, (outf, xs[-1])).astype(np.float32)
    b = rng.uniform(-1, 1, outf).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for ins, want in (([x, w, b], f(x64 @ w64.T + b)), ([x, w], f(x64 @ w64.T))):
        for kernel, got in both("linear", ins, attrs).items():
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * 20,
                                       err_msg=f"{kernel} bias={len(ins) == 3}")


@pytest.mark.parametrize("form", ["bits", "values"])
@pytest.mark.parametrize("xs,ys", [((3, 17), (17, 1)), ((17, 3), (3, 17)), ((2, 5, 17), (17, 70)),
                                   ((2, 3, 9, 4), (2, 1, 4, 11))], ids=str)
def test_masked_matmul_and_own_match_numpy(xs, ys, form):
    rng = np.random.default_rng(sum(xs) + sum(ys) + len(form))
    x = rng.uniform(-1, 1, xs).astype(np.float32)
    y = rng.uniform(-1, 1, ys).astype(np.float32)
    full = np.matmul(x.astype(np.float64), y.astype(np.float64))
    if form == "bits":
        keep = rng.random(full.shape) < 0.5
        mask, attrs = np.packbits(keep.reshape(-1), bitorder="little"), {}
    else:
        act = rng.uniform(-1, 7, full.shape).astype(np.float32)
        keep = (act > 0) & (act < 6)
        mask, attrs = act, {"mask_min": 0.0, "mask_max": 6.0}
    want = np.where(keep, full, 0.0)
    for kernel, got in both("matmul", [x, y, mask], attrs).items():
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * 10, err_msg=kernel)


def test_own_twins_are_offered_only_with_a_library_and_ranked_behind_it():
    from edgetune.compiler.ir import Graph
    from edgetune.compiler.ops.registry import Builder
    from edgetune.compiler.target import host_arch
    from edgetune.runtime.targets import NativeTarget

    mod = native()
    target = NativeTarget("cpu", None, mod)
    names = set(target.kernel_names())
    g = Graph()
    x = g.add_input("x", TensorType((256, 384)))
    w = g.add_input("w", TensorType((1536, 384)))
    node = Builder(g).emit1("linear", [x, w], {}).producer
    if mod.gemm_backend == "own":
        assert not any(k.endswith(".own") for k in names)
        assert target.kernels_for(node) == ["linear"]
    else:
        assert {"matmul.own", "linear.own"} <= names
        assert sorted(target.kernels_for(node)) == ["linear", "linear.own"]
        if mod.gemm_backend == "mkl":  # the cost model (-O2) keeps the library
            assert target.estimated_seconds("linear", node) < target.estimated_seconds("linear.own", node)
    # another architecture's build has no library: no twins offered
    other = NativeTarget("cpu", "aarch64" if host_arch() == "x86_64" else "x86_64", mod)
    assert not any(k.endswith(".own") for k in other.kernel_names())
