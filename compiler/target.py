"""What the compiler knows about a backend: its target description.

The compiler never imports a backend. A backend describes itself through a `Target`, and the
passes ask only that:

  kernel_names()                       every kernel it offers: op names ("conv2d") and variants
                                       ("conv2d.winograd"); the op's own name is its default kernel
  workspace_bytes(kernel, node)        the scratch that kernel needs for this node's shapes and
                                       attrs; raises KernelRejected when it cannot run them (the
                                       same check the runtime makes when it loads a plan)
  estimated_seconds(kernel, node)      a cost-model estimate; it ranks candidates, nothing more
  measured_seconds(kernel, node, threads)  a timing on this machine (only when can_measure)
  cache_key()                          names this machine + kernel build, for cached timings
  exact_workspaces                     True when workspace_bytes is the backend's own answer, so
                                       a memory plan made with it is what the runtime allocates

A backend registers a factory under its name (`register_backend`); edgetune's runtime package
registers "cpu" when it is imported, so nothing here depends on it. `target_for(name)` returns
the registered backend's description, or the built-in one when that backend cannot describe
itself here (not built into this install): kernel choice then keeps every op's default kernel
and memory estimates leave kernel workspaces out. Writing a plan file needs the exact answer
and asks with `exact=True`, which raises instead.

`BuiltinTarget` is that built-in description: one kernel per registered op (its default), no
workspace, no timing. It serves -O0, the reference backend and the pure-compiler tests.
"""

from __future__ import annotations

import platform
from typing import Callable

from .errors import PlanError
from .ir import Node

ARCHES = ("x86_64", "aarch64")


def host_arch() -> str:
    m = platform.machine().lower()
    return "aarch64" if m in ("aarch64", "arm64") else "x86_64"


class KernelRejected(Exception):
    """A kernel's check refused a node (wrong dtype, shape or attribute for that kernel)."""


class Target:
    """The interface a backend implements (see the module docstring)."""

    name: str = "?"
    arch: str = "x86_64"
    can_measure: bool = False
    exact_workspaces: bool = False

    def kernel_names(self) -> list[str]:
        raise NotImplementedError

    def workspace_bytes(self, kernel: str, node: Node) -> int:
        raise NotImplementedError

    def estimated_seconds(self, kernel: str, node: Node) -> float:
        return 0.0

    def measured_seconds(self, kernel: str, node: Node, threads: int) -> float:
        raise NotImplementedError(f"the {self.name} target cannot time kernels")

    def cache_key(self) -> str:
        return f"{self.name}|{self.arch}"

    # ---- derived ------------------------------------------------------------------------------
    def accepts(self, kernel: str, node: Node) -> bool:
        try:
            self.workspace_bytes(kernel, node)
        except KernelRejected:
            return False
        return True

    def kernels_for(self, node: Node) -> list[str]:
        """The kernels of node's op (default first) that accept this node."""
        names = [k for k in self.kernel_names() if k == node.op or k.startswith(node.op + ".")]
        if len(names) <= 1:
            return names
        return [k for k in names if self.accepts(k, node)]

    def node_workspace(self) -> Callable[[Node], int]:
        """node -> bytes for the node's chosen kernel, as the memory planner wants it; a kernel
        that refuses the node is a PlanError naming the node and why."""
        def workspace(node: Node) -> int:
            kernel = node.kernel or node.op
            try:
                return self.workspace_bytes(kernel, node)
            except KernelRejected as e:
                where = f" at {node.source}" if node.source else ""
                raise PlanError(f"{self.name} backend cannot run {node.op} -> %{node.outputs[0].name}{where}: "
                                f"{e}") from None
        return workspace

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.arch})>"


class BuiltinTarget(Target):
    """Every op's default kernel, no workspace, no timing (see the module docstring)."""

    def __init__(self, name: str = "reference", arch: str | None = None, why: str = ""):
        self.name = name
        self.arch = arch or host_arch()
        self.why = why  # why the backend's own description is not used, for reports

    def kernel_names(self) -> list[str]:
        from .ops.registry import REGISTRY
        return sorted(REGISTRY)

    def workspace_bytes(self, kernel: str, node: Node) -> int:
        if kernel != node.op:
            raise KernelRejected(f"kernel {kernel!r} is not known to the built-in target")
        return 0


# ---- the registry -------------------------------------------------------------------------------
class BackendUnavailable(Exception):
    """Raised by a backend factory when the backend cannot describe itself in this install."""


_FACTORIES: dict[str, Callable[[str | None], Target]] = {}


def register_backend(name: str, factory: Callable[[str | None], Target]) -> None:
    """`factory(arch)` returns the backend's Target for that CPU architecture (None: this one),
    or raises BackendUnavailable."""
    _FACTORIES[name] = factory


def registered_backends() -> list[str]:
    return sorted(_FACTORIES)


def target_for(backend: str | Target = "cpu", arch: str | None = None, exact: bool = False) -> Target:
    """The description of `backend` (a name, or a Target passed through). See the module
    docstring for the fallback to the built-in description and for `exact`."""
    if isinstance(backend, Target):
        return backend
    if arch is not None and arch not in ARCHES:
        raise PlanError(f"unknown target architecture {arch!r}; known: {', '.join(ARCHES)}")
    if backend == "reference":
        return BuiltinTarget("reference", arch)
    factory = _FACTORIES.get(backend)
    if factory is None:
        why = f"no backend named {backend!r} is registered (registered: {registered_backends() or 'none'})"
    else:
        try:
            return factory(arch)
        except BackendUnavailable as e:
            why = str(e)
    if exact:
        raise PlanError(f"planning memory for the {backend} backend needs its kernels' own workspace sizes, "
                        f"but {why}")
    return BuiltinTarget(backend, arch, why)
