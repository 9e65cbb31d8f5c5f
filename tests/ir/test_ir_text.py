"""The text IR round-trips: print(parse(print(g))) == print(g), for hand-written programs and
for every compiled zoo model; and the parser rejects malformed text with the line number."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler.errors import IRError
from edgetune.compiler.ir_text import parse_graph, print_graph
from edgetune.compiler.verify import verify

HAND_WRITTEN = '''program tiny {
  input %x: f32[2,3]
  input %target: i64[2]
  param %fc.weight: f32[4,3] trainable
  param %fc.bias: f32[4]
  param %"onnx::Gemm_7": f32[4]
  const %c0: f32[] = 1.0
  const %neg: f32[2] = [-inf, 0.5]
  state %optim.lr: f32[]

  forward:
    %y: f32[2,4] = linear(%x, %fc.weight, %fc.bias) @"model.py:3 fc"
    %z: f32[2,4] = add(%y, %"onnx::Gemm_7")

  loss:
    %loss: f32[] = cross_entropy(%z, %target) {ignore_index=-100, label_smoothing=0.0, reduction="mean"}

  backward:
    %dz: f32[2,4] = cross_entropy_backward(%c0, %z, %target) {ignore_index=-100, label_smoothing=0.0, reduction="mean"}
    %dzt: f32[4,2] = permute(%dz) {dims=[1, 0]}
    %dw: f32[4,3] = matmul(%dzt, %x)

  update:
    %w1: f32[4,3] = sgd_update(%fc.weight, %dw, %optim.lr) {dampening=0.0, maximize=false, momentum=0.0, nesterov=false, weight_decay=0.0}

  output loss = %loss
  assign %fc.weight <- %w1
}
'''


def test_hand_written_program_round_trips_and_verifies():
    weights = {"fc.weight": np.zeros((4, 3), np.float32), "fc.bias": np.zeros(4, np.float32),
               "onnx::Gemm_7": np.zeros(4, np.float32), "optim.lr": np.asarray(0.1, np.float32)}
    g = parse_graph(HAND_WRITTEN, initial=weights)
    verify(g)
    assert print_graph(g) == HAND_WRITTEN
    assert g.sources["fc.weight"].trainable and not g.sources["fc.bias"].trainable
    assert np.isneginf(g.initial["neg"][0])
    assert g.nodes[0].source == "model.py:3 fc"
    assert [n.section for n in g.nodes] == ["forward", "forward", "loss", "backward", "backward", "backward", "update"]


ZOO = {
    "mlp": (lambda: models.MLP(), {}),
    "small_cnn": (lambda: models.SmallCNN(width=4), {"resolution": 16}),
    "mobilenet_v2": (lambda: models.MobileNetV2(num_classes=10, width_mult=0.25), {"resolution": 32}),
    "resnet18": (lambda: models.ResNet18(num_classes=10, width=4), {"resolution": 32}),
    "bert": (lambda: models.BertEncoder(vocab_size=50, hidden=16, layers=2, heads=2, intermediate=32, max_len=8),
             {"seq_len": 8}),
    "gpt": (lambda: models.GPTDecoder(vocab_size=40, hidden=16, layers=2, heads=2, max_len=8), {"seq_len": 8}),
}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(ZOO))
def test_compiled_zoo_programs_round_trip(name, train):
    ctor, kw = ZOO[name]
    torch.manual_seed(0)
    model = ctor().train(train)
    inputs, target = models.example_inputs(name, model, batch=2, **kw)
    prog = et.compile(model, tuple(inputs), target, peft=et.peft.BiasOnly(), optimizer=et.optim.AdamW())
    text = str(prog)
    g = parse_graph(text, initial=prog.graph.initial)
    verify(g)
    assert print_graph(g) == text


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("program p {\n  input %x: f32[2]\n  forward:\n    %y: f32[2] = relu(%nope)\n}\n", "line 4: %nope used before"),
    ("program p {\n  input %x: f32[2]\n  forward:\n    %y: f32[2] = relu(%x) {a=}\n}\n", "line 4"),
    ("program p {\n  input %x: f32[2]\n  %y: f32[2] = relu(%x)\n}\n", "line 3: node outside a section"),
    ("program p {\n  input %x: q32[2]\n}\n", "unknown dtype"),
    ("program p {\n  input %x: f32[2]\n  forward:\n    %x: f32[2] = relu(%x)\n}\n", "defined twice"),
    ("program p {\n  const %c: f32[100] = <100 values>\n}\n", "needs its data"),
])
def test_parser_rejects_malformed_text(text, message):
    with pytest.raises(IRError, match=message):
        parse_graph(text)
