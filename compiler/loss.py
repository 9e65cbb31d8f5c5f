"""Appending the loss: the model's output + a new `target` input -> a scalar loss (section "loss").

`loss` is "cross_entropy" (class indices: scores [N, C, d...] with targets [N, d...], or a
language model's [..., V] logits with [...] token targets), "causal_lm" (next-token prediction:
logits [B, T, V], target = the input ids [B, T]), "mse", or a LossBuilder: a function that emits the
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

BUILTIN_LOSSES = ("cross_entropy", "causal_lm", "mse")
IGNORE_INDEX = -100  # targets equal to it count neither in the sum nor in the mean's denominator (torch, HF)

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
    if x.type.rank < 2:
        fail("expected scores [N, C] (or [N, C, d...], or [..., C] logits) and targets [N]")
    torch_shape, lm_shape = list((x.shape[0],) + x.shape[2:]), list(x.shape[:-1])
    if class_dim == 1 and not torch_fits:
        fail(f"expected target of shape {torch_shape}")
    if class_dim == -1 and not lm_fits:
        fail(f"expected target of shape {lm_shape}")
    if class_dim is None:
        fail(f"expected target of shape {torch_shape}" if torch_shape == lm_shape else
             f"expected target of shape {torch_shape} (classes in dim 1, torch's layout) or {lm_shape} "
             "(classes last: token-level logits [B, T, V] with targets [B, T])")
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


def causal_lm_layout(b: Builder, x: Value, target: Value):
    """Next-token prediction: logits [..., T, V] and the input ids [..., T] -> scores [N, V] for
    positions 0..T-2 and targets [N] = ids at positions 1..T-1 (N = batch x (T-1)); what Hugging
    Face's ForCausalLMLoss computes with labels = input ids (its -100 padding of the last label
    drops the same position)."""
    def fail(why):
        raise LossError(f"causal_lm: model output {x.type} and target {target.type} do not fit: {why}")

    if not x.type.is_float or x.type.rank < 2:
        fail("the model output must be float logits [B, T, V] (batch, tokens, vocabulary)")
    expected = f"{target.dtype if target.dtype in ('i64', 'i32') else 'i64'}[{','.join(map(str, x.shape[:-1]))}]"
    if target.dtype not in ("i64", "i32"):
        fail(f"the target must be the integer input ids, {expected} (ids equal to {IGNORE_INDEX} are ignored)")
    if target.shape != x.shape[:-1]:
        fail(f"expected the input ids [B, T] = {expected}, the logits' shape without the vocabulary dimension")
    t, v = x.shape[-2], x.shape[-1]
    if t < 2:
        fail("a sequence of one token has no next token to predict (T must be at least 2)")
    n = target.type.numel // t * (t - 1)
    scores = b.emit1("slice", [x], {"dim": x.type.rank - 2, "start": 0, "end": t - 1, "step": 1})
    scores = b.emit1("reshape", [scores], {"shape": [n, v]})
    tgt = b.emit1("slice", [target], {"dim": target.type.rank - 1, "start": 1, "end": t, "step": 1})
    if tgt.type.rank != 1:
        tgt = b.emit1("reshape", [tgt], {"shape": [n]})
    return scores, tgt


def append_loss(graph: Graph, output: Value, example_target, loss, names: NameGen) -> Value:
    target_arr = np.asarray(example_target.detach().cpu().numpy() if hasattr(example_target, "detach")
                            else example_target)
    if target_arr.dtype.kind not in "fiub":
        raise LossError(f"example_target must be a tensor or array of numbers, got {type(example_target).__name__}")
    target = graph.add_input(names.reserve("target"), TensorType(target_arr.shape, dtype_of_numpy(target_arr.dtype)))
    b = Builder(graph, "loss", names)
    if loss == "cross_entropy":
        scores, tgt, _ = class_index_layout(b, output, target, class_dim=None)
        out = b.emit1("cross_entropy", [scores, tgt], {"reduction": "mean", "ignore_index": IGNORE_INDEX,
                                                      "label_smoothing": 0.0})
    elif loss == "causal_lm":
        scores, tgt = causal_lm_layout(b, output, target)
        out = b.emit1("cross_entropy", [scores, tgt], {"reduction": "mean", "ignore_index": IGNORE_INDEX,
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
