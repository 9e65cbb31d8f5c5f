"""Appending the loss: the model's output + a new `target` input -> a scalar loss (section "loss").

`loss` is "cross_entropy" (class indices), "mse", or a LossBuilder: a function that emits the
loss into the graph (the API layer makes one from a torch callable by tracing it with the torch
frontend, edgetune/api.py). A mismatch between the model output and the target raises LossError
naming both shapes — never a silent broadcast.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import LossError
from .ir import Graph, NameGen, TensorType, Value, dtype_of_numpy
from .ops.registry import Builder

BUILTIN_LOSSES = ("cross_entropy", "mse")

# (graph, model output, target input, example target array, names) -> the scalar loss value
LossBuilder = Callable[[Graph, Value, Value, np.ndarray, NameGen], Value]


def class_index_layout(b: Builder, x: Value, target: Value, source: str | None = None, class_dim: int | None = 1):
    """Bring scores + class-index targets to [N, C] and [N].

    class_dim=1 is torch's convention (x [N, C, d...], target [N, d...]); class_dim=-1 is the
    language-model one (x [..., C], target [...]); None picks whichever fits. Returns
    (scores2d, target1d, back) where back() reshapes a per-sample loss to target's shape."""
    def fail(why):
        raise LossError(f"cross-entropy: model output {x.type} and target {target.type} do not fit: {why}"
                        + (f" (at {source})" if source else ""))

    if target.dtype not in ("i64", "i32"):
        fail("targets must be integer class indices")
    torch_fits = x.type.rank >= 2 and target.shape == (x.shape[0],) + x.shape[2:]
    lm_fits = x.type.rank >= 2 and target.shape == x.shape[:-1]
    if class_dim is None:
        class_dim = 1 if torch_fits else (-1 if lm_fits else None)
    if class_dim == 1 and not torch_fits or class_dim == -1 and not lm_fits or class_dim is None:
        fail(f"expected target of shape {list((x.shape[0],) + x.shape[2:]) if x.type.rank >= 2 else '[N]'}")
    c = x.shape[1] if class_dim == 1 else x.shape[-1]
    scores = x
    if class_dim == 1 and x.type.rank > 2:  # move classes last
        dims = [0] + list(range(2, x.type.rank)) + [1]
        scores = b.emit1("permute", [scores], {"dims": dims}, source=source)
    n = target.type.numel
    if scores.type.rank != 2:
        scores = b.emit1("reshape", [scores], {"shape": [n, c]}, source=source)
    tgt = target if target.type.rank == 1 else b.emit1("reshape", [target], {"shape": [n]}, source=source)

    def back(per_sample: Value) -> Value:
        if per_sample.shape == target.shape:
            return per_sample
        return b.emit1("reshape", [per_sample], {"shape": list(target.shape)}, source=source)

    return scores, tgt, back


def append_loss(graph: Graph, output: Value, example_target, loss, names: NameGen) -> Value:
    target_arr = np.asarray(example_target.detach().cpu().numpy() if hasattr(example_target, "detach")
                            else example_target)
    if target_arr.dtype.kind not in "fiub":
        raise LossError(f"example_target must be a tensor or array of numbers, got {type(example_target).__name__}")
    target = graph.add_input(names.reserve("target"), TensorType(target_arr.shape, dtype_of_numpy(target_arr.dtype)))
    b = Builder(graph, "loss", names)
    if loss == "cross_entropy":
        scores, tgt, _ = class_index_layout(b, output, target, class_dim=None)
        out = b.emit1("cross_entropy", [scores, tgt], {"reduction": "mean", "ignore_index": -100,
                                                      "label_smoothing": 0.0})
    elif loss == "mse":
        if output.shape != target.shape:
            raise LossError(f"mse: model output {output.type} and target {target.type} differ in shape")
        if target.dtype != output.dtype:
            raise LossError(f"mse: target dtype {target.dtype} differs from model output {output.dtype}")
        out = b.emit1("mse_loss", [output, target], {"reduction": "mean"})
    elif callable(loss):
        out = loss(graph, output, target, target_arr, names)
    else:
        raise LossError(f"unknown loss {loss!r}: use one of {list(BUILTIN_LOSSES)} or a callable (output, target)")
    if out.shape != ():
        raise LossError(f"the loss must be a scalar, got {out.type}; reduce it (e.g. .mean())")
    if not out.type.is_float:
        raise LossError(f"the loss must be floating point, got {out.type}")
    return out
