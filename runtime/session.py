"""`et.Session`: runs a compiled Program step after step and owns its state.

State = params, buffers (e.g. BatchNorm running stats) and optimizer states, keyed by name.
`state_dict()` returns the model's tensors under the model's own state_dict names (tied
weights under every name), ready for `module.load_state_dict({k: torch.from_numpy(v)})`.
Backends: "reference" (numpy oracle, this issue); the C++ backends plug in here later.
"""

from __future__ import annotations

import numpy as np

from ..compiler.errors import InputError
from ..compiler.ir import numpy_dtype
from ..compiler.program import Program
from .reference import ReferenceExecutor

BACKENDS = ("reference",)


def _as_numpy(x, where: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:
        raise InputError(f"{where}: cannot convert {type(x).__name__} to an array: {e}") from None


class Session:
    def __init__(self, program: Program, backend: str = "reference", compute_dtype=None):
        if not isinstance(program, Program):
            raise InputError(f"Session needs a compiled edgetune Program, got {type(program).__name__}")
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; available: {list(BACKENDS)}")
        self.program = program
        self.backend = backend
        self.executor = ReferenceExecutor(program.graph, compute_dtype=compute_dtype)
        self.state = program.initial_state()
        self.steps = 0

    # ---- feeding ------------------------------------------------------------------------------
    def _feeds(self, args, names: list[str]) -> dict[str, np.ndarray]:
        if len(args) != len(names):
            raise InputError(f"expected {len(names)} arrays ({', '.join(names)}), got {len(args)}")
        inputs = {v.name: v for v in self.program.graph.inputs}
        feeds = {}
        for arg, name in zip(args, names):
            v = inputs[name]
            arr = _as_numpy(arg, f"input '{name}'")
            if tuple(arr.shape) != v.shape:
                hint = " (the program has static shapes: compile one per batch size, or pad the last batch)" \
                    if arr.ndim == len(v.shape) and arr.shape[1:] == v.shape[1:] else ""
                raise InputError(f"input '{name}' has shape {list(arr.shape)}, the program expects {list(v.shape)}{hint}")
            want = np.dtype(numpy_dtype(v.dtype))
            if arr.dtype != want:
                same_kind = (np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating)) or \
                            (np.issubdtype(arr.dtype, np.integer) and np.issubdtype(want, np.integer))
                if not same_kind:
                    raise InputError(f"input '{name}' has dtype {arr.dtype}, the program expects {want}")
                arr = arr.astype(want)
            feeds[name] = arr
        return feeds

    # ---- running ------------------------------------------------------------------------------
    def step(self, *args) -> float:
        """One training step on (model inputs..., target); returns the loss before the update."""
        names = self.program.model_inputs + [self.program.target_input]
        outputs, self.state = self.executor.run(self._feeds(args, names), self.state)
        self.steps += 1
        return float(outputs["loss"])

    def forward(self, *inputs) -> np.ndarray:
        """The model output for `inputs` under the current weights; no state changes. Runs the
        forward section as compiled (train-mode BatchNorm uses batch statistics)."""
        outputs, _ = self.executor.run(self._feeds(inputs, self.program.model_inputs), self.state,
                                       sections=("forward",))
        return outputs["output"]

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        g = self.program.graph
        out = {n: self.state[n].copy() for n, v in g.sources.items() if v.kind in ("param", "buffer")}
        for alias, target in g.aliases.items():
            out[alias] = out[target]
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        g = self.program.graph
        known = {n for n, v in g.sources.items() if v.kind in ("param", "buffer")} | set(g.aliases)
        unknown = sorted(set(state) - known)
        missing = sorted(known - set(state))
        if strict and (unknown or missing):
            raise InputError(f"load_state_dict: unknown keys {unknown[:8]}, missing keys {missing[:8]}")
        for name, value in state.items():
            if name not in known:
                continue
            target = g.aliases.get(name, name)
            src = g.sources[target]
            arr = _as_numpy(value, f"state '{name}'")
            if tuple(arr.shape) != src.shape:
                raise InputError(f"load_state_dict: '{name}' has shape {list(arr.shape)}, expected {list(src.shape)}")
            self.state[target] = arr.astype(numpy_dtype(src.dtype))

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {n: self.state[n].copy() for n, v in self.program.graph.sources.items() if v.kind == "state"}

    @property
    def lr(self) -> float:
        return float(self.state["optim.lr"])

    def set_lr(self, lr: float) -> None:
        if not lr >= 0:
            raise InputError(f"learning rate must be >= 0, got {lr}")
        self.state["optim.lr"] = np.asarray(lr, dtype=np.float32)
