"""Activation layouts: the `layout` attr of the ops whose kernels care where the channel lies.

    layout = "nchw" (or absent)  4-d activations are [N, C, H, W], the frontends' order
    layout = "nhwc"              they are stored [N, H, W, C] (channels last)

The layout pass (compiler/passes/plan_layout.py) sets "nhwc" on conv2d / conv2d_grad_input /
conv2d_grad_weight and the batch-norm ops of a region where channels-last kernels win: a 1x1
convolution is then one GEMM over N*H*W rows, and depthwise convolution and batch norm vectorise
over contiguous channels. Only the activation operands change order (x, y, dy, dx, an f32
activation mask); weights stay [O, C/g, KH, KW], per-channel vectors stay [C], and shape attrs
(`input_shape`, `weight_shape`) stay in the logical NCHW order, so a node's meaning never depends
on its layout. A u8 bit mask is in the flat order of the tensor it masks, whatever that order is.

The numpy references and torch functions of those ops compute in NCHW: they permute the
activation operands in (to_logical) and the results back (to_physical), which is exact, so the
op sweep checks an NHWC kernel against the same arithmetic as its NCHW twin.
"""

from __future__ import annotations

import numpy as np

from .registry import check
from ..ir import TensorType

LAYOUTS = ("nchw", "nhwc")
NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


def layout_of(a: dict) -> str:
    layout = a.get("layout", "nchw")
    check(layout in LAYOUTS, f"attr layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def is_nhwc(a: dict) -> bool:
    return layout_of(a) == "nhwc"


def channel_axis(a: dict, rank: int) -> int:
    """Where the channel dim of a rank-`rank` activation lies."""
    return rank - 1 if is_nhwc(a) else 1


def logical_type(t: TensorType, a: dict, op: str) -> TensorType:
    """The NCHW type of an activation operand stored in the node's layout."""
    if not is_nhwc(a):
        return t
    check(t.rank == 4, f"{op}: layout 'nhwc' wants 4-d activations, got {t}")
    return TensorType(tuple(t.shape[i] for i in NHWC_TO_NCHW), t.dtype)


def physical_type(t: TensorType, a: dict) -> TensorType:
    """How an NCHW (logical) activation type is stored in the node's layout."""
    return TensorType(tuple(t.shape[i] for i in NCHW_TO_NHWC), t.dtype) if is_nhwc(a) else t


def physical_shape(shape, a: dict) -> tuple[int, ...]:
    return tuple(shape[i] for i in NCHW_TO_NHWC) if is_nhwc(a) else tuple(shape)


def to_logical(x, a: dict):
    """numpy array or torch tensor stored in the node's layout -> NCHW."""
    if not is_nhwc(a):
        return x
    return np.ascontiguousarray(x.transpose(NHWC_TO_NCHW)) if isinstance(x, np.ndarray) \
        else x.permute(*NHWC_TO_NCHW).contiguous()


def to_physical(x, a: dict):
    """NCHW numpy array or torch tensor -> stored in the node's layout."""
    if not is_nhwc(a):
        return x
    return np.ascontiguousarray(x.transpose(NCHW_TO_NHWC)) if isinstance(x, np.ndarray) \
        else x.permute(*NCHW_TO_NHWC).contiguous()


def nhwc_attrs(attrs: dict) -> dict:
    return {**attrs, "layout": "nhwc"}
