"""2-D pooling: max_pool2d (returns flat argmax indices, as ATen does) and avg_pool2d, with backward ops.

    max_pool2d(x)                  -> y, indices (i64, flat index into each H*W plane)
    max_pool2d_backward(dy, idx)   -> dx   (scatter-add; needs only the indices, not x)
    avg_pool2d(x)                  -> y
    avg_pool2d_backward(dy)        -> dx   (needs no activation at all)

Output sizes follow ATen, ceil_mode included. Adaptive average pooling is lowered by the
frontends to `mean` (1x1 output) or to `avg_pool2d` (evenly dividing output).
"""

from __future__ import annotations

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register
from ..ir import TensorType


def pool_out_size(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # last window must start inside the input or left pad
        out -= 1
    return out


def _pool_geometry(shape, a):
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
    dh, dw = a.get("dilation", [1, 1])
    ho = pool_out_size(h, kh, sh, ph, dh, a["ceil_mode"])
    wo = pool_out_size(w, kw, sw, pw, dw, a["ceil_mode"])
    return n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo


def _pool_infer_shape(t, a):
    check(t.rank == 4, f"pool2d wants [N, C, H, W], got {t}")
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = _pool_geometry(t.shape, a)
    check(ho > 0 and wo > 0, f"pool2d output would be empty for {t} with kernel {kh}x{kw}")
    check(ph <= kh // 2 and pw <= kw // 2, f"pool2d padding {a['padding']} exceeds half the kernel {a['kernel']}")
    return (n, c, ho, wo)


def _padded(x, ph, pw, ho, wo, kh, kw, sh, sw, dh, dw, fill):
    """Pad so every (ceil-mode) window is fully inside; returns padded array."""
    n, c, h, w = x.shape
    need_h = (ho - 1) * sh + dh * (kh - 1) + 1
    need_w = (wo - 1) * sw + dw * (kw - 1) + 1
    extra_h = max(need_h - (h + 2 * ph), 0)
    extra_w = max(need_w - (w + 2 * pw), 0)
    return np.pad(x, ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)), constant_values=fill)


def _max_pool_ref(x, a):
    inp = x[0]
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = _pool_geometry(inp.shape, a)
    xp = _padded(inp, ph, pw, ho, wo, kh, kw, sh, sw, dh, dw, -np.inf)
    # flat input index of every padded position (-1 in padding)
    rows = np.arange(-ph, xp.shape[2] - ph)
    cols = np.arange(-pw, xp.shape[3] - pw)
    valid = (rows[:, None] >= 0) & (rows[:, None] < h) & (cols[None, :] >= 0) & (cols[None, :] < w)
    flat = np.where(valid, rows[:, None] * w + cols[None, :], -1)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    win = win[:, :, :ho, :wo].reshape(n, c, ho, wo, kh * kw)
    fwin = np.lib.stride_tricks.sliding_window_view(flat, (span_h, span_w))[::sh, ::sw, ::dh, ::dw]
    fwin = fwin[:ho, :wo].reshape(ho, wo, kh * kw)
    arg = win.argmax(axis=-1)  # first maximum, as ATen picks
    y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    idx = np.take_along_axis(np.broadcast_to(fwin, (n, c, ho, wo, kh * kw)), arg[..., None], axis=-1)[..., 0]
    return [np.ascontiguousarray(y, dtype=inp.dtype), idx.astype(np.int64)]


def _max_pool_backward_ref(x, a):
    dy, idx = x
    n, c, h, w = a["input_shape"]
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    rows = np.repeat(np.arange(n * c), dy.shape[2] * dy.shape[3])
    np.add.at(dx, (rows, idx.reshape(-1)), dy.reshape(-1))
    return [dx.reshape(n, c, h, w)]


def _pool_attrs(k, s, p, ceil_mode=False, d=1):
    return {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "dilation": [d, d], "ceil_mode": ceil_mode}


def _max_samples(rng):
    # distinct values so the argmax (and so the gradient) is unambiguous
    def distinct(*shape):
        return (rng.permutation(int(np.prod(shape))).reshape(shape) / 10.0 - 3).astype(np.float32)
    return [Sample([distinct(2, 3, 6, 6)], _pool_attrs(2, 2, 0)),
            Sample([distinct(1, 2, 7, 7)], _pool_attrs(3, 2, 1), note="padded"),
            Sample([distinct(1, 2, 7, 6)], _pool_attrs(3, 2, 0, ceil_mode=True), note="ceil_mode"),
            Sample([distinct(1, 1, 8, 8)], _pool_attrs(2, 1, 0, d=2), note="dilated"),
            Sample([distinct(2, 8, 28, 28)], _pool_attrs(3, 2, 1), grad_inputs=[], note="layer-sized")]


def _torch_max_pool(t, a):
    y, idx = T().nn.functional.max_pool2d(t[0], a["kernel"], a["stride"], a["padding"], a["dilation"],
                                          ceil_mode=a["ceil_mode"], return_indices=True)
    return [y, idx]


def _max_pool_grad(g):
    return [g.emit1("max_pool2d_backward", [g.douts[0], g.outputs[1]], {"input_shape": list(g.inputs[0].shape)})]


def _max_backward_samples(rng):
    out = []
    for s in _max_samples(rng):
        y, idx = _max_pool_ref(s.inputs, s.attrs)
        out.append(Sample([rand(rng, *y.shape), idx], {"input_shape": list(s.inputs[0].shape)}, note=s.note))
    return out


def _torch_scatter_backward(t, a):
    torch = T()
    dy, idx = t
    n, c, h, w = a["input_shape"]
    dx = torch.zeros(n, c, h * w, dtype=dy.dtype)
    return [dx.scatter_add(2, idx.reshape(n, c, -1), dy.reshape(n, c, -1)).reshape(n, c, h, w)]


register(OpDef("max_pool2d", lambda ts, a: [TensorType(_pool_infer_shape(ts[0], a), ts[0].dtype),
                                            TensorType(_pool_infer_shape(ts[0], a), "i64")],
               _max_pool_ref, _max_pool_grad, _max_samples, _torch_max_pool,
               flops=lambda i, o, a: o[0].numel * a["kernel"][0] * a["kernel"][1]))
register(OpDef("max_pool2d_backward", lambda ts, a: [TensorType(tuple(a["input_shape"]), ts[0].dtype)],
               _max_pool_backward_ref, NOT_DIFFERENTIABLE, _max_backward_samples, _torch_scatter_backward))


# ---------------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------------
def _avg_divisors(shape, a):
    """Per-output-position divisor, ATen's rule (count_include_pad counts left/right pad but
    not the ceil-mode overhang)."""
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = _pool_geometry(shape, a)
    if a.get("divisor_override"):
        return np.full((ho, wo), float(a["divisor_override"]))

    def extent(o_count, k, s, p, size):
        start = np.arange(o_count) * s - p
        end = np.minimum(start + k, size + p)
        pool = end - start
        start_c, end_c = np.maximum(start, 0), np.minimum(end, size)
        return pool, end_c - start_c

    pool_h, valid_h = extent(ho, kh, sh, ph, h)
    pool_w, valid_w = extent(wo, kw, sw, pw, w)
    if a["count_include_pad"]:
        return np.outer(pool_h, pool_w).astype(np.float64)
    return np.outer(valid_h, valid_w).astype(np.float64)


def _avg_pool_ref(x, a):
    inp = x[0]
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = _pool_geometry(inp.shape, a)
    xp = _padded(inp, ph, pw, ho, wo, kh, kw, sh, sw, 1, 1, 0.0)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo]
    y = win.sum(axis=(-1, -2), dtype=np.float64) / _avg_divisors(inp.shape, a)
    return [y.astype(inp.dtype)]


def _avg_pool_backward_ref(x, a):
    dy = x[0]
    shape = a["input_shape"]
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = _pool_geometry(shape, a)
    scaled = dy / _avg_divisors(shape, a)
    # at least the padded input: windows need not cover it (3x3 stride 3 on 29x29 leaves 2 rows)
    dxp = np.zeros((n, c, max((ho - 1) * sh + kh, h + 2 * ph), max((wo - 1) * sw + kw, w + 2 * pw)),
                   dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw] += scaled
    return [np.ascontiguousarray(dxp[:, :, ph: ph + h, pw: pw + w]).astype(dy.dtype)]


_AVG_KEYS = ("kernel", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _avg_samples(rng):
    def attrs(k, s, p, ceil_mode=False, include=True, div=None):
        return {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "ceil_mode": ceil_mode,
                "count_include_pad": include, "divisor_override": div}
    return [Sample([rand(rng, 2, 3, 6, 6)], attrs(2, 2, 0)),
            Sample([rand(rng, 1, 2, 8, 8)], attrs(3, 3, 0), note="windows leave the last rows uncovered"),
            Sample([rand(rng, 1, 2, 7, 7)], attrs(3, 2, 1, include=False), note="padding excluded"),
            Sample([rand(rng, 1, 2, 7, 6)], attrs(3, 2, 1, ceil_mode=True), note="ceil_mode"),
            Sample([rand(rng, 1, 2, 6, 6)], attrs(3, 3, 0, div=4), note="divisor_override"),
            Sample([rand(rng, 1, 6, 20, 20)], attrs(3, 2, 1, ceil_mode=True, include=False), grad_inputs=[],
                   note="layer-sized")]


def _torch_avg(t, a):
    return [T().nn.functional.avg_pool2d(t[0], a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                                         a["count_include_pad"], a["divisor_override"])]


def _avg_backward_samples(rng):
    out = []
    for s in _avg_samples(rng):
        y = _avg_pool_ref(s.inputs, s.attrs)[0]
        out.append(Sample([rand(rng, *y.shape)], {**s.attrs, "input_shape": list(s.inputs[0].shape)}, note=s.note))
    return out


def _torch_avg_backward(t, a):
    torch = T()
    x = torch.zeros(a["input_shape"], dtype=t[0].dtype)
    return [torch.ops.aten.avg_pool2d_backward(t[0], x, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                                               a["count_include_pad"], a["divisor_override"])]


register(OpDef("avg_pool2d", lambda ts, a: [TensorType(_pool_infer_shape(ts[0], a), ts[0].dtype)],
               _avg_pool_ref,
               lambda g: [g.emit1("avg_pool2d_backward", [g.douts[0]],
                                  {**{k: g.attrs.get(k) for k in _AVG_KEYS}, "input_shape": list(g.inputs[0].shape)})],
               _avg_samples, _torch_avg, flops=lambda i, o, a: o[0].numel * a["kernel"][0] * a["kernel"][1]))
register(OpDef("avg_pool2d_backward", lambda ts, a: [TensorType(tuple(a["input_shape"]), ts[0].dtype)],
               _avg_pool_backward_ref,
               lambda g: [g.emit1("avg_pool2d", [g.douts[0]], {k: g.attrs.get(k) for k in _AVG_KEYS})],
               _avg_backward_samples, _torch_avg_backward))
