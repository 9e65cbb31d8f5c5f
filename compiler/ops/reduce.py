"""Reductions: sum and mean over dims (adaptive average pooling to 1x1 becomes mean over H, W).

`dims` is an explicit sorted list of non-negative dims (frontends resolve "all" and negatives).
The gradient reshapes dy to keepdim form and broadcasts it back with `expand`.
"""

from __future__ import annotations

import numpy as np

from .registry import OpDef, Sample, T, check, rand, register


def _reduce_infer(ts, a):
    rank = ts[0].rank
    dims = a["dims"]
    check(all(0 <= d < rank for d in dims) and dims == sorted(set(dims)), f"bad reduce dims {dims} for rank {rank}")
    if a.get("keepdim", False):
        shape = tuple(1 if i in dims else s for i, s in enumerate(ts[0].shape))
    else:
        shape = tuple(s for i, s in enumerate(ts[0].shape) if i not in dims)
    return [type(ts[0])(shape, ts[0].dtype)]


def _reduce_grad(scale_by_count: bool):
    def rule(g):
        x, dy = g.inputs[0], g.douts[0]
        kept = tuple(1 if i in g.attrs["dims"] else s for i, s in enumerate(x.shape))
        if tuple(dy.shape) != kept:
            dy = g.emit1("reshape", [dy], {"shape": list(kept)})
        if scale_by_count:
            count = int(np.prod([x.shape[d] for d in g.attrs["dims"]], dtype=np.int64))
            dy = g.emit1("mul", [dy, g.const(1.0 / count, dy.dtype)])
        return [g.emit1("expand", [dy], {"shape": list(x.shape)})]
    return rule


def _reduce_samples(rng):
    return [Sample([rand(rng, 2, 3, 4)], {"dims": [1], "keepdim": False}),
            Sample([rand(rng, 2, 3, 4, 5)], {"dims": [2, 3], "keepdim": True}),
            Sample([rand(rng, 3, 4)], {"dims": [0, 1], "keepdim": False})]


def _np_sum(x, a):
    return np.asarray(np.sum(x[0], axis=tuple(a["dims"]), keepdims=a.get("keepdim", False)), dtype=x[0].dtype)


def _np_mean(x, a):
    return np.asarray(np.mean(x[0], axis=tuple(a["dims"]), keepdims=a.get("keepdim", False)), dtype=x[0].dtype)


register(OpDef("sum", _reduce_infer, lambda x, a: [_np_sum(x, a)], _reduce_grad(False), _reduce_samples,
               lambda t, a: [T().sum(t[0], dim=a["dims"], keepdim=a.get("keepdim", False))],
               flops=lambda i, o, a: i[0].numel))
register(OpDef("mean", _reduce_infer, lambda x, a: [_np_mean(x, a)], _reduce_grad(True), _reduce_samples,
               lambda t, a: [T().mean(t[0], dim=a["dims"], keepdim=a.get("keepdim", False))],
               flops=lambda i, o, a: i[0].numel))
