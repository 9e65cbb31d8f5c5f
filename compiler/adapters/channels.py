"""PockEngine's partial-channel weight update (Zhu et al., MICRO 2023): train only a subset S of
each targeted layer's *output* channels, as a graph rewrite.

For a targeted layer y = layer(x, W, b) with C output channels and k = |S| the rewrite adds one
trainable parameter `<module>.weight_channels`, [k, ...] (linear and conv: the rows W[S]; ONNX
MatMul, whose weight is [in, out]: the columns W[:, S] transposed, [k, in]) initialised to
those k channels of W, and emits

    y_S = layer(x, W_S, b[S])            a k-channel layer (linear / conv2d with the same geometry)
    y'  = y with its channels S replaced by y_S

The base layer keeps the full W, frozen: it gets no gradient at all, and the only weight
gradient is W_S's — a k-row GEMM (k-output-channel conv2d_grad_weight), never a full [out, in]
gradient then masked. W is never copied after compile time. How y' is put together:

  * S one contiguous run [a, a + k) (`by="first"`, a range): concat(y[:a], y_S, y[a+k:])
    along the channel dim;
  * S scattered (a list, `by="importance"`): one row gather over the channel-major view,
    embedding(concat(yᵀ, y_Sᵀ), index)ᵀ with a constant [C] index — its backward is one
    scatter-add whatever the number of runs (slicing each run would sum a full-size
    slice_backward per run). The permutes cost a few passes over the layer output.

A bias stays the layer's own parameter (b[S] is sliced from it, run by run), so
`Union(Channels(...), BiasOnly())` trains every bias as usual.

S comes from `channels` (indices or a range, the same for every targeted layer), or from
`fraction` (k = ceil(fraction · C) per layer) with by="first" (channels 0..k-1) or
"importance": the k channels whose weight rows have the largest gradient norm on the
`calibration` batch (inputs..., target), computed at compile time with the program's own loss
by the ops' numpy references.

Exports: merged, W with its rows S replaced by W_S (`rows`); edgetune's own adapter file holds
W_S and the channel indices. Channels has no Hugging Face PEFT format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import SpecError
from ..ir import Graph, NameGen, Value, numpy_dtype
from .base import Adapter, After, Layer, add_param, as_list, check_layer, export_table, match_targets
from .export import Expr

BY = ("first", "importance")


@dataclass
class Channels(Adapter):
    """Train only some output channels of the layers `targets` names (linear, conv2d, ONNX MatMul):
    `channels` (indices or a range) or `fraction` of each layer's channels, chosen `by`
    ("first", or "importance" on the `calibration` batch (inputs..., target))."""

    targets: list = field(default_factory=list)
    fraction: float | None = None
    channels: object = None
    by: str = "first"
    calibration: object = None
    exclude: list = field(default_factory=list)

    def __post_init__(self):
        self.targets = as_list(self.targets, "Channels targets")
        self.exclude = as_list(self.exclude, "Channels exclude")
        if not self.targets:
            raise SpecError("Channels needs targets, e.g. Channels(targets=['*.fc1'], fraction=0.25)")
        if (self.fraction is None) == (self.channels is None):
            raise SpecError("Channels needs exactly one of fraction= (a share of each layer's output channels) "
                            "or channels= (the output-channel indices to train)")
        if self.fraction is not None:
            f = self.fraction
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f <= 1:
                raise SpecError(f"Channels: fraction must be in (0, 1], got {f!r}")
        if self.channels is not None:
            raw = list(self.channels) if not isinstance(self.channels, (int, np.integer)) else [self.channels]
            if not raw:
                raise SpecError("Channels: channels is empty; give the output-channel indices to train")
            bad = [c for c in raw if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
            if bad:
                raise SpecError(f"Channels: channel indices must be integers, got {bad[:4]!r}")
            raw = [int(c) for c in raw]
            neg = [c for c in raw if c < 0]
            if neg:
                raise SpecError(f"Channels: channel index {neg[0]} is out of range (indices start at 0)")
            twice = sorted({c for c in raw if raw.count(c) > 1})
            if twice:
                raise SpecError(f"Channels: channel indices {twice[:4]} are given more than once")
            self.channels = sorted(raw)
        if not isinstance(self.by, str) or self.by not in BY:
            raise SpecError(f"Channels: by must be one of {', '.join(BY)}, got {self.by!r}")
        if self.by == "importance":
            if self.fraction is None:
                raise SpecError("Channels: by='importance' picks a fraction of the channels; give fraction=, "
                                "not channels=")
            if self.calibration is None:
                raise SpecError("Channels: by='importance' needs calibration=(inputs..., target), a batch "
                                "whose weight gradients rank the channels")
        elif self.calibration is not None:
            raise SpecError("Channels: calibration= is only used with by='importance'")

    def rewrite(self, graph: Graph, names: NameGen) -> list:
        export_table(graph)
        who = repr(self)
        layers = match_targets(graph, self.targets, self.exclude, who, ops=("linear", "matmul", "conv2d"))
        for layer in layers:
            check_layer(self, graph, layer)
            if layer.op == "conv2d" and layer.node.attrs.get("groups", 1) != 1:
                raise SpecError(f"{who}: {layer.describe()} is a grouped/depthwise conv "
                                f"(groups={layer.node.attrs['groups']}): its output channels read separate input "
                                "channels; Channels supports groups=1 convs; exclude it")
        chosen = self._choose(graph, layers, who)
        new = []
        for layer, sel in zip(layers, chosen):
            new.append(_rewrite_layer(self, graph, names, layer, sel))
        return new

    def _choose(self, graph: Graph, layers: list[Layer], who: str) -> list[list[int]]:
        if self.channels is not None:
            for layer in layers:
                if self.channels[-1] >= layer.out_features:
                    raise SpecError(f"{who}: channel index {self.channels[-1]} is out of range for "
                                    f"{layer.describe()}, which has {layer.out_features} output channels")
            return [list(self.channels) for _ in layers]
        ks = [min(layer.out_features, max(1, math.ceil(self.fraction * layer.out_features - 1e-9)))
              for layer in layers]
        if self.by == "first":
            return [list(range(k)) for k in ks]
        norms = channel_importance(graph, layers, self.calibration, who)
        return [sorted(int(i) for i in np.argsort(-n, kind="stable")[:k]) for n, k in zip(norms, ks)]

    def __repr__(self):
        what = f"fraction={self.fraction:g}" if self.fraction is not None else f"channels={_short(self.channels)}"
        extra = "".join([f", by={self.by!r}" if self.by != "first" else "",
                         f", exclude={self.exclude}" if self.exclude else ""])
        return f"Channels(targets={self.targets}, {what}{extra})"


def _short(channels) -> str:
    c = list(channels)
    if len(c) > 1 and c == list(range(c[0], c[-1] + 1)):
        return f"range({c[0]}, {c[-1] + 1})"
    return str(c) if len(c) <= 8 else f"[{', '.join(map(str, c[:8]))}, ...] ({len(c)})"


# ---- importance ---------------------------------------------------------------------------------
def _as_array(x, where: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the user's input
        raise SpecError(f"{where}: cannot convert {type(x).__name__} to an array: {e}") from None


def channel_importance(graph: Graph, layers: list[Layer], calibration, who: str) -> list[np.ndarray]:
    """Per layer, the norm of each output channel's weight gradient on the calibration batch:
    the program's loss differentiated with the targeted weights trainable, run once on the ops'
    numpy references. The graph is left as it was."""
    from ..autodiff import differentiate
    from ..ops.registry import run_reference

    if isinstance(calibration, dict) or not isinstance(calibration, (list, tuple)):
        raise SpecError(f"{who}: calibration must be a tuple (inputs..., target), got {type(calibration).__name__}")
    if len(calibration) != len(graph.inputs):
        raise SpecError(f"{who}: calibration has {len(calibration)} arrays; the program takes {len(graph.inputs)} "
                        f"({', '.join(v.name for v in graph.inputs)}: the model inputs, then the target)")
    feeds = {}
    for v, x in zip(graph.inputs, calibration):
        arr = _as_array(x, f"{who}: calibration '{v.name}'")
        if tuple(arr.shape) != tuple(v.type.shape):
            raise SpecError(f"{who}: calibration '{v.name}' has shape {list(arr.shape)}, the program expects "
                            f"{list(v.type.shape)} (static shapes: use a batch of the compiled size)")
        want = np.dtype(numpy_dtype(v.type.dtype))
        if arr.dtype != want:
            if np.issubdtype(arr.dtype, np.floating) != np.issubdtype(want, np.floating):
                raise SpecError(f"{who}: calibration '{v.name}' has dtype {arr.dtype}, the program expects {want}")
            arr = arr.astype(want)
        feeds[v.name] = arr
    loss = graph.outputs.get("loss")
    if loss is None:
        raise SpecError(f"{who}: by='importance' needs the program's loss")

    n_nodes, sources = len(graph.nodes), set(graph.sources)
    try:
        grads = differentiate(graph, loss, [layer.weight for layer in layers], NameGen(graph))
        dead = [layer.describe() for layer in layers if layer.weight.name not in grads]
        if dead:
            raise SpecError(f"{who}: {', '.join(dead[:4])} do(es) not influence the loss")
        # one pass of the ops' numpy references (the compiler does not reach up to runtime/)
        env = dict(feeds)
        env.update({name: graph.initial[name] for name in graph.sources})
        for node in graph.nodes:
            for v, r in zip(node.outputs, run_reference(node.op, [env[i.name] for i in node.inputs], node.attrs)):
                env[v.name] = np.asarray(r)
        out = []
        for layer in layers:
            g = np.asarray(env[grads[layer.weight.name].name], dtype=np.float64)
            g = g.T if layer.op == "matmul" else g.reshape(g.shape[0], -1)
            out.append(np.sqrt((g * g).sum(axis=1)))
        return out
    finally:  # drop the temporary backward nodes and their consts
        del graph.nodes[n_nodes:]
        for name in set(graph.sources) - sources:
            del graph.sources[name]
            graph.initial.pop(name, None)


# ---- the rewrite ---------------------------------------------------------------------------------
def runs(sel: list[int]) -> list[tuple[int, int]]:
    """Maximal contiguous runs [start, end) of sorted indices."""
    out: list[tuple[int, int]] = []
    for c in sel:
        if out and out[-1][1] == c:
            out[-1] = (out[-1][0], c + 1)
        else:
            out.append((c, c + 1))
    return out


def _rewrite_layer(spec: Channels, g: Graph, names: NameGen, layer: Layer, sel: list[int]) -> Value:
    node, op, mod = layer.node, layer.op, layer.module
    c, k = layer.out_features, len(sel)
    w0 = g.initial[layer.weight.name]
    idx = np.asarray(sel, dtype=np.int64)
    data = w0[:, idx].T if op == "matmul" else w0[idx]  # only the k channels are copied
    w_sel = add_param(g, f"{mod}.weight_channels", data)
    spans = runs(sel)

    after = After(g, node, names)
    with after as (b, y):
        bias = layer.bias
        bias_sel = None
        if bias is not None:  # b[S]: a slice per run (a [C] vector: one slice_backward per run is cheap)
            parts = [b.emit1("slice", [bias], {"dim": 0, "start": s0, "end": s1, "step": 1}) for s0, s1 in spans]
            bias_sel = parts[0] if len(parts) == 1 else b.emit1("concat", parts, {"dim": 0})
        x = node.inputs[0]
        if op == "conv2d":
            conv_attrs = {key: v for key, v in node.attrs.items() if key != "activation"}
            y_sel = b.emit1("conv2d", [x, w_sel] + ([bias_sel] if bias_sel is not None else []), conv_attrs)
        else:  # linear, and MatMul as a linear with W_S = W[:, S]ᵀ
            y_sel = b.emit1("linear", [x, w_sel] + ([bias_sel] if bias_sel is not None else []))
        dim = 1 if op == "conv2d" else y.type.rank - 1
        if k == c:
            out = y_sel
        elif len(spans) == 1:
            (start, end), = spans
            pieces = []
            if start > 0:
                pieces.append(b.emit1("slice", [y], {"dim": dim, "start": 0, "end": start, "step": 1}))
            pieces.append(y_sel)
            if end < c:
                pieces.append(b.emit1("slice", [y], {"dim": dim, "start": end, "end": c, "step": 1}))
            out = b.emit1("concat", pieces, {"dim": dim})
        else:
            out = _gather_channels(b, y, y_sel, dim, sel)
    after.repoint(out)

    table = g.adapters
    wexpr, sexpr = Expr.w(layer.weight.name), Expr.w(w_sel.name)
    if op == "matmul":
        merged = Expr.rows(wexpr.t(), sel, sexpr).t()
    else:
        merged = Expr.rows(wexpr, sel, sexpr)
    table.merged[layer.weight.name] = merged.steps
    table.own_tensors[w_sel.name] = sexpr.steps
    table.drop_when_merged.append(w_sel.name)
    table.own_config["adapters"].append({
        "type": "channels", "module": mod, "layer": op, "weight": layer.weight.name, "param": w_sel.name,
        "channels": [int(i) for i in sel], "out_channels": c, "by": spec.by if spec.channels is None
        else "channels", "layout": "columns transposed ([k, in])" if op == "matmul" else "rows"})
    return w_sel


def _gather_channels(b, y: Value, y_sel: Value, dim: int, sel: list[int]) -> Value:
    """y with its channels `sel` (along `dim`) taken from y_sel, by one row gather over the
    channel-major views: embedding(concat([y_cm, y_sel_cm]), index) with index[c] = c for a kept
    channel, C + j for the j-th selected one."""
    shape = list(y.type.shape)
    c, k = shape[dim], len(sel)
    rank = len(shape)
    to_front = [dim] + [d for d in range(rank) if d != dim]
    rest = [shape[d] for d in to_front[1:]]
    m = int(np.prod(rest)) if rest else 1

    def channel_major(v: Value, n: int) -> Value:
        if dim != 0:
            v = b.emit1("permute", [v], {"dims": to_front})
        return b.emit1("reshape", [v], {"shape": [n, m]})

    table = b.emit1("concat", [channel_major(y, c), channel_major(y_sel, k)], {"dim": 0})
    index = np.arange(c, dtype=np.int64)
    index[np.asarray(sel, dtype=np.int64)] = c + np.arange(k, dtype=np.int64)
    out = b.emit1("embedding", [table, b.const(index, "i64")])
    out = b.emit1("reshape", [out], {"shape": [c] + rest})
    if dim != 0:
        out = b.emit1("permute", [out], {"dims": [int(d) for d in np.argsort(to_front)]})
    return out
