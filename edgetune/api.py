"""`et.compile`: a model + a fine-tuning spec -> one static training program.

The public entry point sits above every layer: it runs the frontend that fits the model
(frontends/), turns a torch loss callable into IR through the torch frontend, and hands the
forward graph to the compiler (compiler/compile.py), which knows neither frontends nor backends.
"""

from __future__ import annotations

from .compiler.compile import check_options, compile_imported
from .compiler.errors import LossError
from .compiler.loss import BUILTIN_LOSSES
from .compiler.optim import Optimizer
from .compiler.passes.pipeline import DEFAULT_OPT_LEVEL
from .compiler.peft import Spec
from .compiler.program import Program


def compile(model, example_inputs, example_target, loss="cross_entropy", peft: Spec | None = None,
            optimizer: Optimizer | None = None, name: str | None = None, opt_level: int = DEFAULT_OPT_LEVEL,
            disable_passes=(), passes=None, backend="cpu", arch: str | None = None) -> Program:
    """Compile `model` (a torch.nn.Module, an onnx.ModelProto or an .onnx path) into a training
    program (see the README for a walk-through).

    example_inputs: a tuple of example tensors (their shapes and dtypes become the program's);
    example_target: an example target (class indices for cross_entropy);
    loss: "cross_entropy", "mse", or a torch callable (output, target) -> scalar;
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
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    from .frontends import import_model  # here, so running a saved plan never loads a frontend
    imported = import_model(model, tuple(example_inputs))
    return compile_imported(imported, example_target, loss, peft, optimizer, name, opt_level, disable_passes,
                            passes, backend, arch)
