"""Optimizers as compile-time objects: each appends update nodes (section "update") to the program.

`et.optim.SGD` and `et.optim.AdamW` take torch.optim's arguments and reproduce its numbers
(see compiler/ops/optim.py for the update ops). The program gets these states:

    optim.lr     f32[]   the learning rate, settable at run time (Session.set_lr)
    optim.step   f32[]   steps taken; advanced by one at the start of every update section
    optim.<slot>.<param name>   per-parameter buffers (momentum, exp_avg, exp_avg_sq)

Each parameter's update becomes an assignment param <- new value, applied at the end of the
step; a later pass moves each update right after its gradient so the gradient buffer dies early.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import EdgetuneError
from .ir import Graph, NameGen, Value, numpy_dtype
from .ops.registry import Builder


class Optimizer:
    """Base class: subclasses define `slots` (per-param state buffers) and `update_node`."""

    slots: tuple[str, ...] = ()

    def validate(self) -> None:
        if not self.lr >= 0:
            raise EdgetuneError(f"{type(self).__name__}: lr must be >= 0, got {self.lr}")

    def emit_updates(self, graph: Graph, grads: dict[str, Value], names: NameGen) -> None:
        self.validate()
        b = Builder(graph, "update", names)
        lr = graph.add_source("optim.lr", "state", np.asarray(self.lr, dtype=np.float32))
        step = graph.add_source("optim.step", "state", np.asarray(0.0, dtype=np.float32))
        new_step = b.emit1("add", [step, b.const(1.0, "f32")], out_names=["optim.step.next"])
        graph.assigns["optim.step"] = new_step
        for name, grad in grads.items():
            param = graph.sources[name]
            slots = [graph.add_source(f"optim.{slot}.{name}", "state",
                                      np.zeros(param.shape, dtype=numpy_dtype(param.dtype)))
                     for slot in self.slots]
            op, inputs, attrs = self.update_node(param, grad, lr, slots, new_step)
            outs = b.emit(op, inputs, attrs, out_names=[f"{name}.next"] + [f"{s.name}.next" for s in slots])
            graph.assigns[name] = outs[0]
            for slot, new in zip(slots, outs[1:]):
                graph.assigns[slot.name] = new

    def update_node(self, param, grad, lr, slots, step):
        raise NotImplementedError


@dataclass
class SGD(Optimizer):
    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False

    @property
    def slots(self):
        return ("momentum",) if self.momentum else ()

    def validate(self):
        super().validate()
        if self.momentum < 0 or self.weight_decay < 0:
            raise EdgetuneError(f"SGD: momentum and weight_decay must be >= 0, got {self.momentum}, {self.weight_decay}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise EdgetuneError("SGD: nesterov momentum requires a momentum and zero dampening (as in torch.optim)")

    def update_node(self, param, grad, lr, slots, step):
        attrs = {"momentum": float(self.momentum), "dampening": float(self.dampening),
                 "nesterov": bool(self.nesterov), "weight_decay": float(self.weight_decay),
                 "maximize": bool(self.maximize)}
        inputs = [param, grad, lr] + ([slots[0], step] if self.momentum else [])
        return "sgd_update", inputs, attrs


@dataclass
class AdamW(Optimizer):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    maximize: bool = False
    slots = ("exp_avg", "exp_avg_sq")

    def validate(self):
        super().validate()
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1) or self.eps < 0:
            raise EdgetuneError(f"AdamW: betas must be in [0, 1) and eps >= 0, got {self.betas}, {self.eps}")

    def update_node(self, param, grad, lr, slots, step):
        attrs = {"beta1": float(self.betas[0]), "beta2": float(self.betas[1]), "eps": float(self.eps),
                 "weight_decay": float(self.weight_decay), "maximize": bool(self.maximize)}
        return "adamw_update", [param, grad, lr, slots[0], slots[1], step], attrs


def Adam(lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8) -> AdamW:
    """Adam without weight decay is AdamW with weight_decay=0."""
    return AdamW(lr=lr, betas=betas, eps=eps, weight_decay=0.0)


def make_optimizer(name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> Optimizer:
    """'sgd' or 'adamw' with these hyper-parameters (the command line's --optimizer)."""
    if name == "sgd":
        return SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(lr=lr, weight_decay=weight_decay)
    raise EdgetuneError(f"unknown optimizer {name!r}: use sgd or adamw")
