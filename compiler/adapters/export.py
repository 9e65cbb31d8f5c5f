"""How a trained adapter leaves edgetune: Hugging Face PEFT's files, edgetune's own adapter file,
and the base model's state_dict with the adapters merged in.

Every exported tensor is a *recipe*: a short postfix program over the session's named state
(`w NAME` pushes a weight; the other steps pop operands and push a result). The compiler writes
the recipes into the plan (`Plan.export`, csrc/schema/plan.fbs); `evaluate` here and
csrc/tools/adapter_export.cc run them, so `Session.save_adapter` and `edgetune-train --out` give
the same files. Recipes compute in float64 and store in the dtype of the tensor they replace
(float32 for new tensors).

    step            pops            pushes
    w NAME          -               the state tensor NAME
    t               a (2-d)         a^T
    mm              a, b            a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1)
    reshape INTS    a               a.reshape(INTS)
    scale F         a               a * F
    add/sub/mul/div a, b            a (op) b, numpy broadcasting
    rownorm         a               sqrt(sum of a^2 over every dim but 0), shape [a.shape[0]]
    cat INTS=[axis, n]  n tensors   their concatenation along axis
    rows INTS       base, rows      base with base[INTS[i]] = rows[i] (axis 0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

Step = tuple  # (op, name, ints, f)


class Expr:
    """A recipe under construction: `Expr.w("a").t().scale(2.0)`."""

    def __init__(self, steps: list[Step]):
        self.steps = steps

    @staticmethod
    def w(name: str) -> "Expr":
        return Expr([("w", name, [], 0.0)])

    def _then(self, op, name="", ints=(), f=0.0, *others: "Expr") -> "Expr":
        steps = list(self.steps)
        for o in others:
            steps += o.steps
        return Expr(steps + [(op, name, [int(i) for i in ints], float(f))])

    def t(self):
        return self._then("t")

    def reshape(self, shape):
        return self._then("reshape", ints=shape)

    def scale(self, f: float):
        return self if f == 1.0 else self._then("scale", f=f)

    def rownorm(self):
        return self._then("rownorm")

    def __add__(self, o):
        return self._then("add", "", (), 0.0, o)

    def __sub__(self, o):
        return self._then("sub", "", (), 0.0, o)

    def __mul__(self, o):
        return self._then("mul", "", (), 0.0, o)

    def __truediv__(self, o):
        return self._then("div", "", (), 0.0, o)

    @staticmethod
    def mm(a: "Expr", b: "Expr") -> "Expr":
        return a._then("mm", "", (), 0.0, b)

    @staticmethod
    def cat(axis: int, *xs: "Expr") -> "Expr":
        return xs[0]._then("cat", "", (axis, len(xs)), 0.0, *xs[1:])

    @staticmethod
    def rows(base: "Expr", index, rows: "Expr") -> "Expr":
        return base._then("rows", "", list(index), 0.0, rows)


def evaluate(steps: list[Step], state: dict[str, np.ndarray], where: str = "recipe") -> np.ndarray:
    """Run one recipe on `state` (float64 arithmetic)."""
    stack: list[np.ndarray] = []

    def pop(n=1):
        if len(stack) < n:
            raise InputError(f"{where}: malformed export recipe (stack underflow)")
        out = stack[-n:]
        del stack[-n:]
        return out

    for op, name, ints, f in steps:
        if op == "w":
            if name not in state:
                raise InputError(f"{where}: the session has no tensor {name!r}")
            stack.append(np.asarray(state[name], dtype=np.float64))
        elif op == "t":
            a, = pop()
            stack.append(a.T)
        elif op == "mm":
            a, b = pop(2)
            stack.append(a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1))
        elif op == "reshape":
            a, = pop()
            stack.append(a.reshape(ints))
        elif op == "scale":
            a, = pop()
            stack.append(a * f)
        elif op in ("add", "sub", "mul", "div"):
            a, b = pop(2)
            stack.append({"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op](a, b))
        elif op == "rownorm":
            a, = pop()
            stack.append(np.sqrt((a.reshape(a.shape[0], -1) ** 2).sum(axis=1)))
        elif op == "cat":
            axis, n = ints
            stack.append(np.concatenate(pop(n), axis=axis))
        elif op == "rows":
            base, rows = pop(2)
            out = base.copy()
            out[np.asarray(ints, dtype=np.int64)] = rows
            stack.append(out)
        else:
            raise InputError(f"{where}: unknown export step {op!r}")
    if len(stack) != 1:
        raise InputError(f"{where}: malformed export recipe ({len(stack)} results)")
    return stack[0]


@dataclass
class ExportTable:
    """What a program's adapters export (see the module docstring); lives on `Graph.adapters`."""
    peft_config: dict | None = None               # adapter_config.json (one PEFT adapter type per program)
    peft_tensors: dict = field(default_factory=dict)    # adapter_model.safetensors key -> recipe
    own_config: dict = field(default_factory=lambda: {"format": "edgetune-adapter", "version": 1, "adapters": []})
    own_tensors: dict = field(default_factory=dict)     # edgetune_adapter.safetensors key -> recipe
    merged: dict = field(default_factory=dict)          # base state_dict name -> recipe of its merged value
    drop_when_merged: list = field(default_factory=list)  # adapter params: not part of the merged model
    hidden: list = field(default_factory=list)          # export-only weights (e.g. PiSSA's initial A, B)
    unmergeable: list = field(default_factory=list)     # why some adapter cannot fold into the base weights

    def add_peft(self, config: dict, who: str) -> None:
        """Merge one adapter's PEFT config into the program's (same type and options; target
        modules are collected)."""
        from ..errors import SpecError
        if self.peft_config is None:
            self.peft_config = dict(config)
            return
        mine = {k: v for k, v in self.peft_config.items() if k not in ("target_modules", "feedforward_modules")}
        theirs = {k: v for k, v in config.items() if k not in ("target_modules", "feedforward_modules")}
        if mine != theirs:
            raise SpecError(f"{who}: a program exports one Hugging Face PEFT adapter, and this one's settings differ "
                            f"from an earlier adapter's ({_diff(mine, theirs)}); use one LoRA/IA3 spec with all targets")
        for key in ("target_modules", "feedforward_modules"):
            if key in config:
                self.peft_config[key] = sorted(set(self.peft_config.get(key, [])) | set(config[key]))

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:4])


# ---- using a table ---------------------------------------------------------------------------------
def _cast_like(arr: np.ndarray, like: np.ndarray | None) -> np.ndarray:
    dtype = like.dtype if like is not None else np.float32
    return np.ascontiguousarray(arr.astype(dtype))


def model_state(table: ExportTable | None, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state_dict a user sees: without export-only weights."""
    if table is None:
        return state
    hidden = set(table.hidden)
    return {k: v for k, v in state.items() if k not in hidden}


def merged_state(table: ExportTable | None, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The base model's state_dict with every adapter folded into its weights."""
    if table is None:
        return model_state(None, state)
    if table.unmergeable:
        raise InputError("state_dict(merged=True): " + "; ".join(table.unmergeable))
    out = {k: v for k, v in state.items() if k not in set(table.hidden) | set(table.drop_when_merged)}
    for name, steps in table.merged.items():
        out[name] = _cast_like(evaluate(steps, state, f"merged '{name}'"), state.get(name))
    return out


def adapter_files(table: ExportTable, state: dict[str, np.ndarray], metadata: dict | None = None) -> dict[str, bytes]:
    """file name -> bytes of what `save_adapter` writes: adapter_config.json +
    adapter_model.safetensors (Hugging Face PEFT) when the program has a PEFT-format adapter, and
    edgetune_adapter.json + edgetune_adapter.safetensors (every adapter, in edgetune's names)."""
    from safetensors.numpy import save
    files: dict[str, bytes] = {}
    meta = {"format": "pt", **(metadata or {})}
    if table.peft_config is not None:
        tensors = {k: _cast_like(evaluate(s, state, f"adapter tensor '{k}'"), None) for k, s in table.peft_tensors.items()}
        files["adapter_config.json"] = (json.dumps(table.peft_config, indent=2, sort_keys=True) + "\n").encode()
        files["adapter_model.safetensors"] = save(tensors, metadata=meta)
    tensors = {k: _cast_like(evaluate(s, state, f"adapter tensor '{k}'"), state.get(k))
               for k, s in table.own_tensors.items()}
    files["edgetune_adapter.json"] = (json.dumps(table.own_config, indent=2, sort_keys=True) + "\n").encode()
    files["edgetune_adapter.safetensors"] = save(tensors, metadata=meta)
    return files


def write_adapter(directory, files: dict[str, bytes]) -> None:
    """Write the files into `directory` (created), each atomically."""
    import os
    from ..files import write_bytes_atomic
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        write_bytes_atomic(os.path.join(directory, name), data, error=InputError)
