"""Sparse backprop is a graph property: these tests read the compiled program, not timings.

PockEngine's claims, as asserts: bias-only has no weight-gradient op; last-k has no backward
op above the last k layers and keeps no activation of the frozen stack; nothing before the
first trainable op gets a backward node.
"""

from __future__ import annotations

import pytest
import torch

import edgetune as et
from edgetune import models


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    model = models.MobileNetV2(num_classes=10, width_mult=0.5).eval()
    inputs, target = models.example_inputs("mobilenet_v2", model, batch=2, resolution=64)
    return model, tuple(inputs), target


def compile_with(case, spec):
    model, inputs, target = case
    return et.compile(model, inputs, target, peft=spec, optimizer=et.optim.SGD(lr=0.01, momentum=0.9))


def backward_sources(prog):
    return {n.source for n in prog.graph.nodes if n.section == "backward" and n.source}


def test_bias_only_mobilenet_has_no_weight_gradient_convolution(mobilenet):
    prog = compile_with(mobilenet, et.peft.BiasOnly())
    ops = [n.op for n in prog.graph.nodes]
    assert "conv2d_grad_weight" not in ops
    assert prog.summary().weight_grad_ops == 0
    # every trainable tensor is 1-d and the data gradient still flows through every conv
    assert all(prog.graph.sources[n].type.rank == 1 for n in prog.trainable_names)
    assert ops.count("conv2d_grad_input") == ops.count("conv2d") - 1  # not into the input image
    summary = prog.summary()
    assert summary.params_trainable < 0.02 * (summary.params_trainable + summary.params_frozen)


def test_full_mobilenet_has_one_weight_gradient_per_conv(mobilenet):
    prog = compile_with(mobilenet, et.peft.Full())
    ops = [n.op for n in prog.graph.nodes]
    assert ops.count("conv2d_grad_weight") == ops.count("conv2d")
    assert prog.summary().weight_grad_ops == ops.count("conv2d") + 1  # + the classifier


def test_last2_mobilenet_backward_touches_only_the_last_two_layers(mobilenet):
    prog = compile_with(mobilenet, et.peft.LastK(2))
    assert prog.trainable_names == ["features.18.0.weight", "features.18.1.weight", "features.18.1.bias",
                                    "classifier.1.weight", "classifier.1.bias"]
    g = prog.graph
    forward = [n for n in g.nodes if n.section == "forward"]
    first_trainable = next(i for i, n in enumerate(forward) if any(v.trainable for v in n.inputs))
    assert forward[first_trainable].source.endswith("features.18.0")
    # no backward op traces back to a layer above features.18
    for src in backward_sources(prog):
        parts = src.split()
        if len(parts) == 2 and parts[1].startswith("features."):  # "file:line module.path"
            assert parts[1].startswith("features.18"), src
    # no conv2d_grad_input at all: the first trainable layer needs no input gradient
    assert not any(n.op == "conv2d_grad_input" for n in g.nodes)
    # activations kept: only values produced at or after the last two layers' input
    frozen_stack = {id(v) for n in forward[:first_trainable] for v in n.outputs}
    kept = {id(v) for n in g.nodes if n.section == "backward" for v in n.inputs}
    # the frozen stack's *output* feeds features.18.0's weight gradient; nothing earlier is kept
    boundary = {id(v) for v in forward[first_trainable].inputs}
    assert kept & frozen_stack <= boundary
    summary = prog.summary()
    assert summary.first_grad_index == first_trainable
    assert summary.activation_bytes_kept < 0.05 * summary.forward_activation_bytes


def test_no_backward_before_first_trainable_op():
    torch.manual_seed(0)
    model = models.SmallCNN(num_classes=4, width=4).train()
    inputs, target = models.example_inputs("small_cnn", model, batch=2, resolution=16)
    prog = et.compile(model, tuple(inputs), target, peft=et.peft.Select(include=["conv3.*", "bn3.*", "fc.*"]))
    for src in backward_sources(prog):
        assert not src.endswith(("conv1", "bn1", "conv2", "bn2")), src
    assert prog.summary().first_grad_op.startswith("conv2d")


def test_summary_text_shows_the_numbers(mobilenet):
    text = str(compile_with(mobilenet, et.peft.BiasOnly()).summary())
    for needle in ("trainable", "frozen", "forward", "backward", "update", "FLOPs",
                   "activations kept for backward", "weight-gradient ops: 0", "first op that gets a gradient"):
        assert needle in text
