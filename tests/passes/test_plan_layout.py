"""plan_layout: which regions go channels-last, what the rewrite looks like, and that an NHWC
program trains exactly as the NCHW one and as PyTorch do (C++ runtime and reference executor)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import edgetune as et
from edgetune.compiler.target import Target

torch = pytest.importorskip("torch")
nn = torch.nn


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, depthwise 3x3, 1x1 project, each with BN (+ ReLU6)."""

    def __init__(self, cin, cout, stride, expand, per_sample=False):
        super().__init__()
        mid = cin * expand
        self.residual = stride == 1 and cin == cout
        # EfficientNet's drop-connect scales each image's residual branch: a [N,1,1,1] factor
        self.per_sample = torch.nn.Buffer(torch.tensor([1.0, 0.5, 2.0, 0.0]).reshape(4, 1, 1, 1)) \
            if per_sample else None
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.body(x)
        if self.per_sample is not None:
            y = y * self.per_sample
        return x + y if self.residual else y


def mobilenet_like():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 16, 2, 3), InvertedResidual(16, 16, 1, 2, per_sample=True),
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))


def resnet_like():
    torch.manual_seed(0)

    class Basic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8))

        def forward(self, x):
            return torch.relu(x + self.a(x))

    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), Basic(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


class AnyLayoutTarget(Target):
    """A target whose (imaginary) kernels run everything in any layout: the pass's decisions and
    rewrite, checked on the reference executor without a native build."""

    name = "any-layout"

    def kernel_names(self):
        from edgetune.compiler.ops.registry import REGISTRY
        return sorted(REGISTRY)

    def workspace_bytes(self, kernel, node):
        return 0


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 3, 1, 4])


def _compile(model, spec, backend="cpu", **kw):
    x, y = _data()
    return et.compile(copy.deepcopy(model), (x,), y, peft=spec, optimizer=et.optim.SGD(lr=0.05, momentum=0.9),
                      backend=backend, **kw)


def _nhwc(prog):
    return [n for n in prog.graph.nodes if n.attrs.get("layout") == "nhwc"]


def _note(prog):
    return next(r.note for r in prog.pass_report if r.name == "plan_layout")


def _torch_steps(model, spec_name, steps=3):
    x, y = _data()
    ref = copy.deepcopy(model).train()
    for n, p in ref.named_parameters():  # BiasOnly: the biases of the linear and the norms
        p.requires_grad_(spec_name == "full" or n.endswith("bias"))
    opt = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ref(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().numpy() for k, v in ref.state_dict().items()}


SPECS = {"bias-only": et.peft.BiasOnly, "full": et.peft.Full}


def test_a_mobilenet_block_chain_is_one_nhwc_region_with_permutes_only_at_its_borders():
    prog = _compile(mobilenet_like(), et.peft.Full(), backend=AnyLayoutTarget())
    nodes = _nhwc(prog)
    convs = [n for n in nodes if n.op.startswith("conv2d")]
    # every 1x1 and depthwise conv op (forward, grad_input, grad_weight) but the stem's 3x3
    all_convs = [n for n in prog.graph.nodes if n.op.startswith("conv2d")]
    stem = [n for n in all_convs if n not in convs]
    assert stem and all(n.attrs["groups"] == 1 and 3 in (n.inputs[1].shape[2:] if n.op != "conv2d_grad_weight"
                                                          else n.attrs["weight_shape"][2:]) for n in stem)
    assert len(convs) == 10 * 3  # 10 convs, each forward + grad_input + grad_weight
    assert {n.op for n in nodes} >= {"batch_norm_train", "batch_norm_backward"}
    permutes = [n for n in prog.graph.nodes if n.op == "permute"]
    # in: the stem's output; out: the head's pooling input and the stem's grad_weight dy; in: pooling's grad
    assert len(permutes) == 4, [f"{n} {n.attrs}" for n in permutes]
    assert _note(prog).startswith("1 region(s) NHWC")


def test_resnet_blocks_stay_nchw():
    prog = _compile(resnet_like(), et.peft.BiasOnly(), backend=AnyLayoutTarget())
    assert not _nhwc(prog) and not any(n.op == "permute" for n in prog.graph.nodes)


def test_a_lone_depthwise_between_3x3_convs_stays_nchw_its_borders_cost_too_much():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Conv2d(8, 4, 3, 1, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    prog = _compile(model, et.peft.Full(), backend=AnyLayoutTarget())
    assert not _nhwc(prog)
    assert "borders move" in _note(prog)


def test_a_target_that_cannot_describe_its_kernels_gets_nchw():
    prog = _compile(mobilenet_like(), et.peft.BiasOnly(), backend="reference")
    assert not _nhwc(prog) and "all NCHW" in _note(prog)


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_the_nhwc_program_trains_as_pytorch_on_the_reference_executor(spec):
    model = mobilenet_like()
    prog = _compile(model, SPECS[spec](), backend=AnyLayoutTarget())
    assert _nhwc(prog)
    losses, want = _torch_steps(model, spec)
    sess = et.Session(prog, backend="reference")
    x, y = _data()
    for loss in losses:
        np.testing.assert_allclose(sess.step(x.numpy(), y.numpy()), loss, rtol=2e-5)
    got = sess.state_dict()
    for k in ("1.bias", "3.body.4.bias", "5.body.7.running_var", "6.weight" if spec == "full" else "7.bias"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.native
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_the_cpu_runtime_runs_mobilenet_blocks_nhwc_and_trains_as_nchw_and_pytorch(spec):
    model = mobilenet_like()
    nhwc = _compile(model, SPECS[spec]())
    nchw = _compile(model, SPECS[spec](), disable_passes=["plan_layout"])
    assert len([n for n in _nhwc(nhwc) if n.op.startswith("conv2d")]) == (30 if spec == "full" else 20)
    assert not _nhwc(nchw)
    losses, want = _torch_steps(model, spec)
    sessions = [et.Session(nhwc, backend="cpu"), et.Session(nchw, backend="cpu"), et.Session(nhwc, backend="reference")]
    x, y = _data()
    for loss in losses:
        for sess in sessions:
            np.testing.assert_allclose(sess.step(x.numpy(), y.numpy()), loss, rtol=2e-5)
    for sess in sessions:
        got = sess.state_dict()
        for k in want:
            if k.endswith("num_batches_tracked"):
                continue
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
