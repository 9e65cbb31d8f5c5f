"""Normalization: batch norm (training and inference) and layer norm, with their backward ops.

    batch_norm_train(x, w, b, running_mean, running_var) -> y, mean, invstd, new_running_mean, new_running_var
    batch_norm_infer(x, w, b, running_mean, running_var) -> y
        both take an optional fused activation (attrs activation="relu"|"hardtanh", act_min, act_max,
        as conv2d/linear): y = act(bn(x)), made by fuse_epilogue after autodiff, so no gradient rule
    batch_norm_backward(dy, x, w, mean, invstd)           -> the grads named by attrs["output_mask"] ([dx, dw, db])
    layer_norm(x, w, b)                                   -> y, mean, rstd
    layer_norm_backward(dy, x, w, mean, rstd)             -> the grads named by attrs["output_mask"]

Batch norm takes the layout attr of ops/layout.py: with layout="nhwc" its 4-d activations (x, y,
dy, dx) are stored channels-last and the per-channel tensors are unchanged.

Frontends pass ones/zeros consts when a norm has no affine params, so arity is fixed.
Gradient rules avoid reading activations they do not need: when only the bias gradient
is wanted, it is a plain `sum` of dy and x is not kept for backward at all; inference-mode
batch norm is an affine map, so dx is dy times a per-channel constant.
"""

from __future__ import annotations

import numpy as np

from .matmul import apply_activation, check_activation, has_activation, no_grad_with_epilogue, torch_activation
from .layout import channel_axis, logical_type, to_logical, to_physical
from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register, same_dtype
from ..ir import TensorType


# ---------------------------------------------------------------------------------------------
# batch norm
# ---------------------------------------------------------------------------------------------
def _bn_check(ts, a, op):
    """-> (x's type as stored, channels, dtype)"""
    check_activation(a, op)
    x = ts[0]
    dt = same_dtype(ts)
    check(x.rank >= 2, f"batch_norm wants [N, C, ...] input, got {x}")
    c = logical_type(x, a, op).shape[1]
    for t in ts[1:]:
        check(t.shape == (c,), f"batch_norm: per-channel tensor {t} does not fit {c} channels")
    return x, c, dt


def _bn_train_infer(ts, a):
    x, c, dt = _bn_check(ts, a, "batch_norm_train")
    chan = TensorType((c,), dt)
    return [x, chan, chan, chan, chan]


def _channel_view(v: np.ndarray, rank: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (rank - 2))


def _reduce_axes(rank: int, a: dict | None = None) -> tuple[int, ...]:
    """Every axis but the channel's, in the layout of attrs `a`."""
    ch = channel_axis(a or {}, rank)
    return tuple(i for i in range(rank) if i != ch)


def _bn_train_ref(x, a):
    inp, w, b, rm, rv = to_logical(x[0], a), *x[1:]
    axes = _reduce_axes(inp.ndim)
    count = inp.size // inp.shape[1]
    mean = inp.mean(axis=axes, dtype=np.float64)
    var = ((inp - _channel_view(mean, inp.ndim)) ** 2).mean(axis=axes)
    invstd = 1.0 / np.sqrt(var + a["eps"])
    y = (inp - _channel_view(mean, inp.ndim)) * _channel_view(invstd * w, inp.ndim) + _channel_view(b, inp.ndim)
    m = a["momentum"]
    new_rm = (1 - m) * rm + m * mean
    new_rv = (1 - m) * rv + m * var * (count / max(count - 1, 1))
    dt = inp.dtype
    y = to_physical(apply_activation(y.astype(dt), a), a)
    return [y, mean.astype(dt), invstd.astype(dt), new_rm.astype(dt), new_rv.astype(dt)]


def _bn_infer_ref(x, a):
    inp, w, b, rm, rv = to_logical(x[0], a), *x[1:]
    scale = w / np.sqrt(rv + np.asarray(a["eps"], dtype=rv.dtype))
    shift = b - rm * scale
    y = (inp * _channel_view(scale, inp.ndim) + _channel_view(shift, inp.ndim)).astype(inp.dtype)
    return [to_physical(apply_activation(y, a), a)]


def _bn_backward_infer(ts, a):
    x, dt = ts[1], same_dtype(ts)
    c = logical_type(x, a, "batch_norm_backward").shape[1]
    full = [x, TensorType((c,), dt), TensorType((c,), dt)]
    return [t for t, on in zip(full, a["output_mask"]) if on]


def _bn_backward_ref(x, a):
    dy, inp, w, mean, invstd = to_logical(x[0], a), to_logical(x[1], a), *x[2:]
    axes = _reduce_axes(inp.ndim)
    count = inp.size // inp.shape[1]
    xhat = (inp - _channel_view(mean, inp.ndim)) * _channel_view(invstd, inp.ndim)
    sum_dy = dy.sum(axis=axes, dtype=np.float64)
    sum_dy_xhat = (dy * xhat).sum(axis=axes, dtype=np.float64)
    outs = []
    if a["output_mask"][0]:
        k = _channel_view(w * invstd / count, inp.ndim)
        dx = k * (count * dy - _channel_view(sum_dy, inp.ndim) - xhat * _channel_view(sum_dy_xhat, inp.ndim))
        outs.append(to_physical(dx.astype(dy.dtype), a))
    if a["output_mask"][1]:
        outs.append(sum_dy_xhat.astype(dy.dtype))
    if a["output_mask"][2]:
        outs.append(sum_dy.astype(dy.dtype))
    return outs


def _bn_train_grad(g):
    if has_activation(g.attrs):
        no_grad_with_epilogue(g, "batch_norm_train", f"activation {g.attrs['activation']!r}")
    x, w = g.inputs[0], g.inputs[1]
    dy = g.douts[0]
    mean, invstd = g.outputs[1], g.outputs[2]
    need_dx, need_dw, need_db = g.needs[0], g.needs[1], g.needs[2]
    grads = [None] * 5
    if not need_dx and not need_dw:
        if need_db:  # bias only: no activation needs to be kept
            grads[2] = g.emit1("sum", [dy], {"dims": list(_reduce_axes(dy.rank, g.attrs)), "keepdim": False})
        return grads
    mask = [bool(need_dx), bool(need_dw), bool(need_db)]
    layout = {"layout": g.attrs["layout"]} if "layout" in g.attrs else {}
    outs = g.emit("batch_norm_backward", [dy, x, w, mean, invstd], {"output_mask": mask, **layout})
    it = iter(outs)
    for slot, on in zip((0, 1, 2), mask):
        if on:
            grads[slot] = next(it)
    return grads


def _bn_infer_grad(g):
    if has_activation(g.attrs):
        no_grad_with_epilogue(g, "batch_norm_infer", f"activation {g.attrs['activation']!r}")
    x, w, b, rm, rv = g.inputs
    dy = g.douts[0]
    grads = [None] * 5
    rank = dy.rank
    view = [1] * rank
    view[channel_axis(g.attrs, rank)] = w.shape[0]
    invstd = None
    if g.needs[0] or g.needs[1]:
        invstd = g.emit1("rsqrt", [g.emit1("add", [rv, g.const(g.attrs["eps"], rv.dtype)])])
    if g.needs[0]:
        scale = g.emit1("reshape", [g.emit1("mul", [w, invstd])], {"shape": view})
        grads[0] = g.emit1("mul", [dy, scale])
    if g.needs[1]:
        centered = g.emit1("sub", [x, g.emit1("reshape", [rm], {"shape": view})])
        xhat = g.emit1("mul", [centered, g.emit1("reshape", [invstd], {"shape": view})])
        grads[1] = g.emit1("sum", [g.emit1("mul", [dy, xhat])], {"dims": list(_reduce_axes(rank, g.attrs)),
                                                                 "keepdim": False})
    if g.needs[2]:
        grads[2] = g.emit1("sum", [dy], {"dims": list(_reduce_axes(rank, g.attrs)), "keepdim": False})
    return grads


def _bn_inputs(rng, shape):
    c = shape[1]
    return [rand(rng, *shape), rand(rng, c, lo=0.5, hi=1.5), rand(rng, c), rand(rng, c, lo=-0.2, hi=0.2),
            rand(rng, c, lo=0.5, hi=1.5)]


def _bn_samples(rng):
    return _with_nhwc(_plain_bn_samples(rng))


def _with_nhwc(samples):
    """samples + their 4-d ones channels-last"""
    return samples + [Sample([to_physical(s.inputs[0], _NHWC)] + s.inputs[1:], {**s.attrs, **_NHWC}, s.grad_inputs,
                             f"{s.note or 'general'}, nhwc") for s in samples if s.inputs[0].ndim == 4]


_NHWC = {"layout": "nhwc"}


def _plain_bn_samples(rng):
    return [Sample(_bn_inputs(rng, (4, 3, 5, 5)), {"momentum": 0.1, "eps": 1e-5}, grad_inputs=[0, 1, 2]),
            Sample(_bn_inputs(rng, (6, 4)), {"momentum": 0.2, "eps": 1e-3}, grad_inputs=[0, 1, 2], note="1-d"),
            Sample(_bn_inputs(rng, (4, 16, 8, 8)), {"momentum": 0.1, "eps": 1e-5}, grad_inputs=[1, 2],
                   note="layer-sized")]


def _bn_activation_samples(rng, train: bool):
    """The fused activation (what fuse_epilogue makes of BN + ReLU / ReLU6): x spans [-4, 4] and
    b is shifted so that hardtanh(0, 6) clamps at both ends; forward only (no gradient rule)."""
    stats = {"momentum": 0.1, "eps": 1e-5} if train else {"eps": 1e-5}
    out = []
    for shape, act in (((4, 3, 5, 5), {"activation": "relu"}),
                       ((2, 16, 7, 9), {"activation": "hardtanh", "act_min": 0.0, "act_max": 6.0})):
        inputs = _bn_inputs(rng, shape)
        inputs[0] = inputs[0] * 4
        inputs[2] = inputs[2] * 4 + 2  # shifts past both clamp bounds
        out.append(Sample(inputs, {**stats, **act}, grad_inputs=[], note=f"fused {act['activation']}"))
    return _with_nhwc(out)


def _torch_bn(t, a, training):
    torch = T()
    x, w, b, rm, rv = to_logical(t[0], a), *t[1:]
    rm, rv = rm.clone(), rv.clone()
    if training:
        y, mean, invstd = torch.ops.aten.native_batch_norm(x, w, b, rm, rv, True, a["momentum"], a["eps"])
        return [to_physical(torch_activation(y, a), a), mean, invstd, rm, rv]
    y = torch.nn.functional.batch_norm(x, rm, rv, w, b, False, 0.0, a["eps"])
    return [to_physical(torch_activation(y, a), a)]


def _bn_backward_samples(rng):
    out = []
    for s in _bn_samples(rng):
        x, w = s.inputs[0], s.inputs[1]
        _, mean, invstd, _, _ = _bn_train_ref(s.inputs, s.attrs)
        layout = {"layout": s.attrs["layout"]} if "layout" in s.attrs else {}
        for mask in ([True, True, True], [True, False, False], [False, True, True]):
            out.append(Sample([rand(rng, *x.shape), x, w, mean, invstd],
                              {"output_mask": mask, "eps": s.attrs["eps"], **layout}, note=s.note))
    return out


def _torch_bn_backward(t, a):
    torch = T()
    dy, x, w, mean, invstd = to_logical(t[0], a), to_logical(t[1], a), *t[2:]
    outs = torch.ops.aten.native_batch_norm_backward(dy, x, w, None, None, mean, invstd, True, a.get("eps", 1e-5),
                                                     a["output_mask"])
    outs = [o for o, on in zip(outs, a["output_mask"]) if on]
    return [to_physical(outs[0], a)] + outs[1:] if a["output_mask"][0] else outs


register(OpDef("batch_norm_train", _bn_train_infer, _bn_train_ref, _bn_train_grad,
               lambda rng: _bn_samples(rng) + _bn_activation_samples(rng, True),
               lambda t, a: _torch_bn(t, a, True), param_roles={1: "norm", 2: "bias"},
               flops=lambda i, o, a: 7 * i[0].numel))
register(OpDef("batch_norm_infer", lambda ts, a: [_bn_check(ts, a, "batch_norm_infer")[0]], _bn_infer_ref,
               _bn_infer_grad,
               lambda rng: [Sample(s.inputs, {"eps": s.attrs["eps"], **({"layout": "nhwc"} if "layout" in s.attrs else {})},
                                   grad_inputs=[0, 1, 2], note=s.note)
                            for s in _bn_samples(rng)] + _bn_activation_samples(rng, False),
               lambda t, a: _torch_bn(t, a, False), param_roles={1: "norm", 2: "bias"},
               flops=lambda i, o, a: 2 * i[0].numel))
register(OpDef("batch_norm_backward", _bn_backward_infer, _bn_backward_ref, NOT_DIFFERENTIABLE,
               _bn_backward_samples, _torch_bn_backward, flops=lambda i, o, a: 8 * i[1].numel))


# ---------------------------------------------------------------------------------------------
# layer norm over the trailing attrs["normalized_shape"] dims
# ---------------------------------------------------------------------------------------------
def _ln_axes(rank, k):
    return tuple(range(rank - k, rank))


def _ln_infer(ts, a):
    x = ts[0]
    dt = same_dtype(ts)
    ns = tuple(a["normalized_shape"])
    k = len(ns)
    check(x.shape[x.rank - k:] == ns, f"layer_norm: input {x} does not end in normalized_shape {list(ns)}")
    for t in ts[1:]:
        check(t.shape == ns, f"layer_norm: affine param {t} is not of shape {list(ns)}")
    stat = TensorType(x.shape[:x.rank - k] + (1,) * k, dt)
    return [x, stat, stat]


def _ln_ref(x, a):
    inp, w, b = x
    axes = _ln_axes(inp.ndim, len(a["normalized_shape"]))
    mean = inp.mean(axis=axes, keepdims=True, dtype=np.float64)
    var = ((inp - mean) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + a["eps"])
    y = (inp - mean) * rstd * w + b
    dt = inp.dtype
    return [y.astype(dt), mean.astype(dt), rstd.astype(dt)]


def _ln_backward_infer(ts, a):
    dt = same_dtype(ts)
    full = [ts[1], TensorType(ts[2].shape, dt), TensorType(ts[2].shape, dt)]
    return [t for t, on in zip(full, a["output_mask"]) if on]


def _ln_backward_ref(x, a):
    dy, inp, w, mean, rstd = x
    k = len(a["normalized_shape"])
    axes = _ln_axes(inp.ndim, k)
    lead = tuple(range(inp.ndim - k))
    n = int(np.prod(a["normalized_shape"]))
    xhat = (inp - mean) * rstd
    outs = []
    if a["output_mask"][0]:
        g = dy * w
        dx = rstd / n * (n * g - g.sum(axis=axes, keepdims=True, dtype=np.float64)
                         - xhat * (g * xhat).sum(axis=axes, keepdims=True, dtype=np.float64))
        outs.append(dx.astype(dy.dtype))
    if a["output_mask"][1]:
        outs.append((dy * xhat).sum(axis=lead, dtype=np.float64).astype(dy.dtype))
    if a["output_mask"][2]:
        outs.append(dy.sum(axis=lead, dtype=np.float64).astype(dy.dtype))
    return outs


def _ln_grad(g):
    x, w = g.inputs[0], g.inputs[1]
    dy = g.douts[0]
    mean, rstd = g.outputs[1], g.outputs[2]
    grads = [None] * 3
    lead = list(range(dy.rank - len(g.attrs["normalized_shape"])))
    if not g.needs[0] and not g.needs[1]:
        if g.needs[2]:
            grads[2] = g.emit1("sum", [dy], {"dims": lead, "keepdim": False})
        return grads
    mask = [bool(g.needs[0]), bool(g.needs[1]), bool(g.needs[2])]
    outs = iter(g.emit("layer_norm_backward", [dy, x, w, mean, rstd],
                       {"normalized_shape": list(g.attrs["normalized_shape"]), "output_mask": mask}))
    for slot, on in enumerate(mask):
        if on:
            grads[slot] = next(outs)
    return grads


def _ln_samples(rng):
    return [Sample([rand(rng, 2, 3, 6), rand(rng, 6, lo=0.5, hi=1.5), rand(rng, 6)],
                   {"normalized_shape": [6], "eps": 1e-5}),
            Sample([rand(rng, 3, 2, 4), rand(rng, 2, 4, lo=0.5, hi=1.5), rand(rng, 2, 4)],
                   {"normalized_shape": [2, 4], "eps": 1e-6}),
            Sample([rand(rng, 4, 16, 96), rand(rng, 96, lo=0.5, hi=1.5), rand(rng, 96)],
                   {"normalized_shape": [96], "eps": 1e-5}, grad_inputs=[1, 2], note="layer-sized")]


def _ln_backward_samples(rng):
    out = []
    for s in _ln_samples(rng):
        x, w = s.inputs[0], s.inputs[1]
        _, mean, rstd = _ln_ref(s.inputs, s.attrs)
        for mask in ([True, True, True], [True, False, False], [False, True, False]):
            out.append(Sample([rand(rng, *x.shape), x, w, mean, rstd],
                              {"normalized_shape": s.attrs["normalized_shape"], "output_mask": mask}))
    return out


def _torch_ln_backward(t, a):
    torch = T()
    dy, x, w, mean, rstd = t
    outs = torch.ops.aten.native_layer_norm_backward(dy, x, a["normalized_shape"], mean, rstd, w, torch.zeros_like(w),
                                                     a["output_mask"])
    return [o for o, on in zip(outs, a["output_mask"]) if on]


register(OpDef("layer_norm", _ln_infer, _ln_ref, _ln_grad, _ln_samples,
               lambda t, a: list(T().ops.aten.native_layer_norm(t[0], a["normalized_shape"], t[1], t[2], a["eps"])),
               param_roles={1: "norm", 2: "bias"}, flops=lambda i, o, a: 8 * i[0].numel))
register(OpDef("layer_norm_backward", _ln_backward_infer, _ln_backward_ref, NOT_DIFFERENTIABLE,
               _ln_backward_samples, _torch_ln_backward, flops=lambda i, o, a: 10 * i[1].numel))
