"""compiler/passes/matmul_views.py: permute/reshape copies around matmuls become strided views.

The view arithmetic against numpy's own views; an attention block (forward and the backward that
autodiff writes) losing every permute/reshape copy while training exactly as before on the
reference executor and on the C++ runtime; and the cases that must not fold."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

import edgetune as et
from edgetune.compiler.passes.dce import dead_code_elimination
from edgetune.compiler.passes.matmul_views import contiguous, reshape_strides
from edgetune.compiler.passes.pipeline import PassContext
from edgetune.compiler.verify import verify
from edgetune.models import BertSelfAttention
from passes.programs import load


def run_pass(g):
    note = importlib.import_module("edgetune.compiler.passes.matmul_views").run(g, PassContext(opt_level=2))
    dead_code_elimination(g)
    verify(g)
    return note


@pytest.mark.parametrize("shape,perm,new_shape", [
    ((2, 3, 8), None, (2, 3, 2, 4)),           # split the last dim (heads)
    ((2, 3, 2, 4), (0, 2, 1, 3), (4, 3, 4)),    # merge batch and heads after the permute
    ((2, 3, 2, 4), (0, 2, 1, 3), (2, 2, 12)),   # merge across the permute: a copy
    ((2, 2, 3, 4), (0, 2, 1, 3), (2, 3, 8)),    # the context going back to [B, T, H*D]
    ((4, 1, 6), (2, 1, 0), (3, 2, 1, 4)),
    ((5,), None, (1, 5, 1)),
])
def test_reshape_strides_agree_with_numpy_views(shape, perm, new_shape):
    base = np.arange(int(np.prod(shape)), dtype=np.float32)
    arr = base.reshape(shape)
    strides = contiguous(shape)
    if perm is not None:
        arr = arr.transpose(perm)
        shape, strides = tuple(shape[p] for p in perm), [strides[p] for p in perm]
    got = reshape_strides(shape, strides, new_shape)
    want = arr.reshape(new_shape)
    if got is None:
        assert not np.shares_memory(want, base)  # numpy had to copy too
        return
    view = np.lib.stride_tricks.as_strided(base, new_shape, [s * 4 for s in got])
    np.testing.assert_array_equal(view, want)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = BertSelfAttention(16, 2)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.attn(x)).mean(1))


def _attention_programs(peft, backend):
    torch.manual_seed(0)
    model = Attention()
    x, y = torch.randn(2, 5, 16), torch.randn(2, 3)
    prog0 = et.compile(model, (x,), y, loss="mse", peft=peft, opt_level=0, backend=backend)
    return prog0, et.optimize(prog0, passes=["matmul_views"], backend=backend), x.numpy(), y.numpy()


@pytest.mark.parametrize("peft", [et.peft.Full(), et.peft.BiasOnly()], ids=["full", "bias-only"])
def test_attention_has_no_copies_left(peft):
    prog0, prog, _, _ = _attention_programs(peft, "reference")
    ops0 = [n.op for n in prog0.graph.nodes]
    ops = [n.op for n in prog.graph.nodes]
    assert ops0.count("permute") >= 4
    assert "permute" not in ops and "reshape" not in ops, ops
    assert ops.count("matmul") == ops0.count("matmul")
    views = [n for n in prog.graph.nodes if n.op == "matmul" and any(k.endswith("_strides") for k in n.attrs)]
    assert len(views) >= 2
    rec = prog.pass_report[-1]
    assert rec.note and rec.arena_after <= rec.arena_before


@pytest.mark.native
@pytest.mark.parametrize("peft", [et.peft.Full(), et.peft.BiasOnly()], ids=["full", "bias-only"])
def test_attention_trains_exactly_as_before(peft):
    prog0, prog, x, y = _attention_programs(peft, "cpu")
    for backend in ("reference", "cpu"):
        s0, s1 = et.Session(prog0, backend=backend), et.Session(prog, backend=backend)
        for _ in range(3):
            np.testing.assert_allclose(s1.step(x, y), s0.step(x, y), rtol=1e-5, atol=1e-7)
        w0, w1 = s0.state_dict(), s1.state_dict()
        for k in w0:
            np.testing.assert_allclose(w1[k], w0[k], rtol=1e-5, atol=1e-6, err_msg=f"{backend} {k}")


SHARED = '''program p {
  input %q: f32[2,3,8]
  input %k: f32[2,3,8]

  forward:
    %q4: f32[2,3,2,4] = reshape(%q) {shape=[2, 3, 2, 4]}
    %qh: f32[2,2,3,4] = permute(%q4) {dims=[0, 2, 1, 3]}
    %k4: f32[2,3,2,4] = reshape(%k) {shape=[2, 3, 2, 4]}
    %kh: f32[2,2,4,3] = permute(%k4) {dims=[0, 2, 3, 1]}
    %s: f32[2,2,3,3] = matmul(%qh, %kh)
    %e: f32[2,2,3,4] = exp(%qh)

  output s = %s
  output e = %e
}
'''


def test_a_view_with_another_reader_stays_and_the_product_reads_it():
    g = load(SHARED)
    q, k = np.random.default_rng(0).standard_normal((2, 2, 3, 8)).astype(np.float32)
    from edgetune.runtime.reference import ReferenceExecutor
    want, _ = ReferenceExecutor(g).run({"q": q, "k": k}, {})
    run_pass(g)
    ops = [n.op for n in g.nodes]
    assert ops.count("permute") == 1, ops  # qh stays for exp; kh folds
    mm = next(n for n in g.nodes if n.op == "matmul")
    assert mm.inputs[0].name == "qh" and "lhs_strides" not in mm.attrs
    assert mm.inputs[1].name == "k" and mm.attrs["rhs_strides"] == [24, 4, 1, 8]
    got, _ = ReferenceExecutor(g).run({"q": q, "k": k}, {})
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


PINNED = '''program p {
  input %a: f32[2,3,4]
  input %b: f32[2,4,5]

  forward:
    %c: f32[2,3,5] = matmul(%a, %b)
    %t: f32[2,5,3] = permute(%c) {dims=[0, 2, 1]}

  output c = %c
  output t = %t
}
'''


def test_a_product_that_is_an_output_keeps_its_layout():
    g = load(PINNED)
    assert run_pass(g) == ""
    assert [n.op for n in g.nodes] == ["matmul", "permute"]


COPYING_RESHAPE = '''program p {
  input %q: f32[2,3,8]
  input %w: f32[12,5]

  forward:
    %q4: f32[2,3,2,4] = reshape(%q) {shape=[2, 3, 2, 4]}
    %qh: f32[2,2,3,4] = permute(%q4) {dims=[0, 2, 1, 3]}
    %m: f32[2,2,12] = reshape(%qh) {shape=[2, 2, 12]}
    %s: f32[2,2,5] = matmul(%m, %w)

  output s = %s
}
'''


def test_a_reshape_that_needs_a_copy_is_not_folded():
    g = load(COPYING_RESHAPE)
    assert run_pass(g) == ""
    assert [n.op for n in g.nodes] == ["reshape", "permute", "reshape", "matmul"]
