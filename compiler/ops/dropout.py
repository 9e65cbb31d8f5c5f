"""Dropout with a portable counter-based random stream.

    dropout(x, counter) -> y, mask        mask = 0 or 1/(1-p), y = x * mask

The mask bits come from splitmix64(seed, stream, counter, element index): a pure function of
integers, so the numpy reference and every C++ backend draw the *same* mask, and a step can be
replayed. `counter` is an i64 scalar state the program advances once per step; `stream` (an
attr) tells the dropout nodes of one program apart. The gradient is dy * mask, so only the
mask is kept for backward, never x.
"""

from __future__ import annotations

import numpy as np

from .registry import OpDef, Sample, T, check, rand, register

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def uniform_stream(n: int, seed: int, stream: int, counter: int) -> np.ndarray:
    """n floats in [0, 1), a pure function of (seed, stream, counter)."""
    with np.errstate(over="ignore"):
        key = splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(stream) ^ splitmix64(np.uint64(counter))))
        bits = splitmix64(key + np.arange(n, dtype=np.uint64))
    return (bits >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def _infer(ts, a):
    check(ts[1].rank == 0 and ts[1].dtype == "i64", f"dropout counter must be an i64 scalar, got {ts[1]}")
    check(0.0 <= a["p"] < 1.0, f"dropout p must be in [0, 1), got {a['p']}")
    return [ts[0], ts[0]]


def _ref(x, a):
    inp, counter = x
    u = uniform_stream(inp.size, a.get("seed", 0), a.get("stream", 0), int(counter)).reshape(inp.shape)
    keep = u >= a["p"]
    mask = np.where(keep, 1.0 / (1.0 - a["p"]), 0.0).astype(inp.dtype)
    return [inp * mask, mask]


def _grad(g):
    return [g.emit1("mul", [g.douts[0], g.outputs[1]]), None]


def _torch_dropout(t, a):
    # torch draws from its own generator; the sweep checks p=0 (identity) against torch, and
    # tests/ops/test_dropout.py checks the keep rate and scaling of the real masks.
    if a["p"] != 0.0:
        raise NotImplementedError("dropout masks are edgetune's own stream; compare with p=0")
    return [T().nn.functional.dropout(t[0], 0.0, True), T().ones_like(t[0])]


register(OpDef("dropout", _infer, _ref, _grad,
               lambda rng: [Sample([rand(rng, 4, 5), np.array(3, dtype=np.int64)], {"p": 0.0, "stream": 0}),
                            Sample([rand(rng, 4, 5), np.array(3, dtype=np.int64)], {"p": 0.3, "stream": 1},
                                   note="random mask")],
               _torch_dropout))
