"""2-D convolution (stride, padding, dilation, groups — depthwise included) and its two backward ops.

    conv2d(x, w[, b])              y[N,O,Ho,Wo]
    conv2d_grad_input(dy, w)       dx, given attrs["input_shape"]      (a data-gradient op)
    conv2d_grad_weight(dy, x)      dw, given attrs["weight_shape"]     (a weight-gradient op)

The bias gradient is a plain `sum` over N, H, W. Splitting the backward into two ops is what
makes sparse backprop visible: a frozen weight simply has no conv2d_grad_weight node, and the
first trainable layer needs no conv2d_grad_input.

The numpy references use strided window views + tensordot/einsum (an im2col without the copy).

Fused epilogues, put in by optimisation passes after autodiff (so these forms have no gradient
rule; semantics in matmul.py, defined through the elementwise ops' references):

    conv2d(x, w[, b], activation="relu"|"hardtanh", act_min=, act_max=)   act(conv + b)
    conv2d_grad_input(dy, w, mask[, mask_min=, mask_max=])               dx zeroed where the
        activation that produced x had zero slope: u8 bits, or its f32 output y
        (= hardtanh_backward(conv2d_grad_input(dy, w), y)).

Layout (ops/layout.py): attr layout="nhwc" stores the activation operands (x, y, dy, dx, an f32
mask) channels-last; weights and the shape attrs keep their NCHW order. The CPU kernels run it
for the geometries `nhwc_geometry` admits (the layout pass asks it too): 1x1 stride-1 convs, one
GEMM over N*H*W rows, and depthwise convs with one filter per channel.

The CPU kernels also register each algorithm as its own kernel (conv2d.im2col / .pointwise /
.depthwise, same for both backward ops) for per-node kernel selection; the ops are the same.
"""

from __future__ import annotations

import numpy as np

from .matmul import (apply_activation, apply_output_mask, bit_mask, check_activation, check_output_mask,
                     has_activation, no_grad_with_epilogue, torch_activation, torch_output_mask)
from .layout import is_nhwc, logical_type, physical_shape, physical_type, to_logical, to_physical
from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register, same_dtype
from ..ir import TensorType

_CONV_KEYS = ("stride", "padding", "dilation", "groups")


def conv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def nhwc_geometry(weight_shape, attrs: dict) -> bool:
    """Whether a conv of this weight and attrs has channels-last kernels: a 1x1 stride-1 unpadded
    single-group conv (a GEMM over N*H*W rows) or a depthwise conv with one filter per channel."""
    o, cg, kh, kw = weight_shape
    g = attrs["groups"]
    pointwise = (kh, kw) == (1, 1) and list(attrs["stride"]) == [1, 1] and list(attrs["padding"]) == [0, 0] and g == 1
    depthwise = cg == 1 and g == o
    return pointwise or depthwise


def _conv_infer(ts, a):
    x, w = logical_type(ts[0], a, "conv2d"), ts[1]
    dt = same_dtype(ts)
    check(x.rank == 4 and w.rank == 4, f"conv2d wants 4-d input and weight, got {x} and {w}")
    g = a["groups"]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    check(c % g == 0 and o % g == 0 and c // g == cg,
          f"conv2d: input channels {c} / groups {g} do not fit weight {w}")
    if len(ts) == 3:
        check(ts[2].shape == (o,), f"conv2d: bias {ts[2]} does not fit {o} output channels")
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    ho, wo = conv_out_size(h, kh, sh, ph, dh), conv_out_size(wd, kw, sw, pw, dw)
    check(ho > 0 and wo > 0, f"conv2d output would be empty for input {x} and kernel {kh}x{kw}")
    check_activation(a, "conv2d")
    return [physical_type(TensorType((n, o, ho, wo), dt), a)]


def _windows(x: np.ndarray, kh, kw, a) -> np.ndarray:
    """[N,C,H,W] -> view [N,C,Ho,Wo,KH,KW] of padded, strided, dilated windows."""
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (span_h, span_w), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def _conv_ref(x, a):
    inp, w = to_logical(x[0], a), x[1]
    g = a["groups"]
    o, cg, kh, kw = w.shape
    win = _windows(inp, kh, kw, a)
    n, c, ho, wo = win.shape[:4]
    if g == 1:
        y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    else:
        win_g = win.reshape(n, g, cg, ho, wo, kh, kw)
        w_g = w.reshape(g, o // g, cg, kh, kw)
        y = np.einsum("ngchwkl,gockl->ngohw", win_g, w_g, optimize=True).reshape(n, o, ho, wo)
    if len(x) == 3:
        y = y + x[2].reshape(1, -1, 1, 1)
    return [to_physical(apply_activation(np.ascontiguousarray(y, dtype=inp.dtype), a), a)]


def _conv_grad_input_ref(x, a):
    dy, w = to_logical(x[0], a), x[1]
    g = a["groups"]
    n, c, h, wd = a["input_shape"]
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    ho, wo = dy.shape[2:]
    dy_g = dy.reshape(n, g, o // g, ho, wo)
    w_g = w.reshape(g, o // g, cg, kh, kw)
    cols = np.einsum("ngohw,gockl->ngchwkl", dy_g, w_g, optimize=True).reshape(n, c, ho, wo, kh, kw)
    dxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=dy.dtype)
    for i in range(kh):  # col2im: scatter each kernel tap back onto the padded input
        for j in range(kw):
            dxp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw] += cols[..., i, j]
    dx = to_physical(np.ascontiguousarray(dxp[:, :, ph: ph + h, pw: pw + wd]), a)
    return [apply_output_mask(dx, x[2], a) if len(x) == 3 else dx]


def _conv_grad_input_infer(ts, a):
    check(len(ts) in (2, 3), f"conv2d_grad_input takes dy, w and an optional mask, got {len(ts)} inputs")
    out = physical_type(TensorType(tuple(a["input_shape"]), same_dtype(ts[:2])), a)
    if len(ts) == 3:
        check_output_mask(out, ts[2], a, "conv2d_grad_input")
    return [out]


def _conv_grad_weight_ref(x, a):
    dy, inp = to_logical(x[0], a), to_logical(x[1], a)
    g = a["groups"]
    o, cg, kh, kw = a["weight_shape"]
    win = _windows(inp, kh, kw, a)
    n, c, ho, wo = win.shape[:4]
    if g == 1:
        dw = np.tensordot(dy, win, axes=([0, 2, 3], [0, 2, 3]))
    else:
        dw = np.einsum("ngohw,ngchwkl->gockl", dy.reshape(n, g, o // g, ho, wo),
                       win.reshape(n, g, cg, ho, wo, kh, kw), optimize=True).reshape(o, cg, kh, kw)
    return [np.ascontiguousarray(dw, dtype=dy.dtype)]


def _conv_grad(g):
    if has_activation(g.attrs):
        no_grad_with_epilogue(g, "conv2d", f"activation {g.attrs['activation']!r}")
    x, w = g.inputs[0], g.inputs[1]
    dy = g.douts[0]
    conv_attrs = {k: g.attrs[k] for k in _CONV_KEYS + ("layout",) if k in g.attrs}
    grads = [None] * len(g.inputs)
    if g.needs[0]:
        input_shape = list(logical_type(x.type, g.attrs, "conv2d").shape)
        grads[0] = g.emit1("conv2d_grad_input", [dy, w], {**conv_attrs, "input_shape": input_shape})
    if g.needs[1]:
        dw = g.emit1("conv2d_grad_weight", [dy, x], {**conv_attrs, "weight_shape": list(w.shape)})
        dw.producer.tags.add("weight_grad")
        grads[1] = dw
    if len(g.inputs) == 3 and g.needs[2]:
        grads[2] = g.emit1("sum", [dy], {"dims": [0, 1, 2] if is_nhwc(g.attrs) else [0, 2, 3], "keepdim": False})
    return grads


def _conv_flops(i, o, a):
    _, cg, kh, kw = i[1].shape
    return 2 * o[0].numel * cg * kh * kw


def _attrs(stride=1, padding=0, dilation=1, groups=1):
    return {"stride": [stride] * 2, "padding": [padding] * 2, "dilation": [dilation] * 2, "groups": groups}


def _conv_samples(rng):
    samples = _plain_conv_samples(rng) + _activation_samples(rng)
    return samples + [Sample([to_physical(s.inputs[0], _NHWC)] + s.inputs[1:], {**s.attrs, **_NHWC},
                             s.grad_inputs, f"{s.note or 'general'}, nhwc")
                      for s in samples if nhwc_geometry(s.inputs[1].shape, s.attrs)]


_NHWC = {"layout": "nhwc"}


def _plain_conv_samples(rng):
    return [
        Sample([rand(rng, 2, 3, 7, 7), rand(rng, 4, 3, 3, 3), rand(rng, 4)], _attrs(padding=1)),
        Sample([rand(rng, 1, 4, 9, 8), rand(rng, 6, 2, 3, 2)], _attrs(stride=2, groups=2), note="grouped, stride 2"),
        Sample([rand(rng, 2, 4, 8, 8), rand(rng, 4, 1, 3, 3)], _attrs(stride=2, padding=1, groups=4), note="depthwise"),
        Sample([rand(rng, 1, 2, 9, 9), rand(rng, 3, 2, 3, 3), rand(rng, 3)], _attrs(padding=2, dilation=2),
               note="dilated"),
        Sample([rand(rng, 2, 5, 4, 4), rand(rng, 3, 5, 1, 1)], _attrs(), note="pointwise"),
        # depthwise rows of >= 16 outputs take the staged-row path (ring of staged input rows)
        Sample([rand(rng, 1, 3, 9, 34), rand(rng, 3, 1, 3, 3), rand(rng, 3)], _attrs(padding=1, groups=3),
               grad_inputs=[0, 1], note="depthwise staged rows, stride 1"),
        Sample([rand(rng, 1, 2, 11, 37), rand(rng, 4, 1, 3, 3)], _attrs(stride=2, padding=1, groups=2),
               grad_inputs=[0, 1], note="depthwise staged rows, stride 2, 2 filters per channel"),
        Sample([rand(rng, 1, 2, 12, 40), rand(rng, 2, 1, 3, 3)], _attrs(padding=2, dilation=2, groups=2),
               grad_inputs=[0, 1], note="depthwise staged rows, dilation 2"),
        # Layer-sized cases for the kernels' GEMM / depthwise paths. Exact values keep every
        # summation order (GEMM blocking, threads) bit-identical to numpy; only the bias is
        # finite-differenced, which keeps the sweep fast.
        Sample([_exact(rng, 2, 64, 8, 8), _exact(rng, 64, 64, 3, 3), _exact(rng, 64)], _attrs(padding=1),
               grad_inputs=[2], note="exact ResNet 3x3, K=576"),
        Sample([_exact(rng, 2, 32, 15, 15), _exact(rng, 32, 1, 3, 3), _exact(rng, 32)],
               _attrs(stride=2, padding=1, groups=32), grad_inputs=[2], note="exact MobileNetV2 depthwise stride 2"),
        Sample([_exact(rng, 2, 48, 10, 10), _exact(rng, 40, 48, 1, 1)], _attrs(), grad_inputs=[],
               note="exact pointwise 48->40"),
    ]


def _activation_samples(rng):
    """conv2d with a fused activation on the kernels' three paths. Inputs span [-4, 4] (exact
    ones are scaled by 4, still exact) so that hardtanh(0, 6) clamps at both ends."""
    relu = {"activation": "relu"}
    relu6 = {"activation": "hardtanh", "act_min": 0.0, "act_max": 6.0}
    return [
        Sample([rand(rng, 2, 5, 4, 4, lo=-4, hi=4), rand(rng, 3, 5, 1, 1), rand(rng, 3)], {**_attrs(), **relu},
               grad_inputs=[], note="pointwise, relu"),
        Sample([4 * _exact(rng, 2, 48, 10, 10), _exact(rng, 40, 48, 1, 1), _exact(rng, 40)], {**_attrs(), **relu6},
               grad_inputs=[], note="exact pointwise 48->40, hardtanh(0, 6)"),
        Sample([rand(rng, 2, 4, 8, 8, lo=-4, hi=4), rand(rng, 4, 1, 3, 3), rand(rng, 4)],
               {**_attrs(stride=2, padding=1, groups=4), **relu}, grad_inputs=[], note="depthwise, relu"),
        Sample([4 * _exact(rng, 2, 32, 15, 15), _exact(rng, 32, 1, 3, 3), _exact(rng, 32)],
               {**_attrs(stride=2, padding=1, groups=32), **relu6}, grad_inputs=[],
               note="exact depthwise stride 2, hardtanh(0, 6)"),
        Sample([rand(rng, 2, 3, 7, 7, lo=-4, hi=4), rand(rng, 4, 3, 3, 3), rand(rng, 4)],
               {**_attrs(padding=1), **relu}, grad_inputs=[], note="3x3, relu"),
        Sample([_exact(rng, 2, 64, 8, 8), _exact(rng, 64, 64, 3, 3), _exact(rng, 64)],
               {**_attrs(padding=1), **relu6}, grad_inputs=[], note="exact 3x3 K=576, hardtanh(0, 6)"),
    ]


def _exact(rng, *shape):
    """Multiples of 1/8 in [-1, 1]: products and their sums stay exact in float32."""
    return (rng.integers(-8, 9, size=shape) / 8).astype(np.float32)


def _torch_conv(t, a):
    y = T().nn.functional.conv2d(to_logical(t[0], a), t[1], t[2] if len(t) == 3 else None, a["stride"], a["padding"],
                                 a["dilation"], a["groups"])
    return [to_physical(torch_activation(y, a), a)]


def _torch_conv_backward(t, a, which):
    torch = T()
    dy, other = to_logical(t[0], a), t[1]
    if which == "input":
        x, w = torch.zeros(a["input_shape"], dtype=dy.dtype), other
        mask = [True, False, False]
    else:
        x, w = to_logical(other, a), torch.zeros(a["weight_shape"], dtype=dy.dtype)
        mask = [False, True, False]
    out = torch.ops.aten.convolution_backward(dy, x, w, None, a["stride"], a["padding"], a["dilation"], False,
                                              [0, 0], a["groups"], mask)
    if which == "input":
        dx = to_physical(out[0], a)
        return [torch_output_mask(dx, t[2], a) if len(t) == 3 else dx]
    return [out[1]]


def _backward_samples(which):
    def samples(rng):
        out = []
        for s in _plain_conv_samples(rng):
            x, w = s.inputs[0], s.inputs[1]
            y = _conv_ref([x, w], s.attrs)[0]
            dy = _exact(rng, *y.shape) if s.note.startswith("exact") else rand(rng, *y.shape)
            if which == "input":
                out.append(Sample([dy, w], {**s.attrs, "input_shape": list(x.shape)}, note=s.note))
            else:
                out.append(Sample([dy, x], {**s.attrs, "weight_shape": list(w.shape)}, note=s.note))
            if nhwc_geometry(w.shape, s.attrs):  # the same case channels-last
                last = out[-1]
                out.append(Sample([to_physical(last.inputs[0], _NHWC),
                                   last.inputs[1] if which == "input" else to_physical(x, _NHWC)],
                                  {**last.attrs, **_NHWC}, note=f"{s.note or 'general'}, nhwc"))
        if which == "input":
            out += _masked_grad_input_samples(rng, out)
        return out
    return samples


def _masked_grad_input_samples(rng, plain):
    """The fused activation backward on every grad_input sample: bits on all, and the f32 form
    alternating relu (mask_min 0) and hardtanh (0, 6) on y drawn around both kinks."""
    out = []
    for k, s in enumerate(plain):
        shape = physical_shape(s.attrs["input_shape"], s.attrs)
        out.append(Sample(s.inputs + [bit_mask(rng, shape)], s.attrs, note=f"{s.note or 'general'}, bit mask"))
        lim = {"mask_min": 0.0, "mask_max": 6.0} if k % 2 else {"mask_min": 0.0}
        out.append(Sample(s.inputs + [rand(rng, *shape, lo=-2.0, hi=8.0)], {**s.attrs, **lim},
                          note=f"{s.note or 'general'}, f32 mask {'hardtanh' if k % 2 else 'relu'}"))
    return out


register(OpDef("conv2d", _conv_infer, _conv_ref, _conv_grad, _conv_samples, _torch_conv,
               param_roles={1: "weight", 2: "bias"}, min_inputs=2, flops=_conv_flops))
register(OpDef("conv2d_grad_input", _conv_grad_input_infer,
               _conv_grad_input_ref, NOT_DIFFERENTIABLE, _backward_samples("input"),
               lambda t, a: _torch_conv_backward(t, a, "input"), min_inputs=2,
               flops=lambda i, o, a: 2 * i[0].numel * i[1].shape[1] * i[1].shape[2] * i[1].shape[3]))
register(OpDef("conv2d_grad_weight", lambda ts, a: [TensorType(tuple(a["weight_shape"]), same_dtype(ts))],
               _conv_grad_weight_ref, NOT_DIFFERENTIABLE, _backward_samples("weight"),
               lambda t, a: _torch_conv_backward(t, a, "weight"),
               flops=lambda i, o, a: 2 * i[0].numel * a["weight_shape"][1] * a["weight_shape"][2] * a["weight_shape"][3]))
