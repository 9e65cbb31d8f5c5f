"""LoRA / DoRA adapters (compiler/adapters/lora.py) against Hugging Face PEFT, the reference
implementation: the same configuration trained 3 steps with SGD and with AdamW from the same
initial adapter values, every adapter parameter compared, on the reference and cpu backends; the
export round trip through `peft.PeftModel.from_pretrained`; merged weights loaded into the plain
model; the sparse backward (no gradient for the frozen base weights); the spec errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import edgetune as et
from support import matmul_mlp_onnx

peft = pytest.importorskip("peft")

STEPS = 3


class Mixed(torch.nn.Module):
    """Every layer kind LoRA targets: embedding, linear (with and without bias), k×k conv."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)
        self.q = torch.nn.Linear(8, 8)
        self.v = torch.nn.Linear(8, 8, bias=False)
        self.c = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.head = torch.nn.Linear(8 + 3, 5)

    def forward(self, ids, img):
        h = self.emb(ids).mean(1)
        h = torch.relu(self.q(h)) + self.v(h)
        c = self.c(img).mean((2, 3))
        return self.head(torch.cat([h, c], 1))


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 10, (4, 6), generator=g), torch.randn(4, 2, 5, 5, generator=g),
            torch.randint(0, 5, (4,), generator=g))


def _model():
    torch.manual_seed(0)
    return Mixed().eval()


def _peft_key(name: str) -> str:
    """PEFT's parameter name -> edgetune's state_dict name."""
    key = name.replace("base_model.model.", "").replace(".default", "").replace(".base_layer", "")
    return key.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")


def _peft_model(model, state, config):
    """`model` wrapped by PEFT with `config`, every tensor (adapter values, a PiSSA residual)
    taken from edgetune's initial state."""
    pm = peft.get_peft_model(copy.deepcopy(model), config)
    sd = {n: torch.from_numpy(state[_peft_key(n)]) for n, _ in pm.named_parameters()}
    pm.load_state_dict(sd, strict=False)
    return pm.train()


def _torch_train(pm, data, optimizer):
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1) if optimizer == "sgd" else torch.optim.AdamW(params, lr=0.01)
    *inputs, y = data
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(pm(*inputs), y)
        loss.backward()
        opt.step()
    return {_peft_key(n): p.detach().numpy() for n, p in pm.named_parameters() if p.requires_grad}, loss.item()


def _optimizer(name):
    return et.optim.SGD(lr=0.1) if name == "sgd" else et.optim.AdamW(lr=0.01)


CASES = [("kaiming", False), ("gaussian", False), ("pissa", False), ("olora", False), ("kaiming", True),
         ("pissa", True)]


@pytest.mark.parametrize("init,dora", CASES, ids=[f"{i}{'-dora' if d else ''}" for i, d in CASES])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_lora_trains_like_peft(init, dora, optimizer):
    model, data = _model(), _data()
    targets = ["q", "v", "c"] + (["emb"] if init in ("kaiming", "gaussian") and not dora else [])
    spec = et.peft.LoRA(r=2, alpha=4, targets=targets, init=init, use_dora=dora)
    prog = et.compile(model, data[:2], data[2], peft=spec, optimizer=_optimizer(optimizer))
    initial = et.Session(prog).state_dict()
    pm = _peft_model(model, initial, peft.LoraConfig(r=2, lora_alpha=4, target_modules=targets, use_dora=dora))
    expected, torch_loss = _torch_train(pm, data, optimizer)
    assert set(expected) == {n for n in initial if "lora_" in n}  # the same trainable set as PEFT's
    for backend in ("reference", "cpu"):
        sess = et.Session(prog, backend=backend)
        for _ in range(STEPS):
            loss = sess.step(*(t.numpy() for t in data))
        got = sess.state_dict()
        for name, want in expected.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=2e-6, err_msg=f"{backend}: {name}")
        # the last step's loss is computed before its update, torch's likewise
        assert abs(loss - torch_loss) < 1e-5


def test_frozen_weights_get_no_gradient_and_stay_unchanged():
    model, data = _model(), _data()
    prog = et.compile(model, data[:2], data[2], peft=et.peft.LoRA(r=2, targets=["q", "c"]),
                      optimizer=et.optim.SGD(lr=0.1))
    s = prog.summary()
    # one weight-gradient GEMM per factor, nothing for q.weight / c.weight / the head
    assert s.tensors_trainable == 4 and s.adapter_tensors == 4 and s.weight_grad_ops == 4
    sess = et.Session(prog, backend="cpu")
    before = sess.state_dict()
    for _ in range(STEPS):
        sess.step(*(t.numpy() for t in data))
    after = sess.state_dict()
    for name in ("q.weight", "q.bias", "c.weight", "head.weight", "emb.weight"):
        np.testing.assert_array_equal(after[name], before[name])
    assert not np.array_equal(after["q.lora_B.weight"], before["q.lora_B.weight"])
    # the weight itself is never copied: one persistent q.weight tensor, no [out, in] activation
    assert "adapter params" in str(prog.memory)


@pytest.mark.parametrize("init,dora", [("kaiming", False), ("pissa", False), ("olora", True)])
def test_save_adapter_loads_in_peft_and_merges(tmp_path, init, dora):
    model, data = _model(), _data()
    targets = ["q", "v", "c"]
    prog = et.compile(model, data[:2], data[2], peft=et.peft.LoRA(r=2, alpha=4, targets=targets, init=init,
                                                                     use_dora=dora),
                      optimizer=et.optim.AdamW(lr=0.05))
    sess = et.Session(prog, backend="cpu")
    for _ in range(STEPS):
        sess.step(*(t.numpy() for t in data))
    ours = sess.forward(data[0].numpy(), data[1].numpy())
    files = sess.save_adapter(tmp_path)
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(model), str(tmp_path)).eval()  # the *original* base
    with torch.no_grad():
        theirs = loaded(*data[:2]).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    merged = sess.state_dict(merged=True)
    assert set(merged) == set(model.state_dict())  # the base model's names, no adapter tensors
    plain = copy.deepcopy(model)
    plain.load_state_dict({k: torch.from_numpy(v) for k, v in merged.items()})
    with torch.no_grad():
        np.testing.assert_allclose(plain(*data[:2]).numpy(), ours, rtol=1e-5, atol=1e-6)


def test_union_with_bias_only_matches_peft_bias_all():
    model, data = _model(), _data()
    spec = et.peft.Union(et.peft.LoRA(r=2, alpha=4, targets=["q", "c"]), et.peft.BiasOnly())
    prog = et.compile(model, data[:2], data[2], peft=spec, optimizer=et.optim.SGD(lr=0.1))
    initial = et.Session(prog).state_dict()
    pm = _peft_model(model, initial, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q", "c"], bias="all"))
    expected, _ = _torch_train(pm, data, "sgd")
    assert {"q.bias", "c.bias", "head.bias"} <= set(expected)
    sess = et.Session(prog, backend="cpu")
    for _ in range(STEPS):
        sess.step(*(t.numpy() for t in data))
    got = sess.state_dict()
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=2e-6, err_msg=name)


def _tiny_gpt2(width, layers, vocab, seq, seed):
    """A random HF GPT-2 without dropout (PEFT trains in train mode) and a batch of ids."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=width, n_layer=layers, n_head=2, vocab_size=vocab, n_positions=2 * seq,
                                  resid_pdrop=0.0, attn_pdrop=0.0, embd_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    return model, torch.randint(0, vocab, (2, seq), generator=torch.Generator().manual_seed(seed))


def test_gpt2_conv1d_layers_are_fan_in_fan_out():
    """HF GPT-2's Conv1D (weight [in, out], a MatMul here) is PEFT's fan_in_fan_out case."""
    model, ids = _tiny_gpt2(32, 2, 50, 8, seed=1)
    for dora in (False, True):
        spec = et.peft.LoRA(r=2, alpha=4, targets=["c_attn"], use_dora=dora)
        prog = et.compile(model, {"input_ids": ids}, ids, loss="causal_lm", peft=spec, optimizer=et.optim.SGD(lr=0.5))
        assert prog.graph.adapters.peft_config["fan_in_fan_out"] is True
        initial = et.Session(prog).state_dict()
        pm = _peft_model(model, initial, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"],
                                                         fan_in_fan_out=True, use_dora=dora))
        opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
        for _ in range(STEPS):
            opt.zero_grad()
            pm(input_ids=ids, labels=ids).loss.backward()
            opt.step()
        sess = et.Session(prog, backend="cpu")
        for _ in range(STEPS):
            sess.step(ids.numpy(), ids.numpy())
        got = sess.state_dict()
        for n, p in pm.named_parameters():
            if p.requires_grad:
                np.testing.assert_allclose(got[_peft_key(n)], p.detach().numpy(), rtol=1e-4, atol=2e-6, err_msg=n)


def test_dropout_uses_edgetunes_stream_on_every_backend():
    model, data = _model(), _data()
    arrays = [t.numpy() for t in data]
    plain = et.compile(model, data[:2], data[2], peft=et.peft.LoRA(r=2, targets=["q", "v"], init="gaussian"),
                       optimizer=et.optim.SGD(lr=0.5))
    dropped = et.compile(model, data[:2], data[2],
                         peft=et.peft.LoRA(r=2, targets=["q", "v"], init="gaussian", dropout=0.5),
                         optimizer=et.optim.SGD(lr=0.5))
    results = {}
    for name, prog in (("plain", plain), ("dropped", dropped)):
        for backend in ("reference", "cpu"):
            sess = et.Session(prog, backend=backend)
            for _ in range(2):
                sess.step(*arrays)
            results[name, backend] = sess.state_dict()["q.lora_A.weight"]
    np.testing.assert_allclose(results["dropped", "cpu"], results["dropped", "reference"], rtol=1e-5, atol=1e-6)
    assert np.abs(results["dropped", "cpu"] - results["plain", "cpu"]).max() > 1e-4


def test_target_errors_are_clear():
    model, data = _model(), _data()

    def compile_with(spec):
        return et.compile(model, data[:2], data[2], peft=spec)

    with pytest.raises(et.SpecError, match=r"'q_prj' matches no layer.*closest module names: q"):
        compile_with(et.peft.LoRA(targets=["q_prj"]))
    with pytest.raises(et.SpecError, match="needs targets"):
        et.peft.LoRA(r=2)
    with pytest.raises(et.SpecError, match="r must be a positive integer"):
        et.peft.LoRA(r=0, targets=["q"])
    with pytest.raises(et.SpecError, match="init must be one of"):
        et.peft.LoRA(targets=["q"], init="svd")
    with pytest.raises(et.SpecError, match="embeddings take kaiming/gaussian LoRA"):
        compile_with(et.peft.LoRA(targets=["emb"], init="pissa"))
    with pytest.raises(et.SpecError, match="exclude pattern 'zz' matches none"):
        compile_with(et.peft.LoRA(targets=["q"], exclude=["zz"]))
    with pytest.raises(et.SpecError, match="exceeds the rank"):
        compile_with(et.peft.LoRA(r=9, targets=["q"], init="pissa"))


def test_grouped_convs_are_refused_and_can_be_excluded():
    class DW(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
            self.pw = torch.nn.Conv2d(4, 6, 1)
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.pw(self.dw(x)).mean((2, 3)))

    torch.manual_seed(0)
    model = DW().eval()
    x, y = torch.randn(2, 4, 6, 6), torch.tensor([0, 2])
    with pytest.raises(et.SpecError, match=r"dw \(conv2d .*grouped/depthwise"):
        et.compile(model, (x,), y, peft=et.peft.LoRA(targets=["*"]))
    prog = et.compile(model, (x,), y, peft=et.peft.LoRA(r=2, targets=["*"], exclude=["dw"]))
    assert sorted(prog.graph.adapters.peft_config["target_modules"]) == ["fc", "pw"]


def test_parse_spec_adapters():
    spec = et.peft.parse_spec("lora:r=8,alpha=16,targets=q_proj|v_proj,dropout=0.05")
    assert isinstance(spec, et.peft.LoRA) and spec.r == 8 and spec.alpha == 16 and spec.targets == ["q_proj", "v_proj"]
    both = et.peft.parse_spec("dora:r=4,targets=*attn*,init=pissa+bias-only")
    assert isinstance(both, et.peft.Union) and both.specs[0].use_dora and both.specs[0].init == "pissa"
    with pytest.raises(et.SpecError, match="unknown option 'rr'"):
        et.peft.parse_spec("lora:rr=2,targets=q")


def test_onnx_matmul_weights_train_like_peft_on_the_linear_model(tmp_path):
    """ONNX MatMul with an [in, out] initializer: the same LoRA as PEFT on the torch Linear
    holding the transposed weight."""
    path = tmp_path / "mlp.onnx"
    torch_model, weights, x, y = matmul_mlp_onnx(path)
    spec = et.peft.parse_spec("lora:r=2,alpha=4,targets=fc1|fc2,init=gaussian")
    prog = et.compile(str(path), (x,), y, peft=spec, optimizer=et.optim.SGD(lr=0.2))
    initial = et.Session(prog).state_dict()
    pm = peft.get_peft_model(torch_model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["fc1", "fc2"]))
    pm.load_state_dict({n: torch.from_numpy(initial[_peft_key(n)]) for n, p in pm.named_parameters() if p.requires_grad},
                       strict=False)
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.2)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(pm(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    sess = et.Session(prog, backend="cpu")
    for _ in range(STEPS):
        sess.step(x, y)
    got = sess.state_dict()
    for n, p in pm.named_parameters():
        if p.requires_grad:
            np.testing.assert_allclose(got[_peft_key(n)], p.detach().numpy(), rtol=1e-4, atol=2e-6, err_msg=n)
    merged = sess.state_dict(merged=True)  # back in the ONNX file's [in, out] layout
    assert merged["fc1.weight"].shape == (6, 8)
    np.testing.assert_allclose(merged["fc1.weight"].T, pm.base_model.model.fc1.get_delta_weight("default").detach().numpy()
                               + weights["fc1.weight"].T, rtol=1e-5, atol=1e-6)


def test_tied_lm_head_lora_exports_but_does_not_merge(tmp_path):
    model, ids = _tiny_gpt2(16, 1, 30, 6, seed=2)
    prog = et.compile(model, {"input_ids": ids}, ids, loss="causal_lm",
                      peft=et.peft.LoRA(r=2, targets=["lm_head"], init="gaussian"), optimizer=et.optim.SGD(lr=0.5))
    assert prog.graph.adapters.peft_config["target_modules"] == ["lm_head"]  # the head, not the lookup
    sess = et.Session(prog, backend="cpu")
    sess.step(ids.numpy(), ids.numpy())
    assert "adapter_model.safetensors" in sess.save_adapter(tmp_path)
    with pytest.raises(et.InputError, match="lm_head: its weight .* is shared"):
        sess.state_dict(merged=True)


def test_one_adapter_per_layer():
    model, data = _model(), _data()
    spec = et.peft.Union(et.peft.SSF(targets=["q"]), et.peft.LoRA(r=2, targets=["q"]))
    with pytest.raises(et.SpecError, match="q .* already has an adapter"):
        et.compile(model, data[:2], data[2], peft=spec)


def test_cli_compiles_an_onnx_model_with_a_lora_spec(tmp_path, capsys):
    from edgetune.cli import main
    path = tmp_path / "mlp.onnx"
    _, _, x, y = matmul_mlp_onnx(path)
    plan = tmp_path / "p.etp"
    assert main(["compile", str(path), "--peft", "lora:r=2,alpha=4,targets=fc1|fc2+bias-only", "--batch", "4",
                 "-o", str(plan)]) == 0
    assert "adapters" in capsys.readouterr().out  # the summary's adapter line
    sess = et.Session(str(plan), backend="cpu")
    sess.step(x, y)
    from edgetune.compiler.plan_file import read_plan_header
    header = read_plan_header(plan.read_bytes())
    assert set(header["trainable"]) == {"fc1.lora_A.weight", "fc1.lora_B.weight", "fc2.lora_A.weight",
                                        "fc2.lora_B.weight", "fc1.bias", "fc2.bias"}
    files = sess.save_adapter(tmp_path / "adapter")
    assert "adapter_config.json" in files
    import json
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["fc1", "fc2"] and config["r"] == 2 and config["fan_in_fan_out"] is True


def test_seeds_make_initialisations_reproducible():
    model, data = _model(), _data()

    def initial(seed):
        prog = et.compile(model, data[:2], data[2], peft=et.peft.LoRA(r=2, targets=["q", "c"], seed=seed))
        return et.Session(prog).state_dict()

    a, b, c = initial(0), initial(0), initial(1)
    np.testing.assert_array_equal(a["q.lora_A.weight"], b["q.lora_A.weight"])
    assert not np.array_equal(a["q.lora_A.weight"], c["q.lora_A.weight"])
    assert not np.array_equal(a["q.lora_A.weight"].ravel()[:4], a["c.lora_A.weight"].ravel()[:4])  # per layer
    np.testing.assert_array_equal(a["q.lora_B.weight"], 0.0)  # kaiming: B = 0, the model starts unchanged
