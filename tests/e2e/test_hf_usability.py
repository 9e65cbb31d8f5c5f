"""Hugging Face usability (issue 14): a model compiles without a user-written wrapper.

  * keyword inputs: `example_inputs` may be a dict; the program's inputs are its tensors in the
    dict's order, named by its keys;
  * structured outputs: a dict, a transformers ModelOutput or a tuple compiles with the output
    picked (`output=`, default: the only tensor, else "logits"); the rest is dead code;
  * built-in losses for language models: token-level "cross_entropy" over [B, T, V] logits and
    "causal_lm" (next-token prediction against the input ids), both with ignore_index=-100 and the
    mean over the targets that are not ignored, as torch and Hugging Face compute them.

Each training check runs 3 steps twice: the float64 reference executor against PyTorch in float64
(semantics, tight tolerances) and the C++ cpu runtime against PyTorch in float32 (the tolerances of
support.assert_training_matches_torch).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgetune as et
from support import assert_spec_respected

STEPS = 3
LR = 0.5  # a binary fraction: float32 and float64 runs use the same learning rate


# ---- running both sides ---------------------------------------------------------------------------
def torch_run(model, prog, batches, loss_fn, float64=False):
    """Train a copy of `model` the way `prog` does (same trainable set, SGD, same batches);
    batches are (kwargs, target); loss_fn(model, kwargs, target) -> scalar."""
    model = copy.deepcopy(model)
    if float64:
        model = model.double()
    trainable = set(prog.trainable_names)
    aliases = prog.graph.aliases
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(aliases.get(name, name) in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR)
    losses = []
    for kwargs, target in batches:
        if float64:
            kwargs = {k: v.double() if v.is_floating_point() else v for k, v in kwargs.items()}
        opt.zero_grad()
        value = loss_fn(model, kwargs, target)
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    return losses, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def edgetune_run(prog, batches, backend, compute_dtype=None):
    sess = et.Session(prog, backend=backend, compute_dtype=compute_dtype)
    losses = [sess.step(*kwargs.values(), target) for kwargs, target in batches]  # positional: the dict's order
    return losses, sess.state_dict()


def assert_trains_like_torch(model, prog, batches, loss_fn):
    ours, ours_state = edgetune_run(prog, batches, "reference", compute_dtype=np.float64)
    theirs, their_state = torch_run(model, prog, batches, loss_fn, float64=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-7)
    for name, expected in their_state.items():
        np.testing.assert_allclose(ours_state[name], expected, rtol=1e-6, atol=1e-6, err_msg=f"float64 {name}")

    ours, ours_state = edgetune_run(prog, batches, "cpu")
    theirs, their_state = torch_run(model, prog, batches, loss_fn)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for name, expected in their_state.items():
        np.testing.assert_allclose(ours_state[name], expected, rtol=1e-4, atol=1e-6, err_msg=f"cpu {name}")
    assert_spec_respected(model, prog, ours_state)
    return ours


# ---- a plain torch model: keyword inputs, a dict out ----------------------------------------------
class TaggedLM(torch.nn.Module):
    """Keyword inputs, a dict output with three entries; only "logits" feeds the loss."""

    def __init__(self, vocab=11, hidden=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, hidden)
        self.mix = torch.nn.Linear(hidden, hidden)
        self.head = torch.nn.Linear(hidden, vocab)
        self.aux = torch.nn.Linear(hidden, 3)  # only the "aux" entry reads it: dead code for the loss

    def forward(self, tokens, scale=None):
        h = torch.tanh(self.mix(self.emb(tokens) * scale.unsqueeze(-1)))
        return {"hidden": h, "logits": self.head(h), "aux": self.aux(h).relu().sum(-1)}


def tagged_batches(seed=0, batch=3, seq=5, vocab=11):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        tokens = torch.randint(0, vocab, (batch, seq), generator=g)
        scale = torch.rand(batch, seq, generator=g) + 0.5
        target = torch.randint(0, vocab, (batch, seq), generator=g)
        target[0, :2] = -100  # ignored: the mean is over the other 13 targets
        out.append(({"scale": scale, "tokens": tokens}, target))  # not forward's order
    return out


def tagged_loss(model, kwargs, target):
    logits = model(**kwargs)["logits"]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("output", [None, "logits"])
def test_keyword_inputs_and_dict_output_train_like_torch(output):
    torch.manual_seed(0)
    model = TaggedLM()
    batches = tagged_batches()
    kwargs, target = batches[0]
    with pytest.warns(UserWarning, match=r"\['aux.weight', 'aux.bias'\]"):  # like torch: their grad is None
        prog = et.compile(model, kwargs, target, loss="cross_entropy", output=output,
                          optimizer=et.optim.SGD(lr=LR))
    # the dict's order and keys name the program's inputs
    assert prog.model_inputs == ["scale", "tokens"]
    assert [v.name for v in prog.graph.inputs] == ["scale", "tokens", prog.target_input]
    with pytest.raises(et.InputError, match=r"expected 3 arrays \(scale, tokens, target\), got 1"):
        et.Session(prog, backend="cpu").step(kwargs["scale"])
    # only the picked output is a program output; what only "aux" needed is gone
    assert set(prog.graph.outputs) == {"loss", "output"}
    assert prog.graph.outputs["output"].shape == (3, 5, 11)
    read = {v.name for n in prog.graph.nodes for v in n.inputs}
    assert not {"aux.weight", "aux.bias"} & read
    assert_trains_like_torch(model, prog, batches, tagged_loss)


def test_token_level_cross_entropy_means_over_the_targets_not_ignored():
    torch.manual_seed(0)
    model = TaggedLM()
    kwargs, target = tagged_batches()[0]
    prog = et.compile(model, kwargs, target, loss="cross_entropy", peft=et.peft.Select(exclude=["aux.*"]))
    ce = next(n for n in prog.graph.nodes if n.op == "cross_entropy")
    assert ce.inputs[0].shape == (15, 11) and ce.inputs[1].shape == (15,) and ce.attrs["ignore_index"] == -100
    loss = et.Session(prog, backend="reference", compute_dtype=np.float64).step(*kwargs.values(), target)
    expected = tagged_loss(model.double(), {k: v.double() if v.is_floating_point() else v
                                           for k, v in kwargs.items()}, target)
    np.testing.assert_allclose(loss, float(expected.detach()), rtol=1e-12)


def test_a_non_tensor_keyword_input_is_a_constant_not_a_program_input():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x, double=False):
            return self.fc(x) * (2.0 if double else 1.0)

    model, x = Scaled(), torch.randn(2, 4)
    prog = et.compile(model, {"x": x, "double": True}, torch.tensor([0, 2]))
    assert prog.model_inputs == ["x"]
    out = et.Session(prog, backend="reference").forward(x)
    np.testing.assert_allclose(out, model(x, double=True).detach().numpy(), rtol=1e-6)


# ---- Hugging Face models ------------------------------------------------------------------------
def tiny_hf(kind):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=4, bos_token_id=1,
                                          eos_token_id=2)
        return transformers.LlamaForCausalLM(config).eval()
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, bos_token_id=1,
                                     eos_token_id=2)
    return transformers.GPT2LMHeadModel(config).eval()


def id_batches(seed=0, batch=2, seq=8, vocab=64):
    g = torch.Generator().manual_seed(seed)
    out = []
    for step in range(STEPS):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        labels = ids.clone()
        if step == 1:
            labels[1, 5:] = -100  # e.g. padding: ignored, and not counted in the mean
        out.append(({"input_ids": ids}, labels))
    return out


def hf_loss(model, kwargs, labels):
    return model(**kwargs, labels=labels).loss  # Hugging Face's own ForCausalLMLoss


@pytest.mark.parametrize("kind, trained", [("llama", "lm_head.weight"),
                                           ("gpt2", "transformer.wte.weight")])  # GPT-2's head is tied to wte
def test_hf_causal_lm_trains_like_torch(kind, trained):
    model = tiny_hf(kind)
    batches = id_batches()
    kwargs, _ = batches[0]
    prog = et.compile(model, example_inputs=kwargs, example_target=kwargs["input_ids"], loss="causal_lm",
                      peft=et.peft.LastK(1), optimizer=et.optim.SGD(lr=LR))
    assert prog.model_inputs == ["input_ids"] and trained in prog.trainable_names  # (with the final norm's)
    assert prog.graph.outputs["output"].shape == (2, 8, 64)
    losses = assert_trains_like_torch(model, prog, batches, hf_loss)
    assert losses[2] < losses[0] or losses[2] < losses[1]


def test_hf_model_output_picks_logits_and_lists_its_keys():
    model = tiny_hf("llama")
    ids = torch.randint(0, 64, (2, 8))
    with pytest.raises(et.LossError, match=r"output='nope': 'nope' is not in LlamaForCausalLM's output, a "
                                           r"CausalLMOutputWithPast; its keys are: 'logits' \(f32\[2,8,64\]\)"):
        et.compile(model, {"input_ids": ids}, ids, loss="causal_lm", output="nope")
    prog = et.compile(model, {"input_ids": ids}, ids, loss="causal_lm", output=0, peft=et.peft.LastK(1))
    assert prog.graph.outputs["output"].shape == (2, 8, 64)  # model(x)[0], as Hugging Face indexes it


# ---- mistakes ---------------------------------------------------------------------------------------
class TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.a(x), (self.b(x), self.b(x).sum())


def test_dict_output_with_an_unknown_key_lists_the_keys():
    model = TaggedLM()
    kwargs, target = tagged_batches()[0]
    with pytest.raises(et.LossError, match=r"output='nope': 'nope' is not in TaggedLM's output, a dict; its keys are: "
                                           r"'hidden' \(f32\[3,5,8\]\), 'logits' \(f32\[3,5,11\]\), "
                                           r"'aux' \(f32\[3,5\]\)"):
        et.compile(model, kwargs, target, output="nope")


def test_tuple_output_needs_an_index_and_lists_them():
    model, x, y = TwoHeads(), torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(et.LossError, match=r"TwoHeads returns a tuple of 3 tensors and no 'logits': pass "
                                           r"output=<index> to et.compile to pick the one the loss reads; its indices are: 0 \(f32\[5,3\]\), "
                                           r"1 \(a tuple of 2 values\)"):
        et.compile(model, (x,), y)
    with pytest.raises(et.LossError, match=r"output=2: 2 is not in TwoHeads's output, a tuple; its indices are: "
                                           r"0 \(f32\[5,3\]\), 1 \(a tuple of 2 values\)"):
        et.compile(model, (x,), y, output=2)
    with pytest.raises(et.LossError, match=r"output=1: TwoHeads's output\[1\] is a tuple of 2 values, not one "
                                           r"tensor; pick one inside it with a path, output=\(1, <key or index>\); "
                                           r"its entries: 0 \(f32\[5,2\]\), 1 \(f32\[\]\)"):
        et.compile(model, (x,), y, output=1)
    prog = et.compile(model, (x,), y, output=0, peft=et.peft.Select(include=["a.*"]))
    assert not {"b.weight", "b.bias"} & {v.name for n in prog.graph.nodes for v in n.inputs}  # dead
    prog = et.compile(model, (x,), torch.randn(5, 2), loss="mse", output=(1, 0), peft=et.peft.Select(include=["b.*"]))
    assert prog.graph.outputs["output"].shape == (5, 2)


@pytest.mark.parametrize("target, message", [
    (torch.randint(0, 11, (3, 4)), r"causal_lm: model output f32\[3,5,11\] and target i64\[3,4\] do not fit: "
                                   r"expected the input ids \[B, T\] = i64\[3,5\]"),
    (torch.rand(3, 5), r"causal_lm: .* the target must be the integer input ids, i64\[3,5\]"),
])
def test_causal_lm_target_of_the_wrong_shape_says_what_is_expected(target, message):
    model = TaggedLM()
    kwargs, _ = tagged_batches()[0]
    with pytest.raises(et.LossError, match=message):
        et.compile(model, kwargs, target, loss="causal_lm")


def test_token_level_cross_entropy_target_mismatch_names_both_layouts():
    model = TaggedLM()
    kwargs, target = tagged_batches()[0]
    with pytest.raises(et.LossError, match=r"expected target of shape \[3, 11\] \(classes in dim 1, torch's layout\) "
                                           r"or \[3, 5\] \(classes last"):
        et.compile(model, kwargs, target[:, :4])


def test_dict_inputs_mistakes():
    model = TaggedLM()
    kwargs, target = tagged_batches()[0]
    with pytest.raises(et.CaptureError, match=r"keys of a dict of keyword inputs must be the names of "
                                              r"TaggedLM.forward's parameters, got \['not a name'\]"):
        et.compile(model, {**kwargs, "not a name": kwargs["tokens"]}, target)
    with pytest.raises(et.CaptureError, match="torch.export could not capture the model"):
        et.compile(model, {**kwargs, "unknown": kwargs["tokens"]}, target)


def test_onnx_model_with_two_outputs_picks_one_by_index():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["scores"]),
                               helper.make_node("Relu", ["scores"], ["relu"])], "two_out",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 4])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [5, 3]),
                               helper.make_tensor_value_info("relu", TensorProto.FLOAT, [5, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    x, y = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32), np.array([0, 1, 2, 0, 1])
    with pytest.raises(et.LossError, match=r"returns 2 outputs: pass output=<index> to pick the one the loss reads: "
                                           r"0 \(f32\[5,3\]\), 1 \(f32\[5,3\]\)"):
        et.compile(model, (x,), y)
    with pytest.raises(et.LossError, match=r"output='scores': .* pick one by index: 0 \(f32\[5,3\]\)"):
        et.compile(model, (x,), y, output="scores")
    with pytest.raises(et.CaptureError, match="an ONNX model takes a tuple of example inputs"):
        et.compile(model, {"x": x}, y)
    prog = et.compile(model, (x,), y, output=0)
    assert not any(n.op == "relu" for n in prog.graph.nodes)  # the other output is dead code
    assert prog.graph.outputs["output"].shape == (5, 3)
