"""Cost model: a roofline estimate of how long a kernel variant takes on a node, used by targets
to rank an op's kernels when they cannot (or are not asked to) measure them.

Multiply-adds at a per-variant efficiency of the target's GEMM rate, plus the bytes each variant
moves at the target's bandwidth. The rates were measured on the development machine (x86-64
AVX-512, own GEMM) and scaled for aarch64 (NEON) from its GEMM peak; they rank candidates, they do
not predict absolute time. Convolutions and the GEMM ops (matmul, linear: the default kernel on the
build's GEMM library, ".own" on the built-in kernel) have several kernels; every other op costs 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Node


@dataclass(frozen=True)
class TargetRates:
    gemm_gflops: float  # sustained own-GEMM rate on large products, all threads
    direct_gflops: float  # direct (depthwise) loops
    bandwidth_gbs: float  # streaming memory bandwidth
    # oneDNN's direct convolutions (the ".onednn" variants, kernels/cpu/conv_onednn.cc) as a
    # fraction of gemm_gflops. x86-64: ResNet-18's 3x3 layers measured 310-400 GFLOP/s (Intel Xeon,
    # AVX-512, 2 threads, batch 8, layout conversions included) against this 300. aarch64: not
    # measured (oneDNN's NEON paths are mostly GEMM-based there), so ranked below im2col; -O3 times it.
    onednn_efficiency: float = 0.5


RATES_BY_ARCH = {
    "x86_64": TargetRates(gemm_gflops=300.0, direct_gflops=25.0, bandwidth_gbs=12.0, onednn_efficiency=1.1),
    "aarch64": TargetRates(gemm_gflops=40.0, direct_gflops=6.0, bandwidth_gbs=4.0),
}

# Fraction of the GEMM rate each GEMM-based variant reaches, and the multiply count it saves.
WINOGRAD_MULTIPLY_SAVING = 4.0  # F(4x4, 3x3): 36 products per 16 outputs instead of 144
WINOGRAD_EFFICIENCY = 0.5  # its GEMMs are batched 36 ways with K = channels: smaller, less efficient
IM2COL_EFFICIENCY = 0.8
POINTWISE_EFFICIENCY = 0.85
# A GEMM with few columns re-packs the whole weight for them: efficiency ~ cols / (cols + this).
# For 1x1 convs, pointwise and im2col run one GEMM per image (H*W columns); pointwise_batched packs
# images side by side up to PACK_COLUMNS columns per GEMM (conv.cc's kPackColumns) at the cost of
# copying both operands. (k x k convs on small maps suffer the same, but the im2col / Winograd
# ranking there was calibrated by measurement with the flat efficiencies above: only
# im2col_batched, which packs images like pointwise_batched, is ranked against it by the ratio.)
NARROW_GEMM_COLUMNS = 64
# Channels-last depthwise (vectorised over channels, kernels/cpu/conv_nhwc.cc) against the NCHW
# direct loops' rate.
NHWC_DIRECT_SPEEDUP = 1.5
PACK_COLUMNS = 256

# The GEMM library a build may link (cmake/gemm.cmake; the module's gemm_backend) relative to the
# built-in kernel on the training shapes, for ranking matmul / linear (library) against
# matmul.own / linear.own. MKL: benchmarks/gemm_bench.cc on an Intel Xeon (AVX-512, 2 threads),
# text-model and 1x1-conv shapes 1.05-1.5x, 2-10x on skinny products (N = 1..16); 0.95-1.2x on
# one thread, where a few shapes go to the own kernel, which -O3's timing catches. OpenBLAS 0.3.21
# measured 1.6-1.9x slower than the built-in kernel on AVX-512 machines. A library not listed
# counts as the own kernel.
LIBRARY_GEMM_SPEEDUP = {"mkl": 1.2, "openblas": 0.6}
GEMM_OPS = ("matmul", "linear")


def _narrow(cols: int) -> float:
    return cols / (cols + NARROW_GEMM_COLUMNS)


def _conv_geometry(node: Node):
    """(N, C, O, KH, KW, HO, WO, groups) of any conv op, from its forward shapes."""
    a = node.attrs
    if node.op == "conv2d":
        x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    elif node.op == "conv2d_grad_input":
        y, w, x = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    else:  # conv2d_grad_weight(dy, x)
        y, x, w = node.inputs[0].shape, node.inputs[1].shape, tuple(a["weight_shape"])
    if a.get("layout") == "nhwc":  # [N, H, W, C] as stored
        x, y = (x[0], x[3], x[1], x[2]), (y[0], y[3], y[1], y[2])
    return x[0], x[1], w[0], w[2], w[3], y[2], y[3], int(a.get("groups", 1))


def _gemm_op_seconds(node: Node, variant: str | None, rates: TargetRates, gemm_library: str | None) -> float:
    """matmul / linear: multiply-adds at the own or the library GEMM rate, plus operand traffic."""
    if variant not in (None, "own"):
        return float("inf")
    x, w, out = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    k = x[-1] if x else 1
    macs = k
    for d in out:
        macs *= d
    moved = 4 * (sum(_numel(v.shape) for v in node.inputs[:2]) + _numel(out))
    speedup = LIBRARY_GEMM_SPEEDUP.get(gemm_library or "own", 1.0) if variant is None else 1.0
    return 2 * macs / (rates.gemm_gflops * 1e9 * speedup) + moved / (rates.bandwidth_gbs * 1e9)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def estimated_seconds(node: Node, kernel: str, rates: TargetRates, gemm_library: str | None = None) -> float:
    """Seconds `kernel` takes on `node`, for ranking. gemm_library: the GEMM library of the build
    that will run it ("mkl", "openblas"; None or "own": none), which the op-named GEMM kernels use."""
    variant = kernel.split(".", 1)[1] if "." in kernel else None
    if node.op in GEMM_OPS:
        return _gemm_op_seconds(node, variant, rates, gemm_library)
    if not node.op.startswith("conv2d"):
        return 0.0  # one implementation per op outside convolution and GEMM today
    n, c, o, kh, kw, ho, wo, groups = _conv_geometry(node)
    macs = n * o * ho * wo * (c // groups) * kh * kw
    out_bytes = 4 * n * o * ho * wo
    in_bytes = 4 * n * c * ho * wo
    depthwise = groups == c and c > 1
    pointwise = kh == kw == 1
    gemm = rates.gemm_gflops * 1e9
    bw = rates.bandwidth_gbs * 1e9
    if node.attrs.get("layout") == "nhwc":  # only the default kernel runs it (ops/layout.py)
        if variant is not None:
            return float("inf")
        if depthwise:
            return 2 * macs / (rates.direct_gflops * NHWC_DIRECT_SPEEDUP * 1e9) + (in_bytes + out_bytes) / bw
        # one GEMM over all N*H*W rows: never narrow
        return 2 * macs / (gemm * POINTWISE_EFFICIENCY) + (in_bytes + out_bytes) / bw
    if variant is None:  # the shape-dispatching default behaves like the variant it picks
        variant = "depthwise" if depthwise else "pointwise" if pointwise and \
            node.attrs.get("stride", 1) in (1, [1, 1]) and node.attrs.get("padding", 0) in (0, [0, 0]) else "im2col"
    if variant == "depthwise":
        return 2 * macs / (rates.direct_gflops * 1e9) + (in_bytes + out_bytes) / bw
    if variant in ("pointwise", "pointwise_batched"):
        cols = ho * wo
        copies = 0.0
        if variant == "pointwise_batched" and cols < PACK_COLUMNS and n > 1:
            cols = min(n, -(-PACK_COLUMNS // cols)) * cols
            copies = 2 * (in_bytes + out_bytes)  # packed in, unpacked out (read + write each)
        eff = POINTWISE_EFFICIENCY * _narrow(cols)
        return 2 * macs / (gemm * eff) + (in_bytes + out_bytes + copies) / bw
    if variant in ("im2col", "im2col_batched"):
        col_bytes = 4 * n * (c // groups) * kh * kw * ho * wo * groups
        eff = IM2COL_EFFICIENCY if not depthwise else 0.05  # a K=9 GEMM is all packing
        if pointwise:
            eff *= _narrow(ho * wo)
        copies = 0.0
        if variant == "im2col_batched" and ho * wo < PACK_COLUMNS and n > 1:
            # the images' columns side by side: the narrow-GEMM loss of one image's columns (taken
            # as part of the flat efficiency above) shrinks to that of the chunk's
            cols = min(n, -(-PACK_COLUMNS // (ho * wo))) * ho * wo
            eff *= _narrow(cols) / _narrow(ho * wo)
            copies = 2 * out_bytes  # the output (or dy) packed / unpacked
        return 2 * macs / (gemm * eff) + (2 * col_bytes + in_bytes + out_bytes + copies) / bw
    if variant == "winograd":
        # V and M hold 36 values per 16 outputs (4x4 tiles of 6x6 inputs); the transformed weights
        # U (36 per 3x3 filter) are rebuilt every run since weights may train
        transform_bytes = 4 * 36 / 16 * (n * c * ho * wo + n * o * ho * wo)
        weight_bytes = 4 * 36 * o * c
        return 2 * macs / WINOGRAD_MULTIPLY_SAVING / (gemm * WINOGRAD_EFFICIENCY) + \
            (2 * transform_bytes + 2 * weight_bytes + in_bytes + out_bytes) / bw
    if variant == "onednn":
        # every run converts the input / dy and the weights into oneDNN's blocked layouts and the
        # output back (a read and a write each; the convolution's own passes over the blocked
        # copies stay in cache, chunks being a few MiB), then runs one direct convolution
        weight_bytes = 4 * o * (c // groups) * kh * kw
        return 2 * macs / (gemm * rates.onednn_efficiency) + \
            (2 * (in_bytes + out_bytes) + 2 * weight_bytes) / bw
    return float("inf")  # a variant the model does not know is never chosen by it
