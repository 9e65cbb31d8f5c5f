"""PyTorch frontend: capture, op mapping, mode handling, tied weights, and bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgetune as et
from edgetune import models
from edgetune.frontends.from_torch import import_module
from edgetune.runtime.reference import ReferenceExecutor


def forward_matches_torch(model, inputs, rtol=1e-4, atol=1e-5):
    imported = import_module(model, inputs)
    g = imported.graph
    state = {n: g.initial[n] for n, v in g.sources.items() if v.kind in ("param", "buffer", "state")}
    feeds = {name: x.numpy() for name, x in zip(imported.input_names, inputs)}
    out, _ = ReferenceExecutor(g).run(feeds, state)
    with torch.no_grad():
        expected = model(*inputs)
    np.testing.assert_allclose(out["output"], expected.numpy(), rtol=rtol, atol=atol)
    return imported


class Everything(nn.Module):
    """One module touching most mapped ATen ops."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(3, 4, 3, padding=1)
        self.proj = nn.Parameter(torch.randn(8, 5))
        self.emb = nn.Embedding(7, 5, padding_idx=0)
        self.ln = nn.LayerNorm(5, elementwise_affine=False)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, 1.0, 1.0, 3.0]))

    def forward(self, x, ids):
        h = self.conv1d(x)                                   # [B, 4, 8]
        h = h @ self.proj                                     # matmul with a param
        h = F.silu(h) + F.hardsigmoid(h) * torch.sigmoid(h) - torch.tanh(h) / (1 + h.exp())
        h = h.clamp(-2.0, 2.0) + F.gelu(h, approximate="tanh") + h.pow(2).sqrt() * 0.1 + h.abs().add(1).rsqrt()
        h = self.ln(h + self.emb(ids)) * self.scale
        a, b = h.split([2, 2], dim=1)
        h = torch.cat([b, a, h[:, 1:3, ::2].repeat_interleave(1, dim=1).mean(-1, keepdim=True).expand(-1, -1, 5)], 1)
        h = h.transpose(1, 2).flatten(1).unsqueeze(-1).squeeze(-1)
        h = h.masked_fill(h > 10.0, 0.0)
        return F.log_softmax(h, dim=-1)


def test_many_ops_forward_matches_torch():
    torch.manual_seed(0)
    m = Everything().eval()
    x, ids = torch.randn(2, 3, 8), torch.randint(0, 7, (2, 4))
    try:
        forward_matches_torch(m, (x, ids))
    except et.UnsupportedOpError as e:  # abs on activations is not in the op set: listed with its line
        assert "abs" in str(e), str(e)
        assert str(e).count("test_torch_frontend.py:") >= 1, "each unsupported op names its source line"
    else:
        pytest.fail("abs and gt on activations should be reported as unsupported")


class NoAbs(Everything):
    def forward(self, x, ids):
        h = self.conv1d(x) @ self.proj
        h = F.silu(h) + F.hardsigmoid(h) * torch.sigmoid(h) - torch.tanh(h) / (1 + h.exp())
        h = h.clamp(-2.0, 2.0) + F.gelu(h, approximate="tanh") + (h * h + 1).sqrt() * 0.1 + (h * h + 1).rsqrt()
        h = self.ln(h + self.emb(ids)) * self.scale
        a, b = h.split([2, 2], dim=1)
        h = torch.cat([b, a, h[:, 1:3, ::2].mean(-1, keepdim=True).expand(-1, -1, 5)], 1)
        h = h.transpose(1, 2).flatten(1)
        return F.log_softmax(h, dim=-1) + h[:, 0:1].log_softmax(0)


def test_supported_op_mix_forward_matches_torch():
    torch.manual_seed(0)
    forward_matches_torch(NoAbs().eval(), (torch.randn(2, 3, 8), torch.randint(0, 7, (2, 4))))


@pytest.mark.parametrize("name, kw", [("mobilenet_v2", {"width_mult": 0.35}), ("resnet18", {"width": 8}),
                                      ("bert", {"hidden": 32, "layers": 2, "heads": 4, "intermediate": 64}),
                                      ("gpt", {"hidden": 32, "layers": 2, "heads": 4})])
def test_zoo_forward_matches_torch_in_eval_mode(name, kw):
    torch.manual_seed(0)
    model = models.build(name, **kw).eval()
    inputs, _ = models.example_inputs(name, model, batch=2)
    forward_matches_torch(model, tuple(inputs))


def test_train_mode_batchnorm_updates_running_stats_like_torch():
    torch.manual_seed(0)
    model = models.SmallCNN(width=4).train()
    x = torch.randn(4, 3, 16, 16)
    imported = import_module(model, (x,))
    g = imported.graph
    assert {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"} <= set(g.assigns)
    state = {n: g.initial[n] for n, v in g.sources.items() if v.kind in ("param", "buffer", "state")}
    out, new_state = ReferenceExecutor(g).run({"x": x.numpy()}, state)
    expected = model(x)  # updates the module's running stats too
    np.testing.assert_allclose(out["output"], expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    for name, buf in model.named_buffers():
        np.testing.assert_allclose(new_state[name], buf.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_eval_mode_uses_running_stats_and_drops_dropout():
    model = models.MobileNetV2(num_classes=3, width_mult=0.25).eval()
    g = import_module(model, (torch.randn(1, 3, 32, 32),)).graph
    ops = {n.op for n in g.nodes}
    assert "batch_norm_infer" in ops and "batch_norm_train" not in ops and "dropout" not in ops
    assert not g.assigns


def test_train_mode_dropout_becomes_a_dropout_node_with_a_step_counter():
    model = models.BertEncoder(vocab_size=20, hidden=8, layers=1, heads=2, intermediate=16, max_len=4).train()
    g = import_module(model, (torch.randint(0, 20, (2, 4)),)).graph
    drops = [n for n in g.nodes if n.op == "dropout"]
    assert drops and len({n.attrs["stream"] for n in drops}) == len(drops)
    assert "rng.counter" in g.assigns


def test_tied_weights_become_one_parameter_with_an_alias():
    model = models.GPTDecoder(vocab_size=30, hidden=8, layers=1, heads=2, max_len=4)
    g = import_module(model, (torch.randint(0, 30, (2, 4)),)).graph
    assert g.aliases == {"lm_head.weight": "wte.weight"}
    assert "lm_head.weight" not in g.sources


def test_tied_weight_gets_the_sum_of_both_gradients():
    torch.manual_seed(0)
    model = models.GPTDecoder(vocab_size=30, hidden=8, layers=1, heads=2, max_len=4)
    ids = torch.randint(0, 30, (2, 4))
    prog = et.compile(model, (ids,), ids, peft=et.peft.Select(include=["wte.weight"]),
                      optimizer=et.optim.SGD(lr=0.5))
    adds = [n for n in prog.graph.nodes if n.section == "backward" and n.op == "add"
            and any(i.producer is not None and i.producer.op == "embedding_backward" for i in n.inputs)]
    assert adds, "the embedding gradient and the LM-head gradient must be summed"
    sess = et.Session(prog)
    sess.step(ids, ids)
    logits = model(ids)
    F.cross_entropy(logits.reshape(-1, 30), ids.reshape(-1)).backward()
    expected = model.wte.weight.detach() - 0.5 * model.wte.weight.grad
    state = sess.state_dict()
    np.testing.assert_allclose(state["wte.weight"], expected.numpy(), rtol=1e-4, atol=1e-6)
    assert state["lm_head.weight"] is state["wte.weight"]


def test_node_sources_point_at_the_model_file_and_module():
    g = import_module(models.SmallCNN(width=4).eval(), (torch.randn(1, 3, 16, 16),)).graph
    conv = next(n for n in g.nodes if n.op == "conv2d")
    assert conv.source.startswith("models.py:") and conv.source.endswith("conv1")


# ---- bad input ------------------------------------------------------------------------------
class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export cannot capture it
            return x
        return -x


def test_uncapturable_module_raises_capture_error():
    with pytest.raises(et.CaptureError, match="torch.export could not capture the model .*DataDependent"):
        et.compile(DataDependent(), (torch.randn(2, 3),), torch.zeros(2, 3), loss="mse")


class TwoUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = torch.cumprod(self.fc(x), dim=1)
        return torch.sort(y, dim=1).values


def test_every_unsupported_op_is_listed_with_its_source_line():
    with pytest.raises(et.UnsupportedOpError) as info:
        import_module(TwoUnsupported(), (torch.randn(2, 4),))
    message = str(info.value)
    assert "cumprod" in message and "sort" in message
    assert len(info.value.items) == 2
    assert message.count("test_torch_frontend.py:") == 2


def test_not_a_module_is_rejected():
    with pytest.raises(et.CaptureError, match="cannot compile a int"):
        et.compile(3, (torch.randn(1),), torch.zeros(1))
