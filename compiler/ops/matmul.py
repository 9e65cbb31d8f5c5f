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


def _matmul_infer(ts, a):
    check(len(ts) in (2, 3), f"matmul takes 2 operands and an optional mask, got {len(ts)} inputs")
    x, y = ts[0], ts[1]
    dt = same_dtype(ts[:2])
    check(x.rank >= 2 and y.rank >= 2, f"matmul needs rank >= 2 operands, got {x} and {y}")
    check(x.shape[-1] == y.shape[-2], f"matmul inner dims differ: {x} @ {y}")
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2])
    out = TensorType(batch + (x.shape[-2], y.shape[-1]), dt)
    if len(ts) == 3:
        check_output_mask(out, ts[2], a, "matmul")
    return [out]


def _matmul_ref(x, a):
    out = np.matmul(x[0], x[1])
    return [apply_output_mask(out, x[2], a) if len(x) == 3 else out]


def _matmul_torch(t, a):
    out = T().matmul(t[0], t[1])
    return [torch_output_mask(out, t[2], a) if len(t) == 3 else out]


def _matmul_grad(g):
    if len(g.inputs) == 3:
        no_grad_with_epilogue(g, "matmul", "an output mask")
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
    return plain + masked


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
