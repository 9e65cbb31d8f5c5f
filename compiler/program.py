"""`ImportedModel`: what every frontend hands the compiler (a forward graph). `Program`: a
compiled training step (the IR graph) plus what a Session needs to run it, and `summary()`,
which puts the sparsity of the backward graph into numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .autodiff import requires_grad_set
from .ir import SECTIONS, Graph, Value
from .ir_text import print_graph
from .ops.registry import op_flops


@dataclass
class ImportedModel:
    """A frontend's result: a `Graph` holding only forward nodes, its data inputs, params (all
    frozen — the PEFT spec decides later), buffers (with assignments for buffers the model
    updates, e.g. BatchNorm running stats) and consts, plus its outputs. Nothing else crosses
    the boundary between frontends and the compiler."""

    graph: Graph
    frontend: str  # "torch" or "onnx"
    input_names: list[str] = field(default_factory=list)
    output_values: list[Value] = field(default_factory=list)
    train_mode: bool = False


@dataclass
class Summary:
    name: str
    frontend: str
    spec: str
    optimizer: str
    params_trainable: int
    params_frozen: int
    tensors_trainable: int
    tensors_frozen: int
    ops: dict[str, int]
    flops: dict[str, int]
    activations_kept: int  # forward values (and data inputs) that a backward node reads
    activation_bytes_kept: int
    forward_activation_bytes: int  # all forward values, what a framework keeping everything holds
    weight_grad_ops: int
    weight_grad_ops_by_op: dict[str, int]
    first_grad_op: str | None
    first_grad_index: int | None
    forward_ops: int
    state_bytes: int
    opt_level: int = 0
    adapter_params: int = 0  # parameters the adapters added (all trainable), and their tensors
    adapter_tensors: int = 0
    optimizer_state_bytes: int = 0
    passes: list = field(default_factory=list)  # PassRecord per pass: ops and planned bytes before/after
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["passes"] = [p.as_dict() for p in self.passes]
        return d

    def __str__(self) -> str:
        def mb(n):
            return f"{n / 2**20:.2f} MiB"

        lines = [f"edgetune program '{self.name}' ({self.frontend} frontend, {self.spec}, {self.optimizer})",
                 f"  parameters   trainable {self.params_trainable:,} in {self.tensors_trainable} tensors, "
                 f"frozen {self.params_frozen:,} in {self.tensors_frozen} tensors",
                 "  section        ops        FLOPs"]
        for s in SECTIONS:
            lines.append(f"  {s:<10} {self.ops.get(s, 0):>7} {self.flops.get(s, 0):>12,}")
        if self.adapter_tensors:
            lines.append(f"  adapters     {self.adapter_params:,} parameters in {self.adapter_tensors} tensors "
                         f"(of the trainable above)")
        lines.append(f"  optimizer state: {mb(self.optimizer_state_bytes)}")
        lines.append(f"  activations kept for backward: {self.activations_kept} tensors, "
                     f"{mb(self.activation_bytes_kept)} (all forward activations: {mb(self.forward_activation_bytes)})")
        by_op = ", ".join(f"{k} {v}" for k, v in sorted(self.weight_grad_ops_by_op.items())) or "none"
        lines.append(f"  weight-gradient ops: {self.weight_grad_ops} ({by_op})")
        if self.first_grad_op:
            lines.append(f"  first op that gets a gradient: #{self.first_grad_index} of {self.forward_ops} "
                         f"forward ops: {self.first_grad_op}")
        else:
            lines.append("  first op that gets a gradient: none")
        lines.append(f"  persistent state (params, buffers, optimizer): {mb(self.state_bytes)}")
        if self.passes:
            from .passes.pipeline import format_report
            lines.append(f"  optimisation passes (-O{self.opt_level}):")
            lines += ["    " + line for line in format_report(self.passes).splitlines()]
        return "\n".join(lines)


class Program:
    """A compiled training program. `str(program)` is the text IR; `summary()` the numbers."""

    def __init__(self, graph: Graph, frontend: str, spec, optimizer, model_inputs: list[str],
                 target_input: str, train_mode: bool):
        self.graph = graph
        self.frontend = frontend
        self.spec = spec
        self.optimizer = optimizer
        self.model_inputs = model_inputs
        self.target_input = target_input
        self.train_mode = train_mode
        self._memory_plans: dict = {}
        self.backend = "cpu"  # the backend it was compiled for: the default of memory_plan/plan_bytes/save
        self.opt_level = 0
        self.pass_report: list = []  # PassRecord per optimisation pass run (compiler/passes/pipeline.py)

    # ---- planning for a backend ----------------------------------------------------------------
    def memory_plan(self, backend: str | None = None):
        """The memory plan for `backend` (default: the one compiled for; cached): every tensor's
        region and offset, and the exact bytes the runtime will allocate. Printing it gives the
        planned numbers."""
        backend = backend or self.backend
        if backend not in self._memory_plans:
            from .plan_file import plan_program
            self._memory_plans[backend] = plan_program(self, backend)
        return self._memory_plans[backend]

    @property
    def memory(self):
        """Planned bytes on the runtime compiled for: params, optimizer state, arena peak, inputs."""
        return self.memory_plan()

    def plan_bytes(self, backend: str | None = None) -> bytes:
        from .plan_file import build_plan
        backend = backend or self.backend
        return build_plan(self, backend, self.memory_plan(backend))

    def save(self, path, backend: str | None = None) -> int:
        """Write the plan file (.etp) that `et.Session(path, backend=...)` and `edgetune-train`
        load, for `backend` (default: the one compiled for); atomically. Returns its size in bytes."""
        from .plan_file import write_bytes_atomic
        data = self.plan_bytes(backend)
        write_bytes_atomic(path, data)
        return len(data)

    def __str__(self) -> str:
        return print_graph(self.graph)

    def with_graph(self, graph: Graph) -> "Program":
        """The same program (spec, optimizer, inputs) around another graph, e.g. an optimised copy."""
        program = Program(graph, self.frontend, self.spec, self.optimizer, self.model_inputs, self.target_input,
                          self.train_mode)
        program.backend = self.backend
        return program

    def __repr__(self) -> str:
        return f"<edgetune.Program '{self.graph.name}' {len(self.graph.nodes)} nodes, spec={self.spec!r}>"

    @property
    def trainable_names(self) -> list[str]:
        return [p.name for p in self.graph.trainable_params()]

    def state_names(self) -> list[str]:
        """The model's state_dict names: params and buffers, tied aliases included."""
        names = [n for n, v in self.graph.sources.items() if v.kind in ("param", "buffer")]
        return names + list(self.graph.aliases)

    def initial_state(self) -> dict[str, np.ndarray]:
        return {n: self.graph.initial[n].copy() for n, v in self.graph.sources.items()
                if v.kind in ("param", "buffer", "state")}

    def summary(self) -> Summary:
        g = self.graph
        params = g.params()
        trainable = [p for p in params if p.trainable]
        frozen = [p for p in params if not p.trainable]
        ops = {s: 0 for s in SECTIONS}
        flops = {s: 0 for s in SECTIONS}
        for n in g.nodes:
            ops[n.section] += 1
            flops[n.section] += op_flops(n)
        kept: dict[int, object] = {}
        for n in g.nodes:
            if n.section != "backward":
                continue
            for v in n.inputs:
                produced_forward = v.producer is not None and v.producer.section in ("forward", "loss")
                if produced_forward or v.kind == "input":
                    kept[id(v)] = v
        forward_nodes = [n for n in g.nodes if n.section == "forward"]
        forward_bytes = sum(v.type.nbytes for n in forward_nodes for v in n.outputs)
        weight_grads = [n for n in g.nodes if "weight_grad" in n.tags]
        by_op: dict[str, int] = {}
        for n in weight_grads:
            by_op[n.op] = by_op.get(n.op, 0) + 1
        req = requires_grad_set(g, trainable)
        first = next(((i, n) for i, n in enumerate(forward_nodes) if any(id(o) in req for o in n.outputs)), None)
        first_desc = None
        if first is not None:
            i, n = first
            first_desc = f"{n.op} -> %{n.outputs[0].name}" + (f" ({n.source})" if n.source else "")
        state_bytes = sum(v.type.nbytes for v in g.sources.values() if v.kind in ("param", "buffer", "state"))
        from .analysis.memory_plan import adapter_sources
        adapter_names = adapter_sources(g)[0]
        adapters = [p for p in params if p.name in adapter_names]
        optimizer_bytes = sum(v.type.nbytes for n, v in g.sources.items() if v.kind == "state" and n.startswith("optim."))
        return Summary(
            name=g.name, frontend=self.frontend, spec=repr(self.spec), optimizer=repr(self.optimizer),
            params_trainable=sum(p.type.numel for p in trainable), params_frozen=sum(p.type.numel for p in frozen),
            tensors_trainable=len(trainable), tensors_frozen=len(frozen), ops=ops, flops=flops,
            activations_kept=len(kept), activation_bytes_kept=sum(v.type.nbytes for v in kept.values()),
            forward_activation_bytes=forward_bytes, weight_grad_ops=len(weight_grads), weight_grad_ops_by_op=by_op,
            first_grad_op=first_desc, first_grad_index=first[0] if first else None, forward_ops=len(forward_nodes),
            state_bytes=state_bytes, opt_level=self.opt_level, passes=list(self.pass_report),
            adapter_params=sum(p.type.numel for p in adapters), adapter_tensors=len(adapters),
            optimizer_state_bytes=optimizer_bytes)
