"""Whole models x fine-tuning specs x optimizers x backends, 3 fine-tuning steps each.

Two questions, kept apart:
  * semantics: does edgetune train what PyTorch trains? The float64 reference executor against
    PyTorch in float64 (same trainable set, same torch.optim optimizer, same batches): both exact
    up to float64 rounding, so they must agree to that (support.Float64Oracle.assert_semantics).
  * precision: do the float32 backends (the numpy reference in float32, the C++ CPU runtime)
    compute it well? Judged against the float64 reference, with a tolerance derived from the
    problem's conditioning: how far the float64 run moves when its data moves by one float32
    rounding (support.Float64Oracle). Not against float32 PyTorch, whose last digits depend on
    its BLAS and this machine's vector units.
Frozen parameters must stay bit-identical to their initial values on every backend.
"""

from __future__ import annotations

import functools

import pytest
import torch

import edgetune as et
from edgetune import models
from support import (Float64Oracle, assert_float64_run_matches_torch, assert_spec_respected, edgetune_run,
                     torch_reference_run)

# name -> (constructor, train mode?, example-input kwargs)
MODEL_CASES = {
    "mlp": (lambda: models.MLP(in_features=12, hidden=16, num_classes=5, depth=3), True, {}),
    "small_cnn": (lambda: models.SmallCNN(num_classes=5, width=6), True, {"resolution": 16}),
    # eval mode: in train mode, BatchNorm over a 1x1 final feature map of a 4-image batch amplifies
    # float32 rounding past any fixed tolerance; train-mode MobileNetV2 is checked in float64 below
    "mobilenet_v2": (lambda: models.MobileNetV2(num_classes=5, width_mult=0.25), False, {"resolution": 32}),
    "resnet18": (lambda: models.ResNet18(num_classes=5, width=4), True, {"resolution": 64}),
    "bert": (lambda: models.BertEncoder(vocab_size=50, hidden=16, layers=4, heads=2, intermediate=32, max_len=8,
                                        num_classes=3, dropout=0.1), False, {"seq_len": 8}),
    "gpt": (lambda: models.GPTDecoder(vocab_size=40, hidden=16, layers=2, heads=2, max_len=8), True, {"seq_len": 8}),
}

SPECS = {
    "full": et.peft.Full,
    "bias_only": et.peft.BiasOnly,
    "last2": lambda: et.peft.LastK(2),
    "select_weights": lambda: et.peft.Select(include=["*.weight"]),
}

OPTIMIZERS = {
    "sgd": lambda: et.optim.SGD(lr=0.01, momentum=0.9, weight_decay=1e-4),
    "adamw": lambda: et.optim.AdamW(lr=1e-3, weight_decay=0.01),
}

BATCH = 4
STEPS = 3


def make_case(model_name: str, seed: int = 0):
    ctor, train, kw = MODEL_CASES[model_name]
    torch.manual_seed(seed)
    model = ctor()
    model.train(train)
    for m in model.modules():  # torch's dropout RNG cannot be matched; test dropout separately
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    batches = []
    for step in range(STEPS):
        inputs, target = models.example_inputs(MODEL_NAMES[model_name], model, batch=BATCH, seed=seed + step, **kw)
        batches.append((tuple(inputs), target))
    return model, batches


MODEL_NAMES = {"mlp": "mlp", "small_cnn": "small_cnn", "mobilenet_v2": "mobilenet_v2", "resnet18": "resnet18",
               "bert": "bert", "gpt": "gpt"}


@functools.lru_cache(maxsize=4)
def compiled_case(model_name, spec_name, opt_name):
    """(model, batches, program, float64 oracle), shared by the tests of one combination."""
    model, batches = make_case(model_name)
    inputs, target = batches[0]
    prog = et.compile(model, inputs, target, loss="cross_entropy", peft=SPECS[spec_name](),
                      optimizer=OPTIMIZERS[opt_name]())
    et.verify(prog.graph)
    return model, batches, prog, Float64Oracle(prog, batches)


COMBINATIONS = [(m, s, o) for m in MODEL_CASES for s in SPECS for o in OPTIMIZERS]


@pytest.mark.parametrize("model_name,spec_name,opt_name", COMBINATIONS)
def test_float64_reference_matches_pytorch_in_float64(model_name, spec_name, opt_name):
    """The semantics: the float64 reference run lands on PyTorch's float64 run (same trainable
    set, same torch.optim optimizer, same batches) within float64 rounding x conditioning."""
    model, batches, prog, oracle = compiled_case(model_name, spec_name, opt_name)
    torch_losses, theirs = torch_reference_run(model, prog, batches, float64=True)
    oracle.assert_semantics(torch_losses, theirs)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("model_name,spec_name,opt_name", COMBINATIONS)
def test_three_float32_steps_match_the_float64_reference(model_name, spec_name, opt_name, backend):
    """The float32 backends (reference executor, C++ runtime) within the conditioning-derived
    tolerance of the float64 reference (support.Float64Oracle); frozen params bit-identical."""
    model, batches, prog, oracle = compiled_case(model_name, spec_name, opt_name)
    losses, ours, _ = edgetune_run(prog, batches, backend=backend)
    assert_spec_respected(model, prog, ours)
    oracle.assert_close(losses, ours, backend)


@pytest.mark.parametrize("spec_name", ["full", "bias_only", "last2"])
@pytest.mark.parametrize("model_name", ["mobilenet_v2", "resnet18"])
def test_train_mode_batchnorm_in_float64(model_name, spec_name):
    """Train-mode BatchNorm (batch statistics + running-stat updates) on the deep CNNs, run in
    float64 on both sides so that rounding cannot hide a wrong formula. The hyperparameters
    are exact binary fractions (the program stores lr in float32). Two steps, not three: with
    4 images and 1x1 final feature maps, batch statistics of near-constant channels make the
    gradient so sensitive that even float64 rounding (1e-12 after step 1) grows ~1e4x per step
    in both frameworks."""
    ctor, _, kw = MODEL_CASES[model_name]
    torch.manual_seed(0)
    model = ctor().train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    batches = [models.example_inputs(model_name, model, batch=BATCH, seed=s, resolution=32) for s in range(2)]
    batches = [(tuple(i), t) for i, t in batches]
    prog = et.compile(model, batches[0][0], batches[0][1], peft=SPECS[spec_name](),
                      optimizer=et.optim.SGD(lr=2**-10, momentum=0.875, weight_decay=2**-13))
    assert any(n.op == "batch_norm_train" for n in prog.graph.nodes)
    assert_float64_run_matches_torch(model, prog, batches)
