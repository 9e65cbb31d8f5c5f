"""Elementwise ops: broadcasting arithmetic, comparisons (eq ne lt le gt ge -> bool), activations,
math functions, and their backward ops.

Forward activations whose derivative needs more than a product get a dedicated `*_backward`
op (matching ATen's, so kernels and the torch check line up); simple derivatives are composed
from arithmetic ops. Backward rules read the forward *output* where that suffices (relu,
sigmoid, tanh, exp), so the planner may keep one tensor instead of two.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .registry import (NOT_DIFFERENTIABLE, OpDef, Sample, T, broadcast_shapes, check, rand,
                       register, same_dtype)
from ..ir import TensorType


def _away(x: np.ndarray, points, margin=0.08) -> np.ndarray:
    """Move samples away from the kinks of piecewise functions so finite differences hold."""
    x = x.copy()
    for p in points:
        close = np.abs(x - p) < margin
        x[close] = p + np.where(x[close] >= p, margin, -margin)
    return x


# ---------------------------------------------------------------------------------------------
# Binary arithmetic with numpy broadcasting
# ---------------------------------------------------------------------------------------------
def _binary_infer(ts, attrs):
    dt = same_dtype(ts)
    return [TensorType(broadcast_shapes(ts[0].shape, ts[1].shape), dt)]


def _binary_samples(rng, positive_rhs=False):
    lo = 0.5 if positive_rhs else -1.0
    return [
        Sample([rand(rng, 2, 3), rand(rng, 2, 3, lo=lo, hi=1.5)]),
        Sample([rand(rng, 2, 3, 4), rand(rng, 3, 1, lo=lo, hi=1.5)], note="broadcast rhs"),
        Sample([rand(rng, 1, 4), rand(rng, 3, 1, lo=lo, hi=1.5)], note="broadcast both"),
        Sample([rand(rng, 2, 3), rand(rng, lo=lo, hi=1.5)], note="scalar rhs"),
    ]


def _add_grad(g):
    dy = g.douts[0]
    return [g.sum_to(dy, g.inputs[0].shape) if g.needs[0] else None,
            g.sum_to(dy, g.inputs[1].shape) if g.needs[1] else None]


def _sub_grad(g):
    dy = g.douts[0]
    return [g.sum_to(dy, g.inputs[0].shape) if g.needs[0] else None,
            g.sum_to(g.emit1("neg", [dy]), g.inputs[1].shape) if g.needs[1] else None]


def _mul_grad(g):
    a, b = g.inputs
    dy = g.douts[0]
    return [g.sum_to(g.emit1("mul", [dy, b]), a.shape) if g.needs[0] else None,
            g.sum_to(g.emit1("mul", [dy, a]), b.shape) if g.needs[1] else None]


def _div_grad(g):
    a, b = g.inputs
    dy, y = g.douts[0], g.outputs[0]
    da = g.sum_to(g.emit1("div", [dy, b]), a.shape) if g.needs[0] else None
    db = None
    if g.needs[1]:  # d(a/b)/db = -y/b
        db = g.sum_to(g.emit1("neg", [g.emit1("div", [g.emit1("mul", [dy, y]), b])]), b.shape)
    return [da, db]


register(OpDef("add", _binary_infer, lambda x, a: [np.add(x[0], x[1])], _add_grad,
               _binary_samples, lambda t, a: [t[0] + t[1]], param_roles={1: "bias"}))
register(OpDef("sub", _binary_infer, lambda x, a: [np.subtract(x[0], x[1])], _sub_grad,
               _binary_samples, lambda t, a: [t[0] - t[1]]))
register(OpDef("mul", _binary_infer, lambda x, a: [np.multiply(x[0], x[1])], _mul_grad,
               _binary_samples, lambda t, a: [t[0] * t[1]]))
register(OpDef("div", _binary_infer, lambda x, a: [np.divide(x[0], x[1])], _div_grad,
               lambda rng: _binary_samples(rng, positive_rhs=True), lambda t, a: [t[0] / t[1]]))


# ---------------------------------------------------------------------------------------------
# Comparisons eq ne lt le gt ge: broadcast like the arithmetic above, both inputs of one dtype,
# output bool. NOT_DIFFERENTIABLE, as in torch: a bool output carries no gradient (autodiff's
# requires_grad spreads only through differentiable ops, and only to float outputs), so an
# input that needs one (x in `where(x > 0, x, 0)`) gets it through its other readers only.
# NaN compares unequal to everything (ne true, the rest false), as in IEEE, numpy and torch.
# ---------------------------------------------------------------------------------------------
COMPARE_DTYPES = ("f32", "f64", "i64", "i32", "bool")


def _compare_infer(ts, attrs):
    dt = same_dtype(ts)
    check(dt in COMPARE_DTYPES, f"comparison of {dt} values (takes {', '.join(COMPARE_DTYPES)})")
    return [TensorType(broadcast_shapes(ts[0].shape, ts[1].shape), "bool")]


def _ties(rng, *shape, dtype=np.float32) -> np.ndarray:
    """Multiples of 1/2 in [-1, 1]: equal pairs occur, so eq / le / ge meet their boundary."""
    return np.asarray(rng.integers(-2, 3, size=shape) / 2, dtype=dtype)


def _compare_samples(rng):
    with_nan = _ties(rng, 2, 3)
    with_nan[0, 1] = with_nan[1, 2] = np.nan
    other = _ties(rng, 2, 3)
    other[1, 0] = other[1, 2] = np.nan
    return [
        Sample([_ties(rng, 2, 3), _ties(rng, 2, 3)]),
        Sample([_ties(rng, 2, 3, 4), _ties(rng, 3, 1)], note="broadcast rhs"),
        Sample([_ties(rng, 1, 4), _ties(rng, 3, 1)], note="broadcast both"),
        Sample([_ties(rng, 2, 3), _ties(rng)], note="scalar rhs"),
        Sample([_ties(rng), _ties(rng, 4)], note="scalar lhs"),
        Sample([with_nan, other], note="nan"),
        Sample([_ties(rng, 3, 4, dtype=np.float64), _ties(rng, 4, dtype=np.float64)], note="f64"),
        Sample([rng.integers(-3, 3, size=(2, 5)), rng.integers(-3, 3, size=(5,))], note="i64"),
        Sample([rng.integers(-3, 3, size=(3, 1, 4)).astype(np.int32),
                rng.integers(-3, 3, size=(2, 1)).astype(np.int32)], note="i32 broadcast"),
        Sample([rng.random((3, 4)) > 0.5, rng.random((1, 4)) > 0.5], note="bool"),
    ]


def _compare(name, np_fn, torch_name):
    register(OpDef(name, _compare_infer, lambda x, a: [np.asarray(np_fn(x[0], x[1]))], NOT_DIFFERENTIABLE,
                   _compare_samples, lambda t, a: [getattr(T(), torch_name)(t[0], t[1])],
                   doc=f"{name}(a, b) -> bool, numpy broadcasting"))


for _name, _np_fn in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                      ("gt", np.greater), ("ge", np.greater_equal)):
    _compare(_name, _np_fn, _name)


# ---------------------------------------------------------------------------------------------
# Unary ops
# ---------------------------------------------------------------------------------------------
def _same_type(ts, attrs):
    return [ts[0]]


def _unary_samples(lo=-2.0, hi=2.0, kinks=()):
    def samples(rng):
        return [Sample([_away(rand(rng, 3, 5, lo=lo, hi=hi), kinks)]),
                Sample([_away(rand(rng, 2, 3, 4, lo=lo, hi=hi), kinks)])]
    return samples


def _unary(name, fwd, grad, torch_fn, samples, doc=""):
    register(OpDef(name, _same_type, lambda x, a: [fwd(x[0], a)], grad, samples, torch_fn, doc=doc))


def _backward_op(name, fwd, torch_fn, samples, doc=""):
    """A backward op (dy, saved) -> dx: not differentiable itself."""
    register(OpDef(name, lambda ts, a: [TensorType(ts[0].shape, same_dtype(ts))],
                   lambda x, a: [fwd(x[0], x[1], a)], NOT_DIFFERENTIABLE, samples, torch_fn, doc=doc))


def _dy_and(lo=-2.0, hi=2.0, kinks=()):
    def samples(rng):
        return [Sample([rand(rng, 3, 5), _away(rand(rng, 3, 5, lo=lo, hi=hi), kinks)])]
    return samples


def _via_saved(backward_op, saved="input"):
    """Gradient rule that calls `backward_op(dy, x_or_y)`."""
    def rule(g):
        keep = g.inputs[0] if saved == "input" else g.outputs[0]
        return [g.emit1(backward_op, [g.douts[0], keep], dict(g.attrs))]
    return rule


def _np_dtype_scalar(x, v):
    return np.asarray(v, dtype=x.dtype)


# neg
_unary("neg", lambda x, a: np.negative(x), lambda g: [g.emit1("neg", [g.douts[0]])],
       lambda t, a: [-t[0]], _unary_samples())

# relu: backward reads the output (y > 0 <=> x > 0)
_unary("relu", lambda x, a: np.maximum(x, _np_dtype_scalar(x, 0)), _via_saved("relu_backward", "output"),
       lambda t, a: [t[0].relu()], _unary_samples(kinks=(0.0,)))
_backward_op("relu_backward", lambda dy, y, a: np.where(y > 0, dy, _np_dtype_scalar(dy, 0)),
             lambda t, a: [T().ops.aten.threshold_backward(t[0], t[1], 0.0)],
             _dy_and(kinks=(0.0,)))


# hardtanh(min, max) covers relu6. Its backward reads the *output*: y is strictly inside
# (min, max) exactly when x is, and y is usually kept anyway (it feeds the next layer's
# weight gradient), so the input need not be.
def _hardtanh(x, a):
    return np.clip(x, _np_dtype_scalar(x, a["min"]), _np_dtype_scalar(x, a["max"]))


register(OpDef("hardtanh", _same_type, lambda x, a: [_hardtanh(x[0], a)], _via_saved("hardtanh_backward", "output"),
               lambda rng: [Sample([_away(rand(rng, 3, 5, lo=-2, hi=8), (0.0, 6.0))], {"min": 0.0, "max": 6.0}),
                            Sample([_away(rand(rng, 4, 4, lo=-2, hi=2), (-1.0, 1.0))], {"min": -1.0, "max": 1.0})],
               lambda t, a: [T().nn.functional.hardtanh(t[0], a["min"], a["max"])]))
register(OpDef("hardtanh_backward", lambda ts, a: [ts[0]],
               lambda x, a: [np.where((x[1] > a["min"]) & (x[1] < a["max"]), x[0], _np_dtype_scalar(x[0], 0))],
               NOT_DIFFERENTIABLE,
               lambda rng: [Sample([rand(rng, 3, 5), _away(rand(rng, 3, 5, lo=-2, hi=8), (0.0, 6.0))],
                                   {"min": 0.0, "max": 6.0})],
               lambda t, a: [T().ops.aten.hardtanh_backward(t[0], t[1], a["min"], a["max"])]))


def _hardsigmoid(x):
    return np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype)


_unary("hardsigmoid", lambda x, a: _hardsigmoid(x), _via_saved("hardsigmoid_backward"),
       lambda t, a: [T().nn.functional.hardsigmoid(t[0])], _unary_samples(-5, 5, (-3.0, 3.0)))
_backward_op("hardsigmoid_backward",
             lambda dy, x, a: np.where((x > -3) & (x < 3), dy / 6, _np_dtype_scalar(dy, 0)).astype(dy.dtype),
             lambda t, a: [T().ops.aten.hardsigmoid_backward(t[0], t[1])],
             _dy_and(-5, 5, (-3.0, 3.0)))

_unary("hardswish", lambda x, a: (x * _hardsigmoid(x)).astype(x.dtype), _via_saved("hardswish_backward"),
       lambda t, a: [T().nn.functional.hardswish(t[0])], _unary_samples(-5, 5, (-3.0, 3.0)))
_backward_op("hardswish_backward",
             lambda dy, x, a: np.where(x < -3, 0, np.where(x <= 3, dy * (x / 3 + 0.5), dy)).astype(dy.dtype),
             lambda t, a: [T().ops.aten.hardswish_backward(t[0], t[1])],
             _dy_and(-5, 5, (-3.0, 3.0)))


def _sigmoid(x):
    return (1 / (1 + np.exp(-x))).astype(x.dtype)


_unary("sigmoid", lambda x, a: _sigmoid(x), _via_saved("sigmoid_backward", "output"),
       lambda t, a: [t[0].sigmoid()], _unary_samples(-4, 4))
_backward_op("sigmoid_backward", lambda dy, y, a: (dy * y * (1 - y)).astype(dy.dtype),
             lambda t, a: [T().ops.aten.sigmoid_backward(t[0], t[1])],
             lambda rng: [Sample([rand(rng, 3, 5), rand(rng, 3, 5, lo=0.05, hi=0.95)])])

_unary("tanh", lambda x, a: np.tanh(x), _via_saved("tanh_backward", "output"),
       lambda t, a: [t[0].tanh()], _unary_samples(-3, 3))
_backward_op("tanh_backward", lambda dy, y, a: (dy * (1 - y * y)).astype(dy.dtype),
             lambda t, a: [T().ops.aten.tanh_backward(t[0], t[1])],
             lambda rng: [Sample([rand(rng, 3, 5), rand(rng, 3, 5, lo=-0.95, hi=0.95)])])

_unary("silu", lambda x, a: (x * _sigmoid(x)).astype(x.dtype), _via_saved("silu_backward"),
       lambda t, a: [T().nn.functional.silu(t[0])], _unary_samples(-4, 4))
_backward_op("silu_backward",
             lambda dy, x, a: (dy * _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))).astype(dy.dtype),
             lambda t, a: [T().ops.aten.silu_backward(t[0], t[1])], _dy_and(-4, 4))

_SQRT_2_OVER_PI = np.sqrt(2 / np.pi)


def _gelu(x, a):
    if a.get("approximate", "none") == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        return (0.5 * x * (1 + np.tanh(inner))).astype(x.dtype)
    return (0.5 * x * (1 + special.erf(x / np.sqrt(2)))).astype(x.dtype)


def _gelu_backward(dy, x, a):
    if a.get("approximate", "none") == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        t = np.tanh(inner)
        d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        return (dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner)).astype(dy.dtype)
    cdf = 0.5 * (1 + special.erf(x / np.sqrt(2)))
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    return (dy * (cdf + x * pdf)).astype(dy.dtype)


def _gelu_samples(rng):
    return [Sample([rand(rng, 3, 5, lo=-3, hi=3)], {"approximate": "none"}),
            Sample([rand(rng, 2, 7, lo=-3, hi=3)], {"approximate": "tanh"})]


register(OpDef("gelu", _same_type, lambda x, a: [_gelu(x[0], a)], _via_saved("gelu_backward"), _gelu_samples,
               lambda t, a: [T().nn.functional.gelu(t[0], approximate=a.get("approximate", "none"))]))
register(OpDef("gelu_backward", lambda ts, a: [ts[0]], lambda x, a: [_gelu_backward(x[0], x[1], a)],
               NOT_DIFFERENTIABLE,
               lambda rng: [Sample([rand(rng, 3, 5), rand(rng, 3, 5, lo=-3, hi=3)], {"approximate": ap})
                            for ap in ("none", "tanh")],
               lambda t, a: [T().ops.aten.gelu_backward(t[0], t[1],
                                                                       approximate=a.get("approximate", "none"))]))

_unary("exp", lambda x, a: np.exp(x), lambda g: [g.emit1("mul", [g.douts[0], g.outputs[0]])],
       lambda t, a: [t[0].exp()], _unary_samples(-2, 2))
_unary("log", lambda x, a: np.log(x), lambda g: [g.emit1("div", [g.douts[0], g.inputs[0]])],
       lambda t, a: [t[0].log()], _unary_samples(0.2, 3))


def _sqrt_grad(g):  # d sqrt(x) = dy / (2 sqrt(x))
    return [g.emit1("div", [g.douts[0], g.emit1("mul", [g.outputs[0], g.const(2.0, g.outputs[0].dtype)])])]


def _rsqrt_grad(g):  # d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
    y = g.outputs[0]
    y3 = g.emit1("pow_scalar", [y], {"exponent": 3.0})
    return [g.emit1("mul", [g.douts[0], g.emit1("mul", [y3, g.const(-0.5, y.dtype)])])]


_unary("sqrt", lambda x, a: np.sqrt(x), _sqrt_grad, lambda t, a: [t[0].sqrt()], _unary_samples(0.2, 3))
_unary("rsqrt", lambda x, a: (1 / np.sqrt(x)).astype(x.dtype), _rsqrt_grad, lambda t, a: [t[0].rsqrt()],
       _unary_samples(0.2, 3))


def _pow_grad(g):
    e = float(g.attrs["exponent"])
    x = g.inputs[0]
    if e == 1.0:
        return [g.douts[0]]
    d = g.emit1("mul", [g.emit1("pow_scalar", [x], {"exponent": e - 1.0}), g.const(e, x.dtype)]) \
        if e != 2.0 else g.emit1("mul", [x, g.const(2.0, x.dtype)])
    return [g.emit1("mul", [g.douts[0], d])]


register(OpDef("pow_scalar", _same_type,
               lambda x, a: [np.power(x[0], np.asarray(a["exponent"], dtype=x[0].dtype))], _pow_grad,
               lambda rng: [Sample([rand(rng, 3, 4, lo=0.3, hi=2)], {"exponent": e}) for e in (2.0, 3.0, 0.5, -1.5)],
               lambda t, a: [t[0] ** a["exponent"]]))


# ---------------------------------------------------------------------------------------------
# where(cond, a, b) — masked_fill is where with a scalar const
# ---------------------------------------------------------------------------------------------
def _where_infer(ts, attrs):
    check(ts[0].dtype == "bool", f"where condition must be bool, got {ts[0].dtype}")
    dt = same_dtype(ts[1:])
    return [TensorType(broadcast_shapes(ts[0].shape, ts[1].shape, ts[2].shape), dt)]


def _where_grad(g):
    cond, a, b = g.inputs
    dy = g.douts[0]
    zero = g.const(0.0, dy.dtype)
    da = g.sum_to(g.emit1("where", [cond, dy, zero]), a.shape) if g.needs[1] else None
    db = g.sum_to(g.emit1("where", [cond, zero, dy]), b.shape) if g.needs[2] else None
    return [None, da, db]


register(OpDef("where", _where_infer, lambda x, a: [np.where(x[0], x[1], x[2])], _where_grad,
               lambda rng: [Sample([rng.random((3, 4)) > 0.5, rand(rng, 3, 4), rand(rng, 3, 4)]),
                            Sample([rng.random((1, 4)) > 0.5, rand(rng, 3, 4), rand(rng)], note="masked_fill")],
               lambda t, a: [T().where(t[0], t[1], t[2])]))
