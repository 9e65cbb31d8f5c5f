"""The C++ runtime's backends, described to the compiler (compiler/target.py).

`NativeTarget` answers the compiler's questions by asking the C++ module `edgetune._native`:
which kernels the backend registers, each kernel's `check` and `workspace` for a node (the very
functions the plan loader calls, so planner and runtime agree to the byte), and a timing of a
kernel on this machine. Its cost model is the CPU roofline of compiler/analysis/cost_model.py at
the rates of the architecture being compiled for. The ".own" GEMM variants (matmul.own, linear.own:
the built-in GEMM where the op-named kernel uses the build's GEMM library) are offered only when
the target has a library — this build's (`gemm_backend`) when compiling for this machine; none
for another architecture (aarch64 builds use the built-in kernel) — since otherwise they are the
very same code as the op-named kernel.

`CudaTarget` describes the cuda backend (csrc/kernels/cuda/). Its kernels' check and workspace
functions are host code, so a module built with CUDA answers them on a machine with no GPU: a
plan for a Jetson is compiled on a laptop. Each cuda conv variant ("conv2d.winograd", ...) runs
the path the shape picks, so only the default kernel of each op is offered and kernel choice has
nothing to rank; there is no timing (nothing runs on the GPU at compile time).

Importing this module registers every backend the module was built with; when the module is
missing, the registered factory raises BackendUnavailable and the compiler falls back to its
built-in description (compiler/target.py says what that means).
"""

from __future__ import annotations

import hashlib
import os
import platform

from ..compiler.analysis.cost_model import RATES_BY_ARCH, estimated_seconds
from ..compiler.errors import EdgetuneError
from ..compiler.ir import Node
from ..compiler.target import BackendUnavailable, KernelRejected, Target, host_arch, register_backend
from .native import native, native_error

# backends the C++ runtime can be built with; each registers here whether or not this build has it
NATIVE_BACKENDS = ("cpu", "cuda")


def _specs(node: Node):
    ins = [(v.dtype, list(v.shape)) for v in node.inputs]
    outs = [(v.dtype, list(v.shape)) for v in node.outputs]
    return ins, outs


def _cpu_model() -> str:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return model


class NativeTarget(Target):
    exact_workspaces = True

    def __init__(self, name: str, arch: str | None, module):
        self.name = name
        self.arch = arch or host_arch()
        self._mod = module
        # another architecture's kernels cannot be timed here; the cost model ranks them
        self.can_measure = self.arch == host_arch()
        self._kernels = list(module.kernel_names(name))
        # the GEMM library the op-named kernels run on the target ("mkl", "openblas", or None)
        backend = getattr(module, "gemm_backend", "own")
        self.gemm_library = backend if self.arch == host_arch() and backend != "own" else None
        if self.gemm_library is None:
            self._kernels = [k for k in self._kernels if not k.endswith(".own")]
        # the oneDNN conv variants exist in this build only (cmake/onednn.cmake): never pinned in a
        # plan for another architecture, whose build may lack them, nor with EDGETUNE_ONEDNN=0 (a
        # plan for an x86-64 device without libdnnl.so.3)
        if self.arch != host_arch() or os.environ.get("EDGETUNE_ONEDNN", "").strip() == "0":
            self._kernels = [k for k in self._kernels if not k.endswith(".onednn")]
        self._rates = RATES_BY_ARCH[self.arch]
        self._cache_key: str | None = None

    def kernel_names(self) -> list[str]:
        return self._kernels

    def workspace_bytes(self, kernel: str, node: Node) -> int:
        ins, outs = _specs(node)
        try:
            return int(self._mod.workspace_bytes(self.name, kernel, ins, outs, node.attrs))
        except self._mod.NativeError as e:
            raise KernelRejected(str(native_error(e))) from None

    def estimated_seconds(self, kernel: str, node: Node) -> float:
        return estimated_seconds(node, kernel, self._rates, self.gemm_library)

    def measured_seconds(self, kernel: str, node: Node, threads: int) -> float:
        ins, outs = _specs(node)
        return float(self._mod.time_kernel(self.name, kernel, ins, outs, node.attrs, threads, 5))

    def cache_key(self) -> str:
        if self._cache_key is None:
            with open(self._mod.__file__, "rb") as f:
                build = hashlib.sha1(f.read()).hexdigest()[:12]
            self._cache_key = f"{self.name}|{platform.machine()}|{_cpu_model()}|{build}"
        return self._cache_key


class CudaTarget(NativeTarget):
    """The cuda backend: exact workspaces from the module, the default kernel of each op, no timing.
    `arch` stays the host's CPU architecture (the GPU's code is chosen at build time:
    CMAKE_CUDA_ARCHITECTURES)."""

    def __init__(self, name: str, arch: str | None, module):
        super().__init__(name, arch, module)
        self.can_measure = False
        self._kernels = [k for k in self._kernels if "." not in k]

    def estimated_seconds(self, kernel: str, node: Node) -> float:
        return 0.0

    def measured_seconds(self, kernel: str, node: Node, threads: int) -> float:
        raise NotImplementedError("cuda kernels are not timed at compile time")


def _factory(name: str):
    def make(arch: str | None) -> Target:
        try:
            mod = native()
        except EdgetuneError as e:
            raise BackendUnavailable(str(e)) from None
        if name not in mod.backends():
            raise BackendUnavailable(f"this build of the C++ runtime has no {name} backend "
                                     f"(it has: {', '.join(mod.backends())})")
        return (CudaTarget if name == "cuda" else NativeTarget)(name, arch, mod)
    return make


for _name in NATIVE_BACKENDS:
    register_backend(_name, _factory(_name))
