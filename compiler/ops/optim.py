"""Optimizer update ops, one node per trainable parameter, numerically following torch.optim.

    sgd_update(param, grad, lr)                      -> new_param                 (momentum == 0)
    sgd_update(param, grad, lr, buf, step)           -> new_param, new_buf         (momentum > 0)
    adamw_update(param, grad, lr, m, v, step)        -> new_param, new_m, new_v

`lr` and `step` are f32 scalars held as program state, so a Session can follow a learning-rate
schedule without recompiling; `step` is the count *including* the current step (1 on the first
update), which is how torch's first-step momentum buffer (buf = grad, no dampening) and Adam's
bias corrections are reproduced. The reference computes scalar coefficients in float64, as
torch does with Python floats.
"""

from __future__ import annotations

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, rand, register


def _sgd_infer(ts, a):
    p, g = ts[0], ts[1]
    check(p.shape == g.shape and p.dtype == g.dtype, f"sgd_update: grad {g} does not match param {p}")
    check(ts[2].rank == 0, f"sgd_update: lr must be a scalar, got {ts[2]}")
    if a["momentum"]:
        check(len(ts) == 5 and ts[3].shape == p.shape, "sgd_update with momentum takes (param, grad, lr, buf, step)")
        return [p, p]
    return [p]


def _sgd_ref(x, a):
    p, g, lr = x[0], x[1], float(x[2])
    d = g.astype(np.float64)
    if a.get("maximize"):
        d = -d
    if a["weight_decay"]:
        d = d + a["weight_decay"] * p
    outs = []
    if a["momentum"]:
        buf, step = x[3], float(x[4])
        new_buf = d if step <= 1 else a["momentum"] * buf + (1 - a["dampening"]) * d
        d = d + a["momentum"] * new_buf if a["nesterov"] else new_buf
        outs.append(new_buf.astype(p.dtype))
    return [(p - lr * d).astype(p.dtype)] + outs


def _adamw_infer(ts, a):
    p = ts[0]
    check(all(t.shape == p.shape for t in (ts[1], ts[3], ts[4])), f"adamw_update: state shapes differ from {p}")
    check(ts[2].rank == 0 and ts[5].rank == 0, "adamw_update: lr and step must be scalars")
    return [p, p, p]


def _adamw_ref(x, a):
    p, g, lr, m, v, step = x[0], x[1].astype(np.float64), float(x[2]), x[3], x[4], float(x[5])
    if a.get("maximize"):
        g = -g
    b1, b2 = a["beta1"], a["beta2"]
    p = p * (1 - lr * a["weight_decay"])
    m = m + (g - m) * (1 - b1)
    v = v * b2 + (1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
    denom = np.sqrt(v) / np.sqrt(bc2) + a["eps"]
    p = p - (lr / bc1) * m / denom
    dt = x[0].dtype
    return [p.astype(dt), m.astype(dt), v.astype(dt)]


def _sgd_attrs(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    return {"momentum": momentum, "dampening": dampening, "nesterov": nesterov, "weight_decay": weight_decay}


def _scalar(v):
    return np.asarray(v, dtype=np.float32)


def _sgd_samples(rng):
    p, g, buf = rand(rng, 3, 4), rand(rng, 3, 4), rand(rng, 3, 4)
    return [Sample([p, g, _scalar(0.1)], _sgd_attrs(weight_decay=0.01)),
            Sample([p, g, _scalar(0.1), buf, _scalar(1)], _sgd_attrs(momentum=0.9), note="first momentum step"),
            Sample([p, g, _scalar(0.05), buf, _scalar(4)], _sgd_attrs(momentum=0.9, dampening=0.1, weight_decay=1e-3),
                   note="dampened"),
            Sample([p, g, _scalar(0.05), buf, _scalar(2)], _sgd_attrs(momentum=0.8, nesterov=True), note="nesterov")]


def _adamw_samples(rng):
    p, g = rand(rng, 3, 4), rand(rng, 3, 4)
    m, v = rand(rng, 3, 4, lo=-0.1, hi=0.1), rand(rng, 3, 4, lo=0.0, hi=0.05)
    attrs = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
    return [Sample([p, g, _scalar(1e-3), np.zeros_like(p), np.zeros_like(p), _scalar(1)], attrs, note="first step"),
            Sample([p, g, _scalar(1e-2), m, v, _scalar(7)], {**attrs, "beta1": 0.8, "weight_decay": 0.1})]


def _torch_step(t, a, kind):
    """Run the real torch.optim on a copy of the param, seeded with the given state."""
    torch = T()
    p = t[0].detach().clone().requires_grad_(True)
    p.grad = t[1].clone()
    lr = float(t[2])
    if kind == "sgd":
        opt = torch.optim.SGD([p], lr=lr, momentum=a["momentum"], dampening=a["dampening"],
                              nesterov=a["nesterov"], weight_decay=a["weight_decay"], foreach=False)
        if a["momentum"] and float(t[4]) > 1:
            opt.state[p] = {"momentum_buffer": t[3].clone()}
        opt.step()
        return [p.detach()] + ([opt.state[p]["momentum_buffer"]] if a["momentum"] else [])
    opt = torch.optim.AdamW([p], lr=lr, betas=(a["beta1"], a["beta2"]), eps=a["eps"], weight_decay=a["weight_decay"],
                            foreach=False)
    opt.state[p] = {"step": torch.tensor(float(t[5]) - 1), "exp_avg": t[3].clone(), "exp_avg_sq": t[4].clone()}
    opt.step()
    return [p.detach(), opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]]


register(OpDef("sgd_update", _sgd_infer, _sgd_ref, NOT_DIFFERENTIABLE, _sgd_samples,
               lambda t, a: _torch_step(t, a, "sgd"), flops=lambda i, o, a: 4 * i[0].numel))
register(OpDef("adamw_update", _adamw_infer, _adamw_ref, NOT_DIFFERENTIABLE, _adamw_samples,
               lambda t, a: _torch_step(t, a, "adamw"), flops=lambda i, o, a: 12 * i[0].numel))
