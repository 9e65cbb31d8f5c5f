"""Whole models x fine-tuning specs x optimizers x backends: 3 edgetune steps must land on
PyTorch's weights, on the numpy reference executor and on the C++ CPU runtime (which must also
agree with the reference).

For every combination, the program's trainable set decides which torch params get
requires_grad, both sides run 3 steps of the same optimizer on the same batches, and then:
every parameter and buffer matches PyTorch (float32, rtol 1e-4, atol 1e-5), frozen
parameters are bit-identical to their initial values, and the losses agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import models
from support import edgetune_run, torch_reference_run

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


def make_case(model_name: str):
    ctor, train, kw = MODEL_CASES[model_name]
    torch.manual_seed(0)
    model = ctor()
    model.train(train)
    for m in model.modules():  # torch's dropout RNG cannot be matched; test dropout separately
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    batches = []
    for step in range(STEPS):
        inputs, target = models.example_inputs(MODEL_NAMES[model_name], model, batch=BATCH, seed=step, **kw)
        batches.append((tuple(inputs), target))
    return model, batches


def _assert_close_up_to_oracle_error(got, want, exact, what, rtol=1e-4, atol=1e-5):
    got, want, exact = (np.asarray(a, dtype=np.float64) for a in (got, want, exact))
    allowed = atol + rtol * np.abs(want) + np.abs(want - exact)
    excess = np.abs(got - want) - allowed
    assert excess.max(initial=-1) <= 0, (
        f"{what}: {int((excess > 0).sum())} of {excess.size} values off by more than tolerance + the "
        f"oracle's own float32 error; worst |diff| {np.abs(got - want).max():.3g}")


MODEL_NAMES = {"mlp": "mlp", "small_cnn": "small_cnn", "mobilenet_v2": "mobilenet_v2", "resnet18": "resnet18",
               "bert": "bert", "gpt": "gpt"}


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("model_name", list(MODEL_CASES))
def test_three_steps_match_pytorch(model_name, spec_name, opt_name, backend):
    model, batches = make_case(model_name)
    inputs, target = batches[0]
    prog = et.compile(model, inputs, target, loss="cross_entropy", peft=SPECS[spec_name](),
                      optimizer=OPTIMIZERS[opt_name]())
    et.verify(prog.graph)
    initial = prog.initial_state()

    ours_losses, ours, _ = edgetune_run(prog, batches, backend=backend)
    torch_losses, theirs = torch_reference_run(model, prog, batches)
    assert set(theirs) <= set(ours), f"missing state_dict keys: {sorted(set(theirs) - set(ours))}"
    trainable = set(prog.trainable_names)
    for name in theirs:
        canonical = prog.graph.aliases.get(name, name)
        if prog.graph.sources[canonical].kind == "param" and canonical not in trainable:
            assert np.array_equal(ours[name], initial[canonical]), f"frozen {name} changed"
        if ours[name].dtype.kind in "iu":
            assert np.array_equal(ours[name], theirs[name]), name

    if backend == "reference":
        np.testing.assert_allclose(ours_losses, torch_losses, rtol=1e-4, atol=1e-5)
        for name, expected in theirs.items():
            np.testing.assert_allclose(ours[name], expected, rtol=1e-4, atol=1e-5, err_msg=name)
    else:
        # The C++ kernels sum in other orders (and BatchNorm statistics in double), so in the
        # ill-conditioned cases (train-mode BN over a few values per channel, Adam on ~zero
        # gradients) they can sit closer to the exact answer than float32 PyTorch does. Judge
        # them against PyTorch and the float32 reference with the usual tolerance *plus* how far
        # that oracle itself is from the float64 reference run of the same program.
        # Winograd convolutions (chosen by -O2's kernel selection) round in their transforms:
        # ~1e-5 of the output's magnitude (tests/kernels/test_winograd.py), so a looser atol.
        winograd = any((n.kernel or "").endswith(".winograd") for n in prog.graph.nodes)
        atol = 5e-5 if winograd else 1e-5
        exact_losses, exact, _ = edgetune_run(prog, batches, compute_dtype=np.float64)
        ref_losses, ref, _ = edgetune_run(prog, batches)
        for oracle, oracle_losses, state in (("torch", torch_losses, theirs), ("reference", ref_losses, ref)):
            _assert_close_up_to_oracle_error(ours_losses, oracle_losses, exact_losses, f"losses vs {oracle}", atol=atol)
            for name in theirs:
                _assert_close_up_to_oracle_error(ours[name], state[name], exact[name], f"{name} vs {oracle}",
                                                 atol=atol)
    # the spec really trained something and left the rest alone
    changed = [n for n in trainable if not np.array_equal(ours[n], initial[n])]
    assert changed, "no trainable parameter moved"


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
    ours_losses, ours, _ = edgetune_run(prog, batches, compute_dtype=np.float64)
    batches64 = [(tuple(x.double() for x in i), t) for i, t in batches]
    torch_losses, theirs = torch_reference_run(model.double(), prog, batches64)
    np.testing.assert_allclose(ours_losses, torch_losses, rtol=1e-7)
    for name, expected in theirs.items():
        np.testing.assert_allclose(ours[name], expected, rtol=1e-6, atol=1e-6, err_msg=name)
