"""Matrix products: `matmul` (numpy semantics: batched, broadcasting, both operands rank >= 2) and
`linear` (y = x W^T + b, PyTorch's layout).

`linear` stays one op instead of permute+matmul+add so that its weight gradient is a single,
recognisable weight-gradient op and a frozen weight visibly costs nothing in backward.

Fused epilogues, put in by optimisation passes after autodiff (the kernels apply them as the
GEMM writes its output, so the activation is no separate pass over memory):

    linear(x, w[, b], activation="relu"|"hardtanh", act_min=, act_max=)   act(x W^T + b)
    matmul(a, b, mask)                                                     a @ b, zeroed where
        the mask says so: u8 bits (bit i of the output's row-major order in byte i >> 3 at bit
        i & 7, as `activation_mask` writes them) or the f32 output y of the activation that the
        next layer read, kept where mask_min < y < mask_max (mask_max absent = +inf) — i.e.
        `hardtanh_backward(a @ b, y)` in one op.

Strided operand views, put in by compiler/passes/matmul_views.py after autodiff (so attention's
per-head products read Q/K/V straight from the [B, T, H*D] projections and write the context
straight into [B, T, H*D], with no permute/reshape copies in between):

    matmul(a, b) {lhs_shape=, lhs_strides=}   the product reads as_strided(a.flat, lhs_shape,
        lhs_strides) (element strides, offset 0) instead of a; rhs_shape / rhs_strides the same
        for b. Each view's matrix (last two dims) must be row-major (unit column stride, row
        stride >= its columns) or column-major (the transposed case), so every backend reads it
        as one GEMM operand with a leading dimension, transposed or not.
    matmul(a, b) {out_shape=, out_strides=}    the output is stored with shape out_shape and the
        product's element [.., i, j] (product shape as without the attr) goes to flat index
        sum(index * out_strides); the strides must cover the stored output exactly once (a
        permutation of a row-major layout), with a unit stride on one of the last two dims. No
        output mask together with out_strides (the mask indexes the product row-major).

The helpers below define those semantics once (through the elementwise ops' own references) and
are shared with conv.py (conv2d's activation, conv2d_grad_input's mask). Ops carrying an
epilogue have no gradient rule: they only exist after autodiff.
"""

from __future__ import annotations

import numpy as np

from ..errors import IRError
from .registry import OpDef, Sample, T, broadcast_shapes, check, rand, register, run_reference, same_dtype
from ..ir import TensorType

ACTIVATIONS = ("none", "relu", "hardtanh")


# ---------------------------------------------------------------------------------------------
# epilogues (shared with conv.py)
# ---------------------------------------------------------------------------------------------
def has_activation(a: dict) -> bool:
    return a.get("activation", "none") != "none"


def check_activation(a: dict, op: str) -> None:
    act = a.get("activation", "none")
    check(act in ACTIVATIONS, f"{op}: unknown activation {act!r} (want one of {', '.join(ACTIVATIONS)})")
    if act == "hardtanh":
        check("act_min" in a and "act_max" in a, f"{op}: activation 'hardtanh' needs attrs act_min and act_max")
        check(a["act_min"] <= a["act_max"], f"{op}: hardtanh act_min {a['act_min']} is above act_max {a['act_max']}")


def apply_activation(y: np.ndarray, a: dict) -> np.ndarray:
    """act(y) by the registered `relu` / `hardtanh` ops' own references."""
    act = a.get("activation", "none")
    if act == "relu":
        return run_reference("relu", [y], {})[0]
    if act == "hardtanh":
        return run_reference("hardtanh", [y], {"min": a["act_min"], "max": a["act_max"]})[0]
    return y


def torch_activation(t, a: dict):
    act = a.get("activation", "none")
    if act == "relu":
        return T().nn.functional.relu(t)
    if act == "hardtanh":
        return T().nn.functional.hardtanh(t, a["act_min"], a["act_max"])
    return t


def no_grad_with_epilogue(g, op: str, what: str) -> None:
    """Fused epilogues are made after autodiff; a rule meeting one means a pass ran too early."""
    raise IRError(f"{op} with {what} (node {g.node!r}) has no gradient rule: epilogues are fused after "
                  f"autodiff, so differentiate the unfused graph")


def check_output_mask(out: TensorType, mask: TensorType, a: dict, op: str) -> None:
    if mask.dtype == "u8":
        want = (out.numel + 7) // 8
        check(mask.shape == (want,), f"{op}: bit mask {mask} does not fit output {out} (want u8[{want}])")
    else:
        check(mask.dtype == out.dtype and mask.shape == out.shape,
              f"{op}: mask {mask} must be u8 bits or the activation output shaped like the output {out}")
        check("mask_min" in a, f"{op}: an {mask.dtype} activation mask needs attr mask_min")


def apply_output_mask(out: np.ndarray, mask: np.ndarray, a: dict) -> np.ndarray:
    """out zeroed where the mask drops it; the f32 form is `hardtanh_backward(out, y)` itself."""
    if mask.dtype == np.uint8:
        keep = np.unpackbits(mask, count=out.size, bitorder="little").reshape(out.shape).astype(bool)
        return np.where(keep, out, np.zeros((), dtype=out.dtype))
    lim = {"min": a["mask_min"], "max": a.get("mask_max", float("inf"))}
    return run_reference("hardtanh_backward", [out, mask], lim)[0]


def torch_output_mask(out, mask, a: dict):
    torch = T()
    if mask.dtype == torch.uint8:
        idx = torch.arange(out.numel())
        keep = ((mask[idx >> 3].to(torch.int64) >> (idx & 7)) & 1).bool().reshape(out.shape)
        return torch.where(keep, out, torch.zeros((), dtype=out.dtype))
    return torch.ops.aten.hardtanh_backward(out, mask, a["mask_min"], a.get("mask_max", float("inf")))


def bit_mask(rng: np.random.Generator, shape, keep=0.6) -> np.ndarray:
    """A random u8 bit mask for an output of `shape` (activation_mask's format)."""
    return np.packbits(rng.random(shape).ravel() < keep, bitorder="little")


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------


def _exact(rng, *shape):
    """Multiples of 1/8 in [-1, 1]: products and their sums stay exact in float32, so a kernel's
    summation order (GEMM blocking, threads) cannot change the result."""
    return (rng.integers(-8, 9, size=shape) / 8).astype(np.float32)


def _swap_last(rank: int) -> list[int]:
    return list(range(rank - 2)) + [rank - 1, rank - 2]


VIEW_ATTRS = ("lhs_shape", "lhs_strides", "rhs_shape", "rhs_strides", "out_shape", "out_strides")


def has_views(a: dict) -> bool:
    return any(k in a for k in VIEW_ATTRS)


def matrix_ok(shape, strides) -> bool:
    """The last two dims of a view are one GEMM operand: row-major or column-major with a leading
    dimension at least the contiguous dim's length."""
    r, c = shape[-2], shape[-1]
    sr, sc = strides[-2], strides[-1]
    row_major = (sc == 1 or c <= 1) and (sr >= c or r <= 1)
    col_major = (sr == 1 or r <= 1) and (sc >= r or c <= 1)
    return row_major or col_major


def _operand_view(t: TensorType, a: dict, side: str) -> TensorType:
    """The matrix operand the product reads: `t` itself, or its strided view (lhs_/rhs_ attrs)."""
    has_shape, has_strides = f"{side}_shape" in a, f"{side}_strides" in a
    check(has_shape == has_strides, f"matmul: {side}_shape and {side}_strides come together")
    if not has_strides:
        return t
    shape, strides = tuple(int(d) for d in a[f"{side}_shape"]), tuple(int(s) for s in a[f"{side}_strides"])
    check(len(shape) == len(strides) >= 2, f"matmul: {side} view {list(shape)} / strides {list(strides)} "
                                           f"must have one stride per dim, rank >= 2")
    check(all(d >= 0 for d in shape) and all(s >= 0 for s in strides),
          f"matmul: {side} view {list(shape)} / {list(strides)} has a negative size or stride")
    if int(np.prod(shape, dtype=np.int64)) > 0:
        last = sum((d - 1) * s for d, s in zip(shape, strides))
        check(last < t.numel, f"matmul: {side} view {list(shape)} strides {list(strides)} reaches element {last} "
                              f"of {t} ({t.numel} elements)")
        check(matrix_ok(shape, strides), f"matmul: {side} view strides {list(strides)}: the matrix (last two dims "
                                          f"{list(shape[-2:])}) is neither row- nor column-major")
    return TensorType(shape, t.dtype)


def covers_once(shape, strides, numel: int) -> bool:
    """Whether element strides `strides` over `shape` reach each of `numel` elements exactly once
    (a permutation of some row-major layout)."""
    if int(np.prod(shape, dtype=np.int64)) != numel:
        return False
    expect = 1
    for s, d in sorted((s, d) for d, s in zip(shape, strides) if d > 1):
        if s != expect:
            return False
        expect *= d
    return True


def _matmul_infer(ts, a):
    check(len(ts) in (2, 3), f"matmul takes 2 operands and an optional mask, got {len(ts)} inputs")
    dt = same_dtype(ts[:2])
    x, y = _operand_view(ts[0], a, "lhs"), _operand_view(ts[1], a, "rhs")
    check(x.rank >= 2 and y.rank >= 2, f"matmul needs rank >= 2 operands, got {x} and {y}")
    check(x.shape[-1] == y.shape[-2], f"matmul inner dims differ: {x} @ {y}")
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2])
    out = TensorType(batch + (x.shape[-2], y.shape[-1]), dt)
    check(("out_shape" in a) == ("out_strides" in a), "matmul: out_shape and out_strides come together")
    if "out_strides" in a:
        check(len(ts) == 2, "matmul: no output mask together with out_strides")
        strides, stored = [int(s) for s in a["out_strides"]], tuple(int(d) for d in a["out_shape"])
        check(len(strides) == out.rank, f"matmul: out_strides {strides} need one stride per dim of the product {out}")
        check(covers_once(out.shape, strides, int(np.prod(stored, dtype=np.int64))),
              f"matmul: out_strides {strides} of the product {out} do not cover the output {list(stored)} exactly once")
        check(out.numel == 0 or matrix_ok(out.shape, strides),
              f"matmul: out_strides {strides}: the product's matrices are neither row- nor column-major")
        return [TensorType(stored, dt)]
    if len(ts) == 3:
        check_output_mask(out, ts[2], a, "matmul")
    return [out]


def _np_view(arr: np.ndarray, a: dict, side: str) -> np.ndarray:
    if f"{side}_strides" not in a:
        return arr
    flat = np.ascontiguousarray(arr).reshape(-1)
    return np.lib.stride_tricks.as_strided(flat, tuple(a[f"{side}_shape"]),
                                           tuple(int(s) * flat.itemsize for s in a[f"{side}_strides"]),
                                           writeable=False)


def _matmul_ref(x, a):
    out = np.matmul(_np_view(x[0], a, "lhs"), _np_view(x[1], a, "rhs"))
    if "out_strides" in a:
        stored = np.zeros(tuple(a["out_shape"]), dtype=out.dtype)
        flat = stored.reshape(-1)
        np.lib.stride_tricks.as_strided(flat, out.shape, tuple(int(s) * flat.itemsize for s in a["out_strides"]))[...] = out
        return [stored]
    return [apply_output_mask(out, x[2], a) if len(x) == 3 else out]


def _torch_view(t, a: dict, side: str):
    if f"{side}_strides" not in a:
        return t
    return t.contiguous().reshape(-1).as_strided(list(a[f"{side}_shape"]), list(a[f"{side}_strides"]))


def _matmul_torch(t, a):
    torch = T()
    out = torch.matmul(_torch_view(t[0], a, "lhs"), _torch_view(t[1], a, "rhs"))
    if "out_strides" in a:
        stored = torch.zeros(list(a["out_shape"]), dtype=out.dtype)
        stored.reshape(-1).as_strided(list(out.shape), list(a["out_strides"])).copy_(out)
        return [stored]
    return [torch_output_mask(out, t[2], a) if len(t) == 3 else out]


def _matmul_grad(g):
    if len(g.inputs) == 3:
        no_grad_with_epilogue(g, "matmul", "an output mask")
    if has_views(g.attrs):
        no_grad_with_epilogue(g, "matmul", "strided operand views")
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
    return 2 * o[0].numel * _operand_view(i[0], a, "lhs").shape[-1]


def _matmul_samples(rng):
    plain = [Sample([rand(rng, 3, 4), rand(rng, 4, 5)]),
             Sample([rand(rng, 2, 3, 4), rand(rng, 2, 4, 5)], note="bmm"),
             Sample([rand(rng, 2, 2, 3, 4), rand(rng, 4, 5)], note="broadcast weight"),
             Sample([rand(rng, 1, 3, 4), rand(rng, 2, 4, 2)], note="broadcast batch"),
             # kernel-sized (exact values: any GEMM summation order gives numpy's result)
             Sample([_exact(rng, 2, 96, 160), _exact(rng, 2, 160, 72)], grad_inputs=[], note="exact big bmm"),
             Sample([_exact(rng, 3, 40, 96), _exact(rng, 96, 200)], grad_inputs=[], note="exact batch folded into M")]
    # the fused activation backward: every product shape (folded into M, one GEMM per batch
    # element, broadcast), bits with padding bits and f32 (relu: mask_min only; hardtanh: both)
    masked = []
    for k, s in enumerate(plain):
        x, w = s.inputs
        out_shape = np.broadcast_shapes(x.shape[:-2], w.shape[:-2]) + (x.shape[-2], w.shape[-1])
        tag = s.note or "2-d"
        masked.append(Sample(s.inputs + [bit_mask(rng, out_shape)], grad_inputs=[], note=f"{tag}, bit mask"))
        y = rand(rng, *out_shape, lo=-2.0, hi=8.0)
        lim = {"mask_min": 0.0, "mask_max": 6.0} if k % 2 else {"mask_min": 0.0}
        masked.append(Sample(s.inputs + [y], lim, grad_inputs=[],
                             note=f"{tag}, f32 mask {'hardtanh' if k % 2 else 'relu'}"))
    return plain + masked + _view_samples(rng)


def _heads(b, t, h, d):
    """The view of a [b, t, h*d] projection as per-head [b, h, t, d] matrices, and as [b, h, d, t]."""
    return [b, h, t, d], [t * h * d, d, h * d, 1], [b, h, d, t], [t * h * d, d, 1, h * d]


def _view_samples(rng):
    """Strided views (compiler/passes/matmul_views.py): attention's products on [B, T, H*D] tensors."""
    B, Tn, H, D = 2, 3, 2, 4
    qs, qst, ts, tst = _heads(B, Tn, H, D)
    stored = [B, Tn, H * D]
    q, k, v = (rand(rng, *stored) for _ in range(3))
    p = rand(rng, B, H, Tn, Tn)
    no_grad = dict(grad_inputs=[])
    eB, eT, eH, eD = 2, 40, 3, 32  # kernel-sized, exact values
    eqs, eqst, _, _ = _heads(eB, eT, eH, eD)
    return [
        Sample([q, k], {"lhs_shape": qs, "lhs_strides": qst, "rhs_shape": ts, "rhs_strides": tst}, **no_grad,
               note="views: Q K^T read in place"),
        Sample([p, v], {"rhs_shape": qs, "rhs_strides": qst, "out_shape": stored, "out_strides": qst}, **no_grad,
               note="views: P V written as [B, T, H*D]"),
        Sample([q, p], {"lhs_shape": ts, "lhs_strides": tst, "out_shape": stored, "out_strides": tst}, **no_grad,
               note="views: Q^T dS written transposed into [B, T, H*D]"),
        Sample([p, v], {"lhs_shape": [B, H, Tn, Tn], "lhs_strides": [H * Tn * Tn, Tn * Tn, 1, Tn],
                        "rhs_shape": qs, "rhs_strides": qst}, **no_grad, note="views: P^T V"),
        Sample([rand(rng, 2, 2, 3, 4), rand(rng, 5, 4)], {"rhs_shape": [4, 5], "rhs_strides": [1, 4]}, **no_grad,
               note="views: 2-d transposed weight, batch folded"),
        Sample([rand(rng, 3, 4), rand(rng, 2, 4, 5)], {"lhs_shape": [2, 3, 4], "lhs_strides": [0, 4, 1]}, **no_grad,
               note="views: stride-0 batch"),
        Sample([p, v, bit_mask(rng, (B, H, Tn, D))], {"rhs_shape": qs, "rhs_strides": qst}, **no_grad,
               note="views + bit mask, one product per batch element"),
        Sample([rand(rng, 2, 3, 4), rand(rng, 5, 4), rand(rng, 2, 3, 5, lo=-2.0, hi=8.0)],
               {"rhs_shape": [4, 5], "rhs_strides": [1, 4], "mask_min": 0.0, "mask_max": 6.0}, **no_grad,
               note="views + f32 mask, batch folded"),
        Sample([_exact(rng, eB, eT, eH * eD), _exact(rng, eB, eT, eH * eD)],
               {"lhs_shape": eqs, "lhs_strides": eqst, "rhs_shape": [eB, eH, eD, eT],
                "rhs_strides": [eT * eH * eD, eD, 1, eH * eD], "out_shape": [eB, eT, eH * eT],
                "out_strides": [eT * eH * eT, eT, eH * eT, 1]}, **no_grad, note="views: exact kernel-sized, all three"),
    ]


register(OpDef(
    "matmul", _matmul_infer, _matmul_ref, _matmul_grad, _matmul_samples, _matmul_torch,
    param_roles={1: "weight"}, min_inputs=2, flops=_matmul_flops))


def _linear_infer(ts, a):
    x, w = ts[0], ts[1]
    dt = same_dtype(ts)
    check(w.rank == 2 and x.rank >= 1 and x.shape[-1] == w.shape[1], f"linear: input {x} does not fit weight {w}")
    if len(ts) == 3:
        check(ts[2].shape == (w.shape[0],), f"linear: bias {ts[2]} does not fit weight {w}")
    check_activation(a, "linear")
    return [TensorType(x.shape[:-1] + (w.shape[0],), dt)]


def _linear_ref(x, a):
    y = np.matmul(x[0], x[1].T)
    if len(x) == 3:
        y = y + x[2]
    return [apply_activation(y.astype(x[0].dtype, copy=False), a)]


def _linear_torch(t, a):
    return [torch_activation(T().nn.functional.linear(*t), a)]


def _linear_grad(g):
    if has_activation(g.attrs):
        no_grad_with_epilogue(g, "linear", f"activation {g.attrs['activation']!r}")
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


def _linear_samples(rng):
    hardtanh6 = {"activation": "hardtanh", "act_min": 0.0, "act_max": 6.0}
    return [
        Sample([rand(rng, 4, 3), rand(rng, 5, 3), rand(rng, 5)]),
        Sample([rand(rng, 2, 3, 4), rand(rng, 6, 4)], note="no bias, 3-d input"),
        Sample([_exact(rng, 32, 1024), _exact(rng, 64, 1024), _exact(rng, 64)], grad_inputs=[2], note="exact K=1024"),
        # fused activations (made after autodiff: no gradient to check)
        Sample([rand(rng, 4, 3, lo=-4, hi=4), rand(rng, 5, 3), rand(rng, 5)], {"activation": "relu"}, grad_inputs=[],
               note="relu"),
        Sample([rand(rng, 2, 3, 4, lo=-4, hi=4), rand(rng, 6, 4)],
               {"activation": "hardtanh", "act_min": -1.0, "act_max": 1.0}, grad_inputs=[],
               note="hardtanh(-1, 1), 3-d input"),
        Sample([_exact(rng, 32, 1024), _exact(rng, 64, 1024), _exact(rng, 64)], hardtanh6, grad_inputs=[],
               note="exact K=1024, hardtanh(0, 6)"),
        Sample([_exact(rng, 3, 40, 96), _exact(rng, 72, 96)], {"activation": "relu"}, grad_inputs=[],
               note="exact 3-d, relu"),
    ]


register(OpDef(
    "linear", _linear_infer, _linear_ref, _linear_grad, _linear_samples, _linear_torch,
    param_roles={1: "weight", 2: "bias"}, min_inputs=2, flops=lambda i, o, a: 2 * o[0].numel * i[1].shape[1]))
