"""The same model through both frontends: the PyTorch capture and its ONNX export (opset 17,
initializer names kept) compile to programs that train the same parameters to the same values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import models
from support import edgetune_run

CASES = {
    "mlp": (lambda: models.MLP(in_features=12, hidden=16, num_classes=5), {}),
    "mobilenet_v2": (lambda: models.MobileNetV2(num_classes=5, width_mult=0.25), {"resolution": 32}),
    "resnet18": (lambda: models.ResNet18(num_classes=5, width=4), {"resolution": 32}),
    "bert": (lambda: models.BertEncoder(vocab_size=50, hidden=16, layers=2, heads=2, intermediate=32, max_len=8,
                                        num_classes=3), {"seq_len": 8}),
    "gpt": (lambda: models.GPTDecoder(vocab_size=40, hidden=16, layers=2, heads=2, max_len=8), {"seq_len": 8}),
}
SPECS = {"full": et.peft.Full, "bias_only": et.peft.BiasOnly, "last2": lambda: et.peft.LastK(2)}


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("name", list(CASES))
def test_torch_and_onnx_frontends_train_identically(tmp_path, name, spec_name):
    ctor, kw = CASES[name]
    torch.manual_seed(0)
    model = ctor().eval()
    batches = []
    for seed in range(3):
        inputs, target = models.example_inputs(name, model, batch=2, seed=seed, **kw)
        batches.append((tuple(inputs), target))
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, batches[0][0], str(path), dynamo=False, opset_version=17, do_constant_folding=False,
                      input_names=[f"in{i}" for i in range(len(batches[0][0]))], output_names=["out"])
    # SGD, not Adam: Adam turns rounding noise in exactly-zero gradients (the attention key bias
    # has one) into lr-sized steps, which would compare noise, not frontends
    optimizer = et.optim.SGD(lr=0.05, momentum=0.9)
    from_torch = et.compile(model, batches[0][0], batches[0][1], peft=SPECS[spec_name](), optimizer=optimizer)
    from_onnx = et.compile(str(path), batches[0][0], batches[0][1], peft=SPECS[spec_name](), optimizer=optimizer)
    assert from_onnx.frontend == "onnx"
    assert sorted(from_onnx.trainable_names) == sorted(from_torch.trainable_names)
    torch_losses, torch_state, _ = edgetune_run(from_torch, batches)
    onnx_losses, onnx_state, _ = edgetune_run(from_onnx, batches)
    np.testing.assert_allclose(onnx_losses, torch_losses, rtol=1e-5, atol=1e-6)
    shared = set(torch_state) & set(onnx_state)
    assert set(from_torch.trainable_names) <= shared
    for key in shared:
        np.testing.assert_allclose(onnx_state[key], torch_state[key], rtol=1e-4, atol=1e-6, err_msg=key)
