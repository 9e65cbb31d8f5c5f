"""ONNX frontend: torch.onnx.export (TorchScript exporter, dynamo=False) -> import_onnx -> reference
executor, compared with the torch module; plus hand-built graphs checked against onnx's own
reference evaluator, and the errors for bad files, old opsets and unsupported ops."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import edgetune as et
from edgetune import models
from edgetune.frontends.from_onnx import import_onnx
from edgetune.runtime.reference import ReferenceExecutor

import support

EVAL, TRAINING = torch.onnx.TrainingMode.EVAL, torch.onnx.TrainingMode.TRAINING


def export(model, args, path, opset=17, training=EVAL, input_names=None, output_names=("y",)):
    input_names = list(input_names or [f"x{i}" for i in range(len(args))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(args), str(path), dynamo=False, opset_version=opset,
                          do_constant_folding=False, training=training, input_names=input_names,
                          output_names=list(output_names))
    return path


def state_of(g):
    return {n: g.initial[n] for n, v in g.sources.items() if v.kind in ("param", "buffer", "state")}


def run(imported, inputs):
    g = imported.graph
    et.verify(g)
    feeds = {name: np.asarray(x) for name, x in zip(imported.input_names, inputs)}
    return ReferenceExecutor(g).run(feeds, state_of(g))


def forward_matches_torch(model, inputs, tmp_path, rtol=1e-4, atol=1e-5, **kw):
    path = export(model, inputs, tmp_path / "model.onnx", **kw)
    imported = import_onnx(path, inputs)
    out, _ = run(imported, [x.numpy() for x in inputs])
    with torch.no_grad():
        expected = model(*inputs)
    np.testing.assert_allclose(out["output"], expected.numpy(), rtol=rtol, atol=atol)
    return imported


def ops_of(g):
    return [n.op for n in g.nodes]


def param_names(g, kind="param"):
    return {n for n, v in g.sources.items() if v.kind == kind}


# ---------------------------------------------------------------------------------------------
# Models exported from torch
# ---------------------------------------------------------------------------------------------
def test_mlp_gemm_becomes_linear_and_names_match_state_dict(tmp_path):
    torch.manual_seed(0)
    m = models.MLP(in_features=12, hidden=16, num_classes=5, depth=3).eval()
    x = torch.randn(4, 12)
    imported = forward_matches_torch(m, (x,), tmp_path)
    g = imported.graph
    assert imported.frontend == "onnx" and not imported.train_mode
    assert ops_of(g) == ["linear", "relu", "linear", "relu", "linear"]
    assert param_names(g) == set(m.state_dict())
    for name, t in m.state_dict().items():
        np.testing.assert_array_equal(g.initial[name], t.numpy())
    assert list(g.outputs) == ["output"] and imported.output_values == [g.outputs["output"]]
    assert all(not p.trainable for p in g.params())  # the PEFT spec decides later
    assert all(n.source.startswith("Gemm '") for n in g.nodes if n.op == "linear")


def test_cnn_conv_bn_relu_pools_linear(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.AvgPool2d(3, 1, 1, count_include_pad=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(8, 10))
    with torch.no_grad():  # non-trivial running stats
        for bn in (m[1], m[5]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    m.eval()
    imported = forward_matches_torch(m, (torch.randn(2, 3, 16, 16),), tmp_path)
    g = imported.graph
    assert ops_of(g).count("batch_norm_infer") == 2 and "max_pool2d" in ops_of(g) and "avg_pool2d" in ops_of(g)
    assert "mean" in ops_of(g)  # GlobalAveragePool
    assert param_names(g, "buffer") == {"1.running_mean", "1.running_var", "5.running_mean", "5.running_var"}
    sd = {k for k in m.state_dict() if not k.endswith("num_batches_tracked")}
    assert param_names(g) | param_names(g, "buffer") == sd


def test_small_cnn_fresh_bn_dedup_identities_become_own_sources(tmp_path):
    """A fresh BatchNorm's stats equal its weight/bias, so the exporter dedups them into
    Identity(weight) / Identity(bias): each must still be its own buffer under its own name."""
    torch.manual_seed(0)
    m = models.SmallCNN(num_classes=10, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    path = export(m, (x,), tmp_path / "cnn.onnx")
    assert any(n.op_type == "Identity" for n in onnx.load(str(path)).graph.node)
    imported = forward_matches_torch(m, (x,), tmp_path)
    g = imported.graph
    sd = {k for k in m.state_dict() if not k.endswith("num_batches_tracked")}
    assert param_names(g) | param_names(g, "buffer") == sd
    assert all(n.endswith(("running_mean", "running_var")) for n in param_names(g, "buffer"))


def test_mobilenet_depthwise_relu6(tmp_path):
    torch.manual_seed(0)
    m = models.MobileNetV2(num_classes=10, width_mult=0.35).eval()
    imported = forward_matches_torch(m, (torch.randn(1, 3, 32, 32),), tmp_path)
    g = imported.graph
    assert any(n.op == "conv2d" and n.attrs["groups"] > 1 for n in g.nodes)
    assert "hardtanh" in ops_of(g)  # ReLU6 -> Clip(0, 6)
    assert {n.attrs["min"] for n in g.nodes if n.op == "hardtanh"} == {0.0}


class DepthwiseBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pw = nn.Conv2d(6, 4, 1)
        self.conv1d = nn.Conv1d(4, 4, 3, padding=2, dilation=2)

    def forward(self, x):
        h = F.hardswish(F.relu6(self.dw(x)))
        h = self.pw(h) * F.hardsigmoid(h).mean(1, keepdim=True)
        h = F.relu(h).clamp(min=0) + torch.sigmoid(h) * F.silu(h)
        b, c, hh, ww = h.shape
        return self.conv1d(h.reshape(b, c, hh * ww)).tanh()


def test_depthwise_hardswish_hardsigmoid_silu_conv1d(tmp_path):
    torch.manual_seed(0)
    imported = forward_matches_torch(DepthwiseBlock().eval(), (torch.randn(2, 6, 5, 5) * 3,), tmp_path)
    ops = ops_of(imported.graph)
    for op in ("hardtanh", "hardswish", "hardsigmoid", "silu", "relu", "tanh"):
        assert op in ops, (op, ops)


class Block(nn.Module):
    """Pre-LN transformer block: attention written with matmuls (or SDPA), exact-GELU MLP."""

    def __init__(self, d=16, heads=2, sdpa=False, causal=False, approximate="none"):
        super().__init__()
        self.heads, self.sdpa, self.causal = heads, sdpa, causal
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.act = nn.GELU(approximate=approximate)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            scores = q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5
            if self.causal:
                mask = torch.ones(t, t, dtype=torch.bool).tril()
                scores = scores.masked_fill(~mask, float("-inf"))
            y = scores.softmax(-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


@pytest.mark.parametrize("sdpa,causal,approximate", [(False, False, "none"), (False, True, "tanh"),
                                                     (True, False, "none"), (True, True, "tanh")])
def test_transformer_block(tmp_path, sdpa, causal, approximate):
    torch.manual_seed(0)
    m = Block(sdpa=sdpa, causal=causal, approximate=approximate).eval()
    imported = forward_matches_torch(m, (torch.randn(2, 5, 16),), tmp_path)
    g = imported.graph
    ops = ops_of(g)
    assert ops.count("layer_norm") == 2 and ops.count("softmax") == 1
    assert ops.count("linear") == 4 and "erf" not in ops  # Transpose(W) -> MatMul -> Add(b) fused
    gelus = [n for n in g.nodes if n.op == "gelu"]
    assert len(gelus) == 1 and gelus[0].attrs["approximate"] == approximate
    assert param_names(g) == set(m.state_dict())
    linears = [n for n in g.nodes if n.op == "linear"]
    assert all(len(n.inputs) == 3 and n.inputs[1].kind == "param" for n in linears)


def test_layer_norm_decomposed_at_opset_16(tmp_path):
    """Before opset 17 torch writes LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div: still imports."""
    torch.manual_seed(0)
    m = Block(sdpa=True).eval()
    imported = forward_matches_torch(m, (torch.randn(2, 5, 16),), tmp_path, opset=16)
    assert "layer_norm" not in ops_of(imported.graph) and "mean" in ops_of(imported.graph)


class EmbedPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.pos = nn.Parameter(torch.randn(6, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.emb(ids) + self.pos[: ids.shape[1]]
        return self.head(torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1).reshape(ids.shape[0], 2, 8).sum(1))


def test_embedding_gather_on_param(tmp_path):
    torch.manual_seed(0)
    m = EmbedPool().eval()
    ids = torch.randint(0, 20, (3, 5))
    imported = forward_matches_torch(m, (ids,), tmp_path)
    g = imported.graph
    emb = [n for n in g.nodes if n.op == "embedding"]
    assert len(emb) == 1 and emb[0].inputs[0].name == "emb.weight" and emb[0].inputs[1].name == imported.input_names[0]
    assert g.inputs[0].dtype == "i64"
    assert param_names(g) == set(m.state_dict())


@pytest.mark.parametrize("name,kw,seq", [
    ("bert", dict(vocab_size=50, hidden=32, layers=2, heads=2, intermediate=64, max_len=16), 8),
    ("gpt", dict(vocab_size=50, hidden=32, layers=2, heads=2, max_len=16), 8),
])
def test_zoo_transformers(tmp_path, name, kw, seq):
    torch.manual_seed(0)
    m = models.build(name, **kw).eval()
    (ids,), _ = models.example_inputs(name, m, batch=2, seq_len=seq)
    imported = forward_matches_torch(m, (ids,), tmp_path)
    g = imported.graph
    assert "gelu" in ops_of(g) and ops_of(g).count("embedding") == 2
    # GPT ties lm_head.weight to wte.weight: the file holds one initializer, used by both
    sd = set(m.state_dict()) - ({"lm_head.weight"} if name == "gpt" else set())
    assert param_names(g) == sd


def test_batch_norm_training_mode_updates_running_stats(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.2), nn.ReLU(),
                      nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).train()
    x = torch.randn(5, 3, 6, 6)
    before = m[1].running_mean.clone()
    path = export(m, (x,), tmp_path / "bn_train.onnx", training=TRAINING)
    # the exporter traces a train-mode forward, which itself advances the running stats; the
    # file holds those, so the reference is the model as it is after the export
    assert not torch.equal(before, m[1].running_mean)
    ref = copy.deepcopy(m)
    imported = import_onnx(path, (x,))
    g = imported.graph
    assert imported.train_mode
    assert "batch_norm_train" in ops_of(g)
    assert set(g.assigns) == {"1.running_mean", "1.running_var"}
    np.testing.assert_allclose(g.initial["1.running_mean"], ref[1].running_mean.numpy())
    np.testing.assert_allclose(g.initial["1.running_var"], ref[1].running_var.numpy())
    out, new_state = run(imported, [x.numpy()])
    with torch.no_grad():
        expected = ref(x)
    np.testing.assert_allclose(out["output"], expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_state["1.running_mean"], ref[1].running_mean.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new_state["1.running_var"], ref[1].running_var.numpy(), rtol=1e-4, atol=1e-6)


def test_dropout_training_mode_becomes_dropout_node(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.25), nn.Linear(6, 2)).train()
    x = torch.randn(3, 6)
    imported = import_onnx(export(m, (x,), tmp_path / "drop.onnx", training=TRAINING), (x,))
    g = imported.graph
    drops = [n for n in g.nodes if n.op == "dropout"]
    assert imported.train_mode and len(drops) == 1 and drops[0].attrs["p"] == 0.25
    assert "rng.counter" in g.assigns
    # in eval mode the same model has no dropout at all
    imported = forward_matches_torch(m.eval(), (x,), tmp_path)
    assert "dropout" not in ops_of(imported.graph) and not imported.train_mode


def test_multiple_outputs_and_multiple_inputs(tmp_path):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(5, 3)

        def forward(self, x, y):
            return self.a(x) + self.b(y), (self.a(x) * 2).softmax(-1)

    torch.manual_seed(0)
    m = Two().eval()
    x, y = torch.randn(2, 4), torch.randn(2, 5)
    path = export(m, (x, y), tmp_path / "two.onnx", input_names=["x", "y"], output_names=["s", "p"])
    imported = import_onnx(path, (x.numpy(), y.numpy()))
    assert imported.input_names == ["x", "y"] and list(imported.graph.outputs) == ["output0", "output1"]
    out, _ = run(imported, [x.numpy(), y.numpy()])
    with torch.no_grad():
        e0, e1 = m(x, y)
    np.testing.assert_allclose(out["output0"], e0.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["output1"], e1.numpy(), rtol=1e-4, atol=1e-5)


def test_model_proto_and_symbolic_batch_dim(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    path = tmp_path / "dyn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randn(2, 4),), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    proto = onnx.load(str(path))
    for batch in (1, 7):
        x = torch.randn(batch, 4)
        imported = import_onnx(proto, (x,))
        assert imported.graph.inputs[0].shape == (batch, 4)
        out, _ = run(imported, [x.numpy()])
        np.testing.assert_allclose(out["output"], m(x).detach().numpy(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Fine-tuning an ONNX model: same trainables and same training as the torch model
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("peft", [et.peft.Full(), et.peft.BiasOnly()], ids=repr)
def test_compile_onnx_trains_like_torch(tmp_path, peft):
    torch.manual_seed(0)
    m = models.SmallCNN(num_classes=4, width=8).eval()
    (x,), y = models.example_inputs("small_cnn", m, batch=4, resolution=16)
    path = export(m, (x,), tmp_path / "cnn.onnx")
    prog = et.compile(str(path), (x,), y, peft=peft, optimizer=et.optim.SGD(lr=0.1, momentum=0.9))
    assert prog.frontend == "onnx"
    torch_prog = et.compile(m, (x,), y, peft=peft)
    assert sorted(prog.trainable_names) == sorted(torch_prog.trainable_names)
    batches = [((x,), y)] * 3
    losses, state, _ = support.edgetune_run(prog, [((x.numpy(),), y.numpy())] * 3)
    ref_losses, ref_state = support.torch_reference_run(m, prog, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-5)
    for name in prog.trainable_names:
        np.testing.assert_allclose(state[name], ref_state[name], rtol=1e-4, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Hand-built graphs, checked against onnx's reference evaluator
# ---------------------------------------------------------------------------------------------
def make_model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "hand", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def tensor_info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def matches_onnx_reference(model, feeds, rtol=1e-5, atol=1e-6):
    from onnx.reference import ReferenceEvaluator
    expected = ReferenceEvaluator(model).run(None, feeds)
    imported = import_onnx(model, tuple(feeds.values()))
    out, _ = run(imported, list(feeds.values()))
    names = ["output"] if len(expected) == 1 else [f"output{i}" for i in range(len(expected))]
    for name, e in zip(names, expected):
        np.testing.assert_allclose(out[name], e, rtol=rtol, atol=atol)
    return imported


def test_shape_ops_and_constant_folding():
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),                           # [2, 3, 4]
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),           # 2 (folded)
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),     # [2, -1]
        helper.make_node("Reshape", ["x", "target"], ["flat"]),               # [2, 12]
        helper.make_node("Reshape", ["x", "zero_m1"], ["r0"]),                # [0, -1] -> [2, 12]
        helper.make_node("Add", ["flat", "r0"], ["s"]),
        helper.make_node("Slice", ["s", "st", "en", "ax", "sp"], ["sl"]),    # [:, 1:-1:2] -> [2, 5]
        helper.make_node("Split", ["s", "sizes"], ["p0", "p1"], axis=1),      # 5 + 7
        helper.make_node("ReduceSum", ["p1", "axes1"], ["rs"], keepdims=1),   # [2, 1]
        helper.make_node("ReduceMean", ["p0", "axes1"], ["rm"], keepdims=0),  # [2] (opset 18: axes input)
        helper.make_node("Unsqueeze", ["rm", "axes1"], ["rm1"]),              # [2, 1]
        helper.make_node("Sub", ["rs", "rm1"], ["d"]),
        helper.make_node("Mul", ["sl", "d"], ["m"]),
        helper.make_node("Transpose", ["m"], ["t"], perm=[1, 0]),             # [5, 2]
        helper.make_node("Expand", ["t", "eshape"], ["e"]),                   # [3, 5, 2]
        helper.make_node("Flatten", ["e"], ["f"], axis=2),                    # [15, 2]
        helper.make_node("Squeeze", ["col", "axes1"], ["col1"]),              # [15]
        helper.make_node("Unsqueeze", ["col1", "axes1"], ["col2"]),           # [15, 1]
        helper.make_node("Concat", ["f", "col2"], ["c"], axis=-1),            # [15, 3]
        helper.make_node("Gather", ["c", "idx_scalar"], ["g0"], axis=1),      # [15]
        helper.make_node("Gather", ["c", "idx_list"], ["g1"], axis=0),        # [3, 3]
        helper.make_node("ReduceSum", ["g1"], ["g1s"], keepdims=0),           # scalar (all dims)
        helper.make_node("Div", ["g0", "g1s"], ["q"]),
        helper.make_node("Pow", ["q", "two"], ["q2"]),
        helper.make_node("Sqrt", ["q2"], ["q3"]),
        helper.make_node("Clip", ["q3", "zero_f"], ["y"]),
    ]
    inits = [ints("zero", 0), ints("axes0", [0]), ints("minus1", [-1]), ints("zero_m1", [0, -1]),
             ints("st", [1]), ints("en", [-1]), ints("ax", [1]), ints("sp", [2]), ints("sizes", [5, 7]),
             ints("axes1", [1]), ints("eshape", [3, 1, 1]), ints("idx_scalar", 2), ints("idx_list", [0, 4, 14]),
             numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(0.0), "zero_f")]
    model = make_model(nodes, [tensor_info("x", [2, 3, 4]), tensor_info("col", [15, 1])],
                       [tensor_info("y", [15])], inits)
    rng = np.random.default_rng(0)
    imported = matches_onnx_reference(model, {"x": rng.standard_normal((2, 3, 4)).astype(np.float32),
                                              "col": rng.standard_normal((15, 1)).astype(np.float32)})
    g = imported.graph
    assert not g.params(), "integer / scalar constants read as attrs must not become params"
    reshapes = [n.attrs["shape"] for n in g.nodes if n.op == "reshape"]
    assert [2, 12] in reshapes and all(min(s) >= 0 for s in reshapes)
    assert any(n.op == "relu" for n in g.nodes)  # Clip(min=0) without max


def test_gemm_variants_where_trilu_and_matmul_with_initializer():
    rng = np.random.default_rng(1)
    w_t = rng.standard_normal((3, 4)).astype(np.float32)   # B for transB=0: [in, out]
    w = rng.standard_normal((4, 3)).astype(np.float32)     # B for transB=1: [out, in]
    nodes = [
        helper.make_node("Gemm", ["x", "w_t", "c_row"], ["g0"], alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["x", "w", "b"], ["g1"], transB=1),
        helper.make_node("Gemm", ["xt", "w", "b"], ["g2"], transA=1, transB=1),
        helper.make_node("Add", ["g0", "g1"], ["s"]),
        helper.make_node("Add", ["s", "g2"], ["s2"]),
        helper.make_node("MatMul", ["s2", "proj"], ["mm"]),
        helper.make_node("Add", ["bias2", "mm"], ["mmb"]),                  # bias first, as torch writes it
        helper.make_node("Trilu", ["mmb"], ["tri"], upper=0),                # on an activation: where(mask)
        helper.make_node("ConstantOfShape", ["mshape"], ["ones"],
                         value=numpy_helper.from_array(np.array([1], np.int64), "v")),
        helper.make_node("Trilu", ["ones", "one"], ["band"], upper=1),        # folded
        helper.make_node("Cast", ["band"], ["mask"], to=TensorProto.BOOL),
        helper.make_node("Where", ["mask", "tri", "neg"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w_t, "w_t"), (w, "w"), (rng.standard_normal((1, 4)).astype(np.float32), "c_row"),
        (rng.standard_normal(4).astype(np.float32), "b"), (rng.standard_normal((4, 4)).astype(np.float32), "proj"),
        (rng.standard_normal(4).astype(np.float32), "bias2"), (np.float32(-1.0), "neg"))]
    inits += [ints("mshape", [2, 4]), ints("one", 1)]
    model = make_model(nodes, [tensor_info("x", [2, 3]), tensor_info("xt", [3, 2])], [tensor_info("y", [2, 4])], inits)
    imported = matches_onnx_reference(model, {"x": rng.standard_normal((2, 3)).astype(np.float32),
                                              "xt": rng.standard_normal((3, 2)).astype(np.float32)})
    g = imported.graph
    adds = [n for n in g.nodes if n.op == "add" and n.inputs[1].name == "bias2"]
    assert adds, "a 1-d param added to a matmul goes to add's bias slot"
    assert {"w_t", "w", "b", "proj", "bias2", "c_row"} <= param_names(g)


def test_avg_pool_ceil_mode_and_max_pool_dilation():
    nodes = [helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1, count_include_pad=1),
             helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2]),
             helper.make_node("GlobalAveragePool", ["a"], ["ga"]),
             helper.make_node("Add", ["m", "ga"], ["y"])]
    model = make_model(nodes, [tensor_info("x", [1, 2, 7, 7])], [tensor_info("y", [1, 2, 3, 3])])
    x = np.random.default_rng(2).standard_normal((1, 2, 7, 7)).astype(np.float32)
    matches_onnx_reference(model, {"x": x})


def test_comparisons_not_cumsum_gather_elements():
    """Equal / Less / LessOrEqual / Greater / GreaterOrEqual / Not -> the comparison ops, CumSum
    (reverse 0 and 1) -> cumsum, GatherElements with run-time indices and with compile-time ones
    (negative entries wrapped, as ONNX allows) -> gather; RoBERTa-style position ids on the way."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Equal", ["ids", "pad"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["mask", "axis1"], ["count"]),
        helper.make_node("Mul", ["count", "mask"], ["pos0"]),
        helper.make_node("Add", ["pos0", "pad"], ["pos"]),                      # RoBERTa's position ids
        helper.make_node("Cast", ["pos"], ["posf"], to=TensorProto.FLOAT),
        helper.make_node("Less", ["x", "half"], ["lt"]),
        helper.make_node("Where", ["lt", "x", "posf"], ["w0"]),
        helper.make_node("GreaterOrEqual", ["w0", "posf"], ["ge"]),
        helper.make_node("LessOrEqual", ["x", "w0"], ["le"]),
        helper.make_node("Greater", ["x", "minus_half"], ["gt"]),
        helper.make_node("Where", ["ge", "w0", "x"], ["w1"]),
        helper.make_node("Where", ["le", "w1", "half"], ["w2"]),
        helper.make_node("Where", ["gt", "w2", "minus_half"], ["w3"]),
        helper.make_node("CumSum", ["w3", "axis1"], ["rc"], reverse=1),
        helper.make_node("CumSum", ["rc", "axis0"], ["fc"], reverse=0),
        helper.make_node("GatherElements", ["fc", "pick"], ["g0"], axis=1),    # run-time indices [2, 3]
        helper.make_node("GatherElements", ["table", "rows"], ["g1"], axis=0),  # constant, negative entries
        helper.make_node("Add", ["g0", "g1"], ["y"]),
    ]
    inits = [ints("pad", 1), ints("axis1", 1), ints("axis0", [0]), ints("rows", [[0, -1, 2], [-3, 1, 1]]),
             numpy_helper.from_array(np.float32(0.5), "half"), numpy_helper.from_array(np.float32(-0.5), "minus_half"),
             numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "table")]
    model = make_model(nodes, [tensor_info("x", [2, 5]), tensor_info("ids", [2, 5], TensorProto.INT64),
                               tensor_info("pick", [2, 3], TensorProto.INT64)],
                       [tensor_info("y", [2, 3])], inits)
    ids = np.array([[5, 1, 7, 3, 1], [2, 2, 9, 1, 1]], np.int64)
    imported = matches_onnx_reference(model, {"x": rng.standard_normal((2, 5)).astype(np.float32), "ids": ids,
                                              "pick": np.array([[4, 0, 4], [1, 3, 2]], np.int64)})
    g = imported.graph
    ops = ops_of(g)
    for op in ("eq", "lt", "le", "gt", "ge", "cumsum", "gather"):
        assert op in ops, (op, ops)
    assert [n.attrs for n in g.nodes if n.op == "cumsum"] == [{"dim": 1}, {"dim": 1, "reverse": True}, {"dim": 0}]
    gathers = [n for n in g.nodes if n.op == "gather"]
    assert [n.attrs["dim"] for n in gathers] == [1, 0]
    assert g.initial[gathers[1].inputs[1].name].min() >= 0  # the constant indices were wrapped
    assert gathers[1].inputs[0].name == "table" and "table" in param_names(g)


def test_cumsum_exclusive_is_unsupported():
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=1, name="excl")]
    model = make_model(nodes, [tensor_info("x", [2, 3])], [tensor_info("y", [2, 3])], [ints("axis", 1)])
    with pytest.raises(et.UnsupportedOpError) as info:
        import_onnx(model, (np.zeros((2, 3), np.float32),))
    assert info.value.items == ["CumSum (exclusive=1 (only the inclusive sum, exclusive=0)) at node 'excl'"]


class GatherCumsum(nn.Module):
    """torch.gather on a trainable table (exported as GatherElements), a cumsum, comparisons."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(3, 8))
        self.head = nn.Linear(5, 2)

    def forward(self, x, idx):
        h = torch.gather(self.table, 1, idx) * x
        h = torch.cumsum(h, dim=1) + (idx > 3).float() - (x <= 0).float() * 0.5 + idx.eq(2).float()
        return self.head(torch.where(h > 0, h, h * 0.1))


def test_torch_gather_cumsum_comparisons_export_and_train(tmp_path):
    torch.manual_seed(0)
    m = GatherCumsum().eval()
    x, idx = torch.randn(3, 5), torch.randint(0, 8, (3, 5))
    imported = forward_matches_torch(m, (x, idx), tmp_path)
    ops = ops_of(imported.graph)
    assert {"gather", "cumsum", "gt", "le", "eq"} <= set(ops), ops
    path = export(m, (x, idx), tmp_path / "gc.onnx")
    y = torch.tensor([0, 1, 1])
    prog = et.compile(str(path), (x, idx), y, peft=et.peft.Full(), optimizer=et.optim.SGD(lr=0.1, momentum=0.9))
    assert "gather_backward" in [n.op for n in prog.graph.section_nodes("backward")]
    batches = [((x, idx), y)] * 3
    losses, state, _ = support.edgetune_run(prog, [((x.numpy(), idx.numpy()), y.numpy())] * 3)
    ref_losses, ref_state = support.torch_reference_run(m, prog, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-5)
    for name in prog.trainable_names:
        np.testing.assert_allclose(state[name], ref_state[name], rtol=1e-4, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_garbage_and_missing_files_raise_capture_error(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not an onnx model \x00\xff\x13 at all")
    with pytest.raises(et.CaptureError, match="garbage.onnx"):
        import_onnx(bad, (np.zeros((1, 2), np.float32),))
    missing = tmp_path / "missing.onnx"
    with pytest.raises(et.CaptureError, match="missing.onnx.*FileNotFoundError"):
        import_onnx(missing, (np.zeros((1, 2), np.float32),))
    with pytest.raises(et.CaptureError, match="missing.onnx"):  # through et.compile too
        et.compile(str(missing), (np.zeros((1, 2), np.float32),), np.zeros(1, np.int64))


def test_old_opset_raises_capture_error(tmp_path):
    m = nn.Sequential(nn.Linear(4, 2)).eval()
    x = torch.randn(1, 4)
    path = export(m, (x,), tmp_path / "old.onnx", opset=11)
    with pytest.raises(et.CaptureError, match="opset 11"):
        import_onnx(path, (x,))


def test_unsupported_ops_are_listed_together(tmp_path):
    class Det(nn.Module):
        def forward(self, x):
            return torch.linalg.det(x) + torch.linalg.det(x * 2)

    x = torch.randn(2, 3, 3)
    path = export(Det(), (x,), tmp_path / "det.onnx")
    with pytest.raises(et.UnsupportedOpError) as info:
        import_onnx(path, (x,))
    e = info.value
    assert len(e.items) == 2 and all(item.startswith("Det at node '") for item in e.items), e.items
    assert "ONNX model uses 2 unsupported op occurrence(s)" in str(e)


def test_unsupported_forms_custom_domains_and_downstream_ops_all_reported():
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[0, 0, 1, 1], name="asym"),
             helper.make_node("MyOp", ["c"], ["d"], domain="com.example", name="custom"),
             helper.make_node("Erf", ["d"], ["e"], name="lonely_erf"),
             helper.make_node("Relu", ["e"], ["y"], name="fine")]
    graph = helper.make_graph(nodes, "bad", [tensor_info("x", [1, 1, 5, 5])],
                              [tensor_info("y", ["n", "c", "h", "w"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(et.UnsupportedOpError) as info:
        import_onnx(model, (np.zeros((1, 1, 5, 5), np.float32),))
    items = info.value.items
    assert len(items) == 3, items
    assert "Conv (asymmetric pads [0, 0, 1, 1]) at node 'asym'" == items[0]
    assert items[1] == "com.example::MyOp at node 'custom'"
    assert items[2].startswith("Erf (") and items[2].endswith("at node 'lonely_erf'")


def test_example_inputs_must_fit_the_declared_inputs(tmp_path):
    m = nn.Linear(4, 2).eval()
    path = export(m, (torch.randn(3, 4),), tmp_path / "lin.onnx", input_names=["features"])
    with pytest.raises(et.InputError, match="'features'.*dim 0: 3 != 5"):
        import_onnx(path, (torch.randn(5, 4),))
    with pytest.raises(et.InputError, match="'features'.*rank"):
        import_onnx(path, (torch.randn(3, 4, 1),))
    with pytest.raises(et.InputError, match="'features'.*f32.*float64"):
        import_onnx(path, (np.zeros((3, 4)),))
    with pytest.raises(et.InputError, match=r"1 input\(s\) \['features'\] but 2"):
        import_onnx(path, (torch.randn(3, 4), torch.randn(3, 4)))
