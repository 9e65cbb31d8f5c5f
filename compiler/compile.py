"""Compiling an imported forward graph into one static training program.

    ImportedModel (a frontend's forward IR) -> + loss -> PEFT spec marks trainable params
      -> sparse autodiff -> optimizer updates -> dce -> verify -> optimisation passes (-O0..-O3,
      compiler/passes/pipeline.py) -> Program

Every stage leaves a verifiable graph; `verify` runs at the end (and tests run it after each
pass). Frontends are not called from here (edgetune/api.py runs them and hands over the
ImportedModel); backends are known only through their target description (target.py).
"""

from __future__ import annotations

import warnings

from .autodiff import differentiate
from .errors import LossError, SpecError
from .ir import NameGen
from .loss import LossBuilder, append_loss
from .optim import SGD, Optimizer
from .passes.dce import dead_code_elimination
from .passes.pipeline import DEFAULT_OPT_LEVEL, optimize, passes_for
from .peft import Full, Spec
from .program import ImportedModel, Program
from .verify import verify


def check_options(peft: Spec | None, optimizer: Optimizer | None, opt_level: int, disable_passes=(), passes=None):
    """The spec and optimizer to use (defaults filled in), or the error a bad option deserves;
    cheap, so callers run it before a slow model capture."""
    passes_for(opt_level, disable_passes, passes)
    peft = Full() if peft is None else peft
    optimizer = SGD() if optimizer is None else optimizer
    if not isinstance(peft, Spec):
        raise SpecError(f"peft must be an edgetune.peft spec (Full, BiasOnly, LastK, Select, Union, FreezeEmbeddings), got {peft!r}")
    if not isinstance(optimizer, Optimizer):
        raise SpecError(f"optimizer must be edgetune.optim.SGD or AdamW, got {optimizer!r}")
    return peft, optimizer


def _output_list(outputs) -> str:
    return ", ".join(f"{i} ({v.type})" for i, v in enumerate(outputs)) or "none"


def compile_imported(imported: ImportedModel, example_target, loss: str | LossBuilder = "cross_entropy",
                     peft: Spec | None = None, optimizer: Optimizer | None = None, name: str | None = None,
                     opt_level: int = DEFAULT_OPT_LEVEL, disable_passes=(), passes=None, backend="cpu",
                     arch: str | None = None, output: int | None = None) -> Program:
    """The training program for a frontend's forward graph (`imported` is consumed).

    example_target: an example target array (class indices for cross_entropy, the input ids
    for causal_lm);
    loss: "cross_entropy", "causal_lm", "mse", or a LossBuilder (compiler/loss.py) that emits
    the loss in IR;
    output: for a frontend that hands over several outputs (ONNX), the index of the one the
    loss reads (the torch frontend picks its output itself, frontends/from_torch.py); the
    others stop being outputs and dead-code elimination drops what only they need;
    the other options as in `et.compile` (edgetune/api.py)."""
    peft, optimizer = check_options(peft, optimizer, opt_level, disable_passes, passes)
    g = imported.graph
    if name:
        g.name = name
    outputs = imported.output_values
    if output is not None and (isinstance(output, bool) or not isinstance(output, int)
                               or not -len(outputs) <= output < len(outputs)):
        raise LossError(f"output={output!r}: the {imported.frontend} model {g.name!r} has {len(outputs)} output(s); "
                        f"pick one by index: {_output_list(outputs)}")
    if output is None and len(outputs) != 1:
        raise LossError(f"the {imported.frontend} model {g.name!r} returns {len(outputs)} outputs: pass output=<index> "
                        f"to pick the one the loss reads: {_output_list(outputs)}")
    names = NameGen(g)
    output = outputs[0 if output is None else output]
    loss_value = append_loss(g, output, example_target, loss, names)
    target_name = g.inputs[-1].name
    g.outputs = {"loss": loss_value, "output": output}

    trainable = peft.apply(g, names)
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
    program = optimize(program, opt_level, disable_passes, passes, backend=backend, arch=arch)
    if isinstance(backend, str) and backend != "reference":  # plans are written for it unless told otherwise
        program.backend = backend
    return program
