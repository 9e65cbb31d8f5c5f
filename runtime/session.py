"""`et.Session`: runs a compiled training program step after step and owns its state.

    et.Session(program)                      numpy reference executor (the oracle)
    et.Session(program, backend="cpu")       the C++ runtime: the program is memory-planned,
    et.Session("model.etp", backend="cpu")   serialised to a plan and loaded, or a plan file
    et.Session(program, backend="cuda")      the same on an NVIDIA GPU (a build with CUDA; the plan
                                             is made for the cuda kernels' workspaces)

State = params, buffers (e.g. BatchNorm running stats) and optimizer states, keyed by name.
`state_dict()` returns the model's tensors under the model's own state_dict names (tied
weights under every name), ready for `module.load_state_dict({k: torch.from_numpy(v)})`;
`save_weights(path)` writes them as safetensors (atomically), `load_weights(path)` reads them.
`save_checkpoint(path)` / `load_checkpoint(path)` / `Session.resume(program, path)` keep and
restore everything a run needs to continue bit for bit (weights, optimizer state, dropout counter,
step count) in the format `edgetune-train --checkpoint/--resume` uses (runtime/checkpoint.py).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import threading

import numpy as np

from ..compiler.errors import InputError, PlanError
from ..compiler.ir import numpy_dtype
from ..compiler.program import Program
from .reference import ReferenceExecutor

BACKENDS = ("reference", "cpu", "cuda")


def _as_numpy(x, where: str) -> np.ndarray:
    """`x` (a numpy array, a torch tensor, a list, a scalar...) as a numpy array, or an InputError
    naming `where`. torch is never imported here (a saved-plan run must not load it): tensors are
    recognised by their methods, and the ones numpy cannot hold (bfloat16, meta, sparse, ...) are
    refused with a hint instead of torch's own TypeError/NotImplementedError."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        dtype = getattr(x, "dtype", None)
        layout = str(getattr(x, "layout", "torch.strided"))
        device = str(getattr(x, "device", "cpu"))
        what = f"{type(x).__name__} (dtype {dtype}, layout {layout}, device {device})"
        if getattr(x, "is_meta", False) or device == "meta":
            raise InputError(f"{where}: a meta tensor has no data ({what})")
        if getattr(x, "is_sparse", False) or layout != "torch.strided":
            raise InputError(f"{where}: sparse/non-strided tensors are not supported ({what}); "
                             "pass .to_dense()")
        if str(dtype) == "torch.bfloat16":
            raise InputError(f"{where}: numpy has no bfloat16 ({what}); pass .float()")
        try:
            x = x.detach().cpu().numpy()
        except Exception as e:
            raise InputError(f"{where}: cannot convert {what} to an array: {type(e).__name__}: {e}") from None
    try:
        arr = np.asarray(x)
    except Exception as e:
        raise InputError(f"{where}: cannot convert {type(x).__name__} to an array: {type(e).__name__}: {e}") from None
    if arr.dtype == object or arr.dtype.kind in "OUSV":
        raise InputError(f"{where}: {type(x).__name__} gives an array of dtype {arr.dtype}, not numbers")
    return arr


def _conform(arr: np.ndarray, name: str, shape: tuple, dtype: str) -> np.ndarray:
    """`arr` as the program's input `name` wants it, or an InputError saying why not."""
    if tuple(arr.shape) != tuple(shape):
        hint = " (the program has static shapes: compile one per batch size, or pad the last batch)" \
            if arr.ndim == len(shape) and tuple(arr.shape[1:]) == tuple(shape[1:]) else ""
        raise InputError(f"input '{name}' has shape {list(arr.shape)}, the program expects {list(shape)}{hint}")
    want = np.dtype(numpy_dtype(dtype))
    if arr.dtype != want:
        same_kind = (np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating)) or \
                    (np.issubdtype(arr.dtype, np.integer) and np.issubdtype(want, np.integer))
        if not same_kind:
            raise InputError(f"input '{name}' has dtype {arr.dtype}, the program expects {want}")
        arr = arr.astype(want)
    return np.ascontiguousarray(arr)


class Session:
    """Not a parallel object: one call at a time touches its runtime. Calls from several threads
    are serialised by a lock (the C++ step releases the GIL, and two interleaved steps would share
    one arena and one set of weights); run several Sessions for parallel work."""

    def __init__(self, program, backend: str = "reference", compute_dtype=None, threads: int | None = None):
        # reentrant: profile() runs step(), load_weights() runs load_state_dict()
        self._lock = threading.RLock()
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; available: {list(BACKENDS)}")
        self.backend = backend
        self.steps = 0
        if backend == "reference":
            if not isinstance(program, Program):
                raise InputError("the reference backend runs a compiled edgetune Program, got "
                                 f"{type(program).__name__} (plan files run on backend='cpu')")
            self._impl = _ReferenceBackend(program, compute_dtype)
        else:
            if compute_dtype is not None:
                raise InputError("compute_dtype is a reference-backend option; the cpu backend computes in the "
                                 "program's dtypes")
            self._impl = _NativeBackend(program, backend, threads)
        self.program = program if isinstance(program, Program) else None

    # ---- running ------------------------------------------------------------------------------
    def step(self, /, *args, **named) -> float:
        """One training step on (model inputs..., target); returns the loss before the update.
        Arrays are given in the program's input order (`sess.step(ids, mask, y)`), by the
        program's input names (`sess.step(input_ids=ids, attention_mask=mask, target=y)`; see
        `input_names`), or positionally first and by name for the rest."""
        feeds = self._feeds(args, named, self._impl.input_specs, "step")
        with self._lock:
            loss = self._impl.step(feeds)
            self.steps += 1
        return loss

    def forward(self, /, *inputs, **named) -> np.ndarray:
        """The model output for `inputs` (the model inputs, in order or by name) under the
        current weights; no state changes. Runs the forward section as compiled (train-mode
        BatchNorm uses batch statistics)."""
        specs = self._impl.input_specs[:self._impl.num_model_inputs]
        feeds = self._feeds(inputs, named, specs, "forward")
        with self._lock:
            return self._impl.forward(feeds)

    @property
    def input_names(self) -> list[str]:
        """The names step() takes, in order: the model inputs, then the target."""
        return [name for name, _, _ in self._impl.input_specs]

    @property
    def model_input_names(self) -> list[str]:
        """The names forward() takes, in order (the model's inputs)."""
        return self.input_names[:self._impl.num_model_inputs]

    def _feeds(self, args, named, specs, what: str = "step") -> list[np.ndarray]:
        names = [s[0] for s in specs]
        listing = ", ".join(names)
        if len(args) > len(specs):
            raise InputError(f"expected {len(specs)} arrays ({listing}), got {len(args)}")
        if named:
            unknown = [k for k in named if k not in names]
            if unknown:
                extra = ""
                if what == "forward" and any(k in self.input_names for k in unknown):
                    extra = "; forward() takes no target"
                raise InputError(f"{what}(): unknown input name(s) {unknown}; the program's inputs are "
                                 f"{listing}{extra}")
            twice = [k for k in names[:len(args)] if k in named]
            if twice:
                raise InputError(f"{what}(): {twice} given both by position and by name")
            missing = [k for k in names[len(args):] if k not in named]
            if missing:
                raise InputError(f"{what}(): missing input(s) {missing}; the program's inputs are {listing}")
            args = tuple(args) + tuple(named[k] for k in names[len(args):])
        elif len(args) != len(specs):
            raise InputError(f"expected {len(specs)} arrays ({listing}), got {len(args)}")
        return [_conform(_as_numpy(a, f"input '{name}'"), name, shape, dtype)
                for a, (name, dtype, shape) in zip(args, specs)]

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self, merged: bool = False) -> dict[str, np.ndarray]:
        """The model's weights under its state_dict names (adapter parameters included, under
        Hugging Face PEFT's names without the adapter name: `q_proj.lora_A.weight`). `merged=True`:
        the *base* model's state_dict with every adapter folded into its weights (LoRA/DoRA/(IA)³/
        SSF/Channels), loadable into the original module."""
        from ..compiler.adapters.export import merged_state, model_state
        with self._lock:
            raw = self._impl.state_dict()
            table = self._impl.export_table()
        return merged_state(table, raw) if merged else model_state(table, raw)

    def save_adapter(self, directory, metadata: dict | None = None) -> list[str]:
        """Write the trained adapters into `directory`: adapter_config.json +
        adapter_model.safetensors in Hugging Face PEFT's format (loadable with
        `peft.PeftModel.from_pretrained(base_model, directory)`) when the program has a LoRA/DoRA
        or (IA)³ adapter, and edgetune_adapter.json + edgetune_adapter.safetensors (every adapter,
        SSF and Channels included). Each file is written atomically. Returns the file names."""
        from ..compiler.adapters.export import adapter_files, write_adapter
        with self._lock:
            table = self._impl.export_table()
            if table is None:
                raise InputError("save_adapter: this program has no adapter (its spec trains existing parameters; "
                                 "use save_weights)")
            meta = {"producer": "edgetune", "steps": str(self.steps), **(metadata or {})}
            files = adapter_files(table, self._impl.state_dict(), meta)
        write_adapter(directory, files)
        return sorted(files)

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """All or nothing: every tensor is converted and checked (name, shape, dtype kind, finite
        values) before any weight is written, and a write the runtime refuses (e.g. a baked
        weight) restores the weights already written."""
        if not hasattr(state, "items"):
            raise InputError(f"load_state_dict needs a dict of name -> array, got {type(state).__name__}")
        with self._lock:
            current = self._impl.state_dict()
            hidden = set(getattr(self._impl.export_table(), "hidden", ()))  # export-only: loadable, not required
            unknown = sorted(set(state) - set(current))
            missing = sorted(set(current) - set(state) - hidden)
            if strict and (unknown or missing):
                raise InputError(f"load_state_dict: unknown keys {unknown[:8]}, missing keys {missing[:8]}")
            staged = []
            for name, value in state.items():
                if name not in current:
                    continue
                arr = _as_numpy(value, f"load_state_dict: '{name}'")
                want = current[name]
                if tuple(arr.shape) != want.shape:
                    raise InputError(f"load_state_dict: '{name}' has shape {list(arr.shape)}, "
                                     f"expected {list(want.shape)}")
                if arr.dtype != want.dtype and not np.can_cast(arr.dtype, want.dtype, casting="same_kind"):
                    raise InputError(f"load_state_dict: '{name}' has dtype {arr.dtype}, expected {want.dtype}")
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    raise InputError(f"load_state_dict: '{name}' has non-finite values (inf or NaN)")
                # np.array, not ascontiguousarray: the latter turns a 0-d array (num_batches_tracked) 1-d
                staged.append((name, np.array(arr.astype(want.dtype), order="C")))
            written = []
            try:
                for name, arr in staged:
                    self._impl.set_weight(name, arr)
                    written.append(name)
            except BaseException:
                for name in reversed(written):
                    self._impl.set_weight(name, current[name])
                raise

    def optimizer_state(self) -> dict[str, np.ndarray]:
        with self._lock:
            return self._impl.optimizer_state()

    @property
    def lr(self) -> float:
        with self._lock:
            return float(self._impl.optimizer_state()["optim.lr"])

    def set_lr(self, lr: float) -> None:
        """A finite learning rate >= 0 (an inf one would write inf/NaN into every trainable weight
        on the next step, with a finite loss that the NaN guard lets through)."""
        is_number = isinstance(lr, numbers.Real) or (isinstance(lr, np.ndarray) and lr.ndim == 0
                                                      and lr.dtype.kind in "fiu")
        if not is_number or isinstance(lr, (bool, np.bool_)):
            raise InputError(f"learning rate must be a number, got {type(lr).__name__}")
        value = float(lr)
        if not math.isfinite(value) or value < 0:
            raise InputError(f"learning rate must be a finite number >= 0, got {lr!r}")
        with self._lock:
            self._impl.set_state("optim.lr", np.asarray(value, dtype=np.float32))

    @property
    def memory(self) -> dict | None:
        """Bytes the runtime allocated (cpu backend): persistent, arena, input, total."""
        return self._impl.memory()

    # ---- profiling (cpu backend) -----------------------------------------------------------------
    def profile(self, steps: int | None = None, *args, **named) -> dict:
        """Per-op time of the C++ runtime. `sess.profile(5, x, y)` (or `sess.profile(5, ids, mask,
        y)`, or with the arrays by name as in step()) runs 5 profiled steps and
        returns {"ops": {op: ms per step}, "kernels": {kernel: ms per step}, "sections": {section: ms
        per step}, "nodes": [...]} (nodes: (op, source, section, ms per step, kernel), slowest first)."""
        rt = getattr(self._impl, "rt", None)
        if rt is None:
            raise InputError("profile() needs backend='cpu'")
        if steps:  # checked once, before profiling starts
            feeds = self._feeds(args, named, self._impl.input_specs, "profile")
        with self._lock:
            rt.reset_profile()
            rt.set_profiling(True)
            try:
                for _ in range(steps or 0):
                    self._impl.step(feeds)
                    self.steps += 1
            finally:
                rt.set_profiling(False)
            records = rt.profile()
        n = max(steps or 1, 1)
        ops: dict[str, float] = {}
        kernels: dict[str, float] = {}
        sections: dict[str, float] = {}
        nodes = []
        for op, kernel, source, section, seconds, _calls in records:
            ms = seconds * 1e3 / n
            ops[op] = ops.get(op, 0.0) + ms
            kernels[kernel] = kernels.get(kernel, 0.0) + ms
            sections[section] = sections.get(section, 0.0) + ms
            nodes.append((op, source, section, ms, kernel))
        nodes.sort(key=lambda t: -t[3])
        return {"ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
                "kernels": dict(sorted(kernels.items(), key=lambda kv: -kv[1])), "sections": sections, "nodes": nodes}

    # ---- checkpoints ------------------------------------------------------------------------------
    @property
    def plan_sha256(self) -> str:
        """SHA-256 of the plan this session runs (of the .etp file's bytes): a checkpoint's identity."""
        return self._impl.plan_sha256()

    def save_checkpoint(self, path, metadata: dict | None = None) -> None:
        """Everything a run needs to continue exactly: weights, optimizer state (moments, step
        counts, lr, the dropout counter) and the step count, atomically (the previous file stays
        whole until the new one is complete). `metadata` (str -> str, e.g. your data position)
        comes back from `load_checkpoint`. `edgetune-train --resume` reads the same file."""
        from ..compiler.files import write_bytes_atomic
        from . import checkpoint
        with self._lock:  # one moment's weights, state and step count
            weights = self.state_dict()
            state = self.optimizer_state()
            steps = self.steps
            blob = checkpoint.encode(weights, state, plan_sha256=self.plan_sha256, model=self._impl.model_label(),
                                     steps=steps, metadata=metadata)
        write_bytes_atomic(path, blob, error=InputError)

    def load_checkpoint(self, path) -> dict:
        """Restores a checkpoint of this plan (from save_checkpoint or edgetune-train), all or
        nothing; returns the metadata its writer added. A checkpoint of another plan, or one with
        a missing, extra, misshapen or non-finite tensor, raises InputError and changes nothing."""
        from . import checkpoint
        ckpt = checkpoint.Checkpoint(path)
        with self._lock:
            if ckpt.plan_sha256 != self.plan_sha256:
                raise InputError(f"{ckpt.path} was written by another plan (sha256 {ckpt.plan_sha256[:12]}...; this "
                                 f"session's plan is {self.plan_sha256[:12]}...): a checkpoint resumes only the plan "
                                 "that wrote it")
            old_state = self._impl.optimizer_state()
            if set(ckpt.state) != set(old_state):
                extra, missing = sorted(set(ckpt.state) - set(old_state)), sorted(set(old_state) - set(ckpt.state))
                raise InputError(f"{ckpt.path}: optimizer state differs from the plan's (extra {extra[:5]}, "
                                 f"missing {missing[:5]})")
            for name, arr in ckpt.state.items():
                want = old_state[name]
                if arr.shape != want.shape or arr.dtype != want.dtype:
                    raise InputError(f"{ckpt.path}: optimizer state '{name}' is {arr.dtype}{list(arr.shape)}, the "
                                     f"plan's is {want.dtype}{list(want.shape)}")
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    raise InputError(f"{ckpt.path}: optimizer state '{name}' holds inf or NaN")
            if "optim.lr" in ckpt.state and float(ckpt.state["optim.lr"]) < 0:
                raise InputError(f"{ckpt.path}: learning rate {float(ckpt.state['optim.lr'])} is negative")
            old_weights = self._impl.state_dict()
            try:
                self.load_state_dict(ckpt.weights, strict=True)  # checks everything, then writes; atomic
            except InputError as e:
                raise InputError(f"{ckpt.path}: {e}") from None
            written = []
            try:
                for name, arr in ckpt.state.items():
                    self._impl.set_state(name, arr)
                    written.append(name)
            except BaseException:
                for name in written:
                    self._impl.set_state(name, old_state[name])
                self.load_state_dict(old_weights, strict=True)
                raise
            self.steps = ckpt.steps
            self._impl.set_steps(ckpt.steps)
        return ckpt.user_metadata

    @classmethod
    def resume(cls, program, path, backend: str = "reference", **kwargs) -> "Session":
        """A new Session on `program` continued from checkpoint `path`; the metadata its writer
        added is in `session.checkpoint_metadata`."""
        sess = cls(program, backend=backend, **kwargs)
        sess.checkpoint_metadata = sess.load_checkpoint(path)
        return sess

    # ---- weights as files -------------------------------------------------------------------------
    def save_weights(self, path, merged: bool = False) -> None:
        """All weights (params and buffers, under the model's state_dict names) as safetensors,
        written atomically: an existing file is replaced only by a complete new one. `merged`:
        the base model's weights with the adapters folded in (see state_dict)."""
        from safetensors.numpy import save
        from ..compiler.files import write_bytes_atomic
        with self._lock:  # the weights and the step count of one moment
            tensors = {k: np.ascontiguousarray(v) for k, v in self.state_dict(merged=merged).items()}
            steps = self.steps
        meta = {"producer": "edgetune", "steps": str(steps), "backend": self.backend}
        write_bytes_atomic(path, save(tensors, metadata=meta), error=InputError)

    def load_weights(self, path, strict: bool = True) -> None:
        """Weights from a safetensors file (e.g. one `save_weights` or `edgetune-train` wrote, or
        `safetensors.torch.save_file(model.state_dict())`). All or nothing, as load_state_dict:
        a file with one bad tensor leaves every weight as it was."""
        from safetensors.numpy import load_file
        if not os.path.exists(path):
            raise InputError(f"load_weights: {path} does not exist")
        try:
            state = load_file(path)
        except Exception as e:
            raise InputError(f"load_weights: {path} is not a readable safetensors file: {e}") from None
        self.load_state_dict(state, strict=strict)


class _ReferenceBackend:
    def __init__(self, program: Program, compute_dtype):
        self.program = program
        self.executor = ReferenceExecutor(program.graph, compute_dtype=compute_dtype)
        self.state = program.initial_state()
        g = program.graph
        by_name = {v.name: v for v in g.inputs}
        names = program.model_inputs + [program.target_input]
        self.input_specs = [(n, by_name[n].dtype, by_name[n].shape) for n in names]
        self.num_model_inputs = len(program.model_inputs)
        self._plan_sha256 = None

    def _named(self, arrays, specs):
        return {name: a for a, (name, _, _) in zip(arrays, specs)}

    def step(self, arrays) -> float:
        # The executor is functional: the new state is kept only when it is finite, so a NaN loss
        # or an update that overflowed leaves every weight and optimizer state as it was (the
        # cpu runtime stops at the first refusing update; see csrc/core/runtime.h).
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, as an error
            outputs, state = self.executor.run(self._named(arrays, self.input_specs), self.state)
        loss = float(outputs["loss"])
        if not math.isfinite(loss):
            raise InputError(f"loss is {'NaN' if math.isnan(loss) else 'Inf'}; the step was stopped before any "
                             "update, weights keep their last finite values")
        for name, value in state.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise InputError(f"the update would write inf or NaN into '{name}' (a gradient holds inf/NaN or "
                                 "overflowed, or the learning rate is too large); the step was refused")
        self.state = state
        return loss

    def forward(self, arrays) -> np.ndarray:
        outputs, _ = self.executor.run(self._named(arrays, self.input_specs), self.state, sections=("forward",))
        return outputs["output"]

    def state_dict(self) -> dict[str, np.ndarray]:
        g = self.program.graph
        out = {n: self.state[n].copy() for n, v in g.sources.items() if v.kind in ("param", "buffer")}
        for alias, target in g.aliases.items():
            out[alias] = out[target]
        return out

    def set_weight(self, name: str, arr: np.ndarray) -> None:
        g = self.program.graph
        canonical = g.aliases.get(name, name)
        if canonical in g.baked and not np.array_equal(self.state[canonical], arr):
            raise InputError(f"weight '{name}' is frozen and its value was folded into constants at compile "
                             "time; loading a different value would train with stale constants. Recompile with "
                             "these weights (or with --disable-pass fold_constants)")
        self.state[canonical] = arr

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {n: self.state[n].copy() for n, v in self.program.graph.sources.items() if v.kind == "state"}

    def export_table(self):
        return self.program.graph.adapters

    def set_state(self, name: str, arr: np.ndarray) -> None:
        self.state[name] = arr

    def memory(self):
        return None

    def plan_sha256(self) -> str:
        # the plan this program runs as on the backend it was compiled for, so the checkpoints agree
        if self._plan_sha256 is None:
            self._plan_sha256 = hashlib.sha256(self.program.plan_bytes()).hexdigest()
        return self._plan_sha256

    def model_label(self) -> str:
        from ..compiler.plan_file import model_label
        return model_label(self.program)

    def set_steps(self, steps: int) -> None:
        pass


class _NativeBackend:
    def __init__(self, program, backend: str, threads: int | None):
        from .native import native, native_error
        mod = native()
        self._error = native_error
        self._NativeError = mod.NativeError
        if isinstance(program, Program):
            data = program.plan_bytes(backend)
        elif isinstance(program, (str, os.PathLike)):
            try:
                with open(program, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise PlanError(f"cannot read plan file {program}: {e.strerror}") from None
        elif isinstance(program, (bytes, bytearray)):
            data = bytes(program)
        else:
            raise InputError(f"Session needs a compiled Program, a plan file path or plan bytes, "
                             f"got {type(program).__name__}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive int, got {threads!r}")
        self.rt = self._call(mod.Runtime, data, backend, threads or 0)
        if isinstance(program, Program):
            self._export = program.graph.adapters
        else:  # the adapters' export recipes travel in the plan
            from ..compiler.plan_file import read_export
            self._export = read_export(data)
        self.input_specs = [(n, d, tuple(s)) for n, d, s in self.rt.inputs()]
        self.num_model_inputs = self.rt.num_model_inputs

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except self._NativeError as e:
            raise self._error(e) from None

    def step(self, arrays) -> float:
        return self._call(self.rt.step, arrays)

    def forward(self, arrays) -> np.ndarray:
        return self._call(self.rt.forward, arrays)

    def state_dict(self):
        return self.rt.weights()

    def set_weight(self, name, arr):
        self._call(self.rt.set_weight, name, arr)

    def optimizer_state(self):
        return self.rt.optimizer_state()

    def export_table(self):
        return self._export

    def set_state(self, name, arr):
        self._call(self.rt.set_state, name, arr)

    def memory(self):
        return self.rt.memory()

    def plan_sha256(self) -> str:
        return self.rt.plan_sha256

    def model_label(self) -> str:
        return self.rt.model

    def set_steps(self, steps: int) -> None:
        self.rt.steps = steps
