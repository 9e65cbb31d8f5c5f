"""Matrix products: `matmul` (numpy semantics: batched, broadcasting, both operands rank >= 2) and
`linear` (y = x W^T + b, PyTorch's layout).

`linear` stays one op instead of permute+matmul+add so that its weight gradient is a single,
recognisable weight-gradient op and a frozen weight visibly costs nothing in backward.
"""

from __future__ import annotations

import numpy as np

from .registry import OpDef, Sample, T, broadcast_shapes, check, rand, register, same_dtype
from ..ir import TensorType


def _exact(rng, *shape):
    """Multiples of 1/8 in [-1, 1]: products and their sums stay exact in float32, so a kernel's
    summation order (GEMM blocking, threads) cannot change the result."""
    return (rng.integers(-8, 9, size=shape) / 8).astype(np.float32)


def _swap_last(rank: int) -> list[int]:
    return list(range(rank - 2)) + [rank - 1, rank - 2]


def _matmul_infer(ts, a):
    x, y = ts
    dt = same_dtype(ts)
    check(x.rank >= 2 and y.rank >= 2, f"matmul needs rank >= 2 operands, got {x} and {y}")
    check(x.shape[-1] == y.shape[-2], f"matmul inner dims differ: {x} @ {y}")
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2])
    return [TensorType(batch + (x.shape[-2], y.shape[-1]), dt)]


def _matmul_grad(g):
    x, y = g.inputs
    dy = g.douts[0]
    dx = dw = None
    if g.needs[0]:
        yt = g.emit1("permute", [y], {"dims": _swap_last(y.rank)})
        dx = g.sum_to(g.emit1("matmul", [dy, yt]), x.shape)
    if g.needs[1]:
        xt = g.emit1("permute", [x], {"dims": _swap_last(x.rank)})
        dw = g.sum_to(g.emit1("matmul", [xt, dy]), y.shape)
    return [dx, dw]


def _matmul_flops(i, o, a):
    return 2 * o[0].numel * i[0].shape[-1]


register(OpDef(
    "matmul", _matmul_infer, lambda x, a: [np.matmul(x[0], x[1])], _matmul_grad,
    lambda rng: [Sample([rand(rng, 3, 4), rand(rng, 4, 5)]),
                 Sample([rand(rng, 2, 3, 4), rand(rng, 2, 4, 5)], note="bmm"),
                 Sample([rand(rng, 2, 2, 3, 4), rand(rng, 4, 5)], note="broadcast weight"),
                 Sample([rand(rng, 1, 3, 4), rand(rng, 2, 4, 2)], note="broadcast batch"),
                 # kernel-sized (exact values: any GEMM summation order gives numpy's result)
                 Sample([_exact(rng, 2, 96, 160), _exact(rng, 2, 160, 72)], grad_inputs=[], note="exact big bmm"),
                 Sample([_exact(rng, 3, 40, 96), _exact(rng, 96, 200)], grad_inputs=[], note="exact batch folded into M")],
    lambda t, a: [T().matmul(t[0], t[1])], param_roles={1: "weight"}, flops=_matmul_flops))


def _linear_infer(ts, a):
    x, w = ts[0], ts[1]
    dt = same_dtype(ts)
    check(w.rank == 2 and x.rank >= 1 and x.shape[-1] == w.shape[1], f"linear: input {x} does not fit weight {w}")
    if len(ts) == 3:
        check(ts[2].shape == (w.shape[0],), f"linear: bias {ts[2]} does not fit weight {w}")
    return [TensorType(x.shape[:-1] + (w.shape[0],), dt)]


def _linear_ref(x, a):
    y = np.matmul(x[0], x[1].T)
    if len(x) == 3:
        y = y + x[2]
    return [y.astype(x[0].dtype, copy=False)]


def _linear_grad(g):
    x, w = g.inputs[0], g.inputs[1]
    dy = g.douts[0]
    out_features, in_features = w.shape
    grads = [None] * len(g.inputs)
    if g.needs[0]:
        grads[0] = g.emit1("matmul", [dy, w]) if dy.rank >= 2 else \
            g.emit1("reshape", [g.emit1("matmul", [g.emit1("reshape", [dy], {"shape": [1, out_features]}), w])],
                    {"shape": list(x.shape)})
    if g.needs[1]:
        rows = dy.type.numel // out_features
        dy2 = g.emit1("reshape", [dy], {"shape": [rows, out_features]}) if dy.rank != 2 else dy
        x2 = g.emit1("reshape", [x], {"shape": [rows, in_features]}) if x.rank != 2 else x
        dw = g.emit1("matmul", [g.emit1("permute", [dy2], {"dims": [1, 0]}), x2])
        dw.producer.tags.add("weight_grad")
        grads[1] = dw
    if len(g.inputs) == 3 and g.needs[2]:
        grads[2] = g.emit1("sum", [dy], {"dims": list(range(dy.rank - 1)), "keepdim": False}) if dy.rank > 1 else dy
    return grads


register(OpDef(
    "linear", _linear_infer, _linear_ref, _linear_grad,
    lambda rng: [Sample([rand(rng, 4, 3), rand(rng, 5, 3), rand(rng, 5)]),
                 Sample([rand(rng, 2, 3, 4), rand(rng, 6, 4)], note="no bias, 3-d input"),
                 Sample([_exact(rng, 32, 1024), _exact(rng, 64, 1024), _exact(rng, 64)], grad_inputs=[2],
                        note="exact K=1024")],
    lambda t, a: [T().nn.functional.linear(*t)], param_roles={1: "weight", 2: "bias"}, min_inputs=2,
    flops=lambda i, o, a: 2 * o[0].numel * i[1].shape[1]))
