"""The optimizer kernels' non-finite guard and denormal handling (csrc/kernels/cpu/optim.cc).

adamw_update's check pass settles most blocks with a conservative f32 bound and runs the exact
arithmetic only where the bound cannot decide; these cases steer elements into each branch: a
state so large the bound gives up but the update is finite (must update, matching the numpy
reference), one element among many that overflows (must refuse), and denormal state (flushed to
zero on x86, where each denormal costs a microcode assist; the result stays within 1.2e-38 of the
reference).
"""

from __future__ import annotations

import platform

import numpy as np
import pytest

from edgetune.compiler.ops import REGISTRY
from edgetune.runtime.native import native

ATTRS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
N = 70_000  # several of the kernel's parallel chunks (16384) and stack blocks (256)


def _scalar(v):
    return np.array(v, dtype=np.float32)


def _state(seed=0, n=N):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    m = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    v = (np.abs(rng.standard_normal(n)) * 1e-4).astype(np.float32)
    return p, g, m, v


def _adamw(p, g, m, v, lr=1e-3, step=5, attrs=ATTRS, threads=2):
    inputs = [p, g, _scalar(lr), m, v, _scalar(step)]
    specs = [("f32", list(p.shape))] * 3
    got = native().run_kernel("cpu", "adamw_update", inputs, specs, attrs, threads)
    want = REGISTRY["adamw_update"].reference(inputs, attrs)
    return got, want


def _assert_close(got, want, atol=1e-6):
    for i, (a, b) in enumerate(zip(got, want)):
        assert np.isfinite(a).all(), f"output {i} has inf/NaN"
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=atol, err_msg=f"output {i}")


def test_large_state_the_bound_cannot_settle_still_updates_exactly():
    p, g, m, v = _state()
    # |m| near FLT_MAX / 4 fails the bound's |m1| <= FLT_MAX / 8 but updates to finite values
    m[::97] = np.float32(8e37)
    v[::97] = np.float32(1e37)
    got, want = _adamw(p, g, m, v)
    _assert_close(got, want)
    assert np.abs(got[1][::97]).min() > 1e37  # the large moments were really updated


def test_one_overflowing_element_among_many_refuses_the_whole_update():
    p, g, m, v = _state()
    # new p = p decay - lr m1 / (sqrt(v1) / sqrt(bc2) + eps): huge m1 over eps overflows f32
    m[N // 2 + 3] = np.float32(3e38)
    v[N // 2 + 3] = np.float32(0.0)
    with pytest.raises(Exception, match="inf or NaN"):
        _adamw(p, g, m, v, lr=1.0)


@pytest.mark.parametrize("where", ["grad", "param", "m", "v"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_input_refuses(where, bad):
    p, g, m, v = _state(seed=1)
    arr = {"grad": g, "param": p, "m": m, "v": v}[where]
    arr[12_345] = bad
    with pytest.raises(Exception, match="inf or NaN"):
        _adamw(p, g, m, v)


def test_huge_gradient_overflows_the_second_moment_and_refuses():
    p, g, m, v = _state(seed=2)
    g[40_000] = np.float32(3e38)  # (1 - beta2) g^2 > FLT_MAX
    with pytest.raises(Exception, match="inf or NaN"):
        _adamw(p, g, m, v)


def test_denormal_state_updates_within_the_flush():
    p, g, m, v = _state(seed=3)
    tiny = np.float32(1e-40)  # a denormal: Adam's v decays into them where the gradient is zero
    v[::3] = tiny
    m[::5] = tiny
    g[::7] = 0.0
    got, want = _adamw(p, g, m, v)
    _assert_close(got, want, atol=1.2e-38)
    if platform.machine() in ("x86_64", "AMD64"):
        for out in got[1:]:  # flushed, never written back as denormals
            a = np.abs(out)
            assert not ((a > 0) & (a < np.finfo(np.float32).tiny)).any()


def test_one_and_two_threads_agree_on_both_check_paths():
    p, g, m, v = _state(seed=4)
    m[::101] = np.float32(8e37)  # some blocks take the exact check, the rest the bound
    one, _ = _adamw(p, g, m, v, threads=1)
    two, _ = _adamw(p, g, m, v, threads=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_sgd_momentum_refuses_overflow_and_flushes_denormals():
    rng = np.random.default_rng(5)
    p = rng.standard_normal(N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    buf = rng.standard_normal(N).astype(np.float32)
    attrs = {"momentum": 0.9, "dampening": 0.0, "nesterov": 0, "weight_decay": 0.0}
    specs = [("f32", [N])] * 2
    buf[::4] = np.float32(1e-40)
    g[::4] = 0.0
    inputs = [p, g, _scalar(0.1), buf, _scalar(3)]
    got = native().run_kernel("cpu", "sgd_update", inputs, specs, attrs, 2)
    want = REGISTRY["sgd_update"].reference(inputs, attrs)
    _assert_close(got, want, atol=1.2e-38)
    g[100] = np.float32(3e38)
    with pytest.raises(Exception, match="inf or NaN"):
        native().run_kernel("cpu", "sgd_update", [p, g, _scalar(10.0), buf, _scalar(3)], specs, attrs, 2)


SGD_VARIANTS = [
    {"momentum": 0.0, "dampening": 0.0, "nesterov": 0, "weight_decay": 0.0},
    {"momentum": 0.9, "dampening": 0.1, "nesterov": 0, "weight_decay": 0.01},
    {"momentum": 0.9, "dampening": 0.0, "nesterov": 1, "weight_decay": 0.01},
]


def _sgd(p, g, buf, attrs, lr=0.1, step=3, threads=2):
    momentum = attrs["momentum"] != 0.0
    inputs = [p, g, _scalar(lr)] + ([buf, _scalar(step)] if momentum else [])
    specs = [("f32", list(p.shape))] * (2 if momentum else 1)
    got = native().run_kernel("cpu", "sgd_update", inputs, specs, attrs, threads)
    return got, REGISTRY["sgd_update"].reference(inputs, attrs)


@pytest.mark.parametrize("attrs", SGD_VARIANTS, ids=["plain", "momentum+wd", "nesterov"])
def test_sgd_large_values_the_bound_cannot_settle_still_update_exactly(attrs):
    """|g| of 1e38 is past the f32 bound's FLT_MAX / 8 limit, but with lr 1e-3 the update is
    finite: the exact check must let it through, and the result must match the reference."""
    p, g, _, _ = _state(seed=6)
    buf = (np.random.default_rng(7).standard_normal(N) * 1e-2).astype(np.float32)
    g[::97] = np.float32(1e38)
    got, want = _sgd(p, g, buf, attrs, lr=1e-3)
    for a, b in zip(got, want):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)
    one, _ = _sgd(p, g, buf, attrs, lr=1e-3, threads=1)
    for a, b in zip(one, got):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("attrs", SGD_VARIANTS, ids=["plain", "momentum+wd", "nesterov"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, "overflow"])
def test_sgd_one_bad_element_among_many_refuses(attrs, bad):
    p, g, _, _ = _state(seed=8)
    buf = np.zeros(N, dtype=np.float32)
    if bad == "overflow":
        g[N - 3] = np.float32(3e38)  # finite, but p - lr * g overflows at lr 10
        lr = 10.0
    else:
        g[N - 3] = np.float32(bad)
        lr = 0.1
    with pytest.raises(Exception, match="inf or NaN"):
        _sgd(p, g, buf, attrs, lr=lr)
