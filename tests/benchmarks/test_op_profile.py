"""`edgetune op-profile --quick`: SmallCNN 32x32, full fine-tuning, 2 profiled steps per side.

Checks that the op families cover each side's profiled total (edgetune: the sum of
Session.profile's sections; PyTorch: the sum of key_averages' self CPU time), that matching is by
op (a conv model has conv forward and backward families on both sides, with FLOPs), that the
markdown and the README block render, and the pure classification rules on their own.
"""

from __future__ import annotations

import json

import pytest

from edgetune.benchmarks import op_profile as op


def test_classification_rules():
    # edgetune: conv kind from weight shape and groups (or the kernel's name), direction from the section
    assert op.et_family("conv2d", "forward", kernel="conv2d.depthwise") == "conv fwd depthwise"
    assert op.et_family("conv2d_grad_input", "backward", kernel="conv2d_grad_input.pointwise") == "conv bwd 1x1"
    assert op.et_family("conv2d_grad_weight", "backward", kernel="conv2d_grad_weight.winograd") == "conv bwd kxk"
    assert op.et_family("matmul", "backward") == "GEMM bwd" and op.et_family("linear", "forward") == "GEMM fwd"
    assert op.et_family("adamw_update", "update") == "optimizer" and op.et_family("no_such_op", "forward") == "other"
    # PyTorch: the outermost op that names a family claims its children; framework frames only themselves
    conv = ("aten::conv2d", [[8, 32, 16, 16], [32, 1, 3, 3], [], [], [], [], []])
    assert op.torch_event_family([conv, ("aten::mkldnn_convolution", []), ("aten::empty", [])]) == "conv fwd depthwise"
    bwd = ("autograd::engine::evaluate_function: ConvolutionBackward0", [])
    cb = ("aten::convolution_backward", [[8, 64, 8, 8], [8, 32, 8, 8], [64, 32, 1, 1]])
    assert op.torch_event_family([bwd, ("ConvolutionBackward0", []), cb]) == "conv bwd 1x1"
    assert op.torch_event_family([bwd]) == "framework"
    assert op.torch_event_family([("aten::linear", []), ("aten::t", [])]) == "GEMM fwd"
    assert op.torch_event_family([("autograd::engine::evaluate_function: MmBackward0", []), ("aten::mm", [])]) \
        == "GEMM bwd"
    assert op.torch_event_family([("Optimizer.step#AdamW.step", []), ("aten::mul_", [])]) == "optimizer"
    assert op.torch_event_family([("aten::not_a_known_op", [])]) == "other"
    sdpa = ("autograd::engine::evaluate_function: ScaledDotProductFlashAttentionForCpuBackward0", [])
    assert op.torch_event_family([sdpa, ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", [])]) \
        == "attention bwd"
    assert op.et_family("matmul", "forward", attention=True) == "attention fwd"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("op_profile")
    assert op.main(["--quick", "--out", str(out)]) == 0
    return json.loads((out / "op_profile.json").read_text()), (out / "op_profile.md").read_text()


def test_families_cover_both_totals(quick):
    report, _ = quick
    assert report["sgemm_peak"]["gflops"] > 0 and report["torch_mm_gflops"] > 0 and report["machine"]["cpu"]
    (case,) = report["cases"]
    et, th = case["edgetune"], case["torch"]
    assert et["aligned_with_graph"]
    for side, independent in ((et, et["sections_total_ms"]), (th, th["key_averages_total_ms"])):
        fams = side["families"]
        assert set(fams) <= set(op.FAMILIES)
        total = sum(f["ms"] for f in fams.values())
        assert total == pytest.approx(side["profiled_ms"], rel=1e-9)
        assert total == pytest.approx(independent, rel=1e-6), (total, independent)
        assert side["median_ms"] > 0 and side["profiled_ms"] > 0
        for f in fams.values():  # each family is the sum of its listed ops
            assert f["ms"] == pytest.approx(sum(f["ops"].values()))


def test_matched_by_op(quick):
    report, _ = quick
    (case,) = report["cases"]
    et, th = case["edgetune"]["families"], case["torch"]["families"]
    conv_fwd = {f for f in et if f.startswith("conv fwd")}
    conv_bwd = {f for f in et if f.startswith("conv bwd")}
    assert conv_fwd and conv_bwd  # SmallCNN trains every conv: both directions
    assert conv_fwd | conv_bwd <= set(th)  # PyTorch's convs land in the same kinds
    for fam in conv_fwd | conv_bwd:
        assert case["family_flops"][fam] > 0
        assert any("conv" in k for k in et[fam]["ops"]) and any("conv" in k for k in th[fam]["ops"])
    for fam in ("optimizer", "loss", "norms"):
        assert fam in et and fam in th
    assert sum(case["family_flops"].values()) <= case["flops_per_step"]
    rows = op.family_rows(case, report["sgemm_peak"]["gflops"])
    assert all(r["edgetune_gflops"] > 0 and r["torch_gflops"] > 0 for r in rows if r["family"].startswith("conv"))


def test_markdown_renders(quick, tmp_path):
    report, md = quick
    assert md.startswith("# Per-op profile") and report["machine"]["cpu"] in md
    assert "| family | edgetune ms | PyTorch ms |" in md and "**profiled total**" in md
    assert "**median step, unprofiled**" in md and "conv fwd" in md and "other (unmatched)" in md
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{op.README_MARK[0]}\nold\n{op.README_MARK[1]}\nafter\n")
    assert op.update_readme(report, str(readme))
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "small_cnn / full" in text and text.count(op.README_MARK[0]) == 1
