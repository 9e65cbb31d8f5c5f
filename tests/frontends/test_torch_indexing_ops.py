"""PyTorch frontend: comparisons (eq ne lt le gt ge, .Tensor and .Scalar, with torch's type
promotion), torch.cumsum (its dtype argument, int -> int64 promotion) and torch.gather (issue 14),
in small models compiled with et.compile and trained a few steps against PyTorch:

  * semantics: the float64 reference run against PyTorch in float64 (support.Float64Oracle);
  * precision: the float32 backends (reference, the C++ cpu runtime) against the float64 reference;
  * an index outside the gathered dim fails the step on both backends, naming gather and the index.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

import edgetune as et
from edgetune.frontends.from_torch import import_module
from edgetune.runtime.reference import ReferenceExecutor
from support import Float64Oracle, assert_spec_respected, edgetune_run, torch_reference_run

PAD = 1
BATCH, SEQ, STEPS = 4, 7, 3


class RobertaPositions(nn.Module):
    """Token + position embeddings with RoBERTa's position ids (create_position_ids_from_input_ids:
    pads keep position PAD, the other tokens count from PAD + 1): ne.Scalar, an int32 cumsum (which
    torch sums in int64), casts back and forth, integer mul / add; then eq.Scalar as a masked_fill
    mask and gt.Scalar on an activation that needs a gradient (a leaky ReLU through where)."""

    def __init__(self, vocab=16, hidden=8, max_pos=SEQ + PAD + 2, classes=3):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden, padding_idx=PAD)
        self.pos = nn.Embedding(max_pos, hidden, padding_idx=PAD)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, input_ids):
        mask = input_ids.ne(PAD).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + PAD
        h = self.norm(self.tok(input_ids) + self.pos(positions))
        h = h.masked_fill(input_ids.eq(PAD).unsqueeze(-1), 0.0)
        h = torch.where(h > 0, h, 0.1 * h)
        return self.head(h.mean(1))


def roberta_ids(g: torch.Generator) -> torch.Tensor:
    ids = torch.randint(2, 16, (BATCH, SEQ), generator=g)
    for row, length in enumerate([SEQ, 5, 3, 6][:BATCH]):  # right padding of different lengths
        ids[row, length:] = PAD
    ids[0, 2] = PAD  # and a pad inside a row: its position stays PAD, the later ones continue
    return ids


class GatherScores(nn.Module):
    """torch.gather on trainable parameters along dim 1 (run-time indices, repeated, so the
    scatter-add of the backward sums) and dim 0 (a constant index buffer), then on an activation
    with an index shorter than it along dim; a float cumsum on the gradient path; comparisons of
    mixed dtypes (int64 against float: compared in float) and eq.Tensor of two int64 tensors."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(BATCH, 9))
        self.rows = nn.Parameter(torch.randn(5, 6))
        self.register_buffer("row_idx", torch.tensor([[0, 4, 4, 1, 2, 0], [3, 3, 3, 3, 0, 1],
                                                      [2, 1, 0, 4, 4, 4], [1, 1, 2, 2, 3, 3]]))
        self.proj = nn.Linear(4, 3)

    def forward(self, x, idx, pick):  # x f32 [B, 6], idx i64 [B, 6] in [0, 9), pick i64 [B, 4] in [0, 6)
        a = torch.gather(self.table, 1, idx)
        b = torch.gather(self.rows, 0, self.row_idx)
        h = torch.cumsum(x * a + b, dim=1)
        scale = idx.lt(x * 9).float() + (idx == self.row_idx).float() * 0.5 + (idx > 4.5).float() * 0.25
        h = h * (1 + scale) + h.ge(0).float() * 0.1 - x.le(0).to(torch.float32) * 0.2
        return self.proj(torch.gather(h, 1, pick))


def gather_inputs(g: torch.Generator):
    return (torch.randn(BATCH, 6, generator=g), torch.randint(0, 9, (BATCH, 6), generator=g),
            torch.randint(0, 6, (BATCH, 4), generator=g))


CASES = {
    "roberta_positions": (RobertaPositions, lambda g: (roberta_ids(g),)),
    "gather_scores": (GatherScores, gather_inputs),
}
OPTIMIZERS = {
    "sgd": lambda: et.optim.SGD(lr=0.05, momentum=0.9),
    "adamw": lambda: et.optim.AdamW(lr=1e-2, weight_decay=0.01),
}


@functools.lru_cache(maxsize=4)
def compiled_case(name: str, opt: str):
    """(model, batches, program, float64 oracle), shared by the tests of one combination."""
    model, batches, prog = make_case(name, opt)
    return model, batches, prog, Float64Oracle(prog, batches)


def make_case(name: str, opt: str):
    ctor, inputs_fn = CASES[name]
    torch.manual_seed(0)
    model = ctor().train()
    g = torch.Generator().manual_seed(1)
    batches = [(tuple(inputs_fn(g)), torch.randint(0, 3, (BATCH,), generator=g)) for _ in range(STEPS)]
    prog = et.compile(model, batches[0][0], batches[0][1], loss="cross_entropy", peft=et.peft.Full(),
                      optimizer=OPTIMIZERS[opt]())
    et.verify(prog.graph)
    return model, batches, prog


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_reference_trains_like_pytorch_in_float64(name, opt):
    model, batches, prog, oracle = compiled_case(name, opt)
    torch_losses, theirs = torch_reference_run(model, prog, batches, float64=True)
    oracle.assert_semantics(torch_losses, theirs)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_backends_train_like_the_float64_reference(name, opt, backend):
    model, batches, prog, oracle = compiled_case(name, opt)
    losses, ours, _ = edgetune_run(prog, batches, backend=backend)
    assert_spec_respected(model, prog, ours)
    oracle.assert_close(losses, ours, backend)
    theirs, _ = torch_reference_run(model, prog, batches)  # and float32 PyTorch's losses, loosely
    np.testing.assert_allclose(losses, theirs, rtol=1e-4)


def test_lowering_ops_and_promotions():
    model, batches, prog = make_case("gather_scores", "sgd")
    ops = [n.op for n in prog.graph.section_nodes("forward")]
    for op in ("gather", "cumsum", "lt", "eq", "gt", "ge", "le"):
        assert op in ops, (op, ops)
    assert ops.count("gather") == 3
    # the trainable table's gradient is the scatter-add; the input x needs none
    assert "gather_backward" in [n.op for n in prog.graph.section_nodes("backward")]
    # idx (int64) against a float: both compared as f32
    lt = next(n for n in prog.graph.nodes if n.op == "lt")
    assert [v.dtype for v in lt.inputs] == ["f32", "f32"] and lt.outputs[0].dtype == "bool"
    assert lt.inputs[0].producer.op == "cast"
    model, batches, prog = make_case("roberta_positions", "sgd")
    cumsum = next(n for n in prog.graph.nodes if n.op == "cumsum")
    assert cumsum.attrs == {"dim": 1} and cumsum.inputs[0].dtype == "i64"  # int32 mask summed in int64


class CumsumForms(nn.Module):
    def forward(self, x, ids):
        return (torch.cumsum(x, -1, dtype=torch.float64).float() + torch.cumsum(ids, 0).float()
                + torch.cumsum(ids.ge(2), 1).float() + torch.cumsum(x.gt(ids), 1, dtype=torch.float32)
                + ids.eq(True).float() + x.ne(x).float())


def test_cumsum_dtypes_and_comparison_forms_forward():
    torch.manual_seed(0)
    x, ids = torch.randn(3, 5), torch.randint(0, 4, (3, 5))
    imported = import_module(CumsumForms(), (x, ids))
    g = imported.graph
    cumsums = [n for n in g.nodes if n.op == "cumsum"]
    assert [n.inputs[0].dtype for n in cumsums] == ["f64", "i64", "i64", "f32"]
    assert [n.attrs["dim"] for n in cumsums] == [1, 0, 1, 1]  # -1 resolved
    state = {n: g.initial[n] for n, v in g.sources.items() if v.kind in ("param", "buffer", "state")}
    out, _ = ReferenceExecutor(g).run({n: t.numpy() for n, t in zip(imported.input_names, (x, ids))}, state)
    with torch.no_grad():
        expected = CumsumForms()(x, ids)
    np.testing.assert_allclose(out["output"], expected.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("bad", [9, -1])
def test_gather_index_out_of_range_fails_the_step(backend, bad):
    model, batches, prog = make_case("gather_scores", "sgd")
    sess = et.Session(prog, backend=backend)
    (x, idx, pick), y = batches[0]
    idx = idx.clone()
    idx[2, 3] = bad
    with pytest.raises(et.InputError, match=rf"gather.*index {bad} at position \[2, ?3\].*outside \[0, 9\)"):
        sess.step(x, idx, pick, y)
