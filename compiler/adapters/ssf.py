"""SSF, Scale-and-Shift Features (Lian et al., NeurIPS 2022), as a graph rewrite.

After each targeted layer the rewrite emits, per output channel c,

    y'[.., c] = y[.., c] · scale[c] + shift[c]

(the last dim for linear / ONNX MatMul / embedding, dim 1 for an NCHW conv) with two new
trainable vectors `<module>.ssf_scale` [C] ~ N(1, init_std) and `<module>.ssf_shift` [C] ~
N(0, init_std) (seeded). The base layer stays frozen and is never copied.

An ONNX MatMul whose only reader is the Add of its bias vector (a torch Linear exported to ONNX)
is scaled after that Add, as the Linear it came from would be: y' = (x·W + b)·scale + shift.

SSF is linear in the layer output, so it folds into the layer (`state_dict(merged=True)`):

    W' = scale ⊙ W  (per output channel)      b' = scale · b + shift

A layer without a bias gains one: the merged state_dict has `<module>.bias` = shift (the record in
edgetune_adapter.json says `"adds_bias": true`, since the original module must be built with a
bias to load it). An embedding folds the shift into its table (E' = E · scale + shift: a lookup of
E' is the lookup of E scaled and shifted), so it gains nothing.

SSF has no Hugging Face PEFT format: `save_adapter` writes edgetune_adapter.json/.safetensors only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpecError
from ..ir import Graph, NameGen, Node, Value
from .base import (Adapter, After, Layer, add_param, as_list, check_layer, export_table, following_bias,
                   match_targets)
from .export import Expr


@dataclass
class SSF(Adapter):
    """Scale-and-shift every output channel of the layers `targets` names (globs over module
    names, or PEFT-style names matched as suffixes); `exclude` removes some again. The scales start
    at N(1, init_std), the shifts at N(0, init_std), reproducibly from `seed`."""

    targets: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self):
        self.targets = as_list(self.targets, "SSF targets")
        self.exclude = as_list(self.exclude, "SSF exclude")
        if not self.targets:
            raise SpecError("SSF needs targets, e.g. SSF(targets=['*.fc1', '*.fc2'])")
        if isinstance(self.init_std, bool) or not isinstance(self.init_std, (int, float)) \
                or not math.isfinite(self.init_std) or self.init_std < 0:
            raise SpecError(f"SSF: init_std must be a finite number >= 0, got {self.init_std!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SpecError(f"SSF: seed must be a non-negative integer, got {self.seed!r}")

    def rewrite(self, graph: Graph, names: NameGen) -> list:
        export_table(graph)
        layers = match_targets(graph, self.targets, self.exclude, repr(self))
        for layer in layers:
            check_layer(self, graph, layer)
        new = []
        for index, layer in enumerate(layers):
            new += _rewrite_layer(self, graph, names, layer, np.random.default_rng([self.seed, index]))
        return new

    def __repr__(self):
        extra = "".join([f", init_std={self.init_std:g}" if self.init_std != 0.02 else "",
                         f", exclude={self.exclude}" if self.exclude else ""])
        return f"SSF(targets={self.targets}{extra})"


def channel_shape(layer: Layer) -> list[int]:
    """The shape a [C] per-channel vector takes to broadcast against the layer's output:
    [C] for a channels-last output, [C, 1, 1] for an NCHW conv."""
    c = layer.out_features
    return [c, 1, 1] if layer.op == "conv2d" else [c]


def per_row(layer: Layer, vec: Expr) -> Expr:
    """A recipe that scales the layer's weight per output channel: `vec` ([C] elements) shaped to
    broadcast against the weight as stored (linear [out, in], conv [out, cin, kh, kw], MatMul and
    embedding [in, out])."""
    c = layer.out_features
    rank = layer.weight.type.rank
    if layer.op in ("matmul", "embedding"):
        return vec.reshape([1, c])
    return vec.reshape([c] + [1] * (rank - 1))


def _rewrite_layer(spec: SSF, g: Graph, names: NameGen, layer: Layer, rng) -> list:
    mod, c = layer.module, layer.out_features
    std = float(spec.init_std)
    scale = add_param(g, f"{mod}.ssf_scale", rng.normal(1.0, std, (c,)) if std else np.ones(c))
    shift = add_param(g, f"{mod}.ssf_shift", rng.normal(0.0, std, (c,)) if std else np.zeros(c))
    follow = following_bias(g, layer)
    anchor, bias = (follow if follow is not None else (layer.node, layer.bias))

    after = After(g, anchor, names)
    with after as (b, y):
        shape = channel_shape(layer)
        s = b.emit1("reshape", [scale], {"shape": shape}) if shape != [c] else scale
        t = b.emit1("reshape", [shift], {"shape": shape}) if shape != [c] else shift
        out = b.emit1("add", [b.emit1("mul", [y, s]), t])
    after.repoint(out)

    table = g.adapters
    se, te = Expr.w(scale.name), Expr.w(shift.name)
    wname = layer.weight.name
    adds_bias = False
    if layer.op == "embedding":
        table.merged[wname] = (Expr.w(wname) * per_row(layer, se) + per_row(layer, te)).steps
    else:
        table.merged[wname] = (Expr.w(wname) * per_row(layer, se)).steps
        if bias is not None:
            bshape = list(bias.type.shape)
            table.merged[bias.name] = (Expr.w(bias.name) * se.reshape(bshape) + te.reshape(bshape)).steps
        else:
            bias_name = f"{mod}.bias"
            if bias_name in g.sources or bias_name in g.aliases:
                raise SpecError(f"{spec!r}: {layer.describe()} has no bias, but the model already has a tensor "
                                f"{bias_name!r}; SSF cannot merge its shift into one")
            table.merged[bias_name] = te.steps
            adds_bias = True
    record = {"type": "ssf", "module": mod, "layer": layer.op, "weight": wname,
              "bias": bias.name if bias is not None else (f"{mod}.bias" if adds_bias else None),
              "adds_bias": adds_bias, "scale": scale.name, "shift": shift.name, "init_std": std}
    table.own_config["adapters"].append(record)
    for v in (scale, shift):
        table.own_tensors[v.name] = Expr.w(v.name).steps
        table.drop_when_merged.append(v.name)
    return [scale, shift]
