"""(IA)³ (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning") exactly as Hugging Face PEFT implements it (peft/tuners/ia3/layer.py), as a
graph rewrite.

One trainable vector per targeted layer, `<module>.ia3_l`, initialised to ones, in PEFT's shapes:

    layer            not feedforward: scales the output      feedforward: scales the input
    linear / MatMul  (out, 1)   y' = layer(x) · l            (1, in)        y' = layer(x · l)
    conv2d           (1, out, 1, 1)                          (1, in, 1, 1)

The output scale multiplies the bias too (PEFT: `result = base_layer(x) * ia3_l`); the input
scale leaves it alone. An ONNX MatMul whose only reader is the Add of its bias is scaled after
that Add, as the exported Linear is in PEFT. Embeddings are refused (PEFT's (IA)³ has none).

Exports: Hugging Face PEFT's adapter_config.json (peft_type "IA3", target_modules and
feedforward_modules as full module names) and `base_model.model.<module>.ia3_l` tensors, loadable
with `peft.PeftModel.from_pretrained`; merged weights as PEFT's `merge()` computes them: W scaled
per output row (per input column for feedforward layers; a grouped conv per input channel of
each group), a non-feedforward bias scaled too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import SpecError
from ..ir import Graph, NameGen
from ..rewrite import EmitBefore
from .base import (Adapter, After, Layer, add_param, as_list, check_layer, export_table, matches,
                   following_bias, match_targets)
from .export import Expr


@dataclass
class IA3(Adapter):
    """(IA)³ on the layers `targets` names (globs over module names, or PEFT-style names matched as
    suffixes: "k_proj"); `exclude` removes some again. Layers `feedforward` names (a subset of the
    targets, as PEFT requires) scale their input instead of their output."""

    targets: list = field(default_factory=list)
    feedforward: list = field(default_factory=list)
    exclude: list = field(default_factory=list)

    def __post_init__(self):
        self.targets = as_list(self.targets, "IA3 targets")
        self.feedforward = as_list(self.feedforward, "IA3 feedforward")
        self.exclude = as_list(self.exclude, "IA3 exclude")
        if not self.targets:
            raise SpecError("IA3 needs targets, e.g. IA3(targets=['k_proj', 'v_proj', 'down_proj'], "
                            "feedforward=['down_proj'])")

    def rewrite(self, graph: Graph, names: NameGen) -> list:
        export_table(graph)
        who = repr(self)
        layers = match_targets(graph, self.targets, self.exclude, who)
        emb = [layer for layer in layers if layer.op == "embedding"]
        if emb:
            raise SpecError(f"{who}: {', '.join(layer.describe() for layer in emb[:4])}: (IA)³ does not apply to "
                            "embeddings (Hugging Face PEFT's IA3 supports linear and conv layers); narrow the "
                            "targets or add exclude=[...]")
        targeted = {layer.module for layer in layers}
        feedforward: set[str] = set()
        for pattern in self.feedforward:
            hit = {layer.module for layer in layers if matches(pattern, layer.module)}
            if not hit:
                raise SpecError(f"{who}: feedforward pattern {pattern!r} names none of the targeted layers "
                                f"({', '.join(sorted(targeted)[:6])}{' ...' if len(targeted) > 6 else ''}); "
                                "feedforward modules must be a subset of the targets (as in PEFT)")
            feedforward |= hit
        for layer in layers:
            check_layer(self, graph, layer)
        new = []
        for layer in layers:
            new.append(_rewrite_layer(graph, names, layer, layer.module in feedforward))
        graph.adapters.add_peft({
            "peft_type": "IA3", "task_type": None, "target_modules": sorted(targeted),
            "feedforward_modules": sorted(feedforward), "fan_in_fan_out": any(layer.op == "matmul" for layer in layers),
            "init_ia3_weights": True, "base_model_name_or_path": None, "inference_mode": True,
            "modules_to_save": None, "revision": None, "exclude_modules": None}, who)
        return new

    def __repr__(self):
        extra = "".join([f", feedforward={self.feedforward}" if self.feedforward else "",
                         f", exclude={self.exclude}" if self.exclude else ""])
        return f"IA3(targets={self.targets}{extra})"


def _shape(layer: Layer, feedforward: bool) -> tuple[int, ...]:
    """PEFT's shape of ia3_l for the layer."""
    w = layer.weight.type.shape
    if layer.op == "conv2d":
        return (1, w[1] * layer.node.attrs.get("groups", 1) if feedforward else w[0], 1, 1)
    return (1, layer.in_features) if feedforward else (layer.out_features, 1)


def _rewrite_layer(g: Graph, names: NameGen, layer: Layer, feedforward: bool):
    mod, op = layer.module, layer.op
    shape = _shape(layer, feedforward)
    n = max(shape)  # the channels it scales
    l_name = f"{mod}.ia3_l"
    lv = add_param(g, l_name, np.ones(shape, dtype=np.float32))
    bias = layer.bias
    if feedforward:
        node = layer.node
        with EmitBefore(g, node, names, section="forward") as b:
            scale = lv if op == "conv2d" else b.emit1("reshape", [lv], {"shape": [n]})
            xs = b.emit1("mul", [node.inputs[0], scale])
        node.inputs = [xs] + node.inputs[1:]
    else:
        follow = following_bias(g, layer)
        anchor = layer.node
        if follow is not None:
            anchor, bias = follow
        after = After(g, anchor, names)
        with after as (b, y):
            scale = lv if op == "conv2d" else b.emit1("reshape", [lv], {"shape": [n]})
            out = b.emit1("mul", [y, scale])
        after.repoint(out)

    # PEFT's merge: weight * ia3 (transposed for fan_in_fan_out, spread over the groups of a grouped conv)
    table = g.adapters
    w, le = Expr.w(layer.weight.name), Expr.w(l_name)
    wshape = list(layer.weight.type.shape)
    if op == "linear":
        merged = w * le                                   # (out, 1) rows / (1, in) columns
    elif op == "matmul":                                  # weight [in, out]
        merged = w * le.reshape([1, n] if not feedforward else [n, 1])
    elif not feedforward:                                 # conv: per output channel
        merged = w * le.reshape([n, 1, 1, 1])
    else:
        groups = layer.node.attrs.get("groups", 1)
        if groups == 1:
            merged = w * le                               # (1, in, 1, 1) per input channel
        else:
            out, cpg = wshape[0], wshape[1]
            merged = (w.reshape([groups, out // groups, cpg, int(np.prod(wshape[2:]))])
                      * le.reshape([groups, 1, cpg, 1])).reshape(wshape)
    table.merged[layer.weight.name] = merged.steps
    if not feedforward and bias is not None:
        table.merged[bias.name] = (Expr.w(bias.name) * le.reshape(list(bias.type.shape))).steps
    table.peft_tensors[f"base_model.model.{l_name}"] = le.steps
    table.own_tensors[l_name] = le.steps
    table.drop_when_merged.append(l_name)
    table.own_config["adapters"].append({
        "type": "ia3", "module": mod, "layer": op, "weight": layer.weight.name,
        "bias": bias.name if bias is not None else None, "feedforward": feedforward, "ia3_l": l_name})
    return lv
