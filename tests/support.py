"""Helpers shared by the whole-model tests: run the same fine-tuning in PyTorch and in edgetune.

`torch_reference_run` mirrors a compiled program in PyTorch: the same params are trainable
(read from the program, so the spec under test decides), the same torch.optim optimizer
trains them on the same batches. Tests then compare every parameter and buffer.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

import edgetune as et


def torch_optimizer(opt, params):
    if isinstance(opt, et.optim.SGD):
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=opt.dampening,
                               weight_decay=opt.weight_decay, nesterov=opt.nesterov, foreach=False)
    return torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay,
                             foreach=False)


def torch_loss(loss, out, target):
    if loss == "cross_entropy":
        if out.dim() > 2 and target.shape == out.shape[:-1]:  # language-model layout, classes last
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
        return F.cross_entropy(out, target)
    if loss == "mse":
        return F.mse_loss(out, target)
    return loss(out, target)


def torch_reference_run(model, prog, batches, loss="cross_entropy"):
    """Train a deep copy of `model` like `prog` does; returns (losses, state_dict as numpy)."""
    model = copy.deepcopy(model)
    trainable = set(prog.trainable_names)
    aliases = prog.graph.aliases
    params = []
    for name, p in model.named_parameters(remove_duplicate=False):
        canonical = aliases.get(name, name)
        p.requires_grad_(canonical in trainable)
    for name, p in model.named_parameters():
        if p.requires_grad:
            params.append(p)
    opt = torch_optimizer(prog.optimizer, params)
    losses = []
    for inputs, target in batches:
        opt.zero_grad()
        out = model(*inputs)
        value = torch_loss(loss, out, target)
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    return losses, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def edgetune_run(prog, batches, compute_dtype=None, backend="reference"):
    sess = et.Session(prog, backend=backend, compute_dtype=compute_dtype)
    losses = [sess.step(*inputs, target) for inputs, target in batches]
    return losses, sess.state_dict(), sess


def assert_training_matches_torch(model, prog, batches, loss="cross_entropy", rtol=1e-4, atol=1e-6):
    """Run both sides and compare losses and every state_dict entry."""
    ours, ours_state, _ = edgetune_run(prog, batches)
    theirs, their_state = torch_reference_run(model, prog, batches, loss=loss)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for k in their_state:
        np.testing.assert_allclose(ours_state[k], their_state[k], rtol=rtol, atol=atol, err_msg=k)
