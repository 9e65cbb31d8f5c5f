"""PyTorch frontend: torch.export -> core ATen (after decompositions) -> edgetune IR.

We keep a few composite ops out of the decomposition table (linear, hardswish, hardsigmoid,
silu, scaled_dot_product_attention, cross_entropy_loss, nll_loss_nd, mse_loss) because they
are edgetune ops (or lower more cleanly here); everything else arrives as core ATen.
The module's train/eval mode is captured as torch.export sees it: train-mode BatchNorm
becomes `batch_norm_train` with running-stat assignments, train-mode dropout a `dropout` node.

Nodes whose inputs are all compile-time constants (masks built from buffers, scalar_tensor,
arange, ...) are evaluated with torch right here and become consts. Every op we cannot map
is collected — with its source line and module path — and reported together in one
UnsupportedOpError.
"""

from __future__ import annotations

import math
import operator
import re
import warnings
from typing import Any

import numpy as np

from ..compiler.errors import CaptureError, EdgetuneError, UnsupportedOpError
from ..compiler.ir import Graph, NameGen, TensorType, Value, dtype_of_numpy
from ..compiler.ops.registry import Builder
from .common import Emitter, ImportedModel, handler_table, lower_matmul, lower_reshape, lower_slice, norm_dim, resolve_shape

_KEEP_COMPOSITE = ("linear", "hardswish", "hardsigmoid", "silu", "scaled_dot_product_attention",
                   "cross_entropy_loss", "nll_loss_nd", "mse_loss")


def _torch():
    import torch
    return torch


def export_program(fn_or_module, example_inputs: tuple, what: str):
    torch = _torch()
    module = fn_or_module if isinstance(fn_or_module, torch.nn.Module) else _make_function_module()(fn_or_module)
    try:
        with warnings.catch_warnings():  # torch.export's own deprecation chatter is not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            ep = torch.export.export(module, tuple(example_inputs))
    except Exception as e:  # torch raises many types here; all mean "could not capture"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"torch.export could not capture {what} ({type(module).__name__}): "
                           f"{type(e).__name__}: {first}") from e
    table = torch.export.default_decompositions()
    for name in _KEEP_COMPOSITE:
        table.pop(getattr(torch.ops.aten, name).default, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return ep.run_decompositions(table)


def _make_function_module():
    torch = _torch()

    class FunctionModule(torch.nn.Module):
        """Wraps a loss callable so torch.export can trace it like a module."""

        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *args):
            return self.fn(*args)

    return FunctionModule


def _source_of(node) -> str | None:
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', trace)
    where = None
    # the innermost frame that is the user's code, not torch's own modules
    user = [f for f in frames if "/torch/" not in f[0] and "/site-packages/torch" not in f[0]] or frames
    if user:
        path, line, _ = user[-1]
        where = f"{path.rsplit('/', 1)[-1]}:{line}"
    stack = node.meta.get("nn_module_stack") or {}
    module = None
    if stack:
        module = list(stack.values())[-1][0]
        module = re.sub(r"^L\['self'\]\.?", "", str(module)) or None
    parts = [p for p in (where, module) if p]
    return " ".join(parts) if parts else None


class TorchImporter(Emitter):
    """Maps one exported program into `graph`, binding its user inputs to `bound` Values
    (or creating graph inputs when `bound` is None)."""

    def __init__(self, graph: Graph, section: str = "forward", names: NameGen | None = None,
                 frozen_buffers: dict | None = None):
        self.g = graph
        self.frozen_buffers = frozen_buffers or {}  # buffer name -> tensor, for constant folding
        self.names = names or NameGen(graph)
        self.b = Builder(graph, section, self.names)
        self.env: dict[Any, Any] = {}
        self.known: dict[Any, Any] = {}  # fx node -> torch.Tensor for compile-time constants
        self.unsupported: list[str] = []
        self.node = None

    # ---- helpers used by the op handlers ---------------------------------------------------
    def source_of(self, node):
        return _source_of(node)

    def value(self, x, like: Value | None = None) -> Value:
        """A Value for a handler argument: already a Value, or a Python scalar made a const."""
        if isinstance(x, Value):
            return x
        if isinstance(x, (bool, int, float)):
            dtype = like.dtype if like is not None else ("f32" if isinstance(x, float) else "i64")
            return self.b.const(x, dtype)
        raise EdgetuneError(f"expected a tensor, got {x!r} at {self.source}")

    def const_tensor(self, t) -> Value:
        arr = t.detach().cpu().numpy()
        return self.g.add_source(self.names("c"), "const", arr.copy())

    # ---- main loop ---------------------------------------------------------------------------
    def run(self, ep, bound: list[Value] | None, param_values: dict[str, Value]) -> list[Any]:
        sig = ep.graph_signature
        placeholder_kind = {s.arg.name: s for s in sig.input_specs}
        consts = dict(ep.constants)
        user_i = 0
        for node in ep.graph.nodes:
            self.node = node
            if node.op == "placeholder":
                spec = placeholder_kind[node.name]
                kind = spec.kind.name
                if kind == "USER_INPUT":
                    if bound is not None:
                        self.env[node] = bound[user_i]
                    else:
                        val = node.meta["val"]
                        self.env[node] = self.g.add_input(
                            self.names.reserve(node.name),
                            TensorType(tuple(val.shape), dtype_of_numpy(_np_dtype(val.dtype))))
                    user_i += 1
                elif kind in ("PARAMETER", "BUFFER"):
                    if spec.target in param_values:
                        self.env[node] = param_values[spec.target]
                        if kind == "BUFFER" and spec.target in self.frozen_buffers:
                            self.known[node] = self.frozen_buffers[spec.target]
                    else:  # non-persistent buffer: a constant of the program
                        tensor = consts[spec.target]
                        self.known[node] = tensor
                        self.env[node] = None
                elif kind in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
                    self.known[node] = consts[spec.target]
                    self.env[node] = None
                else:
                    raise CaptureError(f"unsupported export input kind {kind} for {node.name}")
            elif node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                return [self._arg(a) for a in node.args[0]]
        raise CaptureError("exported graph has no output node")

    def _arg(self, a):
        fx = _torch().fx
        if isinstance(a, fx.Node):
            if self.env.get(a) is None and a in self.known:
                self.env[a] = self.const_tensor(self.known[a])
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(x) for x in a)
        return a

    def _call(self, node):
        torch = _torch()
        fx = torch.fx
        target = node.target
        # compile-time constant folding: no tensor input that is unknown at compile time
        tensor_args = [a for a in _flatten(node.args, node.kwargs) if isinstance(a, fx.Node)]
        if target is not operator.getitem and all(a in self.known for a in tensor_args) and \
                _is_foldable(target):
            args = _map_nodes(node.args, self.known)
            kwargs = _map_nodes(node.kwargs, self.known)
            self.known[node] = target(*args, **kwargs)
            self.env[node] = None
            return
        if target is operator.getitem:
            src, idx = node.args
            if src in self.known:
                self.known[node] = self.known[src][idx]
                self.env[node] = None
                return
            self.env[node] = self.env[src][idx]
            return
        name = _op_name(target)
        handler = HANDLERS.get(name)
        if handler is None:
            self._unsupported(node, name)
            return
        args = self._arg(list(node.args))
        kwargs = {k: self._arg(v) for k, v in node.kwargs.items()}
        try:
            result = handler(self, node, *args, **kwargs)
        except _Unsupported as e:
            self._unsupported(node, f"{name} ({e})")
            return
        self.env[node] = result

    def _unsupported(self, node, what: str):
        src = _source_of(node)
        self.unsupported.append(f"{what} at node '{node.name}'" + (f" ({src})" if src else ""))
        # keep going with a typed placeholder so every later unsupported op is reported too
        val = node.meta.get("val")
        if isinstance(val, (list, tuple)):
            self.env[node] = tuple(self._placeholder(v) for v in val)
        else:
            self.env[node] = self._placeholder(val)

    def _placeholder(self, val):
        if val is None or not hasattr(val, "shape"):
            return None
        return self.g.add_source(self.names("unsupported"), "const",
                                 np.zeros(tuple(val.shape), dtype=_np_dtype(val.dtype)))


class _Unsupported(Exception):
    """A handler found a form of a supported op it cannot lower (reported, not raised)."""


def _np_dtype(torch_dtype):
    torch = _torch()
    table = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
             torch.int64: np.int64, torch.int32: np.int32, torch.int8: np.int8, torch.uint8: np.uint8,
             torch.bool: np.bool_}
    if torch_dtype not in table:
        raise EdgetuneError(f"dtype {torch_dtype} is not supported")
    return table[torch_dtype]


def _ir_dtype(torch_dtype) -> str:
    return dtype_of_numpy(_np_dtype(torch_dtype))


def _flatten(args, kwargs):
    out = []

    def walk(x):
        if isinstance(x, (list, tuple)):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for y in x.values():
                walk(y)
        else:
            out.append(x)
    walk(args)
    walk(kwargs)
    return out


def _map_nodes(x, known):
    fx = _torch().fx
    if isinstance(x, fx.Node):
        return known[x]
    if isinstance(x, (list, tuple)):
        return type(x)(_map_nodes(y, known) for y in x)
    if isinstance(x, dict):
        return {k: _map_nodes(v, known) for k, v in x.items()}
    return x


def _is_foldable(target) -> bool:
    name = _op_name(target)
    return not name.startswith(("native_dropout", "dropout", "rand", "bernoulli", "normal", "uniform"))


def _op_name(target) -> str:
    if hasattr(target, "_schema"):
        base = target._schema.name.split("::")[-1]
        overload = target._overloadname
        return base if overload == "default" else f"{base}.{overload}"
    return getattr(target, "__name__", str(target))


# =============================================================================================
# Op handlers: (importer, fx node, *args, **kwargs) -> Value | tuple
# =============================================================================================
HANDLERS, handles = handler_table()


def _meta_shape(node):
    return tuple(node.meta["val"].shape)


@handles("convolution")
def _conv(im, node, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        raise _Unsupported("transposed convolution")
    if x.type.rank == 3:  # conv1d: run as conv2d over a height-1 image
        n, c, length = x.shape
        x4 = im.emit1("reshape", [x], {"shape": [n, c, 1, length]})
        w4 = im.emit1("reshape", [w], {"shape": [w.shape[0], w.shape[1], 1, w.shape[2]]})
        attrs = {"stride": [1, stride[0]], "padding": [0, padding[0]], "dilation": [1, dilation[0]], "groups": groups}
        y = im.emit1("conv2d", [x4, w4] + ([b] if b is not None else []), attrs)
        return im.emit1("reshape", [y], {"shape": [y.shape[0], y.shape[1], y.shape[3]]})
    if x.type.rank != 4:
        raise _Unsupported(f"{x.type.rank - 2}-d convolution")
    attrs = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": groups}
    return im.emit1("conv2d", [x, w] + ([b] if b is not None else []), attrs)


@handles("linear")
def _linear(im, node, x, w, b=None):
    return im.emit1("linear", [x, w] + ([b] if b is not None else []))


def _transposed_param(v: Value):
    """If v = permute(W, [1, 0]) of a 2-d W, return W (so x @ W.T becomes linear)."""
    p = v.producer
    if p is not None and p.op == "permute" and p.attrs["dims"] == [1, 0] and p.inputs[0].kind == "param":
        return p.inputs[0]
    return None


@handles("mm", "bmm", "matmul")
def _mm(im, node, a, b):
    w = _transposed_param(b)
    if w is not None and a.type.rank == 2:
        return im.emit1("linear", [a, w])
    return lower_matmul(im, a, b)


@handles("addmm")
def _addmm(im, node, bias, a, b, beta=1, alpha=1):
    if beta != 1 or alpha != 1:
        raise _Unsupported("addmm with beta/alpha != 1")
    w = _transposed_param(b)
    if w is not None and bias.type.rank == 1:
        return im.emit1("linear", [a, w, bias])
    return im.emit1("add", [im.emit1("matmul", [a, b]), bias])


def _binary(op):
    def handler(im, node, a, b, alpha=1, rounding_mode=None):
        if rounding_mode is not None:
            raise _Unsupported(f"rounding_mode={rounding_mode}")
        if not isinstance(a, Value):
            a = im.value(a, like=b)
        b = im.value(b, like=a)
        if alpha != 1:
            b = im.emit1("mul", [b, im.value(alpha, like=b)])
        return im.emit1(op, [a, b])
    return handler


for _name, _op in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("div", "div")):
    for _ov in ("Tensor", "Scalar"):
        HANDLERS[f"{_name}.{_ov}"] = _binary(_op)


@handles("rsub.Scalar", "rsub.Tensor")
def _rsub(im, node, a, b, alpha=1):
    return _binary("sub")(im, node, im.value(b, like=a), a, alpha)


for _name in ("relu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "neg", "hardswish", "hardsigmoid", "silu"):
    HANDLERS[_name] = (lambda op: lambda im, node, x: im.emit1(op, [x]))(_name)


@handles("hardtanh")
def _hardtanh(im, node, x, min_val=-1.0, max_val=1.0):
    return im.emit1("hardtanh", [x], {"min": float(min_val), "max": float(max_val)})


@handles("clamp")
def _clamp(im, node, x, min=None, max=None):
    if min is not None and max is not None:
        return im.emit1("hardtanh", [x], {"min": float(min), "max": float(max)})
    if min == 0 and max is None:
        return im.emit1("relu", [x])
    raise _Unsupported("clamp with a single non-zero bound")


@handles("gelu")
def _gelu(im, node, x, approximate="none"):
    return im.emit1("gelu", [x], {"approximate": approximate})


@handles("pow.Tensor_Scalar")
def _pow(im, node, x, exponent):
    return im.emit1("pow_scalar", [x], {"exponent": float(exponent)})


@handles("_native_batch_norm_legit_functional")
def _bn_train(im, node, x, w, b, rm, rv, training, momentum, eps):
    w, b = _affine_defaults(im, x.shape[1], w, b, x.dtype)
    if not training:
        y = im.emit1("batch_norm_infer", [x, w, b, rm, rv], {"eps": float(eps)})
        return (y, None, None, rm, rv)
    return tuple(im.emit("batch_norm_train", [x, w, b, rm, rv], {"momentum": float(momentum), "eps": float(eps)}))


@handles("_native_batch_norm_legit_no_training")
def _bn_infer(im, node, x, w, b, rm, rv, momentum, eps):
    w, b = _affine_defaults(im, x.shape[1], w, b, x.dtype)
    return (im.emit1("batch_norm_infer", [x, w, b, rm, rv], {"eps": float(eps)}), None, None)


@handles("_native_batch_norm_legit", "_native_batch_norm_legit.no_stats")
def _bn_no_stats(im, node, x, w, b, *rest):
    training = rest[-3]
    if not training:
        raise _Unsupported("batch norm without running stats in eval mode")
    c = x.shape[1]
    w, b = _affine_defaults(im, c, w, b, x.dtype)
    zeros, ones = (im.g.add_source(im.names("c"), "const", np.full((c,), v, np.float32)) for v in (0.0, 1.0))
    outs = im.emit("batch_norm_train", [x, w, b, zeros, ones], {"momentum": 0.0, "eps": float(rest[-1])})
    return tuple(outs[:3])


def _affine_defaults(im, c, w, b, dtype):
    if w is None:
        w = im.g.add_source(im.names("ones"), "const", np.ones((c,), np.float32))
    if b is None:
        b = im.g.add_source(im.names("zeros"), "const", np.zeros((c,), np.float32))
    return w, b


@handles("native_layer_norm")
def _layer_norm(im, node, x, normalized_shape, w, b, eps):
    shape = list(normalized_shape)
    if w is None:
        w = im.g.add_source(im.names("ones"), "const", np.ones(shape, np.float32))
    if b is None:
        b = im.g.add_source(im.names("zeros"), "const", np.zeros(shape, np.float32))
    return tuple(im.emit("layer_norm", [x, w, b], {"normalized_shape": shape, "eps": float(eps)}))


@handles("_softmax", "_log_softmax")
def _softmax(im, node, x, dim, half_to_float=False):
    op = "softmax" if _op_name(node.target) == "_softmax" else "log_softmax"
    return im.emit1(op, [x], {"dim": norm_dim(dim, x.type.rank)})


@handles("max_pool2d_with_indices")
def _max_pool(im, node, x, kernel, stride=(), padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    k = _pair(kernel)
    attrs = {"kernel": k, "stride": _pair(stride) if stride else k, "padding": _pair(padding),
             "dilation": _pair(dilation), "ceil_mode": bool(ceil_mode)}
    return tuple(im.emit("max_pool2d", [x], attrs))


@handles("avg_pool2d")
def _avg_pool(im, node, x, kernel, stride=(), padding=(0, 0), ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    k = _pair(kernel)
    attrs = {"kernel": k, "stride": _pair(stride) if stride else k, "padding": _pair(padding),
             "ceil_mode": bool(ceil_mode), "count_include_pad": bool(count_include_pad),
             "divisor_override": divisor_override}
    return im.emit1("avg_pool2d", [x], attrs)


@handles("_adaptive_avg_pool2d", "adaptive_avg_pool2d")
def _adaptive_avg(im, node, x, output_size):
    h, w = x.shape[2:]
    oh, ow = _pair(output_size)
    if (oh, ow) == (1, 1):
        return im.emit1("mean", [x], {"dims": [2, 3], "keepdim": True})
    if h % oh or w % ow:
        raise _Unsupported(f"adaptive pooling {h}x{w} -> {oh}x{ow} with uneven windows")
    k = [h // oh, w // ow]
    return im.emit1("avg_pool2d", [x], {"kernel": k, "stride": k, "padding": [0, 0], "ceil_mode": False,
                                        "count_include_pad": True, "divisor_override": None})


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return [int(v[0]), int(v[-1])] if len(v) else []


def _reduce(op):
    def handler(im, node, x, dims=None, keepdim=False, dtype=None):
        rank = x.type.rank
        dims = list(range(rank)) if dims is None or list(dims) == [] else sorted({norm_dim(d, rank) for d in dims})
        return im.emit1(op, [x], {"dims": dims, "keepdim": bool(keepdim)})
    return handler


HANDLERS["mean.dim"] = _reduce("mean")
HANDLERS["mean"] = lambda im, node, x, dtype=None: _reduce("mean")(im, node, x)
HANDLERS["sum.dim_IntList"] = _reduce("sum")
HANDLERS["sum"] = lambda im, node, x, dtype=None: _reduce("sum")(im, node, x)


def _reshape_to(im, x, shape):
    return lower_reshape(im, x, resolve_shape(shape, x.type.numel, f"reshape at {im.source}"))


@handles("view", "_unsafe_view", "reshape")
def _view(im, node, x, shape):
    return _reshape_to(im, x, shape)


@handles("squeeze.dim", "squeeze.dims", "squeeze", "unsqueeze", "flatten.using_ints")
def _squeeze_like(im, node, x, *rest):
    return _reshape_to(im, x, _meta_shape(node))


@handles("permute")
def _permute(im, node, x, dims):
    dims = [norm_dim(d, x.type.rank) for d in dims]
    if dims == list(range(x.type.rank)):
        return x
    return im.emit1("permute", [x], {"dims": dims})


@handles("t", "transpose.int")
def _transpose(im, node, x, d0=0, d1=1):
    dims = list(range(x.type.rank))
    if x.type.rank >= 2:
        a, b = norm_dim(d0, x.type.rank), norm_dim(d1, x.type.rank)
        dims[a], dims[b] = dims[b], dims[a]
    return _permute(im, node, x, dims)


@handles("expand")
def _expand(im, node, x, sizes, implicit=False):
    sizes = list(sizes)
    lead = len(sizes) - x.type.rank
    shape = [x.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)]
    if shape == list(x.shape):
        return x
    return im.emit1("expand", [x], {"shape": shape})


@handles("clone", "alias", "contiguous", "detach", "lift_fresh_copy", "dropout")
def _identity(im, node, x, *rest, **kw):
    if _op_name(node.target) == "dropout" and len(rest) >= 2 and rest[1] and rest[0] > 0:
        return _dropout(im, node, x, rest[0], True)[0]
    return x


@handles("_to_copy")
def _to_copy(im, node, x, dtype=None, **kw):
    if dtype is None or _ir_dtype(dtype) == x.dtype:
        return x
    return im.emit1("cast", [x], {"dtype": _ir_dtype(dtype)})


@handles("cat")
def _cat(im, node, tensors, dim=0):
    tensors = [t for t in tensors if t.type.numel > 0]
    if len(tensors) == 1:
        return tensors[0]
    return im.emit1("concat", tensors, {"dim": norm_dim(dim, tensors[0].type.rank)})


@handles("slice.Tensor")
def _slice(im, node, x, dim=0, start=None, end=None, step=1):
    return lower_slice(im, x, norm_dim(dim, x.type.rank), start, end, step)


@handles("select.int")
def _select(im, node, x, dim, index):
    dim = norm_dim(dim, x.type.rank)
    index = index + x.shape[dim] if index < 0 else index
    y = lower_slice(im, x, dim, index, index + 1)
    return _reshape_to(im, y, _meta_shape(node))


@handles("split_with_sizes", "split.Tensor")
def _split(im, node, x, sizes, dim=0):
    dim = norm_dim(dim, x.type.rank)
    total = x.shape[dim]
    if isinstance(sizes, int):
        sizes = [min(sizes, total - i) for i in range(0, total, sizes)]
    outs, offset = [], 0
    for s in sizes:
        outs.append(lower_slice(im, x, dim, offset, offset + s))
        offset += s
    return tuple(outs)


@handles("embedding")
def _embedding(im, node, w, idx, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    if scale_grad_by_freq:
        raise _Unsupported("scale_grad_by_freq")
    return im.emit1("embedding", [w, idx], {"padding_idx": None if padding_idx is None or padding_idx < 0
                                            else int(padding_idx)})


@handles("native_dropout")
def _dropout(im, node, x, p, train):
    if not train or p == 0:
        return (x, None)
    counter = im.g.sources.get("rng.counter")
    if counter is None:
        counter = im.g.add_source("rng.counter", "state", np.asarray(0, dtype=np.int64))
        im.g.assigns["rng.counter"] = im.b.emit1("add", [counter, im.b.const(1, "i64")], out_names=["rng.counter.next"])
    stream = sum(1 for n in im.g.nodes if n.op == "dropout")
    return tuple(im.emit("dropout", [x, counter], {"p": float(p), "stream": stream}))


@handles("where.self")
def _where(im, node, cond, a, b):
    a = im.value(a, like=b if isinstance(b, Value) else None)
    b = im.value(b, like=a)
    return im.emit1("where", [cond, a, b])


@handles("masked_fill.Scalar", "masked_fill.Tensor")
def _masked_fill(im, node, x, mask, value):
    return im.emit1("where", [mask, im.value(float(value) if not isinstance(value, Value) else value, like=x), x])


@handles("scaled_dot_product_attention")
def _sdpa(im, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Decomposed attention: softmax(q k^T * scale + mask) v."""
    if dropout_p:
        raise _Unsupported("attention dropout")
    if enable_gqa:
        raise _Unsupported("grouped-query attention")
    rank = q.type.rank
    e = q.shape[-1]
    scale = 1.0 / math.sqrt(e) if scale is None else float(scale)
    kt = im.emit1("permute", [k], {"dims": list(range(rank - 2)) + [rank - 1, rank - 2]})
    scores = im.emit1("mul", [im.emit1("matmul", [q, kt]), im.b.const(scale, q.dtype)])
    l, s = q.shape[-2], k.shape[-2]
    if is_causal:
        causal = np.tril(np.ones((l, s), dtype=bool))
        mask = im.g.add_source(im.names("causal_mask"), "const", causal)
        scores = im.emit1("where", [mask, scores, im.b.const(float("-inf"), q.dtype)])
    if attn_mask is not None:
        if attn_mask.dtype == "bool":
            scores = im.emit1("where", [attn_mask, scores, im.b.const(float("-inf"), q.dtype)])
        else:
            scores = im.emit1("add", [scores, attn_mask])
    probs = im.emit1("softmax", [scores], {"dim": rank - 1})
    return im.emit1("matmul", [probs, v])


_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


@handles("cross_entropy_loss")
def _cross_entropy(im, node, x, target, weight=None, reduction=1, ignore_index=-100, label_smoothing=0.0):
    if weight is not None:
        raise _Unsupported("class weights")
    from ..compiler.loss import class_index_layout
    logits, tgt, back = class_index_layout(im.b, x, target, source=im.source)
    out = im.emit1("cross_entropy", [logits, tgt], {"reduction": _REDUCTIONS[reduction],
                                                    "ignore_index": int(ignore_index),
                                                    "label_smoothing": float(label_smoothing)})
    return back(out) if reduction == 0 else out


@handles("nll_loss_nd", "nll_loss_forward", "nll_loss")
def _nll(im, node, x, target, weight=None, reduction=1, ignore_index=-100):
    if weight is not None:
        raise _Unsupported("class weights")
    from ..compiler.loss import class_index_layout
    logp, tgt, back = class_index_layout(im.b, x, target, source=im.source)
    out = im.emit1("nll_loss", [logp, tgt], {"reduction": _REDUCTIONS[reduction], "ignore_index": int(ignore_index)})
    out = back(out) if reduction == 0 else out
    return (out, None) if _op_name(node.target) == "nll_loss_forward" else out


@handles("mse_loss")
def _mse(im, node, a, b, reduction=1):
    return im.emit1("mse_loss", [a, b], {"reduction": _REDUCTIONS[reduction]})


# =============================================================================================
# Entry points
# =============================================================================================
def import_module(module, example_inputs: tuple) -> ImportedModel:
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise CaptureError(f"expected a torch.nn.Module, got {type(module).__name__}")
    ep = export_program(module, example_inputs, "the model")
    g = Graph(name=re.sub(r"\W", "_", type(module).__name__).lower())
    names = NameGen(g)
    param_values: dict[str, Value] = {}
    by_identity: dict[int, str] = {}
    sig = ep.graph_signature
    mutated = {spec.target for spec in sig.output_specs if spec.kind.name == "BUFFER_MUTATION"}
    state = ep.state_dict
    frozen_buffers = {}
    for spec in sig.input_specs:
        kind = spec.kind.name
        if kind not in ("PARAMETER", "BUFFER") or spec.target not in state:
            continue
        tensor = state[spec.target]
        if kind == "PARAMETER" and id(tensor) in by_identity:  # tied weight: one param, two names
            canonical = by_identity[id(tensor)]
            g.aliases[spec.target] = canonical
            param_values[spec.target] = param_values[canonical]
            continue
        data = tensor.detach().cpu().numpy().copy()
        v = g.add_source(names.reserve(spec.target), "param" if kind == "PARAMETER" else "buffer", data)
        param_values[spec.target] = v
        by_identity[id(tensor)] = spec.target
        if kind == "BUFFER" and spec.target not in mutated:
            frozen_buffers[spec.target] = tensor
    importer = TorchImporter(g, "forward", names, frozen_buffers)
    outputs = importer.run(ep, None, param_values)
    if importer.unsupported:
        raise UnsupportedOpError(importer.unsupported, "PyTorch")
    user_outputs = []
    for spec, val in zip(sig.output_specs, outputs):
        if spec.kind.name == "BUFFER_MUTATION":
            g.assigns[spec.target] = val if isinstance(val, Value) else importer.value(val)
        elif spec.kind.name == "USER_OUTPUT":
            if not isinstance(val, Value):
                raise CaptureError(f"model output {spec.arg.name} is not a tensor")
            user_outputs.append(val)
        else:
            raise CaptureError(f"unsupported export output kind {spec.kind.name}")
    for i, v in enumerate(user_outputs):
        g.outputs["output" if len(user_outputs) == 1 else f"output{i}"] = v
    return ImportedModel(g, "torch", [v.name for v in g.inputs], user_outputs, train_mode=module.training)


def import_function_into(graph: Graph, fn, bound: list[Value], example_tensors: tuple, section: str,
                         names: NameGen) -> list[Value]:
    """Trace `fn(*example_tensors)` and inline it into `graph`, reading `bound` as its inputs."""
    ep = export_program(_make_function_module()(fn), example_tensors, "the loss function")
    if any(s.kind.name in ("PARAMETER", "BUFFER") for s in ep.graph_signature.input_specs):
        raise CaptureError("the loss function must not own parameters or buffers")
    importer = TorchImporter(graph, section, names)
    outputs = importer.run(ep, bound, {})
    if importer.unsupported:
        raise UnsupportedOpError(importer.unsupported, "PyTorch loss function")
    return [o if isinstance(o, Value) else importer.value(o) for o in outputs]


def loss_builder(fn):
    """A compiler LossBuilder (compiler/loss.py) that traces the torch callable `fn(output,
    target) -> scalar` with torch.export and inlines it into the loss section."""
    from ..compiler.errors import LossError
    from ..compiler.ir import numpy_dtype

    def build(graph: Graph, output: Value, target: Value, target_arr: np.ndarray, names: NameGen) -> Value:
        torch = _torch()
        example_out = torch.zeros(output.shape, dtype=torch.from_numpy(np.zeros((), numpy_dtype(output.dtype))).dtype)
        outs = import_function_into(graph, fn, [output, target], (example_out, torch.from_numpy(target_arr.copy())),
                                    "loss", names)
        if len(outs) != 1:
            raise LossError(f"the loss function must return one tensor, got {len(outs)}")
        return outs[0]
    return build
