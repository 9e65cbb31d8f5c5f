"""Embedding lookup and its backward (a scatter-add of dy rows into a [num_weights, dim] gradient).

The weight comes first, as in ATen (`embedding(weight, indices)`). `padding_idx` rows get no
gradient, matching nn.Embedding.
"""

from __future__ import annotations

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register
from ..ir import TensorType


def _infer(ts, a):
    w, idx = ts
    check(w.rank == 2, f"embedding weight must be 2-d, got {w}")
    check(idx.dtype in ("i64", "i32"), f"embedding indices must be integers, got {idx.dtype}")
    return [TensorType(idx.shape + (w.shape[1],), w.dtype)]


def _backward_ref(x, a):
    dy, idx = x
    dim = dy.shape[-1]
    dw = np.zeros((a["num_weights"], dim), dtype=dy.dtype)
    flat = idx.reshape(-1)
    np.add.at(dw, flat, dy.reshape(-1, dim))
    pad = a.get("padding_idx")
    if pad is not None and pad >= 0:
        dw[pad] = 0
    return [dw]


def _grad(g):
    w, idx = g.inputs
    dw = g.emit1("embedding_backward", [g.douts[0], idx],
                 {"num_weights": w.shape[0], "padding_idx": g.attrs.get("padding_idx")})
    if w.kind == "param":  # a gather of an activation (a channel-major row gather) is no weight gradient
        dw.producer.tags.add("weight_grad")
    return [dw, None]


def _samples(rng):
    return [Sample([rand(rng, 10, 4), rng.integers(0, 10, size=(2, 5))], {"padding_idx": None}),
            Sample([rand(rng, 6, 3), np.array([[0, 1, 1], [5, 0, 2]])], {"padding_idx": 1}, note="padding_idx")]


def _backward_samples(rng):
    return [Sample([rand(rng, 2, 5, 4), rng.integers(0, 10, size=(2, 5))], {"num_weights": 10, "padding_idx": None}),
            Sample([rand(rng, 2, 3, 3), np.array([[0, 1, 1], [5, 0, 2]])], {"num_weights": 6, "padding_idx": 1})]


def _torch_backward(t, a):
    pad = a.get("padding_idx")
    return [T().ops.aten.embedding_dense_backward(t[0], t[1], a["num_weights"], -1 if pad is None else pad, False)]


register(OpDef("embedding", _infer, lambda x, a: [np.ascontiguousarray(x[0][x[1]])], _grad, _samples,
               lambda t, a: [T().nn.functional.embedding(t[1], t[0], padding_idx=a.get("padding_idx"))],
               param_roles={0: "weight"}, flops=lambda i, o, a: 0))
register(OpDef("embedding_backward", lambda ts, a: [TensorType((a["num_weights"], ts[0].shape[-1]), ts[0].dtype)],
               _backward_ref, NOT_DIFFERENTIABLE, _backward_samples, _torch_backward))
