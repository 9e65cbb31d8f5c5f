"""Every CPU kernel against the numpy reference of its op, on every sample of the op sweep.

The harness calls one kernel through `edgetune._native.run_kernel` on the op's sample inputs
(outputs are poisoned first, so an element the kernel forgets fails) and compares with
`compiler/ops` reference. Forward, backward and optimizer-update ops are all registry ops, so
this covers all three. Also: every op has a CPU kernel, and 2 threads give the same result as 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.ir import TensorType, dtype_of_numpy
from edgetune.compiler.ops import REGISTRY
from edgetune.runtime.native import native

from ops.test_op_sweep import CASES  # same cases, same seeds as the op sweep

RTOL, ATOL = 1e-5, 1e-6


def _specs(name, sample):
    in_types = [TensorType(tuple(np.shape(x)), dtype_of_numpy(np.asarray(x).dtype)) for x in sample.inputs]
    out_types = REGISTRY[name].infer(in_types, sample.attrs)
    return [(t.dtype, list(t.shape)) for t in out_types]


def _run(name, sample, threads=1):
    return native().run_kernel("cpu", name, [np.asarray(x) for x in sample.inputs], _specs(name, sample),
                               sample.attrs, threads)


def test_every_op_has_a_cpu_kernel():
    kernels = set(native().kernel_names("cpu"))
    missing = sorted(set(REGISTRY) - kernels)
    assert not missing, f"ops without a CPU kernel: {missing}"


@pytest.mark.parametrize("name,index,sample", CASES)
def test_kernel_matches_reference(name, index, sample):
    expected = REGISTRY[name].reference([np.asarray(x) for x in sample.inputs], sample.attrs)
    got = _run(name, sample)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        assert g.shape == e.shape and g.dtype == e.dtype, f"output {i}: {g.dtype}{g.shape} vs {e.dtype}{e.shape}"
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"{name} output {i}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"{name} output {i}")


@pytest.mark.parametrize("name,index,sample", CASES)
def test_two_threads_equal_one(name, index, sample):
    one = _run(name, sample, threads=1)
    two = _run(name, sample, threads=2)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
