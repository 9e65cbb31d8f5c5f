"""edgetune: compile a model + a fine-tuning spec into one sparse training program, and run it.

    import edgetune as et
    prog = et.compile(model, example_inputs, example_target, loss="cross_entropy",
                      peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.01, momentum=0.9))
    sess = et.Session(prog)
    loss = sess.step(x, y)

    print(et.check(model, example_inputs))   # which ops a model uses, which are unsupported (no compile)
"""

from .api import compile
from .compiler import __version__, optim, peft
from .compiler.passes.pipeline import PASS_NAMES, optimize
from .compiler.errors import (CaptureError, EdgetuneError, InputError, IRError, LossError, PlanError, ShapeError,
                              SpecError, UnsupportedOpError)
from .compiler.ir_text import parse_graph, print_graph
from .compiler.program import Program
from .compiler.verify import verify
from .runtime.session import Session
from .doctor import ModelReport, check

__all__ = ["compile", "check", "ModelReport", "optimize", "PASS_NAMES", "Session", "Program", "peft", "optim", "verify", "print_graph", "parse_graph",
           "EdgetuneError", "CaptureError", "UnsupportedOpError", "SpecError", "LossError", "IRError", "ShapeError",
           "InputError", "PlanError"]
