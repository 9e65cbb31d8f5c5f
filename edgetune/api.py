"""`et.compile`: a model + a fine-tuning spec -> one static training program.

The public entry point sits above every layer: it runs the frontend that fits the model
(frontends/), turns a torch loss callable into IR through the torch frontend, and hands the
forward graph to the compiler (compiler/compile.py), which knows neither frontends nor backends.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .compiler.compile import check_options, compile_imported
from .compiler.errors import CaptureError, LossError
from .compiler.loss import BUILTIN_LOSSES
from .compiler.optim import Optimizer
from .compiler.passes.pipeline import DEFAULT_OPT_LEVEL
from .compiler.peft import Spec
from .compiler.program import Program


def compile(model, example_inputs, example_target, loss="cross_entropy", peft: Spec | None = None,
            optimizer: Optimizer | None = None, name: str | None = None, opt_level: int = DEFAULT_OPT_LEVEL,
            disable_passes=(), passes=None, backend="cpu", arch: str | None = None, output=None) -> Program:
    """Compile `model` (a torch.nn.Module, an onnx.ModelProto or an .onnx path) into a training
    program (see the README for a walk-through).

    example_inputs: a tuple of example tensors (their shapes and dtypes become the program's), or,
    for a torch module, a dict of keyword inputs, e.g. {"input_ids": ids, "attention_mask": mask}:
    the program's inputs are then its tensors in the dict's order, named by their keys (so
    `Session.step(ids, mask, target)`); non-tensor values (True, a float) are passed to forward as
    constants. A Hugging Face model is captured with use_cache=False unless the dict says otherwise;
    example_target: an example target (class indices for cross_entropy, the input ids for causal_lm);
    loss: "cross_entropy" (scores [N, C, d...] + targets [N, d...], or token logits [B, T, V] +
    targets [B, T]; targets equal to -100 are ignored and the mean is over the others),
    "causal_lm" (next-token prediction: logits [B, T, V], target = the input ids [B, T]; the mean
    cross-entropy of logits[:, :-1] against target[:, 1:] over targets != -100, what Hugging Face
    computes with labels=input_ids), "mse", or a torch callable (output, target) -> scalar;
    output: which result the loss reads when the model returns several (a dict, a Hugging Face
    ModelOutput, a tuple or list): a key, an index, or a path into nested results such as
    ("hidden_states", -1); by default the only tensor, else the "logits" entry; for an ONNX model,
    the index of a graph output. Only that result stays in the program: what only the others
    need is dropped;
    peft: an `et.peft` spec (default Full()); optimizer: `et.optim.SGD(...)` / `AdamW(...)`;
    opt_level: 0..3 (compiler/passes/pipeline.py says which passes each runs; default 2);
    disable_passes: pass names to skip; passes: the exact pass set instead of a level's;
    backend: the backend whose kernels the passes choose among ("cpu"; where it is not built,
    every op keeps its default kernel and the plan still runs there);
    arch: "x86_64" / "aarch64" when the plan is for another machine (kernel choice by cost model)."""
    check_options(peft, optimizer, opt_level, disable_passes, passes)  # before the slow capture
    if not isinstance(loss, str) and callable(loss):
        from .frontends.from_torch import loss_builder
        loss = loss_builder(loss)
    elif loss not in BUILTIN_LOSSES:
        raise LossError(f"unknown loss {loss!r}: use one of {list(BUILTIN_LOSSES)} or a callable (output, target)")
    imported = import_for_compile(model, example_inputs, output)
    return compile_imported(imported, example_target, loss, peft, optimizer, name, opt_level, disable_passes,
                            passes, backend, arch, output=output if imported.frontend == "onnx" else None)


def import_for_compile(model, example_inputs, output=None):
    """The frontend's ImportedModel of `model` as `compile` captures it (example_inputs and output as
    there); `et.check` imports through here too, so it judges exactly what compile would see."""
    from .frontends import import_model, is_onnx_model  # here, so running a saved plan never loads a frontend
    if is_onnx_model(model):
        if isinstance(example_inputs, Mapping):
            raise CaptureError("example_inputs: an ONNX model takes a tuple of example inputs in its graph's input "
                               f"order, not a dict (got keys {list(example_inputs)})")
        if not isinstance(example_inputs, (tuple, list)):
            example_inputs = (example_inputs,)
        return import_model(model, tuple(example_inputs))
    import torch
    if not isinstance(model, torch.nn.Module):
        return import_model(model, ())  # raises the error naming what can be compiled
    from .frontends.from_torch import import_module
    if isinstance(example_inputs, Mapping):
        bad = [k for k in example_inputs if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise CaptureError(f"example_inputs: the keys of a dict of keyword inputs must be the names of "
                               f"{type(model).__name__}.forward's parameters, got {bad}")
        args, kwargs = (), {k: _as_tensor(v) for k, v in example_inputs.items()}
    else:
        if not isinstance(example_inputs, (tuple, list)):
            example_inputs = (example_inputs,)
        args, kwargs = tuple(_as_tensor(x) for x in example_inputs), {}
    return import_module(model, args, kwargs, output=output)


def _as_tensor(x):
    if isinstance(x, np.ndarray):
        import torch
        return torch.as_tensor(x)
    return x
