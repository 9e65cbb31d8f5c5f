"""Every conv kernel variant ("conv2d.im2col", "conv2d_grad_input.depthwise", ... any registered
name "op.variant" whose op is a conv op) against the op's reference and against the others.

The compiler times the variants of a node against each other and pins the fastest, so each one
must compute the op exactly where its check accepts the shapes, and refuse (a NativeError from
its check, naming itself) where it cannot run them:
  * every sample of the op's sweep that the variant accepts matches the numpy reference, and
    every variant accepts at least one sample;
  * layer-sized shapes (batch 2, 32 channels, 28x28: pointwise, depthwise stride 1/2, 3x3
    stride 1/2) on exact values, where every accepting variant equals the auto kernel, fused
    epilogues (activation, masks) included: bit for bit for the direct algorithms (im2col,
    pointwise, depthwise: exact sums in any order), and within APPROX_TOL of the output's
    magnitude for the others (Winograd's transforms round);
  * .im2col accepts every geometry; .pointwise / .depthwise refuse the ones they cannot run,
    and report their own workspace (none for pointwise and depthwise; pointwise_batched on
    small maps, where it packs several images per GEMM).
The ".onednn" variants (kernels/cpu/conv_onednn.cc) exist only in builds that found oneDNN
(cmake/onednn.cmake; the module's `onednn` is its version, "" without): they are checked the same
way there and skipped elsewhere. They sum in oneDNN's order (approximate tolerance); forward and
grad_input give the same bits for 1 and 2 threads, grad_weight's reduction over images is oneDNN's.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.ir import TensorType, dtype_of_numpy
from edgetune.compiler.ops import REGISTRY
from edgetune.runtime.native import native

from ops.test_op_sweep import CASES  # same samples, same seeds as the op sweep

CONV_OPS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")
RTOL, ATOL = 1e-5, 1e-6  # as test_cpu_kernels.py
DIRECT_PATHS = {"im2col", "im2col_batched", "pointwise", "pointwise_batched", "depthwise"}  # products and sums of the inputs, nothing else
APPROX_TOL = 2e-4  # of max |output|: the other algorithms (Winograd) round in their transforms
# the conv variants the C++ runtime registers, written out so that collecting this module does
# not load it; test_the_variants_are_registered checks the list against the module's
VARIANTS = [f"{op}.{path}" for op in CONV_OPS
            for path in ("depthwise", "im2col", "im2col_batched", "pointwise", "pointwise_batched", "winograd")
            if (op, path) != ("conv2d_grad_weight", "winograd")]
ONEDNN_VARIANTS = [f"{op}.onednn" for op in CONV_OPS]


def has_onednn() -> bool:
    return bool(getattr(native(), "onednn", ""))


def built_variants() -> list[str]:
    return VARIANTS + (ONEDNN_VARIANTS if has_onednn() else [])


def _skip_unless_built(kernel):
    if kernel.endswith(".onednn") and not has_onednn():
        pytest.skip("this build has no oneDNN (cmake/onednn.cmake)")


def _specs(op, inputs, attrs):
    types = [TensorType(np.shape(x), dtype_of_numpy(np.asarray(x).dtype)) for x in inputs]
    return [(t.dtype, list(t.shape)) for t in REGISTRY[op].infer(types, attrs)]


def run(kernel, inputs, attrs, threads=1):
    inputs = [np.asarray(x) for x in inputs]
    return native().run_kernel("cpu", kernel, inputs, _specs(kernel.split(".")[0], inputs, attrs), attrs,
                               threads)[0]


def assert_close(kernel, got, expected, msg):
    if kernel.split(".", 1)[-1] in DIRECT_PATHS or "." not in kernel:
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=msg)
    else:
        scale = max(float(np.abs(expected).max()), 1e-30)
        np.testing.assert_allclose(got, expected, rtol=0, atol=APPROX_TOL * scale, err_msg=msg)


def accepts(kernel, inputs, attrs) -> bool:
    specs = [(dtype_of_numpy(np.asarray(x).dtype), list(np.shape(x))) for x in inputs]
    try:
        native().workspace_bytes("cpu", kernel, specs, _specs(kernel.split(".")[0], inputs, attrs), attrs)
    except native().NativeError:
        return False
    return True


def test_the_variants_are_registered():
    registered = sorted(k for k in native().kernel_names("cpu") if "." in k and k.split(".")[0] in CONV_OPS)
    assert registered == sorted(built_variants()), "update VARIANTS to the registered conv variants"
    for op in CONV_OPS:
        for path in ("im2col", "pointwise", "depthwise"):
            assert f"{op}.{path}" in VARIANTS, f"{op}.{path} is not registered"


@pytest.mark.parametrize("kernel", VARIANTS + ONEDNN_VARIANTS)
def test_variant_matches_reference_on_the_samples_it_accepts(kernel):
    _skip_unless_built(kernel)
    op = kernel.split(".")[0]
    accepted = []
    for name, index, sample in (c.values for c in CASES):
        if name != op:
            continue
        try:
            got = run(kernel, sample.inputs, sample.attrs)
        except native().NativeError:
            continue  # refused by its check: not a shape this variant runs
        expected = REGISTRY[op].reference([np.asarray(x) for x in sample.inputs], sample.attrs)[0]
        assert_close(kernel, got, expected, f"{kernel} on sample {index}")
        if kernel != "conv2d_grad_weight.onednn":
            np.testing.assert_array_equal(run(kernel, sample.inputs, sample.attrs, threads=2), got,
                                          err_msg=f"{kernel} on sample {index}: 2 threads vs 1")
        accepted.append(index)
    assert accepted, f"{kernel} accepts none of the {op} samples"
    if kernel.endswith(".im2col"):  # the fallback runs every NCHW geometry
        every = [i for n, i, s in (c.values for c in CASES) if n == op and s.attrs.get("layout") != "nhwc"]
        assert accepted == every, f"{kernel} refused samples {sorted(set(every) - set(accepted))}"


@pytest.mark.parametrize("kernel", VARIANTS + ONEDNN_VARIANTS)
def test_every_variant_refuses_nhwc_which_runs_on_the_op_named_kernel(kernel):
    _skip_unless_built(kernel)
    op = kernel.split(".")[0]
    nhwc = [s for n, _, s in (c.values for c in CASES) if n == op and s.attrs.get("layout") == "nhwc"]
    assert nhwc
    for sample in nhwc:
        with pytest.raises(native().NativeError, match="NCHW only; layout nhwc runs on"):
            run(kernel, sample.inputs, sample.attrs)
        expected = REGISTRY[op].reference([np.asarray(x) for x in sample.inputs], sample.attrs)[0]
        assert_close(op, run(op, sample.inputs, sample.attrs), expected, f"{op} on an nhwc sample")


# ---- layer-sized geometries ------------------------------------------------------------------------
def _attrs(stride=1, padding=0, groups=1):
    return {"stride": [stride] * 2, "padding": [padding] * 2, "dilation": [1, 1], "groups": groups}


LAYERS = {  # batch 2, 32 channels, 28x28 unless LAYER_INPUTS says otherwise
    "pointwise": ((32, 32, 1, 1), _attrs()),
    # a late-stage map (6x6 = 36 columns): pointwise_batched packs 8 images per GEMM here, so
    # batch 10 runs a full chunk and a partial one, per group
    "pointwise-small-map": ((48, 16, 1, 1), _attrs(groups=2)),
    # late-stage depthwise maps (W < 16): the depthwise path works on blocks of 64 channels
    # channels-last; 80 channels = a full block and a partial one
    "depthwise-small-map": ((80, 1, 3, 3), _attrs(padding=1, groups=80)),
    "depthwise-5x5-s2-small-map": ((80, 1, 5, 5), _attrs(stride=2, padding=2, groups=80)),
    # ResNet's late stages (7x7 maps): im2col_batched puts 6 images' columns side by side, so
    # batch 7 runs a full chunk and a partial one, per group; stride 2 on a 9x9 map (5x5 out)
    "3x3-small-map": ((24, 16, 3, 3), _attrs(padding=1, groups=2)),
    "3x3-s2-small-map": ((16, 16, 3, 3), _attrs(stride=2, padding=1)),
    "depthwise-s1": ((32, 1, 3, 3), _attrs(padding=1, groups=32)),
    "depthwise-s2": ((32, 1, 3, 3), _attrs(stride=2, padding=1, groups=32)),
    "3x3-s1": ((32, 32, 3, 3), _attrs(padding=1)),
    "3x3-s2": ((32, 32, 3, 3), _attrs(stride=2, padding=1)),
}
LAYER_INPUTS = {"pointwise-small-map": (10, 32, 6, 6), "depthwise-small-map": (3, 80, 4, 4),
                "depthwise-5x5-s2-small-map": (3, 80, 7, 7), "3x3-small-map": (7, 32, 7, 7),
                "3x3-s2-small-map": (5, 16, 9, 9)}
APPLICABLE = {  # the built-in variants that must accept each layer
    "pointwise": {"im2col", "im2col_batched", "pointwise", "pointwise_batched"},
    "pointwise-small-map": {"im2col", "im2col_batched", "pointwise", "pointwise_batched"},
    "depthwise-s1": {"im2col", "im2col_batched", "depthwise"},
    "depthwise-small-map": {"im2col", "im2col_batched", "depthwise"},
    "depthwise-5x5-s2-small-map": {"im2col", "im2col_batched", "depthwise"},
    "depthwise-s2": {"im2col", "im2col_batched", "depthwise"},
    "3x3-s1": {"im2col", "im2col_batched"},
    "3x3-s2": {"im2col", "im2col_batched"},
    "3x3-small-map": {"im2col", "im2col_batched"},
    "3x3-s2-small-map": {"im2col", "im2col_batched"},
}


def _exact(rng, *shape):
    """Multiples of 1/8 in [-1, 1]: every sum here stays exact in float32 (at most 1568 terms of
    multiples of 1/64), so any summation order gives the same bits."""
    return (rng.integers(-8, 9, size=shape) / 8).astype(np.float32)


def _layer_cases(layer):
    """(op, inputs, attrs) for the three ops of one layer, with and without fused epilogues."""
    rng = np.random.default_rng(len(layer))
    ws, attrs = LAYERS[layer]
    x, w, b = _exact(rng, *LAYER_INPUTS.get(layer, (2, 32, 28, 28))), _exact(rng, *ws), _exact(rng, ws[0])
    y = REGISTRY["conv2d"].reference([x, w, b], attrs)[0]
    dy = _exact(rng, *y.shape)
    gi = {**attrs, "input_shape": list(x.shape)}
    act_out = rng.uniform(-2, 8, size=x.shape).astype(np.float32)
    bits = np.packbits((rng.random(x.shape) < 0.5).ravel(), bitorder="little")
    return [
        ("conv2d", [x, w, b], attrs),
        ("conv2d", [x, w, b], {**attrs, "activation": "relu"}),
        ("conv2d", [x, w], {**attrs, "activation": "hardtanh", "act_min": 0.0, "act_max": 6.0}),
        ("conv2d_grad_input", [dy, w], gi),
        ("conv2d_grad_input", [dy, w, act_out], {**gi, "mask_min": 0.0, "mask_max": 6.0}),
        ("conv2d_grad_input", [dy, w, bits], gi),
        ("conv2d_grad_weight", [dy, x], {**attrs, "weight_shape": list(w.shape)}),
    ]


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_variants_agree_on_layer_sized_shapes(layer):
    for op, inputs, attrs in _layer_cases(layer):
        auto = run(op, inputs, attrs)
        expected = REGISTRY[op].reference(inputs, attrs)[0]
        np.testing.assert_allclose(auto, expected, rtol=RTOL, atol=ATOL, err_msg=f"{op} {layer}")
        ran = set()
        for kernel in (k for k in built_variants() if k.split(".")[0] == op):
            path = kernel.split(".", 1)[1]
            if not accepts(kernel, inputs, attrs):
                assert path not in APPLICABLE[layer], f"{kernel} refuses {layer}"
                # oneDNN leaves grouped convolutions to the depthwise kernels, 1x1 ones to one GEMM
                assert path != "onednn" or attrs["groups"] > 1 or layer.startswith("pointwise"), \
                    f"{kernel} refuses {layer}"
                continue
            got, msg = run(kernel, inputs, attrs), f"{kernel} vs {op} on {layer}"
            if path in DIRECT_PATHS:
                np.testing.assert_array_equal(got, auto, err_msg=msg)
                np.testing.assert_array_equal(run(kernel, inputs, attrs, threads=2), got, err_msg=msg + ", 2 threads")
            else:
                assert_close(kernel, got, expected, msg)
            ran.add(path)
        assert APPLICABLE[layer] <= ran, f"{op} {layer}: ran {sorted(ran)}"


def test_refusals_name_the_variant_and_the_reason():
    x, w = np.zeros((1, 4, 9, 9), np.float32), np.zeros((6, 4, 3, 3), np.float32)
    specs = [("f32", [1, 4, 9, 9]), ("f32", [6, 4, 3, 3])]
    err = native().NativeError
    with pytest.raises(err, match=r"conv2d\.pointwise needs a 1x1 stride-1 unpadded kernel, got 3x3 stride 2"):
        native().workspace_bytes("cpu", "conv2d.pointwise", specs, [("f32", [1, 6, 4, 4])], _attrs(stride=2))
    with pytest.raises(err, match=r"conv2d\.depthwise needs one input channel per group"):
        native().workspace_bytes("cpu", "conv2d.depthwise", specs, [("f32", [1, 6, 7, 7])], _attrs())
    with pytest.raises(err, match=r"conv2d_grad_weight\.pointwise needs a 1x1"):
        native().workspace_bytes("cpu", "conv2d_grad_weight.pointwise", [("f32", [1, 6, 7, 7]), specs[0]],
                                 [("f32", [6, 4, 3, 3])], {**_attrs(), "weight_shape": [6, 4, 3, 3]})
    assert accepts("conv2d.im2col", [x, w], _attrs())


def test_variants_report_their_own_workspace():
    ws = lambda kernel, ins, out, attrs: native().workspace_bytes("cpu", kernel, ins, [("f32", out)], attrs)  # noqa: E731
    pw = [("f32", [2, 32, 28, 28]), ("f32", [32, 32, 1, 1])]
    dw = [("f32", [2, 32, 28, 28]), ("f32", [32, 1, 3, 3])]
    dwa = _attrs(padding=1, groups=32)
    assert ws("conv2d.pointwise", pw, [2, 32, 28, 28], _attrs()) == 0
    assert ws("conv2d", pw, [2, 32, 28, 28], _attrs()) == 0
    assert ws("conv2d.im2col", pw, [2, 32, 28, 28], _attrs()) == 32 * 28 * 28 * 4  # one image's columns
    # small maps: both operands of a chunk of images packed side by side, [Cg + Og, images * H*W]
    small = [("f32", [10, 32, 6, 6]), ("f32", [48, 32, 1, 1])]
    assert ws("conv2d.pointwise_batched", small, [10, 48, 6, 6], _attrs()) == (32 + 48) * 8 * 36 * 4
    assert ws("conv2d_grad_weight.pointwise_batched", [("f32", [10, 48, 6, 6]), small[0]], [48, 32, 1, 1],
              {**_attrs(), "weight_shape": [48, 32, 1, 1]}) == (32 + 48) * 8 * 36 * 4
    assert ws("conv2d.pointwise_batched", [("f32", [1, 32, 6, 6]), small[1]], [1, 48, 6, 6], _attrs()) == 0
    assert ws("conv2d.pointwise_batched", pw, [2, 32, 28, 28], _attrs()) == 0  # wide map: no packing
    assert ws("conv2d.pointwise", small, [10, 48, 6, 6], _attrs()) == 0
    assert ws("conv2d", small, [10, 48, 6, 6], _attrs()) == 0  # the auto kernel never packs
    # im2col_batched: 6 images' columns ([32*9, 6*49]) and the packed output / dy ([48, 6*49])
    k3 = [("f32", [10, 32, 7, 7]), ("f32", [48, 32, 3, 3])]
    assert ws("conv2d.im2col_batched", k3, [10, 48, 7, 7], _attrs(padding=1)) == (32 * 9 + 48) * 6 * 49 * 4
    assert ws("conv2d.im2col_batched", pw, [2, 32, 28, 28], _attrs()) == ws("conv2d.im2col", pw, [2, 32, 28, 28],
                                                                             _attrs())  # wide map: im2col
    assert ws("conv2d.depthwise", dw, [2, 32, 28, 28], dwa) == 0
    assert ws("conv2d.im2col", dw, [2, 32, 28, 28], dwa) == 9 * 28 * 28 * 4
    gi = {**dwa, "input_shape": [2, 32, 28, 28]}
    assert ws("conv2d_grad_input.im2col", [("f32", [2, 32, 28, 28]), ("f32", [32, 1, 3, 3])], [2, 32, 28, 28],
              gi) == 9 * 28 * 28 * 4


def test_onednn_runs_big_layers_as_channel_parts_and_image_chunks():
    """A layer whose weights pass conv_onednn.cc's 2 MiB budget runs as convolutions over slices of
    the output channels (input channels for grad_input), and a batch whose blocked copies pass 4 MiB
    in chunks of images: 160x160x5x5 weights (2.6 MB) give two parts of 80 channels, 160 channels at
    40x40 (2 MB per image, input and output) chunks of 2 images, so batch 3 runs a full chunk and a
    short one. Every slice lands where the op-named kernel puts it, bias, activation and mask too,
    and grad_weight adds the chunks up."""
    if not has_onednn():
        pytest.skip("this build has no oneDNN (cmake/onednn.cmake)")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 160, 40, 40)).astype(np.float32)
    w = (rng.standard_normal((160, 160, 5, 5)) / 20).astype(np.float32)
    b = rng.standard_normal(160).astype(np.float32)
    attrs = _attrs(padding=2)
    y = run("conv2d", [x, w], attrs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    bits = np.packbits((rng.random(x.shape) < 0.5).ravel(), bitorder="little")
    gi = {**attrs, "input_shape": list(x.shape)}
    cases = [("conv2d", [x, w, b], {**attrs, "activation": "hardtanh", "act_min": -1.0, "act_max": 2.0}),
             ("conv2d_grad_input", [dy, w, bits], gi),
             ("conv2d_grad_weight", [dy, x], {**attrs, "weight_shape": list(w.shape)})]
    for op, inputs, a in cases:
        own = run(op, inputs, a)
        got = run(op + ".onednn", inputs, a, threads=2)
        scale = float(np.abs(own).max())
        np.testing.assert_allclose(got, own, rtol=0, atol=1e-5 * scale, err_msg=op)
        specs = [(dtype_of_numpy(np.asarray(t).dtype), list(np.shape(t))) for t in inputs]
        ws = native().workspace_bytes("cpu", op + ".onednn", specs, _specs(op, inputs, a), a)
        assert ws < w.nbytes + 2 * 2 * 160 * 40 * 40 * 4, f"{op}: workspace {ws} holds no more than a part and a chunk"
