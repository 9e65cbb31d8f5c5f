"""The user-facing API: losses, specs, Session state, and the errors for each user mistake."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgetune as et
from edgetune import models
from support import assert_training_matches_torch


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    model = models.MLP(in_features=6, hidden=8, num_classes=3, depth=2)
    x = torch.randn(4, 6)
    y = torch.tensor([0, 2, 1, 2])
    return model, x, y


def test_readme_flow(mlp):
    model, x, y = mlp
    prog = et.compile(model, example_inputs=(x,), example_target=y, loss="cross_entropy",
                      peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.1, momentum=0.9))
    text = str(prog)
    assert "forward:" in text and "loss:" in text and "backward:" in text and "update:" in text
    sess = et.Session(prog, backend="reference")
    losses = [sess.step(x, y) for _ in range(20)]
    assert losses[-1] < losses[0]
    state = sess.state_dict()
    assert set(state) == set(model.state_dict())
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # back into PyTorch


def test_mse_and_callable_losses_match_torch(mlp):
    model, x, _ = mlp
    target = torch.randn(4, 3)
    for loss in ("mse", lambda out, t: ((out - t) ** 2).sum() * 0.5):
        prog = et.compile(model, (x,), target, loss=loss, optimizer=et.optim.SGD(lr=0.05))
        assert_training_matches_torch(model, prog, [((x,), target)] * 3, loss=loss)


def test_traced_cross_entropy_with_label_smoothing_matches_torch(mlp):
    model, x, y = mlp

    def loss(out, t):
        return F.cross_entropy(out, t, label_smoothing=0.1)

    prog = et.compile(model, (x,), y, loss=loss, optimizer=et.optim.AdamW(lr=1e-2))
    assert any(n.op == "cross_entropy" and n.attrs["label_smoothing"] == 0.1 for n in prog.graph.nodes)
    assert_training_matches_torch(model, prog, [((x,), y)] * 3, loss=loss)


def test_nesterov_and_dampening_follow_torch(mlp):
    model, x, y = mlp
    for opt in (et.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                et.optim.SGD(lr=0.1, momentum=0.9, dampening=0.3)):
        prog = et.compile(model, (x,), y, optimizer=opt)
        assert_training_matches_torch(model, prog, [((x,), y)] * 4)


def test_learning_rate_can_change_between_steps(mlp):
    model, x, y = mlp
    prog = et.compile(model, (x,), y, optimizer=et.optim.SGD(lr=0.1))
    sess = et.Session(prog)
    sess.set_lr(0.0)
    before = sess.state_dict()
    sess.step(x, y)
    after = sess.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    sess.set_lr(0.2)
    assert sess.lr == pytest.approx(0.2)
    sess.step(x, y)
    after = sess.state_dict()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_load_state_dict_round_trip_and_errors(mlp):
    model, x, y = mlp
    prog = et.compile(model, (x,), y)
    sess = et.Session(prog)
    state = {k: v * 0 for k, v in sess.state_dict().items()}
    sess.load_state_dict(state)
    assert all(not v.any() for v in sess.state_dict().values())
    with pytest.raises(et.InputError, match="unknown keys"):
        sess.load_state_dict({**state, "nope": np.zeros(1)})
    name = next(iter(state))
    with pytest.raises(et.InputError, match=f"'{name}' has shape"):
        sess.load_state_dict({**state, name: np.zeros((1, 1, 1))})


def test_session_rejects_bad_batches(mlp):
    model, x, y = mlp
    sess = et.Session(et.compile(model, (x,), y))
    with pytest.raises(et.InputError, match=r"input 'x' has shape \[3, 6\], the program expects \[4, 6\].*pad"):
        sess.step(x[:3], y[:3])
    with pytest.raises(et.InputError, match="expected 2 arrays"):
        sess.step(x)
    with pytest.raises(et.InputError, match="input 'target' has dtype float32"):
        sess.step(x, y.float())
    with pytest.raises(et.InputError, match="unknown backend"):
        et.Session(sess.program, backend="tpu")


# ---- specs ----------------------------------------------------------------------------------------
def test_select_globs_include_exclude_and_aliases():
    model = models.GPTDecoder(vocab_size=20, hidden=8, layers=2, heads=2, max_len=4)
    ids = torch.randint(0, 20, (2, 4))
    prog = et.compile(model, (ids,), ids, peft=et.peft.Select(include=["h.1.*"], exclude=["*.bias"]))
    assert prog.trainable_names and all(n.startswith("h.1.") and not n.endswith(".bias")
                                        for n in prog.trainable_names)
    prog = et.compile(model, (ids,), ids, peft=et.peft.Select(include=["lm_head.weight"]))
    assert prog.trainable_names == ["wte.weight"]  # the alias selects the tied parameter


@pytest.mark.parametrize("spec, message", [
    (et.peft.Select(include=["encoder.*"]), "include pattern 'encoder.\\*' matches no parameter"),
    (et.peft.Select(include=["*"], exclude=["nothing*"]), "exclude pattern 'nothing\\*' matches no parameter"),
    (et.peft.Select(include=["layers.0.weight"], exclude=["layers.0.*"]), "selects no parameter"),
    (et.peft.LastK(9), "has only 2 parameterized layers"),
])
def test_spec_mistakes_raise_spec_error(mlp, spec, message):
    model, x, y = mlp
    with pytest.raises(et.SpecError, match=message):
        et.compile(model, (x,), y, peft=spec)


def test_bias_only_on_a_model_without_biases_selects_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    with pytest.raises(et.SpecError, match="BiasOnly\\(\\) selects no parameter"):
        et.compile(model, (torch.randn(2, 4),), torch.tensor([0, 1]), peft=et.peft.BiasOnly())


def test_lastk_rejects_nonsense():
    with pytest.raises(et.SpecError):
        et.peft.LastK(0)


# ---- losses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, loss, message", [
    (torch.tensor([0, 1, 2]), "cross_entropy", r"model output f32\[4,3\] and target i64\[3\] do not fit"),
    (torch.randn(4, 3), "cross_entropy", "targets must be integer class indices"),
    (torch.randn(4, 2), "mse", r"mse: model output f32\[4,3\] and target f32\[4,2\] differ in shape"),
    (torch.tensor([0, 1, 2, 0]), "hinge", "unknown loss 'hinge'"),
    (torch.randn(4, 3), lambda out, t: (out - t) ** 2, r"the loss must be a scalar, got f32\[4,3\]"),
    (None, "cross_entropy", "example_target must be a tensor or array of numbers, got NoneType"),
])
def test_loss_mistakes_raise_loss_error(mlp, target, loss, message):
    model, x, _ = mlp
    with pytest.raises(et.LossError, match=message):
        et.compile(model, (x,), target, loss=loss)


def test_language_model_cross_entropy_uses_the_last_dim_as_classes():
    model = models.GPTDecoder(vocab_size=20, hidden=8, layers=1, heads=2, max_len=4)
    ids = torch.randint(0, 20, (2, 4))
    prog = et.compile(model, (ids,), ids)
    ce = next(n for n in prog.graph.nodes if n.op == "cross_entropy")
    assert ce.inputs[0].shape == (8, 20) and ce.inputs[1].shape == (8,)


# ---- train-mode dropout and inference -------------------------------------------------------
def test_train_mode_dropout_is_reproducible_and_really_drops():
    torch.manual_seed(0)
    model = models.BertEncoder(vocab_size=30, hidden=16, layers=1, heads=2, intermediate=32, max_len=6,
                               num_classes=3, dropout=0.3).train()
    (ids,), target = models.example_inputs("bert", model, batch=4, seq_len=6)
    prog = et.compile(model, (ids,), target, optimizer=et.optim.SGD(lr=0.1))
    runs = []
    for _ in range(2):
        sess = et.Session(prog)
        runs.append([sess.step(ids, target) for _ in range(3)])
    assert runs[0] == runs[1], "same program, same data -> same masks, same losses"
    assert len(set(runs[0])) == 3
    eval_prog = et.compile(model.eval(), (ids,), target, optimizer=et.optim.SGD(lr=0.1))
    assert et.Session(eval_prog).step(ids, target) != runs[0][0], "dropout must change the train-mode loss"


def test_forward_after_training_matches_torch_with_the_trained_weights(mlp):
    model, x, y = mlp
    sess = et.Session(et.compile(model, (x,), y, peft=et.peft.LastK(1), optimizer=et.optim.AdamW(lr=0.05)))
    for _ in range(5):
        sess.step(x, y)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sess.state_dict().items()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(sess.forward(x), expected, rtol=1e-5, atol=1e-6)


class WithUnusedHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(4, 3)
        self.unused = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.used(x)


def test_parameters_that_do_not_reach_the_loss_stay_frozen_with_a_warning():
    x, y = torch.randn(2, 4), torch.tensor([0, 2])
    with pytest.warns(UserWarning, match="2 selected parameter\\(s\\) do not influence the loss"):
        prog = et.compile(WithUnusedHead(), (x,), y, peft=et.peft.Full())
    assert prog.trainable_names == ["used.weight", "used.bias"]
    with pytest.raises(et.SpecError, match="selects only parameters that do not influence the loss"):
        et.compile(WithUnusedHead(), (x,), y, peft=et.peft.Select(include=["unused.*"]))


def test_union_spec_selects_what_any_member_selects():
    import torch
    from edgetune import models
    torch.manual_seed(0)
    model = models.MLP(in_features=6, hidden=8, num_classes=3, depth=3)
    x, y = torch.randn(4, 6), torch.randint(3, (4,))
    bias = set(et.compile(model, (x,), y, peft=et.peft.BiasOnly()).trainable_names)
    last = set(et.compile(model, (x,), y, peft=et.peft.LastK(1)).trainable_names)
    both = set(et.compile(model, (x,), y, peft=et.peft.Union(et.peft.BiasOnly(), et.peft.LastK(1))).trainable_names)
    assert both == bias | last and both != bias and both != last
    with pytest.raises(et.SpecError):
        et.peft.Union()
