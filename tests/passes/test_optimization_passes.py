"""The optimisation passes (compiler/passes/), each on a hand-written program: the text IR before and
the program expected after (compared structurally by support.assert_graph_equal, so the names the
pass generates do not matter), plus the training it must not change (one SGD step on the numpy
reference executor, before vs after, and on the C++ runtime for the fused kernels).

The passes run on the built-in target description (PassContext's default), so these are compiler
tests; the ones that run the C++ runtime or ask its kernels are native (tests/conftest.py)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import edgetune as et
from edgetune.compiler.errors import SpecError
from edgetune.compiler.passes.dce import dead_code_elimination
from edgetune.compiler.passes.pipeline import PassContext, passes_for
from edgetune.compiler.program import Program
from edgetune.compiler.verify import verify
from edgetune.runtime.reference import ReferenceExecutor
from passes.programs import (CONV_BN_RELU6, CONV_RELU_CHAIN, SGD, conv_bn_relu6_data, conv_bn_relu6_feeds,
                             conv_relu_chain_data, conv_relu_chain_feeds, edit, load)
from support import assert_graph_equal

CTX = PassContext(opt_level=2)


def run_pass(name, g):
    note = importlib.import_module(f"edgetune.compiler.passes.{name}").run(g, CTX)
    dead_code_elimination(g)
    verify(g)
    return note


def one_step(g, data, feeds):
    state = {k: v for k, v in data.items()}
    outputs, new_state = ReferenceExecutor(g).run(feeds, state)
    return outputs["loss"], new_state


def assert_same_step(before, after, data, feeds):
    l0, s0 = one_step(before, data, feeds)
    l1, s1 = one_step(after, data, feeds)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for k in s0:
        np.testing.assert_allclose(s1[k], s0[k], rtol=1e-5, atol=1e-6, err_msg=k)


# ---- fold_batchnorm + fold_constants ------------------------------------------------------------
CONV_BN = (
    "    %z: f32[2,4,8,8] = conv2d(%x, %conv.weight) {dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]}\n"
    "    %b: f32[2,4,8,8] = batch_norm_infer(%z, %bn.weight, %bn.bias, %bn.running_mean, %bn.running_var) {eps=1e-05}\n")
LR = "  state %optim.lr: f32[]\n"
# eval BatchNorm folded into the conv: w * scale, bias - mean * scale, scale = gamma / sqrt(var + eps)
FOLDED_BN = edit(CONV_BN_RELU6, (LR, LR + "  const %eps: f32[] = 1e-05\n"), (CONV_BN, """\
    %var: f32[4] = add(%bn.running_var, %eps)
    %rstd: f32[4] = rsqrt(%var)
    %scale: f32[4] = mul(%bn.weight, %rstd)
    %scale4: f32[4,1,1,1] = reshape(%scale) {shape=[4, 1, 1, 1]}
    %w: f32[4,3,1,1] = mul(%conv.weight, %scale4)
    %shift: f32[4] = mul(%bn.running_mean, %scale)
    %bias: f32[4] = sub(%bn.bias, %shift)
    %b: f32[2,4,8,8] = conv2d(%x, %w, %bias) {dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]}
"""))
# then the frozen arithmetic is evaluated once: two consts; the trainable shift stays per step
CONSTANT_FOLDED = edit(CONV_BN_RELU6,
                       (LR, LR + "  const %shift: f32[4] = <4 values>\n  const %w: f32[4,3,1,1] = <12 values>\n"),
                       (CONV_BN, """\
    %bias: f32[4] = sub(%bn.bias, %shift)
    %b: f32[2,4,8,8] = conv2d(%x, %w, %bias) {dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]}
"""))


def test_fold_batchnorm_then_constants():
    data = conv_bn_relu6_data()
    before = load(CONV_BN_RELU6, data)
    g = load(CONV_BN_RELU6, data)
    assert "1 BatchNorms folded" in run_pass("fold_batchnorm", g)
    assert_graph_equal(g, load(FOLDED_BN, data))
    assert_same_step(before, g, data, conv_bn_relu6_feeds())
    run_pass("fold_constants", g)
    scale = data["bn.weight"] / np.sqrt(data["bn.running_var"] + 1e-5)
    folded = {"w": data["conv.weight"] * scale[:, None, None, None], "shift": data["bn.running_mean"] * scale}
    names = assert_graph_equal(g, load(CONSTANT_FOLDED, {**data, **folded}), const_data=False)
    by_expected = {b: a for a, b in names.items()}
    for name, want in folded.items():
        np.testing.assert_allclose(g.initial[by_expected[name]], want, rtol=1e-6, err_msg=name)
    assert_same_step(before, g, data, conv_bn_relu6_feeds())


def test_fold_batchnorm_folds_the_input_gradient_too():
    """conv2d_grad_input(dy * s, W) becomes conv2d_grad_input(dy, W * s): the BatchNorm's per-channel
    multiply of the whole gradient goes, and training is unchanged."""
    import torch
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 6 * 6, 3))
    with torch.no_grad():  # statistics that are not the identity
        model[3].running_mean.uniform_(-0.5, 0.5), model[3].running_var.uniform_(0.5, 2.0)
        model[3].weight.uniform_(0.5, 1.5)
    model.eval()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    kw = dict(peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.1))
    plain = et.compile(model, (x,), y, passes=[], **kw)
    folded = et.compile(model, (x,), y, passes=["fold_batchnorm"], **kw)
    assert "1 BatchNorms folded, 1 input gradients with them" in folded.pass_report[0].note
    [gi] = [n for n in folded.graph.nodes if n.op == "conv2d_grad_input"]
    assert gi.inputs[1].producer is not None and gi.inputs[1].producer.op == "mul"  # W * s, not W
    bn_scale_muls = [n for n in plain.graph.nodes if n.op == "mul" and n.section == "backward"]
    assert len([n for n in folded.graph.nodes if n.op == "mul" and n.section == "backward"]) < len(bn_scale_muls)
    feeds = (x.numpy(), y.numpy())
    a, b = et.Session(plain, backend="reference"), et.Session(folded, backend="reference")
    for _ in range(3):
        np.testing.assert_allclose(b.step(*feeds), a.step(*feeds), rtol=1e-5)
    for k, v in a.state_dict().items():
        np.testing.assert_allclose(b.state_dict()[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_fold_batchnorm_leaves_trainable_scale_and_train_mode_alone():
    text = CONV_BN_RELU6.replace("param %bn.weight: f32[4]", "param %bn.weight: f32[4] trainable")
    g = load(text, conv_bn_relu6_data())
    assert "no foldable" in run_pass("fold_batchnorm", g)
    assert_graph_equal(g, load(text, conv_bn_relu6_data()))


def test_fold_constants_never_folds_trainable_or_assigned_values():
    g = load(CONV_BN_RELU6, conv_bn_relu6_data())
    assert run_pass("fold_constants", g).startswith("nothing to fold")  # all reads x or a trainable bias
    assert_graph_equal(g, load(CONV_BN_RELU6, conv_bn_relu6_data()))


# ---- compress_activations ------------------------------------------------------------------------
RELU1 = "    %t1: f32[2,4,6,6] = relu(%t0)\n"
RELU3 = "    %t3: f32[2,4,6,6] = relu(%t2)\n"
BITS1 = "    %bits1: u8[36] = activation_mask(%t1) {min=0.0}\n"
BITS3 = "    %bits3: u8[36] = activation_mask(%t3) {min=0.0}\n"
RELU_BACKWARD3 = "    %t10: f32[2,4,6,6] = relu_backward(%t9, %t3)\n"
MASK_GRAD3 = "    %t10: f32[2,4,6,6] = mask_grad(%t9, %bits3)\n"
RELU_BACKWARD1 = "    %t13: f32[2,4,6,6] = relu_backward(%t11, %t1)\n"
# each ReLU output the backward reads is kept as 1 bit per element; its derivative reads the bits
COMPRESSED = edit(CONV_RELU_CHAIN, (RELU1, RELU1 + BITS1), (RELU3, RELU3 + BITS3), (RELU_BACKWARD3, MASK_GRAD3),
                  (RELU_BACKWARD1, "    %t13: f32[2,4,6,6] = mask_grad(%t11, %bits1)\n"))


def test_compress_activations_keeps_bits_instead_of_floats():
    data = conv_relu_chain_data()
    before = load(CONV_RELU_CHAIN, data)
    g = load(CONV_RELU_CHAIN, data)
    note = run_pass("compress_activations", g)
    assert note.startswith("2 activations kept as bit masks")
    assert_graph_equal(g, load(COMPRESSED, data))
    assert_same_step(before, g, data, conv_relu_chain_feeds())


def test_compress_activations_skips_values_a_weight_gradient_reads():
    text = CONV_BN_RELU6  # y of hardtanh is read by hardtanh_backward only: compressible
    g = load(text, conv_bn_relu6_data())
    assert "1 activations" in run_pass("compress_activations", g)
    # now make the mean's input read by another backward node: compression must stop
    text2 = CONV_BN_RELU6.replace("%dbn: f32[4] = sum(%da)", "%dbn: f32[4] = sum(%a)")
    g2 = load(text2, conv_bn_relu6_data())
    assert "no activation" in run_pass("compress_activations", g2)
    assert_graph_equal(g2, dead_code_elimination(load(text2, conv_bn_relu6_data())))  # nothing else changed


# ---- fuse_epilogue -------------------------------------------------------------------------------
CONV_ATTRS = "dilation=[1, 1], groups=1, padding=[{0}, {0}], stride=[1, 1]}}\n"
CONV_RELU = (f"    %t0: f32[2,4,6,6] = conv2d(%x, %c1.weight, %c1.bias) {{{CONV_ATTRS.format(0)}{RELU1}"
             f"    %t2: f32[2,4,6,6] = conv2d(%t1, %c2.weight, %c2.bias) {{{CONV_ATTRS.format(1)}{RELU3}")
FUSED1 = f'    %t1: f32[2,4,6,6] = conv2d(%x, %c1.weight, %c1.bias) {{activation="relu", {CONV_ATTRS.format(0)}'
FUSED3 = f'    %t3: f32[2,4,6,6] = conv2d(%t1, %c2.weight, %c2.bias) {{activation="relu", {CONV_ATTRS.format(1)}'
GRAD_INPUT = ("    %t11: f32[2,4,6,6] = conv2d_grad_input(%t10, %c2.weight) {dilation=[1, 1], groups=1, "
              "input_shape=[2, 4, 6, 6], padding=[1, 1], stride=[1, 1]}\n")
BIAS2_GRAD = "    %t12: f32[4] = sum(%t10) {dims=[0, 2, 3], keepdim=false}\n"


def grad_input_with_derivative(derivative_input: str, mask_attr: str = "") -> str:
    """conv2d_grad_input that applies the ReLU derivative itself: from the float activation and
    mask_min, or from the bits."""
    return (f"    %t13: f32[2,4,6,6] = conv2d_grad_input(%t10, %c2.weight, {derivative_input}) {{dilation=[1, 1], "
            f"groups=1, input_shape=[2, 4, 6, 6], {mask_attr}padding=[1, 1], stride=[1, 1]}}\n")


# conv -> relu becomes one conv with a ReLU epilogue; conv2d_grad_input -> relu_backward becomes
# one conv2d_grad_input (after the bias gradient it no longer waits for)
EPILOGUE = edit(CONV_RELU_CHAIN, (CONV_RELU, FUSED1 + FUSED3), (
    GRAD_INPUT + BIAS2_GRAD + RELU_BACKWARD1, BIAS2_GRAD + grad_input_with_derivative("%t1", "mask_min=0.0, ")))
# after compress_activations: the same, with the masks kept and read
EPILOGUE_BITS = edit(EPILOGUE, (FUSED1, FUSED1 + BITS1), (FUSED3, FUSED3 + BITS3), (RELU_BACKWARD3, MASK_GRAD3), (
    grad_input_with_derivative("%t1", "mask_min=0.0, "), grad_input_with_derivative("%bits1")))


def _fused(compressed):
    data = conv_relu_chain_data()
    before = load(CONV_RELU_CHAIN, data)
    g = load(CONV_RELU_CHAIN, data)
    if compressed:
        run_pass("compress_activations", g)
    assert "2 activations fused into conv/linear/batch norm, 1 derivatives" in run_pass("fuse_epilogue", g)
    return before, g, data


@pytest.mark.parametrize("compressed", [False, True])
def test_fuse_epilogue_forward_and_backward(compressed):
    before, g, data = _fused(compressed)
    assert_graph_equal(g, load(EPILOGUE_BITS if compressed else EPILOGUE, data))
    assert_same_step(before, g, data, conv_relu_chain_feeds())


@pytest.mark.parametrize("compressed", [False, True])
def test_fused_epilogues_run_on_the_cpu_runtime(compressed, native):
    """The C++ kernels run the fused nodes to the reference's step."""
    before, g, data = _fused(compressed)
    prog = Program(g, "ir", None, None, ["x"], "target", True)
    sess = et.Session(prog, backend="cpu")
    sess.load_state_dict({k: v for k, v in data.items() if not k.startswith("optim.")})
    feeds = conv_relu_chain_feeds()
    loss = sess.step(feeds["x"], feeds["target"])
    l0, s0 = one_step(before, data, feeds)
    np.testing.assert_allclose(loss, l0, rtol=1e-5)
    for k in ("c1.bias", "c2.bias"):
        np.testing.assert_allclose(sess.state_dict()[k], s0[k], rtol=1e-5, atol=1e-6)


def _bn_act_model():
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU6(), torch.nn.Conv2d(8, 8, 1, bias=False), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, 3))


@pytest.mark.native
def test_fuse_epilogue_puts_train_mode_batch_norm_activations_in_the_norm():
    """Train-mode BN + ReLU6 / ReLU (MobileNetV2's and ResNet's every block) becomes one
    batch_norm_train node that clamps as it normalises; three steps on the C++ runtime and on the
    reference executor train as the unfused program and as PyTorch do."""
    import copy

    import torch
    model = _bn_act_model()
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 2, 1, 1])
    sgd = et.optim.SGD(lr=0.1, momentum=0.9)
    fused = et.compile(copy.deepcopy(model), (x,), y, peft=et.peft.BiasOnly(), optimizer=sgd)
    plain = et.compile(copy.deepcopy(model), (x,), y, peft=et.peft.BiasOnly(), optimizer=sgd,
                       disable_passes=["fuse_epilogue"])
    norms = [n for n in fused.graph.nodes if n.op == "batch_norm_train"]
    assert [n.attrs.get("activation") for n in norms] == ["hardtanh", "relu"]
    assert norms[0].attrs["act_min"] == 0.0 and norms[0].attrs["act_max"] == 6.0
    assert not any(n.op in ("relu", "hardtanh") for n in fused.graph.nodes)
    assert sum(n.op in ("relu", "hardtanh") for n in plain.graph.nodes) == 2
    ref = copy.deepcopy(model).train()
    trainable = [p for n, p in ref.named_parameters() if n.endswith("bias")]
    for n, p in ref.named_parameters():
        p.requires_grad_(n.endswith("bias"))
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    sessions = [et.Session(fused, backend="cpu"), et.Session(plain, backend="cpu"),
                et.Session(fused, backend="reference")]
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ref(x), y)
        loss.backward()
        opt.step()
        for sess in sessions:
            np.testing.assert_allclose(sess.step(x.numpy(), y.numpy()), loss.item(), rtol=2e-5)
    want = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    for sess in sessions:
        got = sess.state_dict()
        for k in ("1.bias", "4.bias", "8.bias", "1.running_mean", "4.running_var"):
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6, err_msg=k)


# ---- reorder_updates / schedule_memory -----------------------------------------------------------
# the fc bias update moves up to right after its gradient, splitting backward in two
FC_BIAS_UPDATE = f"    %fc.bias.next: f32[5] = sgd_update(%fc.bias, %dfc, %optim.lr) {SGD}\n"
REORDERED = edit(CONV_BN_RELU6, ("  update:\n" + FC_BIAS_UPDATE, "  update:\n"),
                 ("    %dfc: f32[5] = sum(%do) {dims=[0], keepdim=false}\n",
                  "    %dfc: f32[5] = sum(%do) {dims=[0], keepdim=false}\n\n"
                  "  update:\n" + FC_BIAS_UPDATE + "\n  backward:\n"))


def test_reorder_updates_runs_each_update_right_after_its_gradient():
    data = conv_bn_relu6_data()
    before = load(CONV_BN_RELU6, data)
    g = load(CONV_BN_RELU6, data)
    run_pass("reorder_updates", g)
    assert_graph_equal(g, load(REORDERED, data))
    assert_same_step(before, g, data, conv_bn_relu6_feeds())
    # the text round-trips with interleaved sections
    assert et.print_graph(et.parse_graph(et.print_graph(g), initial=g.initial)) == et.print_graph(g)


@pytest.mark.native  # plans for the cpu target: its kernels' workspaces
def test_reorder_waits_for_readers_of_the_old_weight():
    """A trainable conv weight is read by conv2d_grad_input: its in-place update must come after."""
    import torch
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    prog = et.compile(model, (x,), y, peft=et.peft.Full(), passes=["reorder_updates"])
    nodes = prog.graph.nodes
    pos = {id(n): i for i, n in enumerate(nodes)}
    for name, new in prog.graph.assigns.items():
        src = prog.graph.sources[name]
        readers = [pos[id(n)] for n in nodes if src in n.inputs and n is not new.producer]
        assert all(r < pos[id(new.producer)] for r in readers), name
    assert prog.memory_plan("cpu").inplace  # updates still go in place
    plan0 = et.compile(model, (x,), y, peft=et.peft.Full(), opt_level=0).memory
    assert prog.memory.arena_bytes < plan0.arena_bytes  # gradients die at their update


@pytest.mark.native  # plans for the cpu target: its kernels' workspaces
def test_schedule_memory_never_raises_the_peak():
    import torch
    from edgetune import models
    torch.manual_seed(0)
    model = models.ResNet18(num_classes=5, width=4)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    prog0 = et.compile(model, (x,), y, peft=et.peft.LastK(3), opt_level=0)
    prog = et.optimize(prog0, passes=["schedule_memory"])
    assert prog.memory.arena_bytes <= prog0.memory.arena_bytes
    rec = prog.pass_report[-1]
    assert rec.arena_after <= rec.arena_before


# ---- select_kernels ------------------------------------------------------------------------------
@pytest.mark.native  # selects among the cpu kernels and runs them
def test_select_kernels_cost_model_picks_the_specialised_kernels():
    import torch
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 64, 1), torch.nn.Conv2d(64, 64, 3, padding=1, groups=64),
                                torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.Conv2d(64, 8, 3, stride=2),
                                torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.randn(2, 8, 28, 28)
    model(x)
    prog = et.compile(model, (x,), torch.tensor([0, 1]), peft=et.peft.Full(), passes=["select_kernels"])
    kernels = [n.kernel for n in prog.graph.nodes if n.op == "conv2d"]
    from edgetune.runtime.native import native
    if getattr(native(), "onednn", ""):
        # oneDNN's direct convolution ranks first for both dense 3x3 layers, and its workspace (the
        # blocked copies) fits under the peak
        assert kernels == ["conv2d.pointwise", "conv2d.depthwise", "conv2d.onednn", "conv2d.onednn"], kernels
    else:
        # Winograd wins on time for the 3x3 stride-1 layer; its workspace raises this small model's
        # peak, so memory-first selection keeps the incoming kernel there and says so
        assert kernels == ["conv2d.pointwise", "conv2d.depthwise", None, "conv2d.im2col"], kernels
        assert "kept a slower kernel to keep the planned peak" in prog.pass_report[-1].note
    # the plan records the choice, and the runtime runs it
    sess = et.Session(prog, backend="cpu")
    ran = set(sess.profile(1, x.numpy(), np.array([0, 1]))["kernels"])
    assert {k for k in kernels if k} <= ran


def test_select_kernels_keeps_fast_kernels_whose_workspace_is_not_live_at_the_peak():
    """Memory first reverts only what raises the peak: a node that runs while a big tensor is live
    (at the peak) keeps its small-workspace kernel, one that runs after it is freed keeps its fast,
    big-workspace kernel, and a node offered two faster kernels takes the fastest that fits."""
    from edgetune.compiler.ir import Graph, TensorType
    from edgetune.compiler.ops.registry import Builder
    from edgetune.compiler.passes import select_kernels

    g = Graph()
    wide = g.add_input("wide", TensorType((512, 512)))
    small = g.add_input("small", TensorType((4, 4)))
    b = Builder(g)
    big = b.emit1("mul", [wide, wide])                     # 1 MiB, live until `total`
    at_peak = b.emit1("relu", [small])                     # runs while `big` is live
    total = b.emit1("sum", [big], {"dims": [0, 1], "keepdim": False})  # frees `big`
    late = b.emit1("relu", [at_peak])                      # runs after `big` is gone
    g.outputs = {"late": late, "total": total}
    peak_node, late_node = at_peak.producer, late.producer

    class Target:  # relu has a fast kernel with a 512 KiB workspace and a middling one with 64 B
        name, can_measure, arch, why = "fake", False, "x86_64", ""
        seconds = {"relu": 3.0, "relu.fast": 1.0, "relu.middling": 2.0}
        bytes = {"relu": 0, "relu.fast": 512 << 10, "relu.middling": 64}

        def kernels_for(self, node):
            return list(self.seconds) if node.op == "relu" else [node.op]

        def estimated_seconds(self, k, node):
            return self.seconds[k]

        def workspace_bytes(self, k, node):
            return self.bytes.get(k, 0)

        def node_workspace(self):
            return lambda node: self.workspace_bytes(node.kernel or node.op, node)

    ctx = PassContext(2, Target())
    note = select_kernels.run(g, ctx)
    assert late_node.kernel == "relu.fast", note
    assert peak_node.kernel == "relu.middling", note  # the fastest that leaves the peak alone
    assert "1 nodes kept a slower kernel" in note


def test_cost_model_ranks_winograd_where_it_measured_faster():
    from edgetune.compiler.ir import Graph, TensorType
    from edgetune.compiler.ops.registry import Builder
    from edgetune.compiler.analysis.cost_model import RATES_BY_ARCH, estimated_seconds

    def conv(channels, size):
        g = Graph()
        x = g.add_input("x", TensorType((8, channels, size, size)))
        w = g.add_input("w", TensorType((channels, channels, 3, 3)))
        attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
        return Builder(g).emit1("conv2d", [x, w], attrs).producer

    rates = RATES_BY_ARCH["x86_64"]
    mid, deep = conv(128, 28), conv(512, 7)  # ResNet-18 stages 2 and 4 (see benchmarks/winograd_bench.py)
    assert estimated_seconds(mid, "conv2d.winograd", rates) < estimated_seconds(mid, "conv2d.im2col", rates)
    assert estimated_seconds(deep, "conv2d.winograd", rates) > estimated_seconds(deep, "conv2d.im2col", rates)


def test_cost_model_batches_pointwise_convs_on_small_maps_only():
    from edgetune.compiler.ir import Graph, TensorType
    from edgetune.compiler.ops.registry import Builder
    from edgetune.compiler.analysis.cost_model import RATES_BY_ARCH, estimated_seconds

    def conv(batch, size):
        g = Graph()
        x = g.add_input("x", TensorType((batch, 320, size, size)))
        w = g.add_input("w", TensorType((1280, 320, 1, 1)))
        attrs = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}
        return Builder(g).emit1("conv2d", [x, w], attrs).producer

    rates = RATES_BY_ARCH["x86_64"]
    cost = lambda node, kernel: estimated_seconds(node, kernel, rates)  # noqa: E731
    head = conv(32, 1)  # EfficientNet-Lite0's head conv at 32x32 input: 1x1 maps, batch 32
    assert cost(head, "conv2d.pointwise_batched") < cost(head, "conv2d.pointwise") / 10
    assert cost(head, "conv2d.pointwise_batched") < cost(head, "conv2d.im2col")
    wide, single = conv(8, 28), conv(1, 2)  # nothing to pack: same GEMMs, so the same estimate
    for node in (wide, single):
        assert cost(node, "conv2d.pointwise_batched") == cost(node, "conv2d.pointwise")


@pytest.mark.native  # times the cpu kernels
def test_select_kernels_measures_and_caches(tmp_path, monkeypatch):
    import json
    import torch
    monkeypatch.setenv("EDGETUNE_CACHE_DIR", str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.randn(2, 8, 12, 12)
    model(x)
    prog0 = et.compile(model, (x,), torch.tensor([0, 1]), peft=et.peft.BiasOnly(), opt_level=0)
    prog = et.optimize(prog0, passes=["select_kernels"], kernel_selection="measure")
    assert "measured" in prog.pass_report[-1].note
    cache = json.loads((tmp_path / "kernel_times.json").read_text())
    assert len(cache) >= 2 and all(t > 0 for t in cache.values())
    conv = next(n for n in prog.graph.nodes if n.op == "conv2d")
    # pinned to the measured winner, unless its workspace would raise this tiny model's peak
    # (im2col_batched's packed images, Winograd's tiles): then the incoming default, and it says so
    assert (conv.kernel or "").startswith("conv2d") or "kept a slower kernel to keep the planned peak" in \
        prog.pass_report[-1].note


@pytest.mark.native  # the cpu backend's kernels, described for aarch64
def test_cross_compiling_uses_the_cost_model():
    import torch
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.randn(2, 8, 12, 12)
    model(x)
    prog = et.compile(model, (x,), torch.tensor([0, 1]), opt_level=3, arch="aarch64")
    assert "cost model (aarch64)" in prog.pass_report[-1].note


# ---- the pipeline -------------------------------------------------------------------------------
def test_levels_disable_and_unknown_names():
    assert passes_for(0) == []
    assert passes_for(1) == ["fold_batchnorm", "fold_constants", "reorder_updates"]
    assert "recompute" not in passes_for(2) and "recompute" in passes_for(3)
    assert "fuse_elementwise" not in passes_for(2, disable=["fuse_elementwise"])
    assert passes_for(0, passes=["schedule_memory", "fold_constants"]) == ["fold_constants", "schedule_memory"]
    with pytest.raises(SpecError, match="unknown pass"):
        passes_for(2, disable=["fuse_everything"])
    with pytest.raises(SpecError, match="opt_level"):
        passes_for(5)


def test_summary_reports_every_pass_with_ops_and_planned_peak():
    import torch
    from edgetune import models
    torch.manual_seed(0)
    model = models.MobileNetV2(num_classes=5, width_mult=0.25).eval()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    prog = et.compile(model, (x,), y, peft=et.peft.BiasOnly())
    summary = prog.summary()
    assert [r.name for r in summary.passes] == passes_for(2)
    text = str(summary)
    assert "optimisation passes (-O2)" in text and "fold_batchnorm" in text and "select_kernels" in text
    compress = next(r for r in summary.passes if r.name == "compress_activations")
    assert 0 < compress.arena_after < compress.arena_before  # 1-bit masks lower the peak
    assert summary.as_dict()["passes"][0]["name"] == "fold_batchnorm"


@pytest.mark.native  # prog.save writes a cpu plan
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_loading_a_different_value_into_a_baked_weight_is_refused(backend, tmp_path):
    """fold_batchnorm + fold_constants bake the frozen BN statistics into plan constants: a
    load_state_dict that changes them must fail loudly, one that keeps them must pass."""
    import torch
    from edgetune.compiler.errors import InputError
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).eval()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    prog = et.compile(model, (x,), y, peft=et.peft.BiasOnly())
    # the BN scale (weight, running_var) is baked; the mean still feeds the per-step folded bias,
    # since the conv bias is trainable, so it is not
    assert {"1.running_var", "1.weight"} <= prog.graph.baked and "1.running_mean" not in prog.graph.baked
    prog.save(tmp_path / "p.etp")
    for sess in (et.Session(prog, backend=backend),) + ((et.Session(tmp_path / "p.etp", backend="cpu"),) if backend == "cpu" else ()):
        state = sess.state_dict()
        sess.load_state_dict(state)  # unchanged values: fine
        state["1.running_var"] = state["1.running_var"] * 2
        with pytest.raises(InputError, match="folded into constants"):
            sess.load_state_dict(state)
    # without constant folding nothing is baked and the load goes through
    prog0 = et.compile(model, (x,), y, peft=et.peft.BiasOnly(), disable_passes=["fold_constants"])
    assert not prog0.graph.baked
    et.Session(prog0, backend=backend).load_state_dict(state)


@pytest.mark.native  # runs both backends
def test_recompute_drops_a_cheap_kept_value_when_the_peak_falls():
    """h = x * 2 feeds a trainable linear, whose weight gradient reads h at the end of backward:
    recomputing h there from the (always resident) input beats keeping it across the step."""
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(64, 1024), torch.nn.Linear(1024, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x * 2.0)))

    torch.manual_seed(0)
    model = Scaled()
    x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))  # wide hidden layer: peak mid-backward
    spec = et.peft.Select(include=["fc1.weight"])
    prog0 = et.compile(model, (x,), y, peft=spec, opt_level=0)
    prog = et.optimize(prog0, passes=["recompute"])
    rec = prog.pass_report[-1]
    assert rec.note.startswith("1 values recomputed"), rec.note
    assert rec.arena_after < rec.arena_before
    clone = next(n for n in prog.graph.nodes if n.section == "backward" and n.op == "mul" and
                 any(v.kind == "input" for v in n.inputs))
    original = next(n for n in prog.graph.nodes if n.section == "forward" and n.op == "mul")
    assert clone.outputs[0] is not original.outputs[0] and clone.attrs == original.attrs
    for backend in ("reference", "cpu"):
        s0, s1 = et.Session(prog0, backend=backend), et.Session(prog, backend=backend)
        for _ in range(2):
            np.testing.assert_allclose(s1.step(x.numpy(), y.numpy()), s0.step(x.numpy(), y.numpy()), rtol=1e-6)
        np.testing.assert_allclose(s1.state_dict()["fc1.weight"], s0.state_dict()["fc1.weight"], rtol=1e-6)


# ---- fuse_elementwise ----------------------------------------------------------------------------
CHAIN = '''program p {
  input %x: f32[2,4,3,3]
  param %b: f32[1,4,1,1]
  const %c: f32[] = 0.5

  forward:
    %a: f32[2,4,3,3] = add(%x, %b)
    %h: f32[2,4,3,3] = hardtanh(%a) {max=6.0, min=0.0}
    %m: f32[2,4,3,3] = mul(%h, %c)
    %s: f32[2,4] = mean(%m) {dims=[2, 3], keepdim=false}

  output out = %s
  output act = %h
}
'''
FUSED_CHAIN = edit(CHAIN, ("""\
    %a: f32[2,4,3,3] = add(%x, %b)
    %h: f32[2,4,3,3] = hardtanh(%a) {max=6.0, min=0.0}
    %m: f32[2,4,3,3] = mul(%h, %c)
""", """\
    %h: f32[2,4,3,3], %m: f32[2,4,3,3] = fused_elementwise(%x, %b) {program="t0=add(x0,x1); t1=hardtanh(t0,min=0.0,max=6.0); t2=mul(t1,0.5); y0=t1; y1=t2", shape=[2, 4, 3, 3]}
"""), ("  const %c: f32[] = 0.5\n", ""))


def test_fuse_elementwise_chain_with_a_broadcast_input_and_an_outside_reader():
    """bias add (broadcast) -> ReLU6 -> scale by a 0-d const (inlined): one node; %h is also a
    graph output, so the fused node produces it as a second output."""
    data = {"b": np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4, 1, 1)}
    before, g = load(CHAIN, data), load(CHAIN, data)
    assert run_pass("fuse_elementwise", g) == "3 element-wise nodes fused into 1 kernels"
    assert_graph_equal(g, load(FUSED_CHAIN, data))
    feeds = {"x": np.random.default_rng(0).uniform(-8, 8, (2, 4, 3, 3)).astype(np.float32)}
    want, _ = ReferenceExecutor(before).run(feeds, data)
    got, _ = ReferenceExecutor(g).run(feeds, data)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
