"""LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024) as a graph rewrite, with PEFT's
initialisations: kaiming (PEFT's default), gaussian, PiSSA (principal singular vectors) and OLoRA
(QR).

For a targeted layer y = x·Wᵀ + b the rewrite emits

    y' = y + s · B(A(dropout(x)))          s = alpha / r   (alpha / sqrt(r) with use_rslora)

with A [r, in] and B [out, r] new trainable parameters (Hugging Face PEFT's shapes and names:
`<module>.lora_A.weight`, `<module>.lora_B.weight`). W is never copied or materialised as
W + s·B·A during training; the scale multiplies the r-wide activation (the cheapest place). A
conv layer gets PEFT's conv LoRA (A: a k×k conv with the layer's stride and padding into r
channels, B: 1×1), an embedding PEFT's embedding LoRA (`lora_embedding_A` [r, num],
`lora_embedding_B` [dim, r]: y' = y + s · embedding(Aᵀ, ids)·Bᵀ), an ONNX MatMul with a weight
[in, out] the same as a linear (PEFT's `fan_in_fan_out`).

DoRA splits the updated weight into magnitude and direction (PEFT's DoRA, including its
detached norm, DoRA paper §4.3):

    V = W + s·B·A (per output channel norm n = ||V||, not differentiated)
    y' = (m / n) · (x·Wᵀ + s·B(A(x))) + b          m = `<module>.lora_magnitude_vector`, init ||W||

(with dropout p > 0, PEFT's form: y + (m/n - 1)·(dropout(x)·Wᵀ) + (m/n)·s·B(A(dropout(x)))).
The norm needs V, an [out, in] product of the small factors, once per step; it gets no gradient
(the `stop_gradient` tag, compiler/autodiff.py).

PiSSA/OLoRA move the top-r part of W into A, B at compile time and keep the residual W - s·B·A
frozen in place of W; the initial A, B are kept (hidden, export-only) so the exported PEFT
adapter is the rank-2r LoRA that applies to the *original* base model (PEFT's
`path_initial_model_for_weight_conversion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpecError
from ..ir import Graph, NameGen
from .base import (Adapter, After, Layer, add_param, as_list, check_free, dropout_counter, export_table,
                   match_targets, next_dropout_stream)
from .export import Expr

INITS = ("kaiming", "gaussian", "pissa", "olora")
_PEFT_INIT = {"kaiming": True, "gaussian": "gaussian", "pissa": True, "olora": True}


@dataclass
class LoRA(Adapter):
    """LoRA adapters on the layers `targets` names (globs over module names, or PEFT-style names
    matched as suffixes: "q_proj"); `exclude` removes some again. init: "kaiming" (PEFT's default:
    A kaiming-uniform, B = 0), "gaussian" (A ~ N(0, 1/r)), "pissa", "olora". `use_dora` adds DoRA's
    magnitude vector. `seed` makes random inits reproducible."""

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    init: str = "kaiming"
    use_dora: bool = False
    use_rslora: bool = False
    seed: int = 0

    def __post_init__(self):
        self.targets = as_list(self.targets, "LoRA targets")
        self.exclude = as_list(self.exclude, "LoRA exclude")
        if not self.targets:
            raise SpecError("LoRA needs targets, e.g. LoRA(r=8, targets=['*.q_proj', '*.v_proj'])")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise SpecError(f"LoRA: r must be a positive integer, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise SpecError(f"LoRA: alpha must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"LoRA: dropout must be in [0, 1), got {self.dropout!r}")
        if self.init not in INITS:
            raise SpecError(f"LoRA: init must be one of {', '.join(INITS)}, got {self.init!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def rewrite(self, graph: Graph, names: NameGen) -> list:
        export_table(graph)
        who = repr(self)
        layers = match_targets(graph, self.targets, self.exclude, who)
        for layer in layers:
            _check_layer(self, graph, layer)
        new = []
        table = graph.adapters
        for index, layer in enumerate(layers):
            new += _rewrite_layer(self, graph, names, layer, np.random.default_rng([self.seed, index]))
        fan_in_fan_out = any(layer.op == "matmul" for layer in layers)
        r, alpha = self.r, float(self.alpha)
        if self.init in ("pissa", "olora"):  # exported as the equivalent rank-2r LoRA on the original weights
            r, alpha = 2 * r, alpha * (math.sqrt(2.0) if self.use_rslora else 2.0)
        table.add_peft({
            "peft_type": "LORA", "task_type": None, "r": r, "lora_alpha": alpha, "lora_dropout": float(self.dropout),
            "target_modules": sorted({layer.module for layer in layers}), "use_dora": bool(self.use_dora),
            "use_rslora": bool(self.use_rslora), "init_lora_weights": _PEFT_INIT[self.init],
            "fan_in_fan_out": fan_in_fan_out, "bias": "none", "base_model_name_or_path": None,
            "inference_mode": True, "modules_to_save": None, "revision": None, "layers_to_transform": None,
            "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "lora_bias": False,
            "exclude_modules": None}, who)
        return new

    def __repr__(self):
        extra = "".join([f", dropout={self.dropout}" if self.dropout else "", ", use_dora=True" if self.use_dora else "",
                         ", use_rslora=True" if self.use_rslora else "",
                         f", init={self.init!r}" if self.init != "kaiming" else ""])
        return f"{'DoRA' if self.use_dora else 'LoRA'}(r={self.r}, alpha={self.alpha:g}{extra}, targets={self.targets})"


def _check_layer(spec: LoRA, graph: Graph, layer: Layer) -> None:
    node, what = layer.node, layer.describe()
    check_free(spec, graph, layer)
    if node.op == "conv2d":
        if node.attrs.get("groups", 1) != 1:
            raise SpecError(f"{spec!r}: {what} is a grouped/depthwise conv (groups={node.attrs['groups']}); LoRA "
                            "supports groups=1 convs as PEFT does; exclude it")
        if list(node.attrs.get("dilation", [1, 1])) != [1, 1]:
            raise SpecError(f"{spec!r}: {what} is dilated; PEFT's conv LoRA has no dilation; exclude it")
    if node.op == "embedding" and (spec.init in ("pissa", "olora") or spec.use_dora):
        raise SpecError(f"{spec!r}: {what}: embeddings take kaiming/gaussian LoRA without DoRA")
    if node.op in ("linear", "conv2d", "matmul") and node.attrs.get("activation"):
        raise SpecError(f"{spec!r}: {what} has a fused activation")
    if spec.r > min(layer.out_features, layer.in_features) and spec.init in ("pissa", "olora"):
        raise SpecError(f"{spec!r}: r={spec.r} exceeds the rank of {what}")
    if spec.init in ("pissa", "olora"):
        readers = sum(1 for n in graph.nodes for v in n.inputs if v is layer.weight)
        if readers > 1 or any(t == layer.weight.name for t in graph.aliases.values()):
            raise SpecError(f"{spec!r}: {what}'s weight is shared (tied); {spec.init} rewrites it in place")


def _canonical(w: np.ndarray, op: str) -> np.ndarray:
    """The weight as [out, in] (conv: [out, in*kh*kw]; embedding and MatMul: transposed)."""
    if op in ("matmul", "embedding"):
        return w.T
    return w.reshape(w.shape[0], -1)


def _initial_factors(spec: LoRA, layer: Layer, weight: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(A, B, residual weight or None) in PEFT's shapes, float64."""
    w = np.asarray(weight, dtype=np.float64)
    r, op = spec.r, layer.op
    a_shape = (r, *layer.weight.type.shape[1:]) if op == "conv2d" else (r, layer.in_features)
    b_shape = (layer.out_features, r, 1, 1) if op == "conv2d" else (layer.out_features, r)
    if op == "embedding":  # PEFT: A = 0, B ~ N(0, 1)
        return np.zeros(a_shape), rng.standard_normal(b_shape), None
    if spec.init == "kaiming":  # kaiming_uniform(a=sqrt(5)) as nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = 1.0 / math.sqrt(layer.in_features)
        return rng.uniform(-bound, bound, a_shape), np.zeros(b_shape), None
    if spec.init == "gaussian":
        return rng.normal(0.0, 1.0 / r, a_shape), np.zeros(b_shape), None
    wc, s = _canonical(w, op), spec.scaling
    if spec.init == "pissa":
        u, sv, vh = np.linalg.svd(wc, full_matrices=False)
        sr = sv[:r] / s
        a, b = np.sqrt(sr)[:, None] * vh[:r], u[:, :r] * np.sqrt(sr)[None, :]
    else:  # olora
        q, rr = np.linalg.qr(wc)
        a, b = rr[:r], q[:, :r]
    residual = wc - s * (b @ a)
    return a.reshape(a_shape), b.reshape(b_shape), (residual.T if op == "matmul" else residual).reshape(w.shape)


def _rewrite_layer(spec: LoRA, g: Graph, names: NameGen, layer: Layer, rng) -> list:
    node, op, mod, s = layer.node, layer.op, layer.module, spec.scaling
    a0, b0, residual = _initial_factors(spec, layer, g.initial[layer.weight.name], rng)
    tied = sum(1 for n in g.nodes if n.section == "forward" and any(v is layer.weight for v in n.inputs)) > 1 \
        or any(t == layer.weight.name for t in g.aliases.values())
    emb = op == "embedding"
    a_name = f"{mod}.lora_embedding_A" if emb else f"{mod}.lora_A.weight"
    b_name = f"{mod}.lora_embedding_B" if emb else f"{mod}.lora_B.weight"
    a, b = add_param(g, a_name, a0), add_param(g, b_name, b0)
    new = [a, b]
    table = g.adapters
    record = {"type": "dora" if spec.use_dora else "lora", "module": mod, "layer": op, "weight": layer.weight.name,
              "r": spec.r, "alpha": float(spec.alpha), "scaling": s, "init": spec.init, "A": a_name, "B": b_name}
    wexpr, aexpr, bexpr = Expr.w(layer.weight.name), Expr.w(a_name), Expr.w(b_name)
    delta_c = Expr.mm(bexpr, aexpr).scale(s)  # [out, in'] (embedding: [dim, num])

    if residual is not None:  # PiSSA / OLoRA: the residual replaces W; the initial factors stay for the export
        g.initial[layer.weight.name] = residual.astype(g.initial[layer.weight.name].dtype)
        for tag, data in (("A", a0), ("B", b0)):
            hidden = f"{mod}.lora_{tag}.initial"
            g.add_source(hidden, "buffer", data.astype(np.float32))
            table.hidden.append(hidden)
        record["initial"] = [f"{mod}.lora_A.initial", f"{mod}.lora_B.initial"]
        peft_a = Expr.cat(0, aexpr, Expr.w(f"{mod}.lora_A.initial"))
        peft_b = Expr.cat(1, bexpr, Expr.w(f"{mod}.lora_B.initial").scale(-1.0))
    else:
        peft_a, peft_b = aexpr, bexpr
    prefix = f"base_model.model.{mod}"
    table.peft_tensors[f"{prefix}.{a_name[len(mod) + 1:]}"] = peft_a.steps
    table.peft_tensors[f"{prefix}.{b_name[len(mod) + 1:]}"] = peft_b.steps

    counter = dropout_counter(g, names) if spec.dropout and not emb else None  # (before the block: it adds a node)
    after = After(g, node, names)
    with after as (bld, y):
        x = node.inputs[1] if emb else node.inputs[0]
        xd = x
        if counter is not None:
            xd = bld.emit("dropout", [x, counter], {"p": float(spec.dropout), "stream": next_dropout_stream(g)})[0]
        if op == "conv2d":
            attrs = {"stride": list(node.attrs["stride"]), "padding": list(node.attrs["padding"]),
                     "dilation": [1, 1], "groups": 1}
            h = bld.emit1("conv2d", [xd, a], attrs)
            h = bld.emit1("mul", [h, bld.const(s)])
            delta = bld.emit1("conv2d", [h, b], {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1})
        elif emb:
            a_t = bld.emit1("permute", [a], {"dims": [1, 0]})
            h = bld.emit1("embedding", [a_t, x], {k: v for k, v in node.attrs.items() if k == "padding_idx"})
            h = bld.emit1("mul", [h, bld.const(s)])
            delta = bld.emit1("linear", [h, b])
        else:
            h = bld.emit1("mul", [bld.emit1("linear", [xd, a]), bld.const(s)])
            delta = bld.emit1("linear", [h, b])
        if not spec.use_dora:
            after_result = bld.emit1("add", [y, delta])
        else:
            after_result, m = _dora(spec, g, bld, layer, xd, y, delta, a, b, record)
            new.append(m)
    after.repoint(after_result)

    # merged weights and edgetune's own export
    if spec.use_dora:
        vc = _canonical_expr(wexpr, layer) + delta_c
        mag = Expr.w(record["magnitude"]).reshape([layer.out_features, 1])
        merged_c = (mag / vc.rownorm().reshape([layer.out_features, 1])) * vc
    else:
        merged_c = _canonical_expr(wexpr, layer) + delta_c
    table.merged[layer.weight.name] = _from_canonical(merged_c, layer).steps
    if tied:
        table.unmergeable.append(f"{spec!r} on {mod}: its weight {layer.weight.name} is shared (tied) with another "
                                 "layer, so folding the adapter in would change that layer too; use save_adapter")
    table.drop_when_merged += [v.name for v in new]
    for v in new:
        table.own_tensors[v.name] = Expr.w(v.name).steps
    table.own_config["adapters"].append(record)
    return new


def _canonical_expr(w: Expr, layer: Layer) -> Expr:
    shape = layer.weight.type.shape
    if layer.op == "conv2d":
        return w.reshape([shape[0], int(np.prod(shape[1:]))])
    return w.t() if layer.op in ("matmul", "embedding") else w


def _from_canonical(e: Expr, layer: Layer) -> Expr:
    if layer.op == "conv2d":
        return e.reshape(list(layer.weight.type.shape))
    return e.t() if layer.op in ("matmul", "embedding") else e


def _dora(spec: LoRA, g: Graph, bld, layer: Layer, xd, y, delta, a, b, record):
    """DoRA around the base output `y` (see the module docstring). Returns (new output, m)."""
    node, op, mod, s = layer.node, layer.op, layer.module, spec.scaling
    out = layer.out_features
    w = layer.weight
    # the magnitude: PEFT's ||W + s·B·A|| per output channel at init (B = 0 or the PiSSA residual + factors)
    w_now = np.asarray(g.initial[w.name], dtype=np.float64)
    a0 = np.asarray(g.initial[a.name], dtype=np.float64)
    b0 = np.asarray(g.initial[b.name], dtype=np.float64)
    v0 = _canonical(w_now, op) + s * (b0.reshape(out, -1) @ a0.reshape(a0.shape[0], -1))
    m_shape = (1, out, 1, 1) if op == "conv2d" else (out,)
    m_name = f"{mod}.lora_magnitude_vector"
    m = add_param(g, m_name, np.sqrt((v0 ** 2).sum(axis=1)).reshape(m_shape))
    record["magnitude"] = m_name
    g.adapters.peft_tensors[f"base_model.model.{m_name}"] = Expr.w(m_name).steps

    # n = ||W + s·B·A|| per output channel, without gradient; the product is brought into W's own
    # layout (W is read as it is, never transposed or reshaped into a copy)
    first = len(bld.graph.nodes)
    if op == "matmul":  # W [in, out]: (B·A)ᵀ = Aᵀ·Bᵀ
        ba = bld.emit1("matmul", [bld.emit1("permute", [a], {"dims": [1, 0]}), bld.emit1("permute", [b], {"dims": [1, 0]})])
        reduce_dims = [0]
    elif op == "conv2d":  # W [out, in, kh, kw]: reshape(B [out, r] · A [r, in*kh*kw])
        b2 = bld.emit1("reshape", [b], {"shape": [out, spec.r]})
        a2 = bld.emit1("reshape", [a], {"shape": [spec.r, layer.in_features]})
        ba = bld.emit1("reshape", [bld.emit1("matmul", [b2, a2])], {"shape": list(w.type.shape)})
        reduce_dims = [1, 2, 3]
    else:
        ba = bld.emit1("matmul", [b, a])
        reduce_dims = [1]
    v = bld.emit1("add", [w, bld.emit1("mul", [ba, bld.const(s)])])
    n = bld.emit1("sqrt", [bld.emit1("sum", [bld.emit1("mul", [v, v])], {"dims": reduce_dims, "keepdim": False})])
    for node_ in bld.graph.nodes[first:]:
        node_.tags.add("stop_gradient")
    m_flat = bld.emit1("reshape", [m], {"shape": [out]}) if op == "conv2d" else m
    ratio = bld.emit1("div", [m_flat, n])
    if op == "conv2d":
        ratio = bld.emit1("reshape", [ratio], {"shape": [1, out, 1, 1]})
    bias = layer.bias
    if bias is not None:  # the base output without its bias: y - b (PEFT's base_result - bias)
        node.inputs = node.inputs[:2]
        y_nob = y
        bias_b = bld.emit1("reshape", [bias], {"shape": [1, out, 1, 1]}) if op == "conv2d" else bias
    else:
        y_nob, bias_b = y, None
    if not spec.dropout:
        res = bld.emit1("mul", [ratio, bld.emit1("add", [y_nob, delta])])
    else:
        if op == "conv2d":
            base_d = bld.emit1("conv2d", [xd, w], dict(node.attrs))
        elif op == "matmul":
            base_d = bld.emit1("matmul", [xd, w], dict(node.attrs))
        else:
            base_d = bld.emit1("linear", [xd, w])
        one = bld.const(1.0)
        res = bld.emit1("add", [y_nob, bld.emit1("add", [bld.emit1("mul", [bld.emit1("sub", [ratio, one]), base_d]),
                                                          bld.emit1("mul", [ratio, delta])])])
    if bias_b is not None:
        res = bld.emit1("add", [res, bias_b])
    return res, m
