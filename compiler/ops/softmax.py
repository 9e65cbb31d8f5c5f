"""softmax / log_softmax over one dim, and their backward ops (which read the forward output)."""

from __future__ import annotations

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register, same_dtype
from ..ir import TensorType


def _infer(ts, a):
    check(0 <= a["dim"] < ts[0].rank, f"softmax dim {a['dim']} out of range for {ts[0]}")
    return [ts[0]]


def _softmax(x, dim):
    z = x - x.max(axis=dim, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=dim, keepdims=True)).astype(x.dtype)


def _log_softmax(x, dim):
    z = x - x.max(axis=dim, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=dim, keepdims=True))).astype(x.dtype)


def _samples(rng):
    return [Sample([rand(rng, 4, 6, lo=-3, hi=3)], {"dim": 1}),
            Sample([rand(rng, 2, 3, 5, lo=-3, hi=3)], {"dim": 1})]


def _backward_infer(ts, a):
    return [TensorType(ts[0].shape, same_dtype(ts))]


def _softmax_backward(x, a):
    dy, y = x
    return [(y * (dy - (dy * y).sum(axis=a["dim"], keepdims=True))).astype(dy.dtype)]


def _log_softmax_backward(x, a):
    dy, y = x
    return [(dy - np.exp(y) * dy.sum(axis=a["dim"], keepdims=True)).astype(dy.dtype)]


def _backward_samples(forward):
    def samples(rng):
        out = []
        for s in _samples(rng):
            y = forward(s.inputs[0], s.attrs["dim"])
            out.append(Sample([rand(rng, *y.shape), y], s.attrs))
        return out
    return samples


register(OpDef("softmax", _infer, lambda x, a: [_softmax(x[0], a["dim"])],
               lambda g: [g.emit1("softmax_backward", [g.douts[0], g.outputs[0]], {"dim": g.attrs["dim"]})],
               _samples, lambda t, a: [T().softmax(t[0], a["dim"])], flops=lambda i, o, a: 5 * i[0].numel))
register(OpDef("log_softmax", _infer, lambda x, a: [_log_softmax(x[0], a["dim"])],
               lambda g: [g.emit1("log_softmax_backward", [g.douts[0], g.outputs[0]], {"dim": g.attrs["dim"]})],
               _samples, lambda t, a: [T().log_softmax(t[0], a["dim"])], flops=lambda i, o, a: 5 * i[0].numel))
register(OpDef("softmax_backward", _backward_infer, _softmax_backward, NOT_DIFFERENTIABLE,
               _backward_samples(_softmax),
               lambda t, a: [T().ops.aten._softmax_backward_data(t[0], t[1], a["dim"], t[0].dtype)]))
register(OpDef("log_softmax_backward", _backward_infer, _log_softmax_backward, NOT_DIFFERENTIABLE,
               _backward_samples(_log_softmax),
               lambda t, a: [T().ops.aten._log_softmax_backward_data(t[0], t[1], a["dim"], t[0].dtype)]))
