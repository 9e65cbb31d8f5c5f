"""Loss ops: cross-entropy over class indices (with ignore_index and label smoothing), negative
log-likelihood (what a traced `F.cross_entropy` decomposes into), and mean squared error.

Class-index losses take logits [N, C] and targets [N]; the loss appender (compiler/loss.py)
reshapes [N, C, d...] and [..., C] layouts to that form. `reduction` is "mean", "sum" or "none".
"""

from __future__ import annotations

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register, same_dtype
from ..ir import TensorType


def _reduced(n: int, reduction: str, dtype: str) -> TensorType:
    return TensorType((n,) if reduction == "none" else (), dtype)


def _class_loss_infer(ts, a):
    x, t = ts
    check(x.rank == 2, f"class-index loss wants [N, C] scores, got {x}")
    check(t.dtype in ("i64", "i32"), f"class-index loss wants integer targets, got {t.dtype}")
    check(t.shape == (x.shape[0],), f"targets {t} do not fit scores {x}: expected i64[{x.shape[0]}]")
    check(a.get("reduction", "mean") in ("mean", "sum", "none"), f"unknown reduction {a.get('reduction')}")
    return [_reduced(x.shape[0], a.get("reduction", "mean"), x.dtype)]


def _log_softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _valid_and_denominator(target, a):
    valid = target != a.get("ignore_index", -100)
    return valid, max(int(valid.sum()), 1) if a.get("reduction", "mean") == "mean" else 1


def _ce_ref(x, a):
    logits, target = x
    n, c = logits.shape
    valid, denom = _valid_and_denominator(target, a)
    logp = _log_softmax(logits.astype(np.float64))
    safe_t = np.where(valid, target, 0)
    ls = a.get("label_smoothing", 0.0)
    nll = -logp[np.arange(n), safe_t]
    per_row = (1 - ls) * nll - ls / c * logp.sum(axis=1) if ls else nll
    per_row = np.where(valid, per_row, 0.0)
    if a.get("reduction", "mean") == "none":
        return [per_row.astype(logits.dtype)]
    return [np.asarray(per_row.sum() / denom, dtype=logits.dtype)]


def _ce_backward_ref(x, a):
    dloss, logits, target = x
    n, c = logits.shape
    valid, denom = _valid_and_denominator(target, a)
    p = np.exp(_log_softmax(logits.astype(np.float64)))
    q = np.zeros((n, c))
    q[np.arange(n), np.where(valid, target, 0)] = 1.0
    ls = a.get("label_smoothing", 0.0)
    if ls:
        q = (1 - ls) * q + ls / c
    scale = (dloss.reshape(-1, 1) if a.get("reduction", "mean") == "none" else dloss) / denom
    g = (p - q) * valid[:, None] * scale
    return [g.astype(logits.dtype)]


def _ce_grad(g):
    logits, target = g.inputs
    keys = {k: g.attrs[k] for k in ("ignore_index", "label_smoothing", "reduction") if k in g.attrs}
    return [g.emit1("cross_entropy_backward", [g.douts[0], logits, target], keys), None]


def _class_samples(rng):
    t = rng.integers(0, 5, size=(6,))
    t_ignored = t.copy()
    t_ignored[[1, 4]] = -100
    return [Sample([rand(rng, 6, 5, lo=-2, hi=2), t], {"reduction": "mean"}),
            Sample([rand(rng, 6, 5, lo=-2, hi=2), t_ignored], {"reduction": "mean", "ignore_index": -100},
                   note="ignore_index"),
            Sample([rand(rng, 6, 5, lo=-2, hi=2), t], {"reduction": "sum", "label_smoothing": 0.1},
                   note="label smoothing"),
            Sample([rand(rng, 6, 5, lo=-2, hi=2), t], {"reduction": "none"}, note="per-sample")]


def _torch_ce(t, a):
    return [T().nn.functional.cross_entropy(t[0], t[1], ignore_index=a.get("ignore_index", -100),
                                            reduction=a.get("reduction", "mean"),
                                            label_smoothing=a.get("label_smoothing", 0.0))]


def _dloss_for(rng, s, n):
    return rand(rng, n) if s.attrs.get("reduction") == "none" else np.asarray(rng.uniform(0.5, 1.5), np.float32)


def _ce_backward_samples(rng):
    return [Sample([_dloss_for(rng, s, s.inputs[0].shape[0])] + s.inputs, s.attrs, note=s.note)
            for s in _class_samples(rng)]


def _torch_ce_backward(t, a):
    torch = T()
    dloss, logits, target = t
    x = logits.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_torch_ce([x, target], a)[0], x, dloss)
    return [grad]


register(OpDef("cross_entropy", _class_loss_infer, _ce_ref, _ce_grad, _class_samples, _torch_ce,
               flops=lambda i, o, a: 6 * i[0].numel))
register(OpDef("cross_entropy_backward", lambda ts, a: [ts[1]], _ce_backward_ref, NOT_DIFFERENTIABLE,
               _ce_backward_samples, _torch_ce_backward, flops=lambda i, o, a: 6 * i[1].numel))


# nll_loss: input already holds log-probabilities ------------------------------------------------
def _nll_ref(x, a):
    logp, target = x
    n = logp.shape[0]
    valid, denom = _valid_and_denominator(target, a)
    per_row = np.where(valid, -logp[np.arange(n), np.where(valid, target, 0)].astype(np.float64), 0.0)
    if a.get("reduction", "mean") == "none":
        return [per_row.astype(logp.dtype)]
    return [np.asarray(per_row.sum() / denom, dtype=logp.dtype)]


def _nll_backward_ref(x, a):
    dloss, target = x
    n, c = target.shape[0], a["num_classes"]
    valid, denom = _valid_and_denominator(target, a)
    g = np.zeros((n, c), dtype=np.float64)
    scale = (dloss.astype(np.float64) if a.get("reduction", "mean") == "none" else float(dloss)) / denom
    g[np.arange(n), np.where(valid, target, 0)] = -np.where(valid, scale, 0.0)
    return [g.astype(dloss.dtype)]


def _nll_grad(g):
    logp, target = g.inputs
    keys = {k: g.attrs[k] for k in ("ignore_index", "reduction") if k in g.attrs}
    return [g.emit1("nll_loss_backward", [g.douts[0], target], {**keys, "num_classes": logp.shape[1]}), None]


def _nll_samples(rng):
    out = []
    for s in _class_samples(rng):
        if s.attrs.get("label_smoothing"):
            continue
        out.append(Sample([_log_softmax(s.inputs[0]).astype(np.float32), s.inputs[1]], s.attrs, note=s.note))
    return out


def _torch_nll(t, a):
    return [T().nn.functional.nll_loss(t[0], t[1], ignore_index=a.get("ignore_index", -100),
                                       reduction=a.get("reduction", "mean"))]


def _torch_nll_backward(t, a):
    torch = T()
    dloss, target = t
    x = torch.zeros(target.shape[0], a["num_classes"], dtype=dloss.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(_torch_nll([x, target], a)[0], x, dloss)
    return [grad]


register(OpDef("nll_loss", _class_loss_infer, _nll_ref, _nll_grad, _nll_samples, _torch_nll))
register(OpDef("nll_loss_backward",
               lambda ts, a: [TensorType((ts[1].shape[0], a["num_classes"]), ts[0].dtype)],
               _nll_backward_ref, NOT_DIFFERENTIABLE,
               lambda rng: [Sample([_dloss_for(rng, s, s.inputs[0].shape[0]), s.inputs[1]],
                                   {**s.attrs, "num_classes": s.inputs[0].shape[1]}, note=s.note)
                            for s in _nll_samples(rng)],
               _torch_nll_backward))


# mean squared error -------------------------------------------------------------------------------
def _mse_infer(ts, a):
    dt = same_dtype(ts)
    check(ts[0].shape == ts[1].shape, f"mse_loss: output {ts[0]} and target {ts[1]} differ in shape")
    reduction = a.get("reduction", "mean")
    check(reduction in ("mean", "sum", "none"), f"unknown reduction {reduction}")
    return [ts[0] if reduction == "none" else TensorType((), dt)]


def _mse_ref(x, a):
    d = (x[0].astype(np.float64) - x[1]) ** 2
    reduction = a.get("reduction", "mean")
    out = d if reduction == "none" else (d.mean() if reduction == "mean" else d.sum())
    return [np.asarray(out, dtype=x[0].dtype)]


def _mse_grad(g):
    a, b = g.inputs
    reduction = g.attrs.get("reduction", "mean")
    scale = 2.0 / a.type.numel if reduction == "mean" else 2.0
    diff = g.emit1("mul", [g.emit1("sub", [a, b]), g.douts[0]])
    da = g.emit1("mul", [diff, g.const(scale, a.dtype)])
    return [da if g.needs[0] else None, g.emit1("neg", [da]) if g.needs[1] else None]


register(OpDef("mse_loss", _mse_infer, _mse_ref, _mse_grad,
               lambda rng: [Sample([rand(rng, 4, 3), rand(rng, 4, 3)], {"reduction": "mean"}),
                            Sample([rand(rng, 2, 5), rand(rng, 2, 5)], {"reduction": "sum"})],
               lambda t, a: [T().nn.functional.mse_loss(t[0], t[1], reduction=a.get("reduction", "mean"))],
               flops=lambda i, o, a: 3 * i[0].numel))
