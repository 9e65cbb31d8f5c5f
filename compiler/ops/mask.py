"""1-bit activation masks: what relu_backward and hardtanh_backward actually need from the forward.

relu_backward(dy, y) and hardtanh_backward(dy, y) read the forward output only to test
min < y < max. A pass (after autodiff) can keep that test as one bit per element instead of the
32-bit activation:

    bits = activation_mask(y) {min, max}      u8[(numel(y)+7)//8]
    dx   = mask_grad(dy, bits)                dy where the bit is set, else 0

Bit i (row-major element i of y) is bit `i & 7` (LSB first) of byte `i >> 3`, i.e. numpy's
packbits(bitorder="little") of the boolean mask; padding bits are 0. `max` absent means no upper
bound (so +inf counts as inside, exactly like relu_backward's y > 0). Both ops are
NOT_DIFFERENTIABLE: they only ever appear after autodiff.
"""

from __future__ import annotations

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register
from ..ir import TensorType


def packed_bytes(numel: int) -> int:
    """Bytes of the mask of `numel` elements."""
    return (int(numel) + 7) // 8


def _inside(y: np.ndarray, attrs: dict) -> np.ndarray:
    lo = np.asarray(attrs["min"], dtype=y.dtype)
    inside = y > lo
    if "max" in attrs:
        inside &= y < np.asarray(attrs["max"], dtype=y.dtype)
    return inside


# ---------------------------------------------------------------------------------------------
# activation_mask(y) {min, max?} -> u8 bits
# ---------------------------------------------------------------------------------------------
def _mask_infer(ts, attrs):
    check(len(ts) == 1, f"activation_mask takes 1 input, got {len(ts)}")
    check(ts[0].is_float, f"activation_mask input must be float, got {ts[0].dtype}")
    check("min" in attrs, "activation_mask needs attribute 'min'")
    for k in ("min", "max"):
        if k in attrs:
            check(isinstance(attrs[k], (int, float)) and not isinstance(attrs[k], bool),
                  f"activation_mask attribute '{k}' must be a number, got {attrs[k]!r}")
    return [TensorType((packed_bytes(ts[0].numel),), "u8")]


def _mask_reference(xs, attrs):
    return [np.packbits(_inside(xs[0], attrs).reshape(-1), bitorder="little")]


def _mask_torch(ts, attrs):
    torch = T()
    y = ts[0].reshape(-1)
    inside = y > attrs["min"]
    if "max" in attrs:
        inside = inside & (y < attrs["max"])
    n = inside.numel()
    padded = torch.zeros(packed_bytes(n) * 8, dtype=torch.uint8)
    padded[:n] = inside.to(torch.uint8)
    weights = torch.tensor([1 << k for k in range(8)], dtype=torch.uint8)  # LSB first
    return [(padded.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)]


def _at_bounds(rng, shape, lo, hi, bounds):
    """Random values around [lo, hi] with some elements exactly on the bounds (the strict
    inequalities must exclude them)."""
    y = rand(rng, *shape, lo=lo, hi=hi)
    flat = y.reshape(-1)
    for k, b in enumerate(bounds):
        flat[k::len(bounds) + 3] = b
    return y


def _mask_samples(rng):
    return [
        Sample([_at_bounds(rng, (3, 5), -2, 2, [0.0])], {"min": 0.0}, note="relu 15 elements"),
        Sample([_at_bounds(rng, (2, 3, 7), -2, 8, [0.0, 6.0])], {"min": 0.0, "max": 6.0}, note="relu6 42 elements"),
        Sample([_at_bounds(rng, (4, 4), -2, 2, [-1.0, 1.0])], {"min": -1.0, "max": 1.0}, note="hardtanh 16"),
        Sample([np.array([0.5], dtype=np.float32)], {"min": 0.0}, note="one element"),
        Sample([np.array([np.inf, -np.inf, np.nan, 0.0, 3.0], dtype=np.float32)], {"min": 0.0},
               note="inf nan"),
    ]


register(OpDef("activation_mask", _mask_infer, _mask_reference, NOT_DIFFERENTIABLE, _mask_samples, _mask_torch,
               doc="1 bit per element: min < y < max (max absent: no upper bound), packed LSB first"))


# ---------------------------------------------------------------------------------------------
# mask_grad(dy, bits) -> dy where the bit is set, else 0
# ---------------------------------------------------------------------------------------------
def _grad_infer(ts, attrs):
    check(len(ts) == 2, f"mask_grad takes (dy, bits), got {len(ts)} inputs")
    dy, bits = ts
    check(dy.is_float, f"mask_grad dy must be float, got {dy.dtype}")
    check(bits.dtype == "u8" and bits.shape == (packed_bytes(dy.numel),),
          f"mask_grad bits must be u8[{packed_bytes(dy.numel)}] for dy {dy}, got {bits}")
    return [dy]


def _unpack(bits: np.ndarray, shape) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    return np.unpackbits(bits, count=n, bitorder="little").astype(bool).reshape(shape)


def _grad_reference(xs, attrs):
    dy, bits = xs
    return [np.where(_unpack(bits, dy.shape), dy, np.zeros((), dtype=dy.dtype))]


def _grad_torch(ts, attrs):
    torch = T()
    dy, bits = ts
    shifts = torch.arange(8, dtype=torch.uint8)
    flags = ((bits.reshape(-1, 1) >> shifts) & 1).reshape(-1)[:dy.numel()].reshape(dy.shape).bool()
    return [torch.where(flags, dy, torch.zeros((), dtype=dy.dtype))]


def _grad_samples(rng):
    out = []
    for shape in ((3, 5), (2, 3, 7), (4, 4), (1,)):
        n = int(np.prod(shape))
        bits = rng.integers(0, 256, size=packed_bytes(n), dtype=np.uint8)
        bits = np.packbits(np.unpackbits(bits, count=n, bitorder="little"), bitorder="little")  # padding 0
        out.append(Sample([rand(rng, *shape), bits], note=f"{n} elements"))
    return out


register(OpDef("mask_grad", _grad_infer, _grad_reference, NOT_DIFFERENTIABLE, _grad_samples, _grad_torch,
               doc="dy where the activation_mask bit is set, else 0 (relu/hardtanh backward from 1 bit)"))
