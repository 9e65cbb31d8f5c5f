"""Data-movement ops: reshape, permute, expand, sum_to, concat, slice (+ slice_backward), cast.

squeeze / unsqueeze / flatten / view all become `reshape`; transpose becomes `permute`; split
becomes several `slice` nodes. Frontends resolve -1 and negative dims, so attrs here are always
explicit and non-negative — that keeps kernels and the verifier simple.
"""

from __future__ import annotations

import numpy as np

from .registry import OpDef, Sample, T, check, rand, register, same_dtype
from ..ir import TensorType, numpy_dtype


# reshape ---------------------------------------------------------------------------------------
def _reshape_infer(ts, a):
    shape = tuple(a["shape"])
    check(all(d >= 0 for d in shape), f"reshape target {list(shape)} must be explicit")
    check(int(np.prod(shape, dtype=np.int64)) == ts[0].numel,
          f"cannot reshape {list(ts[0].shape)} ({ts[0].numel} elements) to {list(shape)}")
    return [TensorType(shape, ts[0].dtype)]


register(OpDef(
    "reshape", _reshape_infer, lambda x, a: [np.reshape(x[0], a["shape"])],
    lambda g: [g.emit1("reshape", [g.douts[0]], {"shape": list(g.inputs[0].shape)})],
    lambda rng: [Sample([rand(rng, 2, 3, 4)], {"shape": [6, 4]}), Sample([rand(rng, 6)], {"shape": [1, 6, 1]})],
    lambda t, a: [t[0].reshape(a["shape"])], flops=lambda i, o, a: 0))


# permute ---------------------------------------------------------------------------------------
def _permute_infer(ts, a):
    dims = list(a["dims"])
    check(sorted(dims) == list(range(ts[0].rank)), f"permute dims {dims} are not a permutation of rank {ts[0].rank}")
    return [TensorType(tuple(ts[0].shape[d] for d in dims), ts[0].dtype)]


def _permute_grad(g):
    inverse = list(np.argsort(g.attrs["dims"]))
    return [g.emit1("permute", [g.douts[0]], {"dims": [int(d) for d in inverse]})]


register(OpDef(
    "permute", _permute_infer, lambda x, a: [np.array(np.transpose(x[0], a["dims"]), order="C")], _permute_grad,
    lambda rng: [Sample([rand(rng, 2, 3, 4)], {"dims": [2, 0, 1]}), Sample([rand(rng, 3, 5)], {"dims": [1, 0]})],
    lambda t, a: [t[0].permute(a["dims"])]))


# expand / sum_to: each other's gradient -----------------------------------------------------
def _expand_infer(ts, a):
    src, dst = ts[0].shape, tuple(a["shape"])
    check(len(dst) >= len(src), f"expand to fewer dims: {list(src)} -> {list(dst)}")
    for s, d in zip(reversed(src), reversed(dst)):
        check(s == d or s == 1, f"cannot expand {list(src)} to {list(dst)}")
    return [TensorType(dst, ts[0].dtype)]


def _sum_to_infer(ts, a):
    src, dst = ts[0].shape, tuple(a["shape"])
    check(len(dst) <= len(src), f"sum_to to more dims: {list(src)} -> {list(dst)}")
    for s, d in zip(reversed(src), reversed(dst)):
        check(s == d or d == 1, f"cannot sum {list(src)} down to {list(dst)}")
    return [TensorType(dst, ts[0].dtype)]


def sum_to_numpy(x: np.ndarray, shape) -> np.ndarray:
    shape = tuple(shape)
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1)
    out = x.sum(axis=axes, keepdims=True) if axes else x
    return np.array(out.reshape(shape), dtype=x.dtype, order="C")  # not ascontiguousarray: it makes 0-d 1-d


register(OpDef(
    "expand", _expand_infer, lambda x, a: [np.array(np.broadcast_to(x[0], a["shape"]), order="C")],
    lambda g: [g.sum_to(g.douts[0], g.inputs[0].shape)],
    lambda rng: [Sample([rand(rng, 3, 1)], {"shape": [2, 3, 4]}), Sample([rand(rng, 4)], {"shape": [3, 4]})],
    lambda t, a: [t[0].expand(a["shape"])], flops=lambda i, o, a: 0))
register(OpDef(
    "sum_to", _sum_to_infer, lambda x, a: [sum_to_numpy(x[0], a["shape"])],
    lambda g: [g.emit1("expand", [g.douts[0]], {"shape": list(g.inputs[0].shape)})],
    lambda rng: [Sample([rand(rng, 2, 3, 4)], {"shape": [3, 1]}), Sample([rand(rng, 3, 4)], {"shape": [4]})],
    lambda t, a: [T().ops.aten.sum_to_size(t[0], a["shape"]) if len(a["shape"]) == t[0].dim()
                  else t[0].sum(dim=tuple(range(t[0].dim() - len(a["shape"])))).sum_to_size(a["shape"])],
    flops=lambda i, o, a: i[0].numel))


# concat ------------------------------------------------------------------------------------------
def _concat_infer(ts, a):
    dim = a["dim"]
    dt = same_dtype(ts)
    first = ts[0].shape
    for t in ts[1:]:
        check(t.rank == len(first) and all(x == y for i, (x, y) in enumerate(zip(first, t.shape)) if i != dim),
              f"concat along {dim}: shapes {[list(t.shape) for t in ts]} differ elsewhere")
    out = list(first)
    out[dim] = sum(t.shape[dim] for t in ts)
    return [TensorType(tuple(out), dt)]


def _concat_grad(g):
    dim, offset, grads = g.attrs["dim"], 0, []
    for v, need in zip(g.inputs, g.needs):
        size = v.shape[dim]
        grads.append(g.emit1("slice", [g.douts[0]], {"dim": dim, "start": offset, "end": offset + size, "step": 1})
                     if need else None)
        offset += size
    return grads


register(OpDef(
    "concat", _concat_infer, lambda x, a: [np.concatenate(x, axis=a["dim"])], _concat_grad,
    lambda rng: [Sample([rand(rng, 2, 3), rand(rng, 2, 5)], {"dim": 1}),
                 Sample([rand(rng, 1, 4), rand(rng, 2, 4), rand(rng, 3, 4)], {"dim": 0})],
    lambda t, a: [T().cat(list(t), dim=a["dim"])], min_inputs=1, flops=lambda i, o, a: 0))


# slice / slice_backward ---------------------------------------------------------------------------
def _slice_len(size, start, end, step):
    return len(range(start, min(end, size), step))


def _slice_infer(ts, a):
    dim, start, end, step = a["dim"], a["start"], a["end"], a["step"]
    check(0 <= dim < ts[0].rank and step >= 1 and 0 <= start, f"bad slice {a} of {ts[0]}")
    shape = list(ts[0].shape)
    shape[dim] = _slice_len(shape[dim], start, end, step)
    return [TensorType(tuple(shape), ts[0].dtype)]


def _slice_index(rank, a):
    idx = [slice(None)] * rank
    idx[a["dim"]] = slice(a["start"], a["end"], a["step"])
    return tuple(idx)


def _slice_backward_infer(ts, a):
    return [TensorType(tuple(a["input_shape"]), ts[0].dtype)]


def _slice_backward_ref(x, a):
    out = np.zeros(a["input_shape"], dtype=x[0].dtype)
    out[_slice_index(out.ndim, a)] = x[0]
    return [out]


_SLICE_KEYS = ("dim", "start", "end", "step")

register(OpDef(
    "slice", _slice_infer, lambda x, a: [np.ascontiguousarray(x[0][_slice_index(x[0].ndim, a)])],
    lambda g: [g.emit1("slice_backward", [g.douts[0]],
                       {**{k: g.attrs[k] for k in _SLICE_KEYS}, "input_shape": list(g.inputs[0].shape)})],
    lambda rng: [Sample([rand(rng, 4, 6)], {"dim": 1, "start": 1, "end": 5, "step": 2}),
                 Sample([rand(rng, 5, 3)], {"dim": 0, "start": 2, "end": 5, "step": 1})],
    lambda t, a: [T().ops.aten.slice(t[0], a["dim"], a["start"], a["end"], a["step"])], flops=lambda i, o, a: 0))
register(OpDef(
    "slice_backward", _slice_backward_infer, _slice_backward_ref,
    lambda g: [g.emit1("slice", [g.douts[0]], {k: g.attrs[k] for k in _SLICE_KEYS})],
    lambda rng: [Sample([rand(rng, 4, 2)], {"dim": 1, "start": 1, "end": 5, "step": 2, "input_shape": [4, 6]})],
    lambda t, a: [T().ops.aten.slice_backward(t[0], a["input_shape"], a["dim"], a["start"], a["end"], a["step"])],
    flops=lambda i, o, a: 0))


# cast --------------------------------------------------------------------------------------------
def _cast_grad(g):
    src = g.inputs[0]
    if not src.type.is_float:
        return [None]
    return [g.emit1("cast", [g.douts[0]], {"dtype": src.dtype})]


register(OpDef(
    "cast", lambda ts, a: [TensorType(ts[0].shape, a["dtype"])],
    lambda x, a: [x[0].astype(numpy_dtype(a["dtype"]))], _cast_grad,
    lambda rng: [Sample([rand(rng, 3, 4)], {"dtype": "f64"}),
                 Sample([rng.integers(0, 5, size=(3,))], {"dtype": "f32"}, grad_inputs=[])],
    lambda t, a: [t[0].to({"f32": T().float32, "f64": T().float64, "i64": T().int64}[a["dtype"]])],
    flops=lambda i, o, a: 0))
