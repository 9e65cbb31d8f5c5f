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


def export_program(fn_or_module, example_inputs: tuple, what: str, kwargs: dict | None = None):
    """torch.export of `fn_or_module(*example_inputs, **kwargs)`, decomposed to core ATen (less
    the composites in _KEEP_COMPOSITE)."""
    torch = _torch()
    module = fn_or_module if isinstance(fn_or_module, torch.nn.Module) else _make_function_module()(fn_or_module)
    try:
        with warnings.catch_warnings():  # torch.export's own deprecation chatter is not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            ep = torch.export.export(module, tuple(example_inputs), kwargs=dict(kwargs or {}))
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
        except Exception:  # noqa: BLE001
            if not self.unsupported:
                raise
            # downstream of an op already reported (its placeholder's shape may not fit): keep going
            # quietly, the error lists the ops that caused it
            self.env[node] = self._typed_placeholders(node)
            return
        self.env[node] = result

    def _unsupported(self, node, what: str):
        src = _source_of(node)
        self.unsupported.append(f"{what} at node '{node.name}'" + (f" ({src})" if src else ""))
        # keep going with a typed placeholder so every later unsupported op is reported too
        self.env[node] = self._typed_placeholders(node)

    def _typed_placeholders(self, node):
        val = node.meta.get("val")
        if isinstance(val, (list, tuple)):
            return tuple(self._placeholder(v) for v in val)
        return self._placeholder(val)

    def _placeholder(self, val):
        if val is None or not hasattr(val, "shape"):
            return None
        # a data-dependent size (torch's unbacked SymInt, e.g. after boolean indexing) stands as 1
        shape = tuple(int(d) if isinstance(d, int) or hasattr(d, "__index__") and _concrete(d) else 1
                      for d in val.shape)
        try:
            dtype = _np_dtype(val.dtype)
        except EdgetuneError:  # complex and the like: its own op is reported; the stand-in only needs a shape
            dtype = np.float32
        return self.g.add_source(self.names("unsupported"), "const", np.zeros(shape, dtype=dtype))


def _concrete(d) -> bool:
    try:
        int(d)
        return True
    except Exception:  # noqa: BLE001  torch's GuardOnDataDependentSymNode and friends
        return False


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


@handles("clamp", "clamp_min", "clamp_max")
def _clamp(im, node, x, min=None, max=None):
    """clamp / clamp_min / clamp_max: hardtanh, an absent bound at -inf / +inf (relu for clamp(min=0)).
    Its gradient is hardtanh's (1 strictly inside the bounds), where torch's clamp also passes
    the gradient at a value exactly equal to a bound."""
    name = _op_name(node.target)
    if name == "clamp_max":
        min, max = None, min
    if isinstance(min, Value) or isinstance(max, Value):
        raise _Unsupported("clamp with tensor bounds")
    if min == 0 and max is None:
        return im.emit1("relu", [x])
    lo = float(min) if min is not None else float("-inf")
    hi = float(max) if max is not None else float("inf")
    return im.emit1("hardtanh", [x], {"min": lo, "max": hi})


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


@handles("_assert_tensor_metadata")
def _assert_metadata(im, node, *args, **kw):
    """torch.export's record of a `.to(dtype)` it checked at trace time (every RMSNorm has one):
    a run-time assertion on a value's dtype/shape that the static IR already guarantees."""
    return None


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


# ---- comparisons, cumsum, gather (ops/compare + ops/indexing) ----
# (the comparison ops are registered in compiler/ops/elementwise.py, cumsum and gather in
# compiler/ops/indexing.py)
_COMPARE_DTYPES = ("f32", "f64", "i64", "i32", "bool")
_WIDENED = {"f16": "f32", "i8": "i32", "u8": "i32"}  # compared exactly after a lossless cast


def _torch_dtype(ir_dtype: str):
    torch = _torch()
    return {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "i64": torch.int64,
            "i32": torch.int32, "i8": torch.int8, "u8": torch.uint8, "bool": torch.bool}[ir_dtype]


def _compare(op):
    def handler(im, node, a, b):
        """eq / ne / lt / le / gt / ge, .Tensor and .Scalar: both operands in torch's promoted
        dtype (torch.result_type: `ids > 0.5` compares in float, `mask == 1` in int64)."""
        torch = _torch()

        def probe(v):  # what torch.result_type needs of a Value: dtype, and 0-d or not
            if isinstance(v, Value):
                return torch.empty(() if v.type.rank == 0 else (1,), dtype=_torch_dtype(v.dtype))
            return v
        dtype = _ir_dtype(torch.result_type(probe(a), probe(b)))
        dtype = _WIDENED.get(dtype, dtype)
        if dtype not in _COMPARE_DTYPES:
            raise _Unsupported(f"comparison in {dtype}")
        a, b = (im.emit1("cast", [v], {"dtype": dtype}) if isinstance(v, Value) and v.dtype != dtype
                else v if isinstance(v, Value) else im.b.const(v, dtype) for v in (a, b))
        return im.emit1(op, [a, b])
    return handler


for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    for _ov in ("Tensor", "Scalar"):
        HANDLERS[f"{_name}.{_ov}"] = _compare(_name)


@handles("cumsum")
def _cumsum(im, node, x, dim, dtype=None):
    """torch.cumsum: in `dtype` when given, else in x's dtype, integers and bool in int64 (torch's
    promotion); a cast first where that differs from x's dtype."""
    target = _ir_dtype(dtype) if dtype is not None else \
        ("i64" if x.dtype in ("bool", "i8", "u8", "i32", "i64") else x.dtype)
    if target not in ("f32", "f64", "i64", "i32"):
        raise _Unsupported(f"cumsum in {target}")
    if x.dtype != target:
        x = im.emit1("cast", [x], {"dtype": target})
    if x.type.rank == 0:
        return x
    return im.emit1("cumsum", [x], {"dim": norm_dim(dim, x.type.rank)})


@handles("gather")
def _gather(im, node, x, dim, index, sparse_grad=False):
    """torch.gather along dim (indices checked by the kernels: outside [0, size) is an error)."""
    if x.type.rank == 0:
        raise _Unsupported("gather from a 0-d tensor")
    return im.emit1("gather", [x, index], {"dim": norm_dim(dim, x.type.rank)})


@handles("masked_fill.Scalar", "masked_fill.Tensor")
def _masked_fill(im, node, x, mask, value):
    return im.emit1("where", [mask, im.value(float(value) if not isinstance(value, Value) else value, like=x), x])


@handles("scaled_dot_product_attention")
def _sdpa(im, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Decomposed attention: softmax(q k^T * scale + mask) v."""
    rank = q.type.rank
    if enable_gqa and k.shape[-3] != q.shape[-3]:  # each key/value head serves a group of query heads
        k, v = (_repeat_heads(im, t, q.shape[-3] // t.shape[-3]) for t in (k, v))
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
    if dropout_p:  # train-mode attention dropout: edgetune's own random stream (ops/dropout.py)
        probs = _dropout(im, node, probs, float(dropout_p), True)[0]
    return im.emit1("matmul", [probs, v])


def _repeat_heads(im, t, group: int):
    """[..., H, S, E] -> [..., H * group, S, E], each head repeated `group` times in place
    (repeat_interleave over heads, as grouped-query attention reads them)."""
    *lead, h, s, e = t.shape
    t5 = lower_reshape(im, t, lead + [h, 1, s, e])
    t5 = im.emit1("expand", [t5], {"shape": lead + [h, group, s, e]})
    return lower_reshape(im, t5, lead + [h * group, s, e])


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


# ---- indexing, views and resampling lowered onto existing ops (issue 14) ----------------------
# Each of these is a data movement with a static pattern (the shapes and, for as_strided, the
# strides are compile-time facts), so it lowers to ops that already have kernels and gradient
# rules: an embedding row gather (its backward is the scatter-add a trainable table needs),
# concat / slice, permute / reshape, matmul with constant interpolation matrices.

def _gather_rows(im, x, dim: int, idx: Value):
    """x indexed by the integer tensor idx along dim (torch: x.shape[:dim] + idx.shape +
    x.shape[dim+1:]), as one embedding lookup over x's rows along dim."""
    rank = x.type.rank
    front = [dim] + [d for d in range(rank) if d != dim]
    moved = x if dim == 0 else im.emit1("permute", [x], {"dims": front})
    rest = [x.shape[d] for d in front[1:]]
    inner = int(np.prod(rest, dtype=np.int64)) if rest else 1
    table = lower_reshape(im, moved, [x.shape[dim], inner])
    if idx.dtype not in ("i64", "i32"):
        idx = im.emit1("cast", [idx], {"dtype": "i64"})
    rows = im.emit1("embedding", [table, idx], {"padding_idx": None})  # idx.shape + [inner]
    k = idx.type.rank
    y = lower_reshape(im, rows, list(idx.shape) + rest)
    if dim == 0:
        return y
    # y is [idx..., x dims without dim]: put idx's dims back where dim was
    order = list(range(k, k + dim)) + list(range(k)) + list(range(k + dim, k + rank - 1))
    return im.emit1("permute", [y], {"dims": order})


def _const_index(im, node_arg, value: Value, size: int):
    """A compile-time index array (negative entries wrapped), or None when only known at run time."""
    if node_arg in im.known:
        arr = im.known[node_arg].detach().cpu().numpy().astype(np.int64)
        if arr.size and (arr.min() < -size or arr.max() >= size):
            raise _Unsupported(f"index out of range for a dimension of size {size}")
        return np.where(arr < 0, arr + size, arr)
    return None


@handles("index.Tensor")
def _index(im, node, x, indices):
    """Advanced indexing x[..., idx, ...]: integer index tensors on one dim or on adjacent dims
    (a relative-position bias table gathered by an index buffer, Swin-style)."""
    fx_indices = node.args[1]
    used = [d for d, i in enumerate(indices) if i is not None]
    if not used:
        return x
    if any(indices[d].dtype == "bool" for d in used):
        raise _Unsupported("boolean-mask indexing (its result's shape depends on the data)")
    if used != list(range(used[0], used[-1] + 1)):
        raise _Unsupported("index tensors on non-adjacent dims")
    d0 = used[0]
    if len(used) == 1:
        arr = _const_index(im, fx_indices[d0], indices[d0], x.shape[d0])
        idx = indices[d0] if arr is None else im.const_tensor(_torch().from_numpy(arr))
        return _gather_rows(im, x, d0, idx)
    # several adjacent index tensors: one linear index into the merged dims (compile-time only)
    arrays = [_const_index(im, fx_indices[d], indices[d], x.shape[d]) for d in used]
    if any(a is None for a in arrays):
        raise _Unsupported("several index tensors that are only known at run time")
    arrays = np.broadcast_arrays(*arrays)
    linear = np.zeros(arrays[0].shape, np.int64)
    for d, a in zip(used, arrays):
        linear = linear * x.shape[d] + a
    merged = list(x.shape[:d0]) + [int(np.prod([x.shape[d] for d in used]))] + list(x.shape[used[-1] + 1:])
    flat = lower_reshape(im, x, merged)
    return _gather_rows(im, flat, d0, im.const_tensor(_torch().from_numpy(linear)))


@handles("index_select")
def _index_select(im, node, x, dim, index):
    dim = norm_dim(dim, x.type.rank)
    arr = _const_index(im, node.args[2], index, x.shape[dim])
    return _gather_rows(im, x, dim, index if arr is None else im.const_tensor(_torch().from_numpy(arr)))


@handles("as_strided", "as_strided_copy")
def _as_strided(im, node, x, size, stride, storage_offset=None):
    """as_strided over x's storage as torch.export saw it (the input's own strides, from the
    trace): the identity, a permute, or else a static gather of x's elements (an embedding
    lookup over x as a column, one index per output element; exact, and differentiable, but
    it stores the index: say so in the docs). Storage that x does not cover densely, or reads
    outside it, is refused."""
    size, stride = [int(v) for v in size], [int(v) for v in stride]
    offset = int(storage_offset or 0)
    meta = node.args[0].meta.get("val")
    shape = list(x.shape)
    x_strides = list(meta.stride()) if meta is not None else contiguous_strides(shape)
    x_offset = int(meta.storage_offset()) if meta is not None else 0
    numel = int(np.prod(shape, dtype=np.int64))
    # storage position -> x's row-major element index, for a dense x (strides a permuted layout)
    positions = np.zeros(shape, np.int64) + x_offset
    for d, (n, st) in enumerate(zip(shape, x_strides)):
        positions += (np.arange(n, dtype=np.int64) * st).reshape([-1 if k == d else 1 for k in range(len(shape))])
    lo = x_offset
    if numel == 0 or positions.min() != lo or positions.max() != lo + numel - 1 or \
            len(np.unique(positions)) != numel:
        raise _Unsupported("as_strided over an input that is not a dense tensor")
    element_at = np.empty(numel, np.int64)
    element_at[positions.reshape(-1) - lo] = np.arange(numel, dtype=np.int64)
    want = np.zeros(size, np.int64) + offset
    for d, (n, st) in enumerate(zip(size, stride)):
        want += (np.arange(n, dtype=np.int64) * st).reshape([-1 if k == d else 1 for k in range(len(size))])
    if want.size and (want.min() < lo or want.max() > lo + numel - 1):
        raise _Unsupported("as_strided reading outside its input's storage")
    index = element_at[want - lo] if want.size else want
    if index.size == numel and np.array_equal(index.reshape(-1), np.arange(numel)):
        return _reshape_to(im, x, size)  # x's elements in row-major order: a reshape
    for perm in _permutations_matching(shape, size):
        if np.array_equal(np.arange(numel).reshape(shape).transpose(perm), index):
            return im.emit1("permute", [x], {"dims": list(perm)})
    column = lower_reshape(im, x, [numel, 1])
    rows = im.emit1("embedding", [column, im.const_tensor(_torch().from_numpy(index.reshape(-1).copy()))],
                    {"padding_idx": None})
    return lower_reshape(im, rows, size)


def contiguous_strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(list(shape)):
        out.append(acc)
        acc *= d
    return out[::-1]


def _permutations_matching(shape, size):
    """Permutations p with shape[p[k]] == size[k] (few: dims are matched by size)."""
    import itertools
    if len(shape) != len(size) or sorted(shape) != sorted(size) or len(shape) > 6:
        return []
    return [p for p in itertools.permutations(range(len(shape))) if all(shape[p[k]] == size[k] for k in range(len(size)))]


@handles("constant_pad_nd")
def _constant_pad(im, node, x, pad, value=0.0):
    """pad = [last_lo, last_hi, second_last_lo, ...]: a concat with constant blocks per padded dim
    (negative amounts crop: a slice)."""
    pad = [int(p) for p in pad]
    y = x
    for k in range(len(pad) // 2):
        dim = x.type.rank - 1 - k
        lo, hi = pad[2 * k], pad[2 * k + 1]
        if lo < 0 or hi < 0:
            size = y.shape[dim]
            y = lower_slice(im, y, dim, max(0, -lo), size - max(0, -hi))
            lo, hi = max(lo, 0), max(hi, 0)
        parts = []
        for amount in (lo, hi):
            if amount > 0:
                shape = list(y.shape)
                shape[dim] = amount
                fill = np.full(shape, value, dtype=_np_dtype_of(y.dtype))
                parts.append(im.g.add_source(im.names("pad"), "const", fill))
            else:
                parts.append(None)
        pieces = [p for p in (parts[0], y, parts[1]) if p is not None]
        if len(pieces) > 1:
            y = im.emit1("concat", pieces, {"dim": dim})
    return y


def _np_dtype_of(ir_dtype: str):
    from ..compiler.ir import numpy_dtype
    return numpy_dtype(ir_dtype)


def _interpolation_matrix(in_size: int, out_size: int, align_corners: bool, scale, mode: str) -> np.ndarray:
    """[out, in] weights PyTorch's upsample kernels use (area_pixel_compute_source_index)."""
    m = np.zeros((out_size, in_size), np.float64)
    for o in range(out_size):
        if mode == "nearest":
            ratio = (1.0 / scale) if scale else in_size / out_size
            m[o, min(int(math.floor(o * ratio)), in_size - 1)] = 1.0
            continue
        if align_corners:
            src = o * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        else:
            ratio = (1.0 / scale) if scale else in_size / out_size
            src = max((o + 0.5) * ratio - 0.5, 0.0)
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        lam = src - i0
        m[o, i0] += 1.0 - lam
        m[o, i1] += lam
    return m.astype(np.float32)


def _upsample(im, node, x, output_size, align_corners, scale_factors, mode):
    n, c, h, w = x.shape
    scales = list(scale_factors) if scale_factors else [None, None]
    if output_size:
        oh, ow = [int(v) for v in output_size]
    else:
        oh, ow = int(math.floor(h * scales[0])), int(math.floor(w * scales[1]))
    ah = _interpolation_matrix(h, oh, bool(align_corners), scales[0], mode)
    aw = _interpolation_matrix(w, ow, bool(align_corners), scales[1], mode)
    y = x
    if ow != w or not np.array_equal(aw, np.eye(w, dtype=np.float32)):
        awt = im.g.add_source(im.names("interp_w"), "const", np.ascontiguousarray(aw.T))
        y = im.emit1("matmul", [y, awt])  # [N, C, H, OW]
    if oh != h or not np.array_equal(ah, np.eye(h, dtype=np.float32)):
        ahc = im.g.add_source(im.names("interp_h"), "const", ah)
        y = im.emit1("matmul", [ahc, y])  # [OH, H] @ [N, C, H, OW]
    return y


@handles("upsample_bilinear2d.vec", "upsample_bilinear2d")
def _upsample_bilinear(im, node, x, output_size, align_corners, scale_factors=None, *rest):
    if not isinstance(scale_factors, (list, tuple)) and scale_factors is not None:  # .default: scales_h, scales_w
        scale_factors = [scale_factors] + list(rest[:1])
    return _upsample(im, node, x, output_size, align_corners, scale_factors, "bilinear")


@handles("upsample_nearest2d.vec", "upsample_nearest2d")
def _upsample_nearest(im, node, x, output_size, scale_factors=None, *rest):
    if not isinstance(scale_factors, (list, tuple)) and scale_factors is not None:
        scale_factors = [scale_factors] + list(rest[:1])
    return _upsample(im, node, x, output_size, False, scale_factors, "nearest")


def _logical(kind):
    """Boolean and / or / not (attention masks combine padding and causal masks with `&`) as a
    select: a & b = where(a, b, false), a | b = where(a, true, b), ~a = where(a, false, true)."""
    def handler(im, node, a, b=None):
        if not isinstance(a, Value) or a.dtype != "bool" or (b is not None and (not isinstance(b, Value)
                                                                                 or b.dtype != "bool")):
            raise _Unsupported("bitwise / logical ops on non-bool tensors")
        false, true = im.b.const(False, "bool"), im.b.const(True, "bool")
        if kind == "and":
            return im.emit1("where", [a, b, false])
        if kind == "or":
            return im.emit1("where", [a, true, b])
        return im.emit1("where", [a, false, true])
    return handler


for _name, _kind in (("bitwise_and.Tensor", "and"), ("logical_and", "and"), ("bitwise_or.Tensor", "or"),
                     ("logical_or", "or"), ("bitwise_not", "not"), ("logical_not", "not")):
    HANDLERS[_name] = _logical(_kind)


@handles("linalg_vector_norm")
def _vector_norm(im, node, x, ord=2, dim=None, keepdim=False, dtype=None):
    """The 2-norm (F.normalize's) as sqrt(sum(x * x)); other orders are not lowered."""
    if ord != 2:
        raise _Unsupported(f"vector norm of order {ord} (only 2)")
    rank = x.type.rank
    dims = list(range(rank)) if dim is None or list(dim) == [] else sorted({norm_dim(d, rank) for d in dim})
    squares = im.emit1("mul", [x, x])
    return im.emit1("sqrt", [im.emit1("sum", [squares], {"dims": dims, "keepdim": bool(keepdim)})])


# =============================================================================================
# Entry points
# =============================================================================================
def _training_kwargs(module, args: tuple, kwargs: dict) -> dict:
    """`kwargs` plus use_cache=False for a Hugging Face model (one whose `config` has `use_cache`
    and whose forward takes it) unless the caller set it: a training step returns no KV cache,
    and torch.export cannot return a transformers Cache object."""
    import inspect
    config = getattr(module, "config", None)
    if "use_cache" in kwargs or not getattr(config, "use_cache", False):
        return kwargs
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return kwargs
    if "use_cache" in params and params.index("use_cache") >= len(args):
        return {**kwargs, "use_cache": False}
    return kwargs


def _bind_user_inputs(g: Graph, names: NameGen, ep, args: tuple, kwargs: dict, placeholders: dict) -> list:
    """Graph inputs for the exported program's user inputs: the positional ones (named as
    forward names them), then the keyword ones in `kwargs`' order, named by their keys.
    Returns, per USER_INPUT of the export (its order), the Value it reads (None for a non-tensor
    constant, which torch.export baked into the graph)."""
    from torch.utils import _pytree as pytree
    specs = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    in_spec = ep.call_spec.in_spec
    if in_spec is None or in_spec.num_leaves != len(specs):
        raise CaptureError(f"torch.export's input structure ({in_spec}) does not match its {len(specs)} user inputs")
    leaf_args, leaf_kwargs = pytree.tree_unflatten(list(range(len(specs))), in_spec)
    order = [(i, None) for a in leaf_args for i in pytree.tree_leaves(a)]
    for key in kwargs:
        if key in leaf_kwargs:
            leaves = pytree.tree_leaves(leaf_kwargs[key])
            order += [(i, key if len(leaves) == 1 else None) for i in leaves]
    bound: list = [None] * len(specs)
    for i, key in order:
        spec = specs[i]
        if type(spec.arg).__name__ != "TensorArgument":
            continue  # a constant (True, 0.5, a string): specialised into the graph by torch.export
        val = placeholders[spec.arg.name].meta["val"]
        bound[i] = g.add_input(names.reserve(key or spec.arg.name),
                               TensorType(tuple(val.shape), dtype_of_numpy(_np_dtype(val.dtype))))
    return bound


def _describe_output(obj, types: dict) -> str:
    """'f32[2,8,64]' for a leaf (a 0-d tensor holding its leaf index), 'a tuple of 3 tensors'..."""
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        return types[int(obj)]
    from torch.utils import _pytree as pytree
    n = len(pytree.tree_leaves(obj))
    return f"a {type(obj).__name__} of {n} value{'s' * (n != 1)}"


def _output_choices(obj, types: dict) -> str:
    from collections.abc import Mapping
    if isinstance(obj, Mapping):
        return ", ".join(f"{k!r} ({_describe_output(v, types)})" for k, v in obj.items())
    return ", ".join(f"{i} ({_describe_output(v, types)})" for i, v in enumerate(obj))


def select_output(out_spec, types: list[str], output, where: str) -> int:
    """Which leaf of a model's (flattened) output the loss reads.

    `out_spec` is torch.export's output pytree; `types[i]` describes leaf i ('f32[2,8,64]').
    output=None: the single tensor if there is one, else the "logits" entry of a dict or
    ModelOutput; a str: that key of a dict / ModelOutput (or field of a namedtuple); an int: that
    index of a tuple or list (or ModelOutput, as `model(x)[i]` reads it); a tuple/list of those
    walks into nested outputs, e.g. ("hidden_states", -1). Raises LossError listing the choices."""
    from collections.abc import Mapping
    from torch.utils import _pytree as pytree
    from ..compiler.errors import LossError
    torch = _torch()
    n = len(types)
    tree = pytree.tree_unflatten([torch.tensor(i) for i in range(n)], out_spec)
    by_index = dict(enumerate(types))
    tensors = [i for i, t in enumerate(types) if not t.startswith("the constant")]
    if output is None:
        if len(tensors) == 1:
            return tensors[0]
        if isinstance(tree, Mapping) and "logits" in tree and isinstance(tree["logits"], torch.Tensor):
            return int(tree["logits"])
        if isinstance(tree, (Mapping, tuple, list)) and len(tree):
            kind = "key" if isinstance(tree, Mapping) else "index"
            raise LossError(f"{where} returns a {type(tree).__name__} of {len(tensors)} tensors and no 'logits': "
                            f"pass output=<{kind}> to et.compile to pick the one the loss reads; "
                            f"its {'keys' if kind == 'key' else 'indices'} are: {_output_choices(tree, by_index)}")
        raise LossError(f"{where} returns no tensor ({_describe_output(tree, by_index)}); edgetune trains models "
                        "that return a tensor, or a dict / ModelOutput / tuple holding one")
    path = list(output) if isinstance(output, (tuple, list)) else [output]
    obj, walked = tree, []
    for step in path:
        child = None
        if isinstance(obj, Mapping):
            if isinstance(step, str) and step in obj:
                child = obj[step]
            elif isinstance(step, int) and not isinstance(step, bool) and hasattr(obj, "to_tuple") \
                    and -len(obj) <= step < len(obj):
                child = list(obj.values())[step]  # ModelOutput: model(x)[i]
        elif isinstance(obj, (tuple, list)):
            if isinstance(step, int) and not isinstance(step, bool) and -len(obj) <= step < len(obj):
                child = obj[step]
            elif isinstance(step, str) and step in getattr(obj, "_fields", ()):
                child = getattr(obj, step)
        here = f"{where}'s output" + "".join(f"[{s!r}]" for s in walked)
        if child is None:
            if isinstance(obj, torch.Tensor):
                raise LossError(f"output={output!r}: {here} is a tensor ({_describe_output(obj, by_index)}), "
                                f"it cannot be indexed with {step!r}")
            if isinstance(obj, (Mapping, tuple, list)):
                kind = "keys" if isinstance(obj, Mapping) else "indices"
                raise LossError(f"output={output!r}: {step!r} is not in {here}, a {type(obj).__name__}; "
                                f"its {kind} are: {_output_choices(obj, by_index)}")
            raise LossError(f"output={output!r}: {here} is a {type(obj).__name__}, which edgetune cannot index")
        obj = child
        walked.append(step)
    if not isinstance(obj, torch.Tensor):
        here = f"{where}'s output" + "".join(f"[{s!r}]" for s in walked)
        choices = _output_choices(obj, by_index) if isinstance(obj, (Mapping, tuple, list)) else ""
        raise LossError(f"output={output!r}: {here} is {_describe_output(obj, by_index)}, not one tensor; "
                        f"pick one inside it with a path, output=({output!r}, <key or index>)"
                        + (f"; its entries: {choices}" if choices else ""))
    if by_index[int(obj)].startswith("the constant"):
        raise LossError(f"output={output!r}: {where}'s output there is {by_index[int(obj)]}, not a tensor")
    return int(obj)


def import_module(module, example_inputs: tuple = (), kwargs: dict | None = None, output=None) -> ImportedModel:
    """The forward graph of `module(*example_inputs, **kwargs)`, captured with torch.export.

    Program inputs: the tensors of `example_inputs` (named as forward names them), then those of
    `kwargs` in the dict's order, named by their keys; non-tensor keyword values (True, a float)
    are constants torch.export bakes in. A Hugging Face model is captured with use_cache=False
    (_training_kwargs). The model output is one tensor: picked from a dict, ModelOutput, tuple or
    list result by `output` (select_output); the other results are not outputs of the graph, so
    the compiler's dead-code elimination drops what only they need."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise CaptureError(f"expected a torch.nn.Module, got {type(module).__name__}")
    example_inputs = tuple(example_inputs)
    kwargs = _training_kwargs(module, example_inputs, dict(kwargs or {}))
    ep = export_program(module, example_inputs, "the model", kwargs)
    where = type(module).__name__
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    user_out = [(spec, arg) for spec, arg in zip(ep.graph_signature.output_specs, out_node.args[0])
                if spec.kind.name == "USER_OUTPUT"]
    types = []
    for spec, arg in user_out:
        val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
        if isinstance(val, torch.Tensor):
            types.append(str(TensorType(tuple(val.shape), _ir_dtype(val.dtype))))
        else:
            types.append(f"the constant {getattr(spec.arg, 'value', arg)!r}")
    picked = select_output(ep.call_spec.out_spec, types, output, where)
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
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    bound = _bind_user_inputs(g, names, ep, example_inputs, kwargs, placeholders)
    importer = TorchImporter(g, "forward", names, frozen_buffers)
    outputs = importer.run(ep, bound, param_values)
    if importer.unsupported:
        raise UnsupportedOpError(importer.unsupported, "PyTorch")
    user_outputs = []
    for spec, val in zip(sig.output_specs, outputs):
        if spec.kind.name == "BUFFER_MUTATION":
            g.assigns[spec.target] = val if isinstance(val, Value) else importer.value(val)
        elif spec.kind.name == "USER_OUTPUT":
            user_outputs.append(val)
        else:
            raise CaptureError(f"unsupported export output kind {spec.kind.name}")
    chosen = user_outputs[picked]
    if not isinstance(chosen, Value):  # a compile-time constant: nothing to train through
        raise CaptureError(f"{where}'s output {user_out[picked][0].arg.name} ({types[picked]}) does not depend on "
                           "the model's inputs or parameters: it is a constant, nothing can be trained through it")
    g.outputs["output"] = chosen
    return ImportedModel(g, "torch", [v.name for v in g.inputs], [chosen], train_mode=module.training)


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
