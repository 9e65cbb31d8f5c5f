"""`et.compile`: model + fine-tuning spec -> one static training program.

    frontend (torch.export | onnx) -> forward IR -> + loss -> PEFT spec marks trainable params
      -> sparse autodiff -> optimizer updates -> dce -> verify -> optimisation passes (-O0..-O3,
      compiler/passes/pipeline.py) -> Program

Every stage leaves a verifiable graph; `verify` runs at the end (and tests run it after each
pass). Nothing here depends on the backend that will run the program.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .autodiff import differentiate
from .errors import CaptureError, LossError, SpecError
from .ir import NameGen
from .loss import append_loss
from .optim import SGD, Optimizer
from .passes.dce import dead_code_elimination
from .passes.pipeline import DEFAULT_OPT_LEVEL, optimize, passes_for
from .peft import Full, Spec
from .program import Program
from .verify import verify


def _is_onnx(model) -> bool:
    if isinstance(model, (str, os.PathLike)):
        return True
    return type(model).__name__ == "ModelProto"


def import_model(model, example_inputs):
    """Run the right frontend; returns an ImportedModel."""
    if _is_onnx(model):
        from ..frontends.from_onnx import import_onnx
        return import_onnx(model, example_inputs)
    import torch
    if isinstance(model, torch.nn.Module):
        from ..frontends.from_torch import import_module
        inputs = tuple(torch.as_tensor(x) if isinstance(x, np.ndarray) else x for x in example_inputs)
        return import_module(model, inputs)
    raise CaptureError(f"cannot compile a {type(model).__name__}: pass a torch.nn.Module, an onnx.ModelProto "
                       "or the path of an .onnx file")


def compile(model, example_inputs, example_target, loss="cross_entropy", peft: Spec | None = None,
            optimizer: Optimizer | None = None, name: str | None = None, opt_level: int = DEFAULT_OPT_LEVEL,
            disable_passes=(), passes=None, target: str | None = None) -> Program:
    """Compile `model` into a training program (see the README for a walk-through).

    example_inputs: a tuple of example tensors (their shapes and dtypes become the program's);
    example_target: an example target (class indices for cross_entropy);
    loss: "cross_entropy", "mse", or a torch callable (output, target) -> scalar;
    peft: an `et.peft` spec (default Full()); optimizer: `et.optim.SGD(...)` / `AdamW(...)`;
    opt_level: 0..3 (compiler/passes/pipeline.py says which passes each runs; default 2);
    disable_passes: pass names to skip; passes: the exact pass set instead of a level's;
    target: "x86_64" / "aarch64" when the plan is for another machine (kernel choice by cost model)."""
    passes_for(opt_level, disable_passes, passes)  # reject bad names before the slow capture
    peft = Full() if peft is None else peft
    optimizer = SGD() if optimizer is None else optimizer
    if not isinstance(peft, Spec):
        raise SpecError(f"peft must be an edgetune.peft spec (Full, BiasOnly, LastK, Select), got {peft!r}")
    if not isinstance(optimizer, Optimizer):
        raise SpecError(f"optimizer must be edgetune.optim.SGD or AdamW, got {optimizer!r}")
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)

    imported = import_model(model, tuple(example_inputs))
    g = imported.graph
    if name:
        g.name = name
    if len(imported.output_values) != 1:
        raise LossError(f"the model returns {len(imported.output_values)} outputs; edgetune trains models with "
                        "exactly one output tensor (wrap the model to pick the one the loss reads)")
    names = NameGen(g)
    output = imported.output_values[0]
    loss_value = append_loss(g, output, example_target, loss, names)
    target_name = g.inputs[-1].name
    g.outputs = {"loss": loss_value, "output": output}

    trainable = peft.apply(g)
    grads = differentiate(g, loss_value, trainable, names)
    unused = [p for p in trainable if p.name not in grads]
    if len(unused) == len(trainable):
        raise SpecError(f"{peft!r} selects only parameters that do not influence the loss: "
                        f"{[p.name for p in unused][:8]}")
    if unused:  # e.g. an unused head: like torch (grad None), leave it untouched, but say so
        warnings.warn(f"{peft!r}: {len(unused)} selected parameter(s) do not influence the loss and stay frozen: "
                      f"{[p.name for p in unused][:8]}", stacklevel=2)
        for p in unused:
            p.trainable = False
    optimizer.emit_updates(g, grads, names)
    dead_code_elimination(g)
    verify(g)
    program = Program(g, imported.frontend, peft, optimizer, imported.input_names, target_name, imported.train_mode)
    return optimize(program, opt_level, disable_passes, passes, target=target)
