"""Indexing along one dim: cumsum, gather and gather's backward (a scatter-add).

    cumsum(x) {dim, reverse=False}        inclusive prefix sum of x along `dim` (reverse: the suffix
                                          sum, out[i] = x[i] + ... + x[n-1]); f32/f64/i64/i32, the
                                          output keeps x's dtype (the frontends cast first where
                                          torch promotes, e.g. int32 -> int64). Float sums run in
                                          float64 and integer sums wrap like torch's and numpy's.
                                          Gradient: cumsum(dy, dim, reverse=not reverse).
    gather(x, index) {dim}                torch.gather: out[i][j][k] = x[i][index[i][j][k]][k] for
                                          dim=1. index is i64 or i32, of x's rank, with
                                          index.shape[d] <= x.shape[d] for every d != dim (any
                                          length along dim); out has index's shape and x's dtype.
                                          An index outside [0, x.shape[dim]) is an error (negative
                                          ones too, as torch.gather), never a wrapped read.
                                          Gradient (x only): gather_backward.
    gather_backward(dy, index) {dim, input_shape}
                                          dx = zeros(input_shape), then dx[.., index[p], ..] +=
                                          dy[p] for every position p of index, in row-major order
                                          of p (np.add.at's order: every element's sum has a fixed
                                          order, whatever the kernel's threads). Not differentiable.

`dim` is explicit and non-negative (frontends resolve negative dims), as everywhere in the IR.
"""

from __future__ import annotations

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register
from ..errors import InputError
from ..ir import TensorType

CUMSUM_DTYPES = ("f32", "f64", "i64", "i32")
INDEX_DTYPES = ("i64", "i32")


def _check_dim(dim, rank: int, op: str) -> int:
    check(isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and 0 <= dim < rank,
          f"{op} dim {dim!r} must be an explicit dim in [0, {rank})")
    return int(dim)


# ---- cumsum ------------------------------------------------------------------------------------
def _cumsum_infer(ts, a):
    x = ts[0]
    check(x.dtype in CUMSUM_DTYPES, f"cumsum of {x.dtype} values (takes {', '.join(CUMSUM_DTYPES)})")
    check(x.rank >= 1, f"cumsum of a 0-d value {x}")
    _check_dim(a.get("dim"), x.rank, "cumsum")
    return [x]


def _cumsum_ref(xs, a):
    x = xs[0]
    dim, reverse = a["dim"], bool(a.get("reverse", False))
    acc = np.float64 if np.issubdtype(x.dtype, np.floating) else np.int64
    src = np.flip(x, dim) if reverse else x
    out = np.cumsum(src, axis=dim, dtype=acc)
    if reverse:
        out = np.flip(out, dim)
    return [np.array(out.astype(x.dtype), order="C")]  # astype wraps an int64 sum into int32


def _cumsum_grad(g):
    attrs = {"dim": g.attrs["dim"], "reverse": not bool(g.attrs.get("reverse", False))}
    return [g.emit1("cumsum", [g.douts[0]], attrs)]


def _cumsum_samples(rng):
    return [
        Sample([rand(rng, 3, 5)], {"dim": 1}, note="reverse absent"),
        Sample([rand(rng, 2, 3, 4)], {"dim": 0, "reverse": True}),
        Sample([rand(rng, 2, 3, 4)], {"dim": 2, "reverse": False}),
        Sample([rand(rng, 2, 3, 4)], {"dim": 1, "reverse": True}),
        Sample([rand(rng, 6)], {"dim": 0, "reverse": True}, note="1-d"),
        Sample([rand(rng, 2, 1, 3)], {"dim": 1, "reverse": False}, note="length 1"),
        Sample([rand(rng, 3, 4, dtype=np.float64)], {"dim": 1, "reverse": False}, note="f64"),
        Sample([(rng.random((2, 7)) > 0.3).astype(np.int64)], {"dim": 1, "reverse": False}, note="i64 mask"),
        Sample([rng.integers(-50, 50, size=(3, 4)).astype(np.int32)], {"dim": 0, "reverse": True}, note="i32"),
        Sample([rand(rng, 24, 800, 2)], {"dim": 1, "reverse": False}, grad_inputs=[], note="threads"),
    ]


def _cumsum_torch(t, a):
    torch, x, dim = T(), t[0], a["dim"]
    if a.get("reverse", False):
        return [torch.cumsum(x.flip(dim), dim, dtype=x.dtype).flip(dim)]
    return [torch.cumsum(x, dim, dtype=x.dtype)]


register(OpDef("cumsum", _cumsum_infer, _cumsum_ref, _cumsum_grad, _cumsum_samples, _cumsum_torch,
               flops=lambda i, o, a: i[0].numel, doc="inclusive prefix (reverse: suffix) sum along dim"))


# ---- gather / gather_backward ------------------------------------------------------------------
def _check_index(idx: TensorType, shape: tuple[int, ...], dim: int, op: str) -> None:
    check(idx.dtype in INDEX_DTYPES, f"{op} index must be i64 or i32, got {idx.dtype}")
    check(idx.rank == len(shape), f"{op} index {idx} must have the rank of the input {list(shape)}")
    for d, (i, s) in enumerate(zip(idx.shape, shape)):
        check(d == dim or i <= s, f"{op} index {idx} is longer than the input {list(shape)} along dim {d} "
                                  f"(only dim {dim} may be)")


def _gather_infer(ts, a):
    x, idx = ts
    check(x.rank >= 1, f"gather from a 0-d value {x}")
    dim = _check_dim(a.get("dim"), x.rank, "gather")
    _check_index(idx, x.shape, dim, "gather")
    return [TensorType(idx.shape, x.dtype)]


def _full_index(index: np.ndarray, size: int, dim: int, op: str, shape) -> tuple:
    """index with every other dim's coordinates: a tuple that indexes the full input. Raises
    InputError, naming the first offending entry, for an index outside [0, size)."""
    bad = (index < 0) | (index >= size)
    if bad.any():
        pos = tuple(int(p) for p in np.argwhere(bad)[0])
        raise InputError(f"{op}: index {int(index[pos])} at position {list(pos)} is outside [0, {size}) "
                         f"along dim {dim} of the input {list(shape)}")
    coords = list(np.indices(index.shape, sparse=True))
    coords[dim] = index.astype(np.int64)
    return tuple(coords)


def _gather_ref(xs, a):
    x, index = xs
    dim = a["dim"]
    return [np.array(x[_full_index(index, x.shape[dim], dim, "gather", x.shape)], dtype=x.dtype, order="C")]


def _gather_grad(g):
    x, index = g.inputs
    dx = g.emit1("gather_backward", [g.douts[0], index], {"dim": g.attrs["dim"], "input_shape": list(x.shape)})
    return [dx, None]


def _idx(rng, hi, *shape, dtype=np.int64):
    return rng.integers(0, hi, size=shape).astype(dtype)


def _gather_samples(rng):
    return [
        Sample([rand(rng, 3, 4), _idx(rng, 4, 3, 4)], {"dim": 1}, note="repeated indices"),
        Sample([rand(rng, 4, 3), _idx(rng, 4, 2, 3)], {"dim": 0}, note="shorter along dim"),
        Sample([rand(rng, 2, 3, 4), _idx(rng, 4, 2, 3, 7)], {"dim": 2}, note="longer along dim"),
        Sample([rand(rng, 2, 5, 3), _idx(rng, 5, 1, 4, 2)], {"dim": 1}, note="index smaller than input"),
        Sample([rand(rng, 3, 5), _idx(rng, 5, 3, 5, dtype=np.int32)], {"dim": 1}, note="i32 index"),
        Sample([rand(rng, 6), np.array([5, 0, 5, 2], np.int64)], {"dim": 0}, note="1-d"),
        Sample([rand(rng, 3, 1, 2), np.zeros((3, 4, 2), np.int64)], {"dim": 1}, note="size-1 dim"),
        Sample([rand(rng, 3, 4, dtype=np.float64), _idx(rng, 3, 2, 4)], {"dim": 0}, note="f64"),
        Sample([rng.integers(-9, 9, size=(2, 5)), _idx(rng, 5, 2, 3)], {"dim": 1}, note="i64 data"),
        Sample([rand(rng, 48, 600), _idx(rng, 600, 48, 400)], {"dim": 1}, grad_inputs=[], note="threads"),
    ]


def _gather_torch(t, a):
    return [T().gather(t[0], a["dim"], t[1].long())]


def _gather_backward_infer(ts, a):
    dy, idx = ts
    check(dy.dtype in ("f32", "f64"), f"gather_backward dy must be f32 or f64, got {dy.dtype}")
    shape = tuple(int(s) for s in a["input_shape"])
    check(len(shape) >= 1 and all(s >= 0 for s in shape), f"gather_backward input_shape {list(shape)}")
    dim = _check_dim(a.get("dim"), len(shape), "gather_backward")
    check(dy.shape == idx.shape, f"gather_backward dy {dy} and index {idx} differ in shape")
    _check_index(idx, shape, dim, "gather_backward")
    return [TensorType(shape, dy.dtype)]


def _gather_backward_ref(xs, a):
    dy, index = xs
    shape, dim = tuple(a["input_shape"]), a["dim"]
    dx = np.zeros(shape, dtype=dy.dtype)
    np.add.at(dx, _full_index(index, shape[dim], dim, "gather_backward", shape), dy)  # row-major order
    return [dx]


def _gather_backward_samples(rng):
    return [
        Sample([rand(rng, 3, 4), _idx(rng, 5, 3, 4)], {"dim": 1, "input_shape": [3, 5]}),
        Sample([rand(rng, 2, 3), np.zeros((2, 3), np.int64)], {"dim": 0, "input_shape": [4, 3]}, note="one row"),
        Sample([rand(rng, 1, 4, 2), _idx(rng, 5, 1, 4, 2, dtype=np.int32)], {"dim": 1, "input_shape": [2, 5, 3]},
               note="index smaller than input"),
        Sample([rand(rng, 2, 7, dtype=np.float64), _idx(rng, 3, 2, 7)], {"dim": 1, "input_shape": [2, 3]},
               note="f64, longer along dim"),
        Sample([rand(rng, 48, 400), _idx(rng, 600, 48, 400)], {"dim": 1, "input_shape": [48, 600]}, note="threads"),
    ]


def _gather_backward_torch(t, a):
    dy, index = t
    zeros = T().zeros(a["input_shape"], dtype=dy.dtype)
    return [zeros.scatter_add(a["dim"], index.long(), dy)]


register(OpDef("gather", _gather_infer, _gather_ref, _gather_grad, _gather_samples, _gather_torch,
               flops=lambda i, o, a: 0, doc="torch.gather along dim"))
register(OpDef("gather_backward", _gather_backward_infer, _gather_backward_ref, NOT_DIFFERENTIABLE,
               _gather_backward_samples, _gather_backward_torch, doc="scatter-add of dy into zeros(input_shape)"))
