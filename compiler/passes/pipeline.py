"""The optimisation pipeline: which passes run at which level, in which order, and what each did.

    -O0  dead-code elimination only: the program exactly as autodiff + the optimizer wrote it
    -O1  graph rewrites that never cost anything at run time:
         fold_batchnorm, fold_constants, reorder_updates
    -O2  (default) + compress_activations, fuse_epilogue, fuse_elementwise, matmul_views,
         plan_layout, schedule_memory, select_kernels by the cost model
    -O3  + recompute, select_kernels by measuring each candidate kernel on this machine

The order matters and is fixed (PIPELINE): BN folding produces the frozen-only arithmetic that
constant folding evaluates; masks must replace stored activations before the epilogue fusion
looks for activation-derivative multiplies to fuse into grad-input kernels; the element-wise
fusion takes what is left; matmul_views then turns the permute/reshape copies around matmuls
(attention's heads) into strided views, after the epilogue fusions so a masked matmul keeps its
plain output; plan_layout then stores channels-last (NHWC) the regions whose kernels prefer it,
seeing the masks and fused nodes as they will run; scheduling and kernel choice come last because
they only reorder and annotate. `--disable-pass NAME` removes one pass from the level's set; `passes=[...]` names the
set exactly (the ablation benchmark uses it: O0 + one pass).

After each pass the graph is verified, dead code is removed, and a PassRecord notes op counts and
the planned arena peak / persistent bytes before and after (the memory planner is cheap), so
`program.pass_report` shows what every pass bought.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import PlanError, SpecError
from ..ir import Graph
from ..target import BuiltinTarget, Target, target_for
from ..verify import verify
from ..analysis.memory_plan import plan_memory
from .dce import dead_code_elimination

# name -> (lowest level that runs it, one-line description)
PIPELINE: list[tuple[str, int, str]] = [
    ("fold_batchnorm", 1, "inference-mode BatchNorm with frozen statistics folded into the conv/linear before it"),
    ("fold_constants", 1, "values computed from frozen parameters and constants only, evaluated at compile time"),
    ("compress_activations", 2, "relu/hardtanh outputs kept for backward as 1-bit masks"),
    ("fuse_epilogue", 2, "bias+activation into conv/linear; activation derivative into grad-input kernels"),
    ("fuse_elementwise", 2, "chains of element-wise ops into one fused_elementwise kernel"),
    ("matmul_views", 2, "permute/reshape copies around matmuls folded into strided operand and output views"),
    ("recompute", 3, "cheap element-wise values recomputed in backward instead of kept, where the peak drops"),
    ("plan_layout", 2, "regions of 1x1 / depthwise convs and batch norm stored channels-last (NHWC)"),
    ("reorder_updates", 1, "each optimizer update right after its gradient is final, weight grads first"),
    ("schedule_memory", 2, "memory-aware topological order of the backward/update nodes"),
    ("select_kernels", 2, "per-node kernel choice: cost model (-O2) or measured on this machine (-O3)"),
]
PASS_NAMES = [name for name, _, _ in PIPELINE]
DEFAULT_OPT_LEVEL = 2


@dataclass
class PassContext:
    """What a pass may need beyond the graph."""

    opt_level: int
    # the backend's description (compiler/target.py): its kernels, their workspaces and costs
    target: Target = field(default_factory=BuiltinTarget)
    # "cost" (the target's cost model) or "measure" (time candidates on this machine)
    kernel_selection: str = "cost"
    threads: int = 0  # threads the plan will run with (kernel timing); 0 = all cores

    @property
    def workspace_bytes(self) -> Callable:
        """node -> kernel workspace bytes, for passes that plan memory (0 on the built-in target)."""
        return self.target.node_workspace()


@dataclass
class PassRecord:
    name: str
    ops_before: int
    ops_after: int
    arena_before: int
    arena_after: int
    persistent_before: int
    persistent_after: int
    seconds: float
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _pass_function(name: str):
    # imported lazily: each pass is its own module
    import importlib
    return importlib.import_module(f"{__package__}.{name}").run


def passes_for(opt_level: int, disable=(), passes=None) -> list[str]:
    """The ordered pass list for a level (or for an explicit `passes` set), minus `disable`."""
    unknown = [p for p in list(disable) + list(passes or []) if p not in PASS_NAMES]
    if unknown:
        raise SpecError(f"unknown pass(es) {unknown}; passes are: {', '.join(PASS_NAMES)}")
    if not isinstance(opt_level, int) or not 0 <= opt_level <= 3:
        raise SpecError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    chosen = set(passes) if passes is not None else {n for n, lvl, _ in PIPELINE if lvl <= opt_level}
    return [n for n in PASS_NAMES if n in chosen and n not in set(disable)]


def _measure(g: Graph, workspace_bytes) -> tuple[int, int]:
    from ..analysis.memory_plan import plan_memory
    try:
        plan = plan_memory(g, workspace_bytes)
    except Exception:  # noqa: BLE001  a graph with sources lacking data (hand-written tests)
        return -1, -1
    return plan.arena_bytes, plan.persistent_bytes


def run_pipeline(g: Graph, names: list[str], ctx: PassContext, measure: bool = True) -> list[PassRecord]:
    """Run the named passes in order on `g` (in place). Returns one record per pass."""
    records = []
    ws = ctx.workspace_bytes
    before = _measure(g, ws) if measure else (-1, -1)
    for name in names:
        ops_before = len(g.nodes)
        t0 = time.perf_counter()
        note = _pass_function(name)(g, ctx) or ""
        dead_code_elimination(g)
        verify(g)
        seconds = time.perf_counter() - t0
        after = _measure(g, ws) if measure else (-1, -1)
        records.append(PassRecord(name, ops_before, len(g.nodes), before[0], after[0], before[1], after[1],
                                  seconds, note))
        before = after
    return records


def optimize(program, opt_level: int = DEFAULT_OPT_LEVEL, disable=(), passes=None, backend="cpu",
             kernel_selection: str | None = None, arch: str | None = None, threads: int = 0):
    """A new Program: `program` (left untouched) optimised at `opt_level` (see the module docstring).
    backend: the backend name ("cpu", "reference", ...) or a compiler.target.Target; a backend that
    cannot describe itself in this install leaves every op on its default kernel (target.py);
    kernel_selection: "cost" or "measure" (default: measure at -O3, cost model otherwise);
    arch: "x86_64" or "aarch64" when compiling for another machine (kernels then chosen by the
    cost model); threads: the thread count the plan will run with (for kernel timing)."""
    names = passes_for(opt_level, disable, passes)
    if kernel_selection is None:
        kernel_selection = "measure" if opt_level >= 3 and passes is None else "cost"
    if kernel_selection not in ("cost", "measure"):
        raise SpecError(f"kernel_selection must be 'cost' or 'measure', got {kernel_selection!r}")
    try:
        target = target_for(backend, arch)
    except PlanError as e:
        raise SpecError(str(e)) from None
    g = copy.deepcopy(program.graph)
    ctx = PassContext(opt_level, target, kernel_selection, threads)
    records = run_pipeline(g, names, ctx)
    out = program.with_graph(g)
    out.opt_level = opt_level
    out.pass_report = list(getattr(program, "pass_report", [])) + records
    return out


def format_report(records: list[PassRecord]) -> str:
    def mib(n):
        return "-" if n < 0 else f"{n / 2**20:.2f}"

    lines = ["pass                    ops before -> after   arena MiB before -> after   persistent MiB   ms    note"]
    for r in records:
        lines.append(f"{r.name:<22} {r.ops_before:>6} -> {r.ops_after:<6}   {mib(r.arena_before):>8} -> "
                     f"{mib(r.arena_after):<8}        {mib(r.persistent_before):>6} -> {mib(r.persistent_after):<6}"
                     f" {r.seconds * 1e3:>6.0f}  {r.note}")
    return "\n".join(lines)
