"""SSF, (IA)³ and Channels adapters (compiler/adapters/ssf.py, ia3.py, channels.py) against their
references: 3 steps of SGD and of AdamW on the reference and cpu backends from the same initial
values as (IA)³ in Hugging Face PEFT / SSF as torch forward hooks / Channels as a torch model
whose only trainable weights are the rows W[S], every adapter parameter and the loss compared;
merged weights loaded into the plain model; (IA)³'s PEFT export round trip; the k-row weight
gradient of Channels; ONNX MatMul + Add layers; the spec errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import edgetune as et
from support import matmul_mlp_onnx

peft = pytest.importorskip("peft")

STEPS = 3
TOL = dict(rtol=1e-5, atol=1e-6)


class Net(torch.nn.Module):
    """Every layer kind: embedding, 3×3 conv with bias, 1×1 conv without, linear with and without
    bias. `all_bias`: the same model with a bias on every conv/linear (what SSF's merged weights
    load into)."""

    def __init__(self, all_bias=False):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)
        self.c1 = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 6, 1, bias=all_bias)
        self.fc1 = torch.nn.Linear(8 + 6, 12)
        self.fc2 = torch.nn.Linear(12, 10, bias=all_bias)
        self.head = torch.nn.Linear(10, 5)

    def forward(self, ids, img):
        h = self.emb(ids).mean(1)
        c = self.c2(torch.relu(self.c1(img))).mean((2, 3))
        h = torch.relu(self.fc1(torch.cat([h, c], 1)))
        return self.head(torch.relu(self.fc2(h)))


def _model():
    torch.manual_seed(0)
    return Net().eval()


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 10, (4, 6), generator=g), torch.randn(4, 2, 5, 5, generator=g),
            torch.randint(0, 5, (4,), generator=g))


def _optimizer(name):
    return et.optim.SGD(lr=0.1) if name == "sgd" else et.optim.AdamW(lr=0.01)


def _torch_train(forward, params: dict, data, optimizer):
    """STEPS steps of `forward` training `params` (name -> leaf tensor); returns the last loss."""
    opt = torch.optim.SGD(list(params.values()), lr=0.1) if optimizer == "sgd" else \
        torch.optim.AdamW(list(params.values()), lr=0.01)
    *inputs, y = data
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(*inputs), y)
        loss.backward()
        opt.step()
    return loss.item()


def _check_trains_like(prog, expected: dict, torch_loss: float, data):
    """Train `prog` STEPS steps on both backends; every tensor in `expected` and the last loss
    must match."""
    arrays = [t.numpy() for t in data]
    for backend in ("reference", "cpu"):
        sess = et.Session(prog, backend=backend)
        for _ in range(STEPS):
            loss = sess.step(*arrays)
        got = sess.state_dict()
        for name, want in expected.items():
            want = want.detach().numpy()
            assert got[name].shape == want.shape, f"{backend}: {name}"
            np.testing.assert_allclose(got[name], want, **TOL, err_msg=f"{backend}: {name}")
        assert abs(loss - torch_loss) < 1e-5, backend
    return sess


def _check_merged(sess, plain, inputs):
    """state_dict(merged=True) loads into `plain` (strictly) and gives the session's forward."""
    merged = sess.state_dict(merged=True)
    assert set(merged) == set(plain.state_dict())
    plain.load_state_dict({k: torch.from_numpy(v) for k, v in merged.items()})
    with torch.no_grad():
        theirs = plain(*inputs).numpy()
    np.testing.assert_allclose(theirs, sess.forward(*(t.numpy() for t in inputs)), rtol=1e-5, atol=1e-6)
    return merged


# ---- SSF ------------------------------------------------------------------------------------------
SSF_TARGETS = ["emb", "c1", "c2", "fc1", "fc2", "head"]


def _ssf_torch(model, state, targets):
    """SSF as forward hooks on a frozen copy: (model, {name: scale/shift leaf})."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    params = {}
    for name in targets:
        mod = m.get_submodule(name)
        s = torch.nn.Parameter(torch.from_numpy(state[f"{name}.ssf_scale"].copy()))
        t = torch.nn.Parameter(torch.from_numpy(state[f"{name}.ssf_shift"].copy()))
        shape = (-1, 1, 1) if isinstance(mod, torch.nn.Conv2d) else (-1,)
        mod.register_forward_hook(lambda _m, _i, o, s=s, t=t, shape=shape: o * s.view(shape) + t.view(shape))
        params[f"{name}.ssf_scale"], params[f"{name}.ssf_shift"] = s, t
    return m, params


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_ssf_trains_like_torch_and_merges(optimizer):
    model, data = _model(), _data()
    spec = et.peft.SSF(targets=SSF_TARGETS, init_std=0.1, seed=3)
    prog = et.compile(model, data[:2], data[2], peft=spec, optimizer=_optimizer(optimizer))
    initial = et.Session(prog).state_dict()
    scale = initial["fc1.ssf_scale"]
    assert scale.shape == (12,) and 0.5 < scale.mean() < 1.5 and scale.std() > 0.01  # N(1, 0.1)
    assert {p.name for p in prog.graph.trainable_params()} == {f"{n}.ssf_{k}" for n in SSF_TARGETS
                                                               for k in ("scale", "shift")}
    ref, params = _ssf_torch(model, initial, SSF_TARGETS)
    torch_loss = _torch_train(ref, params, data, optimizer)
    sess = _check_trains_like(prog, params, torch_loss, data)
    # merged: W scaled per output channel, b' = s*b + t; c2 and fc2 gain a bias, the embedding folds both
    plain = Net(all_bias=True).eval()
    merged = _check_merged(sess, plain, data[:2])
    state = sess.state_dict()
    np.testing.assert_allclose(merged["fc2.bias"], state["fc2.ssf_shift"], rtol=1e-6)
    records = {r["module"]: r for r in prog.graph.adapters.own_config["adapters"]}
    assert records["fc2"]["adds_bias"] and records["c2"]["adds_bias"]
    assert not records["fc1"]["adds_bias"] and not records["emb"]["adds_bias"]
    assert prog.graph.adapters.peft_config is None  # SSF has no PEFT format


def test_ssf_save_adapter_writes_edgetunes_file_only(tmp_path):
    model, data = _model(), _data()
    prog = et.compile(model, data[:2], data[2], peft=et.peft.SSF(targets=["fc1", "c2"]),
                      optimizer=et.optim.SGD(lr=0.1))
    sess = et.Session(prog, backend="cpu")
    sess.step(*(t.numpy() for t in data))
    assert sess.save_adapter(tmp_path) == ["edgetune_adapter.json", "edgetune_adapter.safetensors"]
    from safetensors.numpy import load_file
    saved = load_file(str(tmp_path / "edgetune_adapter.safetensors"))
    state = sess.state_dict()
    assert set(saved) == {"fc1.ssf_scale", "fc1.ssf_shift", "c2.ssf_scale", "c2.ssf_shift"}
    for k, v in saved.items():
        np.testing.assert_array_equal(v, state[k])


# ---- (IA)³ ----------------------------------------------------------------------------------------
IA3_TARGETS, IA3_FF = ["c1", "c2", "fc1", "fc2", "head"], ["c2", "fc2"]


def _peft_key(name: str) -> str:
    return name.replace("base_model.model.", "").replace(".default", "").replace(".base_layer", "")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_ia3_trains_like_peft(optimizer, tmp_path):
    model, data = _model(), _data()
    spec = et.peft.IA3(targets=IA3_TARGETS, feedforward=IA3_FF)
    prog = et.compile(model, data[:2], data[2], peft=spec, optimizer=_optimizer(optimizer))
    pm = peft.get_peft_model(copy.deepcopy(model),
                             peft.IA3Config(target_modules=IA3_TARGETS, feedforward_modules=IA3_FF)).train()
    params = {_peft_key(n): p for n, p in pm.named_parameters() if p.requires_grad}
    initial = et.Session(prog).state_dict()
    assert set(params) == {p.name for p in prog.graph.trainable_params()}
    for name, p in params.items():  # PEFT's shapes, ones
        np.testing.assert_array_equal(initial[name], p.detach().numpy(), err_msg=name)
    assert initial["fc1.ia3_l"].shape == (12, 1) and initial["fc2.ia3_l"].shape == (1, 12)
    assert initial["c1.ia3_l"].shape == (1, 4, 1, 1) and initial["c2.ia3_l"].shape == (1, 4, 1, 1)
    torch_loss = _torch_train(pm, params, data, optimizer)
    sess = _check_trains_like(prog, params, torch_loss, data)
    if optimizer == "adamw":
        return
    # PEFT's files: loadable with PeftModel.from_pretrained on the original model
    assert "adapter_config.json" in sess.save_adapter(tmp_path)
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(model), str(tmp_path)).eval()
    assert sorted(loaded.peft_config["default"].feedforward_modules) == IA3_FF
    ours = sess.forward(*(t.numpy() for t in data[:2]))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(*data[:2]).numpy(), ours, rtol=1e-5, atol=1e-6)
        # merged: as PEFT's own merge
        peft_merged = loaded.merge_and_unload().state_dict()
    merged = _check_merged(sess, _model(), data[:2])
    for k, v in merged.items():
        np.testing.assert_allclose(v, peft_merged[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=k)


def test_ia3_grouped_conv_feedforward_merges_like_peft():
    class G(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.g = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.g(x).mean((2, 3)))

    torch.manual_seed(0)
    model = G().eval()
    x, y = torch.randn(2, 4, 5, 5), torch.tensor([0, 2])
    prog = et.compile(model, (x,), y, peft=et.peft.IA3(targets=["g", "fc"], feedforward=["g"]),
                      optimizer=et.optim.SGD(lr=0.5))
    sess = et.Session(prog, backend="cpu")
    for _ in range(STEPS):
        sess.step(x.numpy(), y.numpy())
    state = sess.state_dict()
    assert state["g.ia3_l"].shape == (1, 4, 1, 1)
    config = peft.IA3Config(target_modules=["g", "fc"], feedforward_modules=["g"])
    pm = peft.get_peft_model(copy.deepcopy(model), config)
    pm.load_state_dict({n: torch.from_numpy(state[_peft_key(n)]) for n, p in pm.named_parameters() if p.requires_grad},
                       strict=False)
    peft_merged = pm.merge_and_unload().state_dict()
    merged = _check_merged(sess, copy.deepcopy(model), (x,))
    for k, v in merged.items():
        np.testing.assert_allclose(v, peft_merged[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=k)


# ---- Channels -------------------------------------------------------------------------------------
def _channels_torch(model, state, records, biases=False):
    """The model with W[S] as the only trainable weights (a split parameter: the frozen W with
    rows S replaced by W_S, differentiable in W_S only); `biases`: every bias trains too."""
    m = copy.deepcopy(model)
    params = {}
    for n, p in m.named_parameters():
        p.requires_grad_(biases and n.endswith(".bias"))
        if p.requires_grad:
            params[n] = p
    split = []
    for r in records:
        w_sel = torch.nn.Parameter(torch.from_numpy(state[r["param"]].copy()))
        params[r["param"]] = w_sel
        split.append((r["weight"], m.get_parameter(r["weight"]).detach(), torch.tensor(r["channels"]), w_sel))

    def forward(*inputs):
        weights = {name: w.index_copy(0, idx, w_sel) for name, w, idx, w_sel in split}
        return torch.func.functional_call(m, weights, inputs)
    return forward, params


CHANNEL_CASES = {
    "first": dict(targets=["c1", "c2", "fc1", "fc2"], fraction=0.5),        # one run from 0 (slice + concat)
    "range": dict(targets=["c2", "fc1"], channels=range(2, 5)),             # one run inside
    "list": dict(targets=["c2", "fc1", "head"], channels=[0, 2, 3]),        # two runs (row gather)
}


@pytest.mark.parametrize("case", list(CHANNEL_CASES))
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_channels_train_only_the_selected_rows(case, optimizer):
    model, data = _model(), _data()
    spec = et.peft.Channels(**CHANNEL_CASES[case])
    prog = et.compile(model, data[:2], data[2], peft=spec, optimizer=_optimizer(optimizer))
    records = prog.graph.adapters.own_config["adapters"]
    initial = et.Session(prog).state_dict()
    for r in records:
        w = initial[r["weight"]]
        if case == "first":
            assert r["channels"] == list(range(math.ceil(w.shape[0] / 2)))
        np.testing.assert_array_equal(initial[r["param"]], w[r["channels"]])
    forward, params = _channels_torch(model, initial, records)
    torch_loss = _torch_train(forward, params, data, optimizer)
    sess = _check_trains_like(prog, params, torch_loss, data)
    after = sess.state_dict()
    merged = _check_merged(sess, _model(), data[:2])
    for r in records:
        np.testing.assert_array_equal(after[r["weight"]], initial[r["weight"]])  # the base weight stays frozen
        want = initial[r["weight"]].copy()
        want[r["channels"]] = after[r["param"]]
        np.testing.assert_array_equal(merged[r["weight"]], want)
        assert not np.array_equal(after[r["param"]], initial[r["param"]])


@pytest.mark.parametrize("case", ["first", "list"])
def test_channels_weight_gradient_has_k_rows(case):
    model, data = _model(), _data()
    prog = et.compile(model, data[:2], data[2], peft=et.peft.Channels(**CHANNEL_CASES[case]),
                      optimizer=et.optim.SGD(lr=0.1))
    g = prog.graph
    records = g.adapters.own_config["adapters"]
    full = {tuple(g.sources[r["weight"]].type.shape) for r in records}
    grads = [n for n in g.nodes if "weight_grad" in n.tags]
    shapes = {tuple(n.outputs[0].type.shape) for n in grads}
    assert not shapes & full  # no [out, in] gradient of a targeted weight, masked or not
    for r in records:  # the weight gradient of W_S: a k-row GEMM / k-output-channel conv gradient
        k_shape = tuple(g.sources[r["param"]].type.shape)
        assert k_shape[0] == len(r["channels"]) and k_shape in shapes
        assert any(tuple(n.outputs[0].type.shape) == k_shape and n.op in ("matmul", "conv2d_grad_weight")
                   and n.section == "backward" for n in grads)
    assert all(not p.trainable for p in g.params() if p.name in {r["weight"] for r in records})


def test_channels_importance_picks_the_largest_gradient_rows():
    model, data = _model(), _data()
    calib = _data(seed=1)
    spec = et.peft.Channels(targets=["c2", "fc1"], fraction=0.4, by="importance", calibration=calib)
    prog = et.compile(model, data[:2], data[2], peft=spec, optimizer=et.optim.SGD(lr=0.1))
    records = {r["module"]: r for r in prog.graph.adapters.own_config["adapters"]}
    m = copy.deepcopy(model)
    torch.nn.functional.cross_entropy(m(*calib[:2]), calib[2]).backward()
    for name, k in (("c2", 3), ("fc1", 5)):  # ceil(0.4 * 6), ceil(0.4 * 12)
        grad = m.get_parameter(f"{name}.weight").grad
        norms = grad.reshape(grad.shape[0], -1).norm(dim=1)
        assert records[name]["channels"] == sorted(torch.topk(norms, k).indices.tolist())
        assert records[name]["by"] == "importance"
    # the program trains like the torch split-parameter model on its chosen rows
    initial = et.Session(prog).state_dict()
    forward, params = _channels_torch(model, initial, list(records.values()))
    _check_trains_like(prog, params, _torch_train(forward, params, data, "sgd"), data)


def test_channels_with_bias_only_trains_biases_as_usual():
    model, data = _model(), _data()
    spec = et.peft.Union(et.peft.Channels(targets=["fc1", "c2"], channels=[1, 3, 4]), et.peft.BiasOnly())
    prog = et.compile(model, data[:2], data[2], peft=spec, optimizer=et.optim.AdamW(lr=0.01))
    initial = et.Session(prog).state_dict()
    forward, params = _channels_torch(model, initial, prog.graph.adapters.own_config["adapters"], biases=True)
    assert set(params) == {p.name for p in prog.graph.trainable_params()}
    assert {"fc1.bias", "c1.bias", "head.bias"} <= set(params)
    sess = _check_trains_like(prog, params, _torch_train(forward, params, data, "adamw"), data)
    _check_merged(sess, _model(), data[:2])


# ---- ONNX MatMul + Add layers ---------------------------------------------------------------------
def test_onnx_matmul_layers(tmp_path):
    """ONNX MatMul ([in, out] weights) + bias Add: (IA)³ and SSF act after the Add, as on the
    torch Linear the file stands for; merged weights come back in the file's layout."""
    pytest.importorskip("onnx")
    path = tmp_path / "mlp.onnx"
    linear, onnx_state, x, y = matmul_mlp_onnx(path)
    w1 = onnx_state["fc1.weight"]
    data = (torch.from_numpy(x), torch.from_numpy(y))

    def run(spec):
        prog = et.compile(str(path), (x,), y, peft=spec, optimizer=et.optim.SGD(lr=0.3))
        return prog, et.Session(prog).state_dict()

    def check_merged(sess):
        merged = sess.state_dict(merged=True)
        assert set(merged) == set(onnx_state) and merged["fc1.weight"].shape == (6, 8)
        plain = copy.deepcopy(linear)
        plain.load_state_dict({k: torch.from_numpy(v.T.copy() if v.ndim == 2 else v) for k, v in merged.items()})
        with torch.no_grad():
            np.testing.assert_allclose(plain(data[0]).numpy(), sess.forward(x), rtol=1e-5, atol=1e-6)

    # (IA)³ vs PEFT on the Linear model
    prog, initial = run(et.peft.IA3(targets=["fc1", "fc2"], feedforward=["fc2"]))
    pm = peft.get_peft_model(copy.deepcopy(linear), peft.IA3Config(target_modules=["fc1", "fc2"],
                                                                   feedforward_modules=["fc2"]))
    params = {_peft_key(n): p for n, p in pm.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD(list(params.values()), lr=0.3)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(pm(data[0]), data[1]).backward()
        opt.step()
    sess = et.Session(prog, backend="cpu")
    for _ in range(STEPS):
        sess.step(x, y)
    got = sess.state_dict()
    for n, p in params.items():
        np.testing.assert_allclose(got[n], p.detach().numpy(), **TOL, err_msg=n)
    check_merged(sess)

    # SSF: the shift folds into the Add's bias; Channels: W_S are columns of the [in, out] weight
    for spec in (et.peft.SSF(targets=["fc1", "fc2"], init_std=0.1),
                 et.peft.Channels(targets=["fc1"], channels=[1, 4, 5])):
        prog, initial = run(spec)
        if isinstance(spec, et.peft.Channels):
            np.testing.assert_array_equal(initial["fc1.weight_channels"], w1[:, [1, 4, 5]].T)
        sess = et.Session(prog, backend="cpu")
        for _ in range(STEPS):
            sess.step(x, y)
        check_merged(sess)

    # importance on an [in, out] weight ranks its columns (the Linear's rows)
    prog, _ = run(et.peft.Channels(targets=["fc1"], fraction=0.5, by="importance", calibration=(x, y)))
    m = copy.deepcopy(linear)
    torch.nn.functional.cross_entropy(m(data[0]), data[1]).backward()
    want = sorted(torch.topk(m.fc1.weight.grad.norm(dim=1), 4).indices.tolist())
    assert prog.graph.adapters.own_config["adapters"][0]["channels"] == want


# ---- errors ---------------------------------------------------------------------------------------
def test_spec_errors_are_clear():
    model, data = _model(), _data()

    def compile_with(spec):
        return et.compile(model, data[:2], data[2], peft=spec)

    with pytest.raises(et.SpecError, match="fraction must be in \\(0, 1\\]"):
        et.peft.Channels(targets=["fc1"], fraction=0.0)
    with pytest.raises(et.SpecError, match="fraction must be in \\(0, 1\\]"):
        et.peft.Channels(targets=["fc1"], fraction=1.5)
    with pytest.raises(et.SpecError, match="exactly one of fraction= .* or channels="):
        et.peft.Channels(targets=["fc1"])
    with pytest.raises(et.SpecError, match="channel index -1 is out of range"):
        et.peft.Channels(targets=["fc1"], channels=[-1, 2])
    with pytest.raises(et.SpecError, match="given more than once"):
        et.peft.Channels(targets=["fc1"], channels=[2, 2])
    with pytest.raises(et.SpecError, match="needs calibration"):
        et.peft.Channels(targets=["fc1"], fraction=0.5, by="importance")
    with pytest.raises(et.SpecError, match="by must be one of first, importance"):
        et.peft.Channels(targets=["fc1"], fraction=0.5, by="random")
    with pytest.raises(et.SpecError, match=r"channel index 6 is out of range for c2 \(conv2d \[6, 4, 1, 1\]\), "
                                           r"which has 6 output channels"):
        compile_with(et.peft.Channels(targets=["fc1", "c2"], channels=[0, 6]))
    with pytest.raises(et.SpecError, match=r"Channels.* does not apply to emb \(embedding"):
        compile_with(et.peft.Channels(targets=["emb"], fraction=0.5))
    with pytest.raises(et.SpecError, match="calibration 'img' has shape \\[2, 2, 5, 5\\], the program expects"):
        compile_with(et.peft.Channels(targets=["fc1"], fraction=0.5, by="importance",
                                      calibration=(data[0], data[1][:2], data[2])))
    with pytest.raises(et.SpecError, match="feedforward pattern 'fc2' names none of the targeted layers .*subset"):
        compile_with(et.peft.IA3(targets=["fc1"], feedforward=["fc2"]))
    with pytest.raises(et.SpecError, match=r"emb \(embedding \[10, 8\]\): \(IA\)³ does not apply to embeddings"):
        compile_with(et.peft.IA3(targets=["emb", "fc1"]))
    for spec in (et.peft.SSF(targets=["fc9"]), et.peft.IA3(targets=["fc9"]),
                 et.peft.Channels(targets=["fc9"], fraction=1)):
        with pytest.raises(et.SpecError, match=r"'fc9' matches no layer.*closest module names: fc"):
            compile_with(spec)
    with pytest.raises(et.SpecError, match="needs targets"):
        et.peft.SSF()
    with pytest.raises(et.SpecError, match="init_std must be"):
        et.peft.SSF(targets=["fc1"], init_std=-1)
    with pytest.raises(et.SpecError, match="fc1 .* already has an adapter"):
        compile_with(et.peft.Union(et.peft.LoRA(r=2, targets=["fc1"]), et.peft.SSF(targets=["fc1"])))


def test_parse_spec_forms():
    ssf = et.peft.parse_spec("ssf:targets=fc1|fc2,init_std=0.05")
    assert isinstance(ssf, et.peft.SSF) and ssf.targets == ["fc1", "fc2"] and ssf.init_std == 0.05
    ia3 = et.peft.parse_spec("ia3:targets=k|v|down,feedforward=down")
    assert isinstance(ia3, et.peft.IA3) and ia3.feedforward == ["down"]
    ch = et.peft.parse_spec("channels:targets=fc1,channels=0-3|8+bias-only")
    assert isinstance(ch, et.peft.Union) and ch.specs[0].channels == [0, 1, 2, 3, 8]
    assert et.peft.parse_spec("channels:targets=fc1,fraction=0.25").by == "first"
