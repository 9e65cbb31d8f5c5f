"""The cuda backend as the compiler and the Python API see it (issue 12), on a machine with no GPU.

In a build without the CUDA backend: compiling for "cuda" works (the built-in description), and
writing a cuda plan or opening a cuda Session fails with a PlanError that says the build has no cuda
backend. In a build with it (EDGETUNE_NATIVE pointing at a -DEDGETUNE_CUDA=ON module): the plan is
memory-planned with the cuda kernels' own workspaces, only default kernels are chosen, and a Session
on a machine without a GPU fails with an error naming the reason — never a crash."""

from __future__ import annotations

import pytest
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler.errors import EdgetuneError, PlanError
from edgetune.compiler.target import target_for
from edgetune.runtime.native import native

pytestmark = pytest.mark.native


def _prog():
    torch.manual_seed(0)
    model = models.build("small_cnn")
    (x,), y = models.example_inputs("small_cnn", model, batch=2)
    return et.compile(model, (x,), y, peft=et.peft.BiasOnly(), backend="cuda")


def _has_cuda() -> bool:
    return "cuda" in native().backends()


@pytest.mark.skipif("cuda" in native().backends(), reason="this module has the cuda backend")
def test_without_the_cuda_backend_plans_and_sessions_say_why(tmp_path):
    prog = _prog()
    with pytest.raises(PlanError, match="has no cuda backend"):
        prog.save(tmp_path / "p.etp", backend="cuda")
    with pytest.raises(PlanError, match="has no cuda backend"):
        et.Session(prog, backend="cuda")
    cpu_plan = tmp_path / "cpu.etp"
    _prog().save(cpu_plan, backend="cpu")
    with pytest.raises(EdgetuneError, match="cuda"):
        et.Session(cpu_plan, backend="cuda")


@pytest.mark.skipif("cuda" not in native().backends(), reason="needs a module built with -DEDGETUNE_CUDA=ON")
def test_cuda_plans_use_the_cuda_kernels_workspaces_and_default_kernels(tmp_path):
    target = target_for("cuda", exact=True)
    assert target.exact_workspaces and not target.can_measure
    assert all("." not in k for k in target.kernel_names())
    prog = _prog()
    assert prog.memory_plan("cuda").total_bytes > 0
    size = prog.save(tmp_path / "p.etp", backend="cuda")
    assert size > 0
    kernels = {n.kernel or n.op for n in prog.graph.nodes}
    assert all("." not in k for k in kernels)


@pytest.mark.skipif("cuda" not in native().backends(), reason="needs a module built with -DEDGETUNE_CUDA=ON")
def test_a_cuda_session_without_a_gpu_is_a_clear_error(tmp_path):
    prog = _prog()
    try:
        sess = et.Session(prog, backend="cuda")
    except EdgetuneError as e:
        assert "cuda" in str(e).lower() or "gpu" in str(e).lower() or "device" in str(e).lower(), e
    else:  # a machine with a GPU: it trains
        (x,), y = models.example_inputs("small_cnn", models.build("small_cnn"), batch=2)
        assert sess.step(x.numpy(), y.numpy()) > 0
