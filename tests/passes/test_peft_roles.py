"""Parameter roles from op semantics (issue 14).

Norm scales are norm parameters whatever arithmetic a model spells them with: HF RMSNorm arrives
as pow/mean/add/rsqrt/mul, Gemma's as `x_hat * (1 + w)` (an add the old rule called a bias), and
both must be "norm", never "bias". A vector param multiplying any other activation is a "scale"
(ConvNeXt's layer scale). LastK attaches a norm to the layer it belongs to (conv -> BN, post-norm
to the layer before, a pre-norm to the layers it feeds, so the final norm goes with the LM head),
and FreezeEmbeddings(spec) keeps every embedding table — a tied LM head included — frozen.

The HF models are built from tiny configs with random weights (no downloads) and captured once
per module; each spec compiles a copy of the capture.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import edgetune as et
from edgetune import models
from edgetune.compiler import peft
from edgetune.compiler.compile import compile_imported
from edgetune.frontends import import_model

V = 64  # vocabulary of the tiny language models


class Logits(nn.Module):
    """An HF causal LM as a one-input, one-output module: ids [B, T] -> logits [B*T, V]."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, ids):
        return self.m(input_ids=ids).logits.reshape(-1, V)


def _hf(kind: str, tie: bool = False):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    dims = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, head_dim=8)
    if kind == "gemma":  # ties its head by default
        model = transformers.GemmaForCausalLM(transformers.GemmaConfig(**dims))
    elif kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**dims, tie_word_embeddings=tie))
    elif kind == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**dims, tie_word_embeddings=tie))
    elif kind == "gpt2":  # ties its head by default
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4,
                                                                     n_positions=16, bos_token_id=0, eos_token_id=0))
    else:
        raise KeyError(kind)
    return Logits(model).eval()


_CAPTURES: dict = {}


def captured(kind: str, tie: bool = False):
    """(ImportedModel, example target) of a tiny HF model, captured once; callers get a copy."""
    if (kind, tie) not in _CAPTURES:
        ids = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(0))
        _CAPTURES[kind, tie] = (import_model(_hf(kind, tie), (ids,)), torch.randint(0, V, (10,)))
    imported, target = _CAPTURES[kind, tie]
    return copy.deepcopy(imported), target


def graph_of(kind: str, tie: bool = False):
    return captured(kind, tie)[0].graph


def compile_hf(kind: str, spec, tie: bool = False):
    imported, target = captured(kind, tie)
    return compile_imported(imported, target, peft=spec, backend="reference")


def _rms_scales(graph) -> list[str]:
    """The RMSNorm weights of an HF decoder, by module name."""
    return [p.name for p in graph.params() if p.name.endswith(("norm.weight", "layernorm.weight"))]


# ---- (a) HF RMSNorm decoders: every RMSNorm scale is "norm", BiasOnly never trains one -----------
@pytest.mark.parametrize("kind", ["gemma", "llama", "qwen2"])
def test_every_rmsnorm_weight_of_an_hf_decoder_is_a_norm_param(kind):
    g = graph_of(kind)
    scales = _rms_scales(g)
    assert len(scales) == 2 * 2 + 1  # two per block + the final norm
    roles = peft.param_roles(g)
    assert {n: roles[n] for n in scales} == {n: {"norm"} for n in scales}
    assert all(roles[p.name] == {"weight"} for p in g.params() if p.type.rank == 2)


@pytest.mark.parametrize("kind", ["gemma", "llama"])
def test_bias_only_on_an_rmsnorm_decoder_without_biases_selects_nothing(kind):
    # Gemma's `x_hat * (1 + w)` used to make its norm scales biases: BiasOnly trained them
    with pytest.raises(et.SpecError, match="BiasOnly\\(\\) selects no parameter"):
        peft.BiasOnly().apply(graph_of(kind))


def test_bias_only_on_qwen2_selects_the_qkv_biases_and_no_norm_scale():
    g = graph_of("qwen2")
    chosen = peft.BiasOnly().select(g)
    assert chosen == [p.name for p in g.params() if p.name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias"))]
    assert len(chosen) == 3 * 2 and not set(chosen) & set(_rms_scales(g))


# ---- (b) LastK: the final norm goes with the head, block norms with the layer they feed ---------
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_lastk1_on_an_untied_rmsnorm_decoder_is_the_head_and_the_final_norm(kind):
    g = graph_of(kind)
    assert sorted(peft.LastK(1).select(g)) == ["m.lm_head.weight", "m.model.norm.weight"]
    group = {grp[0]: grp for grp in peft.layers(g)}
    for i in range(2):  # each block's pre-norms belong to the first layer they feed, as GPT-2's do
        block = f"m.model.layers.{i}"
        assert group[f"{block}.self_attn.q_proj.weight"][-1] == f"{block}.input_layernorm.weight"
        assert group[f"{block}.mlp.gate_proj.weight"][-1] == f"{block}.post_attention_layernorm.weight"
        assert [n for n in group[f"{block}.mlp.down_proj.weight"] if "norm" in n] == []


def test_lastk1_on_a_tied_llama_is_the_tied_head_and_the_final_norm():
    g = graph_of("llama", tie=True)
    assert g.aliases == {"m.lm_head.weight": "m.model.embed_tokens.weight"}
    assert sorted(peft.LastK(1).select(g)) == ["m.model.embed_tokens.weight", "m.model.norm.weight"]


def test_lastk1_on_layernorm_decoders_picks_the_final_layernorm_the_same_way():
    g = graph_of("gpt2")  # HF GPT-2, tied head
    assert sorted(peft.LastK(1).select(g)) == ["m.transformer.ln_f.bias", "m.transformer.ln_f.weight",
                                               "m.transformer.wte.weight"]
    groups = {tuple(sorted(grp)) for grp in peft.layers(g)}
    assert tuple(sorted(["m.transformer.h.1.attn.c_attn.weight", "m.transformer.h.1.attn.c_attn.bias",
                         "m.transformer.h.1.ln_1.weight", "m.transformer.h.1.ln_1.bias"])) in groups
    # the zoo's untied GPT: the head and ln_f
    model = models.GPTDecoder(vocab_size=20, hidden=8, layers=2, heads=2, max_len=4, tie_weights=False).eval()
    g = import_model(model, (torch.randint(0, 20, (2, 4)),)).graph
    assert sorted(peft.LastK(1).select(g)) == ["lm_head.weight", "ln_f.bias", "ln_f.weight"]


def test_post_norm_layernorms_still_attach_to_the_layer_before_them():
    """BERT: each LayerNorm normalises a residual sum with the previous norm's output; it stays
    with the layer before it (the final one with ffn_out, not with the pooler)."""
    model = models.BertEncoder(vocab_size=30, hidden=16, layers=2, heads=2, intermediate=32, max_len=6,
                               num_classes=3).eval()
    (ids,), _ = models.example_inputs("bert", model, batch=2, seq_len=6)
    groups = peft.layers(import_model(model, (ids,)).graph)
    assert groups[-1] == ["classifier.weight", "classifier.bias"]
    assert groups[-2] == ["pooler.weight", "pooler.bias"]
    assert groups[-3] == ["blocks.1.ffn_out.weight", "blocks.1.ffn_out.bias", "blocks.1.ffn_norm.weight",
                          "blocks.1.ffn_norm.bias"]
    assert ["blocks.0.attention.out.weight", "blocks.0.attention.out.bias", "blocks.0.attn_norm.weight",
            "blocks.0.attn_norm.bias"] in groups


def test_lastk_trains_the_final_rmsnorm_and_stops_backprop_at_the_head():
    prog = compile_hf("llama", peft.LastK(1))
    assert sorted(prog.trainable_names) == ["m.lm_head.weight", "m.model.norm.weight"]
    ops = [n.op for n in prog.graph.nodes]
    assert "embedding_backward" not in ops
    # nothing above the final norm is differentiated: backward reads no q/k/v/o/MLP weight
    weights = {p.name for p in prog.graph.params() if ".layers." in p.name}
    assert not any(v.name in weights for n in prog.graph.nodes if n.section == "backward" for v in n.inputs)
    sess = et.Session(prog, backend="reference")
    ids = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(1))
    before = sess.state_dict()["m.model.norm.weight"].copy()
    sess.step(ids.numpy(), torch.randint(0, V, (10,)).numpy())
    assert (sess.state_dict()["m.model.norm.weight"] != before).any()


# ---- (c) FreezeEmbeddings -----------------------------------------------------------------------
@pytest.mark.parametrize("kind, final_norm", [
    ("gpt2", ["m.transformer.ln_f.weight", "m.transformer.ln_f.bias"]),
    ("gemma", ["m.model.norm.weight"]),
])
def test_freeze_embeddings_keeps_a_tied_head_frozen_and_backprop_off_the_embedding(kind, final_norm):
    lastk = compile_hf(kind, peft.LastK(1))
    tied = next(iter(lastk.graph.aliases.values()))  # the embedding the head reads
    assert tied in lastk.trainable_names
    assert any(n.op == "embedding_backward" for n in lastk.graph.nodes)  # what the wrapper removes

    prog = compile_hf(kind, peft.FreezeEmbeddings(peft.LastK(1)))
    assert prog.trainable_names == final_norm
    assert not prog.graph.sources[tied].trainable
    assert not any(n.op == "embedding_backward" for n in prog.graph.nodes)
    assert not any(v.name == tied for n in prog.graph.nodes if n.section == "update" for v in n.inputs)


def test_freeze_embeddings_composes_with_union_select_and_the_cli_form():
    g = graph_of("gpt2")
    emb = {"m.transformer.wte.weight", "m.transformer.wpe.weight"}
    assert set(peft.embedding_params(g)) == emb
    full = set(peft.FreezeEmbeddings(peft.Full()).select(g))
    assert full == {p.name for p in g.params()} - emb
    # the wrapper filters its own spec; a Union member beside it may still name an embedding
    inner = peft.FreezeEmbeddings(peft.Union(peft.BiasOnly(), peft.LastK(2)))
    assert not set(inner.select(g)) & emb
    beside = peft.Union(peft.FreezeEmbeddings(peft.LastK(1)), peft.Select(include=["m.lm_head.weight"]))
    assert "m.transformer.wte.weight" in beside.select(g)  # the alias names the tied weight
    with pytest.raises(et.SpecError, match="selects no parameter"):
        peft.FreezeEmbeddings(peft.Select(include=["m.transformer.w*"])).apply(g)
    assert peft.parse_spec("freeze-embeddings:last-k:2") == peft.FreezeEmbeddings(peft.LastK(2))
    assert peft.parse_spec("freeze_emb:select:h.*,!*.bias") == peft.FreezeEmbeddings(
        peft.Select(include=["h.*"], exclude=["*.bias"]))
    with pytest.raises(et.SpecError, match="needs a spec"):
        peft.parse_spec("freeze-embeddings")
    with pytest.raises(et.SpecError):
        peft.FreezeEmbeddings("last-k:2")
    assert et.peft.FreezeEmbeddings is peft.FreezeEmbeddings


def test_freeze_embeddings_on_a_model_without_embeddings_is_a_spec_error():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(et.SpecError, match="has no embedding to freeze"):
        et.compile(model, (torch.randn(2, 4),), torch.tensor([0, 1]), peft=et.peft.FreezeEmbeddings(et.peft.Full()),
                   backend="reference")


# ---- (d) plain torch: the patterns, written by hand ---------------------------------------------
class HandRMSNorm(nn.Module):
    """LLaMA's (`w * x_hat`, with the f32 casts HF writes) or Gemma's (`x_hat * (1 + w)`)."""

    def __init__(self, dim, gemma=False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if gemma else torch.ones(dim))
        self.gemma = gemma

    def forward(self, x):
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        if self.gemma:
            return (h * (1.0 + self.weight.float())).to(x.dtype)
        return self.weight * h.to(x.dtype)


class HandLayerNorm(nn.Module):
    """`w * (x - mu) / sqrt(mean((x - mu)^2) + eps) + b`, as an ONNX file without LayerNormalization has it."""

    def __init__(self, dim):
        super().__init__()
        self.w = nn.Parameter(torch.ones(dim))
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        c = x - x.mean(-1, keepdim=True)
        return self.w * (c / torch.sqrt((c * c).mean(-1, keepdim=True) + 1e-5)) + self.b


class PreNormNet(nn.Module):
    """inp -> a residual sum -> norm -> head: the norm is a pre-norm of the head."""

    def __init__(self, norm):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.norm = norm
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.norm(torch.relu(self.inp(x)) + x.sum(-1, keepdim=True)))


@pytest.mark.parametrize("norm, dtype", [
    (lambda: HandRMSNorm(8), torch.float32),
    (lambda: HandRMSNorm(8), torch.float64),  # casts to f32 and back around the norm
    (lambda: HandRMSNorm(8, gemma=True), torch.float32),
    (lambda: HandRMSNorm(8, gemma=True), torch.float64),
    (lambda: nn.RMSNorm(8, eps=1e-6), torch.float32),
], ids=["rms", "rms-f64", "gemma", "gemma-f64", "torch-rmsnorm"])
def test_hand_written_rmsnorm_scales_are_norm_params(norm, dtype):
    model = PreNormNet(norm()).to(dtype).eval()
    g = import_model(model, (torch.randn(2, 6, dtype=dtype),)).graph
    assert peft.param_roles(g)["norm.weight"] == {"norm"}
    assert peft.BiasOnly().select(g) == ["inp.bias", "head.bias"]
    assert peft.layers(g) == [["inp.weight", "inp.bias"], ["head.weight", "head.bias", "norm.weight"]]


def test_hand_written_layernorm_scale_is_norm_and_shift_is_bias_and_they_stay_together():
    g = import_model(PreNormNet(HandLayerNorm(8)).eval(), (torch.randn(2, 6),)).graph
    roles = peft.param_roles(g)
    assert roles["norm.w"] == {"norm"} and roles["norm.b"] == {"bias"}
    assert peft.layers(g)[-1] == ["head.weight", "head.bias", "norm.w", "norm.b"]


class ConvNeXtBlock(nn.Module):
    """dwconv -> LayerNorm (channels-last) -> pw1 -> GELU -> pw2 -> gamma * x, + the residual."""

    def __init__(self, dim=4):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.ln = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 2 * dim)
        self.pw2 = nn.Linear(2 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.gamma * self.pw2(nn.functional.gelu(self.pw1(self.ln(h))))
        return self.head((x + h.permute(0, 3, 1, 2)).mean((2, 3)))


def test_layer_scale_is_a_scale_param_attached_to_its_layer_not_a_bias():
    model = ConvNeXtBlock().eval()
    x, y = torch.randn(2, 4, 5, 5), torch.tensor([0, 2])
    g = import_model(model, (x,)).graph
    roles = peft.param_roles(g)
    assert roles["gamma"] == {"scale"} and roles["ln.weight"] == {"norm"} and roles["ln.bias"] == {"bias"}
    assert "gamma" not in peft.BiasOnly().select(g)
    assert peft.layers(g) == [["dw.weight", "dw.bias", "ln.weight", "ln.bias"], ["pw1.weight", "pw1.bias"],
                              ["pw2.weight", "pw2.bias", "gamma"], ["head.weight", "head.bias"]]
    prog = et.compile(model, (x,), y, peft=et.peft.LastK(2), backend="reference")
    assert prog.trainable_names == ["gamma", "pw2.weight", "pw2.bias", "head.weight", "head.bias"]


def test_a_param_added_to_a_constant_is_not_a_bias():
    class OnePlus(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.s = nn.Parameter(torch.zeros(4))
            self.shift = nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return self.fc(x) * (1.0 + self.s) + self.shift.view(1, 4)

    g = import_model(OnePlus().eval(), (torch.randn(2, 4),)).graph
    roles = peft.param_roles(g)
    assert roles["s"] == {"scale"} and roles["shift"] == {"bias"}
    assert peft.layers(g) == [["fc.weight", "fc.bias", "s", "shift"]]


# ---- conv / linear / BN / LayerNorm models: roles and layers as before -------------------------
class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h))).mean((2, 3))
        return self.fc(self.ln(h))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_conv_bn_layernorm_roles_and_layers(train):
    g = import_model(ConvBN().train(train), (torch.randn(2, 3, 6, 6),)).graph
    roles = peft.param_roles(g)
    assert roles == {"c1.weight": {"weight"}, "b1.weight": {"norm"}, "b1.bias": {"bias"},
                     "c2.weight": {"weight"}, "b2.weight": {"norm"}, "b2.bias": {"bias"},
                     "ln.weight": {"norm"}, "ln.bias": {"bias"}, "fc.weight": {"weight"}, "fc.bias": {"bias"}}
    # BN follows the conv whose output it normalises; the LayerNorm over pooled features feeds only
    # the classifier, so it is the classifier's (as in torchvision's ConvNeXt: LayerNorm2d, Flatten, Linear)
    assert peft.layers(g) == [["c1.weight", "b1.weight", "b1.bias"],
                              ["c2.weight", "b2.weight", "b2.bias"],
                              ["fc.weight", "fc.bias", "ln.weight", "ln.bias"]]


@pytest.mark.parametrize("name, kw", [
    ("small_cnn", dict(num_classes=5)),
    ("resnet18", dict(num_classes=5, width=8)),
    ("bert", dict(vocab_size=30, hidden=16, layers=2, heads=2, intermediate=32, max_len=8, num_classes=3)),
    ("mlp", dict()),
])
def test_zoo_models_without_decomposed_norms_keep_their_roles(name, kw):
    """Every param of these models has exactly the role its op slot declares (no element-wise
    norm/scale), and each layer's group starts with its weight."""
    model = models.build(name, **kw).eval()
    inputs, _ = models.example_inputs(name, model, batch=2, seq_len=8)
    g = import_model(model, tuple(inputs)).graph
    roles = peft.param_roles(g)
    assert all(len(r) == 1 and r <= {"weight", "bias", "norm"} for r in roles.values()), roles
    groups = peft.layers(g)
    assert sorted(n for grp in groups for n in grp) == sorted(p.name for p in g.params())
    assert all(roles[grp[0]] == {"weight"} for grp in groups)


@pytest.mark.parametrize("make, x", [
    (lambda: PreNormNet(HandRMSNorm(8)), torch.randn(2, 6)),
    (lambda: PreNormNet(HandRMSNorm(8, gemma=True)), torch.randn(2, 6)),
    (lambda: PreNormNet(HandLayerNorm(8)), torch.randn(2, 6)),
    (ConvNeXtBlock, torch.randn(2, 4, 5, 5)),
], ids=["rms", "gemma", "layernorm", "layer-scale"])
def test_onnx_files_get_the_same_roles_and_layers(tmp_path, make, x):
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = make().eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, do_constant_folding=False)
    ours = import_model(model, (x,)).graph
    theirs = import_model(onnx.load(str(path)), (x,)).graph
    assert peft.param_roles(theirs) == peft.param_roles(ours)
    assert peft.layers(theirs) == peft.layers(ours)
