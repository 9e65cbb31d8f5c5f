"""ONNX frontend: an .onnx file (or onnx.ModelProto) -> edgetune IR.

The graph must use the default ONNX domain at opset >= 13. Graph inputs that are not
initializers become the program's data inputs, with the shapes of `example_inputs` (which fix
any symbolic dims). Float initializers become params named exactly as in the file (the torch
state_dict names when exported with do_constant_folding=False); those feeding
BatchNormalization's running mean/var are buffers. Integer initializers and Constant nodes are
compile-time constants, and every node whose inputs are all compile-time constants (Shape of a
static value, Gather/Concat/Unsqueeze/Cast of constants, ConstantOfShape, Range, Trilu, ...) is
evaluated with numpy right here, so reshape targets, slice bounds and axes end up as attrs.

torch.onnx.export deduplicates initializers with equal values (fresh BatchNorm stats, zero
biases, unit LayerNorm weights) into `Identity(other_initializer)`; such an Identity output
becomes a source of its own, under its own (state_dict) name, so nothing is tied by accident.

A few exporter patterns are recognised and lowered to single edgetune ops:
  * Transpose(W) -> MatMul [-> Add(b)]  with W a 2-d param   -> linear(x, W[, b])
  * x * 0.5 * (1 + Erf(x / sqrt 2))                            -> gelu
  * 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))      -> gelu(approximate="tanh")
  * x * Sigmoid(x)                                             -> silu

Training-mode BatchNormalization becomes `batch_norm_train` with its running stats assigned back
to their buffers, updated as PyTorch does (unbiased batch variance; the ONNX reference uses the
biased one), since exported torch models are what we fine-tune. Training-mode Dropout becomes
a `dropout` node on the program's rng counter, like the torch frontend's.

Expected input: torch.onnx.export(..., do_constant_folding=False) (the default True folds
Transpose(W) into anonymous "onnx::MatMul_*" initializers, which then import as params under
those names). A tied weight (GPT's lm_head = wte) is one initializer used twice: one param, and
the second state_dict name is simply absent from the file.

Every op (or form of an op) we cannot map is collected — with its node name — and reported
together in one UnsupportedOpError.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable

import numpy as np

from ..compiler.errors import CaptureError, EdgetuneError, InputError, UnsupportedOpError
from ..compiler.ir import Graph, NameGen, TensorType, Value, dtype_of_numpy, numpy_dtype
from ..compiler.ops.registry import Builder
from .common import Emitter, ImportedModel, handler_table, lower_matmul, lower_reshape, lower_slice, norm_dim, resolve_shape

MIN_OPSET = 13
_DEFAULT_DOMAINS = ("", "ai.onnx")
_POISON = object()  # value downstream of an unsupported op whose type is unknown


def _onnx():
    import onnx
    return onnx


def _reason(e: Exception) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


# =============================================================================================
# Loading and checking
# =============================================================================================
def load_model(model):
    """(ModelProto, description for messages, default-domain opset)."""
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            mp = onnx.load(path)
        except Exception as e:  # FileNotFoundError, protobuf DecodeError, ...
            raise CaptureError(f"cannot read ONNX model '{path}': {_reason(e)}") from e
        where = f"ONNX model '{path}'"
    elif isinstance(model, onnx.ModelProto):
        mp = model
        where = f"ONNX model '{model.graph.name or 'unnamed'}'"
    else:
        raise CaptureError(f"expected an onnx.ModelProto or the path of an .onnx file, got {type(model).__name__}")
    if not mp.HasField("graph") or not mp.graph.output:
        raise CaptureError(f"cannot read {where}: it holds no ONNX graph (is it an .onnx file?)")
    versions = {o.domain: o.version for o in mp.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None:
        raise CaptureError(f"{where} imports no default-domain ONNX opset")
    if opset < MIN_OPSET:
        raise CaptureError(f"{where} uses ONNX opset {opset}; edgetune needs opset >= {MIN_OPSET} "
                           f"(re-export it, e.g. torch.onnx.export(..., opset_version=17))")
    try:
        onnx.checker.check_model(mp)
    except Exception as e:
        raise CaptureError(f"{where} is not a valid ONNX model: {_reason(e)}") from e
    return mp, where, opset


def _np_dtype(elem_type: int, where: str):
    onnx = _onnx()
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        dtype_of_numpy(dt)
        return dt
    except Exception:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() \
            else str(elem_type)
        raise _Unsupported(f"{where} has element type {name}") from None


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; torch is not imported here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _attrs(node) -> dict[str, Any]:
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = onnx.numpy_helper.to_array(v)
        elif isinstance(v, (list, tuple)):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _constant_value(node, a) -> np.ndarray:
    if "value" in a:
        return np.array(a["value"])
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.array(a[key], dtype=dt)
    raise _Unsupported(f"Constant with attribute {sorted(a)}")


def _declared_shape(vi) -> list | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]


def _inferred_types(mp, input_shapes: dict[str, tuple]) -> dict[str, tuple[tuple, Any]]:
    """ONNX shape inference with the inputs' example shapes: name -> (shape, numpy dtype)."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(mp)
    for vi in m.graph.input:
        if vi.name in input_shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for s in input_shapes[vi.name]:
                dims.add().dim_value = int(s)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:
        return {}
    out = {}
    for vi in list(m.graph.value_info) + list(m.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
            continue
        try:
            out[vi.name] = (tuple(d.dim_value for d in tt.shape.dim), _np_dtype(tt.elem_type, vi.name))
        except _Unsupported:
            continue
    return out


class _Unsupported(Exception):
    """A handler found a form of a supported op it cannot lower (reported, not raised)."""


def _f32(v) -> float:
    """An ONNX float attr (stored as float32) as the shortest decimal it rounds from: 1e-05, not 9.99e-06."""
    return float(repr(np.float32(v)).removeprefix("np.float32(").removesuffix(")"))


def _close(v, target, rel=1e-4) -> bool:
    return v is not None and abs(v - target) <= rel * abs(target)


# =============================================================================================
# The importer
# =============================================================================================
class OnnxImporter(Emitter):
    def __init__(self, mp, graph: Graph, opset: int, where: str):
        self.mp = mp
        self.g = graph
        self.opset = opset
        self.where = where
        self.names = NameGen(graph)
        self.b = Builder(graph, "forward", self.names)
        self.env: dict[str, Any] = {}  # onnx name -> Value (or _POISON)
        self.known: dict[str, np.ndarray] = {}  # onnx name -> compile-time constant
        self.weights: dict[str, np.ndarray] = {}  # float initializers not yet made sources
        self.unsupported: list[str] = []
        self.train_mode = False
        self.node = None
        self._inferred: dict | None = None
        self.input_shapes: dict[str, tuple] = {}
        nodes = list(mp.graph.node)
        self.nodes = nodes
        self.producer = {o: n for n in nodes for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in nodes:
            for i, name in enumerate(n.input):
                if name:
                    self.consumers.setdefault(name, []).append((n, i))
        self.graph_outputs = {o.name for o in mp.graph.output}
        self.running_stats = {n.input[i] for n in nodes if n.op_type == "BatchNormalization"
                              for i in (3, 4) if len(n.input) > i and n.input[i]}
        self.skip: set[int] = set()  # nodes folded into a pattern
        self.replace: dict[int, tuple] = {}  # id(final node of a pattern) -> (op, x name, attrs)
        self.transposed: dict[str, str] = {}  # Transpose output -> 2-d param it transposes (for linear)
        self.fused_bias: dict[int, tuple] = {}  # id(MatMul) -> (Add node, bias name)

    # ---- sources -----------------------------------------------------------------------------
    def load_initializers(self):
        onnx = _onnx()
        for init in self.mp.graph.initializer:
            arr = onnx.numpy_helper.to_array(init)
            if np.issubdtype(arr.dtype, np.floating):
                self.weights[init.name] = arr
            else:
                self.known[init.name] = arr

    def bind_inputs(self, example_inputs):
        init_names = {i.name for i in self.mp.graph.initializer}
        graph_inputs = [vi for vi in self.mp.graph.input if vi.name not in init_names]
        examples = list(example_inputs)
        if len(examples) != len(graph_inputs):
            raise InputError(f"{self.where} has {len(graph_inputs)} input(s) {[vi.name for vi in graph_inputs]} "
                             f"but {len(examples)} example input(s) were given")
        for vi, ex in zip(graph_inputs, examples):
            arr = _as_array(ex)
            if not vi.type.HasField("tensor_type"):
                raise CaptureError(f"{self.where}: input '{vi.name}' is not a tensor")
            try:
                dt = _np_dtype(vi.type.tensor_type.elem_type, f"input '{vi.name}'")
            except _Unsupported as e:
                raise CaptureError(f"{self.where}: {e}") from None
            declared = _declared_shape(vi)
            if declared is not None:
                if len(declared) != arr.ndim:
                    raise InputError(f"{self.where}: input '{vi.name}' is declared {declared} (rank {len(declared)}) "
                                     f"but the example has shape {list(arr.shape)} (rank {arr.ndim})")
                for i, (d, s) in enumerate(zip(declared, arr.shape)):
                    if isinstance(d, int) and d > 0 and d != s:
                        raise InputError(f"{self.where}: input '{vi.name}' is declared {declared} but the example "
                                         f"has shape {list(arr.shape)} (dim {i}: {d} != {s})")
            if arr.dtype != dt:
                raise InputError(f"{self.where}: input '{vi.name}' is {dtype_of_numpy(dt)} in the model but the "
                                 f"example is {arr.dtype}")
            self.input_shapes[vi.name] = tuple(arr.shape)
            self.env[vi.name] = self.g.add_input(self.names.reserve(vi.name),
                                                 TensorType(tuple(arr.shape), dtype_of_numpy(dt)))

    # ---- graph analysis: dedup identities and patterns ---------------------------------------
    def analyse(self):
        for node in self.nodes:
            if node.op_type == "Identity" and node.domain in _DEFAULT_DOMAINS and node.input[0] in self.weights:
                self.weights[node.output[0]] = self.weights[node.input[0]]
                self.skip.add(id(node))
        # params are created on first use; keep their names free of generated value names
        self.names.used.update(self.weights)
        for node in self.nodes:
            if node.domain not in _DEFAULT_DOMAINS:
                continue
            try:
                if node.op_type == "Transpose":
                    self._match_weight_transpose(node)
                elif node.op_type == "Erf":
                    self._match_gelu_erf(node)
                elif node.op_type == "Tanh":
                    self._match_gelu_tanh(node)
                elif node.op_type == "Sigmoid":
                    self._match_silu(node)
            except (KeyError, IndexError, ValueError):
                continue

    def _const_data(self, name) -> np.ndarray | None:
        if name in self.known:
            return self.known[name]
        if name in self.weights:
            return self.weights[name]
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            try:
                return _constant_value(n, _attrs(n))
            except _Unsupported:
                return None
        return None

    def _scalar(self, name) -> float | None:
        arr = self._const_data(name)
        if arr is None or arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
            return None
        return float(arr.reshape(()))

    def _sole(self, name, op_type=None):
        """The one node reading `name` (which is not a graph output), optionally of op_type."""
        uses = self.consumers.get(name, [])
        if len(uses) != 1 or name in self.graph_outputs:
            return None
        n = uses[0][0]
        if id(n) in self.skip or (op_type is not None and n.op_type != op_type):
            return None
        return n

    def _prod(self, name, op_type):
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op_type and id(n) not in self.skip else None

    @staticmethod
    def _other(node, name):
        a, b = node.input[0], node.input[1]
        return b if a == name else a if b == name else None

    def _scalar_operand(self, node, target):
        """For a binary node with one scalar-constant input close to `target`: the other input."""
        for i in (0, 1):
            if _close(self._scalar(node.input[i]), target):
                return node.input[1 - i]
        return None

    def _match_weight_transpose(self, node):
        w = node.input[0]
        perm = _attrs(node).get("perm")
        if w not in self.weights or self.weights[w].ndim != 2 or perm not in (None, [1, 0]):
            return
        out = node.output[0]
        uses = self.consumers.get(out, [])
        if not uses or out in self.graph_outputs or not all(n.op_type == "MatMul" and i == 1 for n, i in uses):
            return
        self.transposed[out] = w
        self.skip.add(id(node))
        for mm, _ in uses:
            add = self._sole(mm.output[0], "Add")
            if add is None:
                continue
            bias = self._other(add, mm.output[0])
            data = self.weights.get(bias)
            if data is not None and data.shape == (self.weights[w].shape[0],):
                self.fused_bias[id(mm)] = (add, bias)
                self.skip.add(id(add))

    def _match_half_x(self, v, x):
        """Match (v * x) * 0.5, (v * 0.5) * x or v * (x * 0.5): (final node, inner nodes)."""
        m = self._sole(v, "Mul")
        if m is None:
            return None
        other = self._other(m, v)
        if other == x:
            m2 = self._sole(m.output[0], "Mul")
            if m2 is not None and self._scalar_operand(m2, 0.5) == m.output[0]:
                return m2, [m]
        if _close(self._scalar(other), 0.5):
            m2 = self._sole(m.output[0], "Mul")
            if m2 is not None and self._other(m2, m.output[0]) == x:
                return m2, [m]
        h = self._prod(other, "Mul")
        if h is not None and self._sole(h.output[0]) is m and self._scalar_operand(h, 0.5) == x:
            return m, [h]
        return None

    def _register(self, final, inner, op, x, attrs):
        self.replace[id(final)] = (op, x, attrs)
        self.skip.update(id(n) for n in inner)

    def _match_gelu_erf(self, erf):
        d = self.producer.get(erf.input[0])
        if d is None or self._sole(d.output[0]) is not erf:
            return
        if d.op_type == "Div" and _close(self._scalar(d.input[1]), math.sqrt(2)):
            x = d.input[0]
        elif d.op_type == "Mul":
            x = self._scalar_operand(d, 1 / math.sqrt(2))
        else:
            return
        a = self._sole(erf.output[0], "Add")
        if x is None or a is None or self._scalar_operand(a, 1.0) != erf.output[0]:
            return
        tail = self._match_half_x(a.output[0], x)
        if tail:
            self._register(tail[0], [d, erf, a] + tail[1], "gelu", x, {"approximate": "none"})

    def _match_gelu_tanh(self, t):
        p = self._prod(t.input[0], "Mul")
        if p is None or self._sole(p.output[0]) is not t:
            return
        s = self._prod(self._scalar_operand(p, math.sqrt(2 / math.pi)) or "", "Add")
        if s is None or self._sole(s.output[0]) is not p:
            return
        for x, q_name in ((s.input[0], s.input[1]), (s.input[1], s.input[0])):
            q = self._prod(q_name, "Mul")
            if q is None or self._sole(q_name) is not s:
                continue
            cube = self.producer.get(self._scalar_operand(q, 0.044715) or "")
            if cube is None or self._sole(cube.output[0]) is not q:
                continue
            if cube.op_type == "Pow" and cube.input[0] == x and _close(self._scalar(cube.input[1]), 3.0):
                inner = [cube]
            elif cube.op_type == "Mul" and x in cube.input:
                sq = self._prod(self._other(cube, x), "Mul")
                if sq is None or list(sq.input) != [x, x] or self._sole(sq.output[0]) is not cube:
                    continue
                inner = [sq, cube]
            else:
                continue
            a = self._sole(t.output[0], "Add")
            if a is None or self._scalar_operand(a, 1.0) != t.output[0]:
                return
            tail = self._match_half_x(a.output[0], x)
            if tail:
                self._register(tail[0], inner + [q, s, p, t, a] + tail[1], "gelu", x, {"approximate": "tanh"})
            return

    def _match_silu(self, sig):
        m = self._sole(sig.output[0], "Mul")
        if m is not None and self._other(m, sig.output[0]) == sig.input[0]:
            self._register(m, [sig], "silu", sig.input[0], {})

    # ---- helpers used by the op handlers ---------------------------------------------------
    def source_of(self, node):
        return _source_of(node)

    def const(self, arr: np.ndarray) -> Value:
        arr = np.asarray(arr)
        return self.b.const(arr, dtype_of_numpy(arr.dtype))

    def name(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def value_of(self, name: str) -> Value:
        v = self.env.get(name)
        if v is not None:
            return v
        if name in self.known:
            v = self.const(self.known[name])
        elif name in self.weights:
            kind = "buffer" if name in self.running_stats else "param"
            v = self.g.add_source(name, kind, np.array(self.weights[name]))
        elif name in self.transposed:  # a pattern consumer fell back to the general path
            v = self.b.emit1("permute", [self.value_of(self.transposed[name])], {"dims": [1, 0]})
        else:
            raise CaptureError(f"{self.where}: value '{name}' is read before it is defined")
        self.env[name] = v
        return v

    def inp(self, i: int) -> Value | None:
        """Input i as a Value (constants become consts, initializers params), None if absent."""
        name = self.name(i)
        return self.value_of(name) if name else None

    def operand(self, i: int):
        """Input i as a compile-time numpy array when it is one, else a Value."""
        name = self.name(i)
        if name in self.known:
            return self.known[name]
        return self.inp(i)

    def static(self, i: int, what: str) -> np.ndarray | None:
        """Input i, which must be known at compile time (None if absent)."""
        name = self.name(i)
        if not name:
            return None
        if name in self.known:
            return self.known[name]
        if name in self.weights:
            return self.weights[name]
        raise _Unsupported(f"{what} is computed at run time")

    def shape_of(self, name: str) -> tuple[int, ...]:
        for table in (self.known, self.weights):
            if name in table:
                return tuple(table[name].shape)
        return tuple(self.value_of(name).shape)

    def output_used(self, i: int) -> bool:
        outs = self.node.output
        return i < len(outs) and bool(outs[i]) and (outs[i] in self.consumers or outs[i] in self.graph_outputs)

    def like(self, x, ref: Value) -> Value:
        """x as a Value with ref's dtype: a numpy constant is converted, a Value kept."""
        if isinstance(x, Value):
            return x
        return self.const(np.asarray(x).astype(numpy_dtype(ref.dtype)))

    # ---- main loop ---------------------------------------------------------------------------
    def run(self) -> list[Value]:
        for node in self.nodes:
            if id(node) in self.skip:
                continue
            self.node = node
            self._node(node)
        self.node = None
        if self.unsupported:
            return []
        outs = []
        for o in self.mp.graph.output:
            outs.append(self.value_of(o.name))
        return outs

    def _node(self, node):
        op = node.op_type
        if node.domain not in _DEFAULT_DOMAINS:
            self._unsupported(node, f"{node.domain}::{op}")
            return
        if op in _REJECTED:
            self._unsupported(node, f"{op} ({_REJECTED[op]})")
            return
        ins = [n for n in node.input if n]
        if any(self.env.get(n) is _POISON for n in ins):
            if op not in HANDLERS and op not in FOLDERS:
                self._unsupported(node, op)
            else:
                self._poison(node)
            return
        try:
            if id(node) in self.replace:
                kind, x, attrs = self.replace[id(node)]
                if self.env.get(x) is _POISON:
                    self._poison(node)
                    return
                result = self.emit1(kind, [self.value_of(x)], attrs)
            elif op in FOLDERS and all(n in self.known for n in ins):
                try:
                    result = FOLDERS[op](self, node, [self.known.get(n) if n else None for n in node.input],
                                         _attrs(node))
                except (ValueError, TypeError, IndexError, KeyError, EdgetuneError) as e:
                    raise _Unsupported(f"constant inputs that cannot be evaluated: {_reason(e)}") from None
            elif op in HANDLERS:
                result = HANDLERS[op](self, node, _attrs(node))
            else:
                self._unsupported(node, op)
                return
        except _Unsupported as e:
            self._unsupported(node, f"{op} ({e})")
            return
        except EdgetuneError:
            if self.unsupported:  # most likely a consequence of an earlier unsupported op
                self._poison(node)
                return
            raise
        self._bind(node, result)

    def _bind(self, node, result):
        results = list(result) if isinstance(result, (tuple, list)) else [result]
        for i, name in enumerate(node.output):
            if not name:
                continue
            r = results[i] if i < len(results) else None
            if r is None:
                if name in self.consumers or name in self.graph_outputs:
                    self._unsupported(node, f"{node.op_type} (output {i} '{name}' is not supported)")
                    return
                continue
            if isinstance(r, Value):
                self.env[name] = r
            else:
                self.known[name] = np.asarray(r)

    def _unsupported(self, node, what: str):
        self.unsupported.append(f"{what} at node '{node.name or node.output[0]}'")
        self._poison(node)

    def _poison(self, node):
        """Keep going with typed placeholders so every later unsupported op is reported too."""
        if self._inferred is None:
            self._inferred = _inferred_types(self.mp, self.input_shapes)
        names = list(node.output)
        if id(node) in self.fused_bias:
            names.append(self.fused_bias[id(node)][0].output[0])
        for name in names:
            if not name:
                continue
            t = self._inferred.get(name)
            if t is None:
                self.env[name] = _POISON
            else:
                self.env[name] = self.g.add_source(self.names("unsupported"), "const", np.zeros(t[0], dtype=t[1]))


# ops that only exist inside a recognised pattern (see the module docstring)
_REJECTED = {"Erf": "supported only inside an exact GELU, x * 0.5 * (1 + erf(x / sqrt(2)))"}


def _source_of(node) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


# =============================================================================================
# Constant folding: (importer, node, input arrays (None where absent), attrs) -> array | list
# =============================================================================================
FOLDERS: dict[str, Callable] = {}


def folds(*ops):
    def deco(fn):
        for op in ops:
            FOLDERS[op] = fn
        return fn
    return deco


def _keep(arr, dtype):
    return np.asarray(arr).astype(dtype, copy=False)


_NP_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal, "Less": np.less,
              "Greater": np.greater, "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
              "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}


@folds(*_NP_BINARY)
def _fold_binary(im, node, xs, a):
    out = _NP_BINARY[node.op_type](xs[0], xs[1])
    return out if out.dtype == np.bool_ else _keep(out, xs[0].dtype)


@folds("Div")
def _fold_div(im, node, xs, a):
    x, y = xs
    if np.issubdtype(x.dtype, np.integer):
        return _keep(np.trunc(x / y), x.dtype)
    return _keep(x / y, x.dtype)


@folds("Pow")
def _fold_pow(im, node, xs, a):
    return _keep(np.power(xs[0], xs[1].astype(xs[0].dtype)), xs[0].dtype)


@folds("Mod")
def _fold_mod(im, node, xs, a):
    return _keep((np.fmod if a.get("fmod", 0) else np.mod)(xs[0], xs[1]), xs[0].dtype)


@folds("Min", "Max", "Sum")
def _fold_variadic(im, node, xs, a):
    fn = {"Min": np.minimum, "Max": np.maximum, "Sum": np.add}[node.op_type]
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return _keep(out, xs[0].dtype)


_NP_UNARY = {"Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Floor": np.floor,
             "Ceil": np.ceil, "Reciprocal": np.reciprocal, "Not": np.logical_not, "Tanh": np.tanh,
             "Relu": lambda x: np.maximum(x, 0), "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
             "Identity": lambda x: x, "Sign": np.sign}


@folds(*_NP_UNARY)
def _fold_unary(im, node, xs, a):
    out = _NP_UNARY[node.op_type](xs[0])
    return out if out.dtype == np.bool_ else _keep(out, xs[0].dtype)


@folds("Constant")
def _fold_constant(im, node, xs, a):
    return _constant_value(node, a)


@folds("Cast")
def _fold_cast(im, node, xs, a):
    return xs[0].astype(_np_dtype(a["to"], "Cast target"))


@folds("ConstantOfShape")
def _fold_constant_of_shape(im, node, xs, a):
    value = a.get("value", np.zeros((1,), np.float32))
    return np.full([int(s) for s in xs[0]], value.reshape(-1)[0], dtype=value.dtype)


@folds("Range")
def _fold_range(im, node, xs, a):
    start, limit, delta = (x.reshape(()) for x in xs)
    return np.arange(start, limit, delta, dtype=xs[0].dtype)


@folds("Gather")
def _fold_gather(im, node, xs, a):
    return np.take(xs[0], xs[1].astype(np.int64), axis=a.get("axis", 0))


@folds("GatherElements")
def _fold_gather_elements(im, node, xs, a):
    x, idx = xs
    axis = norm_dim(int(a.get("axis", 0)), x.ndim)
    idx = np.where(idx < 0, idx + x.shape[axis], idx).astype(np.int64)
    part = x[tuple(slice(None) if d == axis else slice(0, idx.shape[d]) for d in range(x.ndim))]
    return np.take_along_axis(part, idx, axis=axis)


@folds("CumSum")
def _fold_cumsum(im, node, xs, a):
    x = xs[0]
    axis = norm_dim(int(np.asarray(xs[1]).reshape(())), x.ndim)
    y = np.flip(x, axis) if a.get("reverse", 0) else x
    y = np.cumsum(y, axis=axis, dtype=x.dtype)
    if a.get("exclusive", 0):
        y = y - (np.flip(x, axis) if a.get("reverse", 0) else x)
    return np.ascontiguousarray(np.flip(y, axis) if a.get("reverse", 0) else y)


@folds("Concat")
def _fold_concat(im, node, xs, a):
    return np.concatenate([x for x in xs if x is not None], axis=a["axis"])


@folds("Unsqueeze")
def _fold_unsqueeze(im, node, xs, a):
    return xs[0].reshape(_unsqueeze_shape(xs[0].shape, xs[1]))


@folds("Squeeze")
def _fold_squeeze(im, node, xs, a):
    return xs[0].reshape(_squeeze_shape(xs[0].shape, xs[1] if len(xs) > 1 else None))


@folds("Reshape")
def _fold_reshape(im, node, xs, a):
    return xs[0].reshape(_reshape_target(xs[0].shape, xs[1], a, im.source))


@folds("Flatten")
def _fold_flatten(im, node, xs, a):
    return xs[0].reshape(_flatten_shape(xs[0].shape, a.get("axis", 1)))


@folds("Transpose")
def _fold_transpose(im, node, xs, a):
    return np.ascontiguousarray(np.transpose(xs[0], a.get("perm")))


@folds("Expand")
def _fold_expand(im, node, xs, a):
    shape = np.broadcast_shapes(xs[0].shape, tuple(int(s) for s in xs[1]))
    return np.array(np.broadcast_to(xs[0], shape))


@folds("Where")
def _fold_where(im, node, xs, a):
    return np.where(xs[0], xs[1], xs[2]).astype(xs[1].dtype)


@folds("Trilu")
def _fold_trilu(im, node, xs, a):
    k = int(xs[1].reshape(())) if len(xs) > 1 and xs[1] is not None else 0
    return (np.triu if a.get("upper", 1) else np.tril)(xs[0], k)


@folds("Slice")
def _fold_slice(im, node, xs, a):
    x = xs[0]
    starts, ends = xs[1], xs[2]
    axes = xs[3] if len(xs) > 3 and xs[3] is not None else range(len(starts))
    steps = xs[4] if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        idx[norm_dim(int(ax), x.ndim)] = slice(int(s), int(e), int(st))
    return np.array(x[tuple(idx)])


@folds("Split")
def _fold_split(im, node, xs, a):
    x = xs[0]
    axis = norm_dim(a.get("axis", 0), x.ndim)
    sizes = _split_sizes(x.shape[axis], xs[1] if len(xs) > 1 else None, a, len(node.output))
    offsets = np.cumsum([0] + sizes)
    return [np.array(np.take(x, range(offsets[i], offsets[i + 1]), axis=axis)) for i in range(len(sizes))]


@folds("Tile")
def _fold_tile(im, node, xs, a):
    return np.tile(xs[0], [int(r) for r in xs[1]])


@folds("ReduceProd", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin")
def _fold_reduce(im, node, xs, a):
    fn = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max,
          "ReduceMin": np.min}[node.op_type]
    dims = _reduce_dims(im, node, xs[0].ndim, a, xs[1] if len(xs) > 1 else None)
    if dims is None:
        return xs[0]
    return _keep(fn(xs[0], axis=tuple(dims), keepdims=bool(a.get("keepdims", 1))), xs[0].dtype)


# =============================================================================================
# Shape arithmetic shared by folding and the handlers
# =============================================================================================
def _unsqueeze_shape(shape, axes) -> list[int]:
    rank = len(shape) + len(axes)
    axes = sorted(norm_dim(int(d), rank) for d in np.asarray(axes).reshape(-1))
    out = list(shape)
    for d in axes:
        out.insert(d, 1)
    return out


def _squeeze_shape(shape, axes) -> list[int]:
    if axes is None:
        return [s for s in shape if s != 1]
    axes = {norm_dim(int(d), len(shape)) for d in np.asarray(axes).reshape(-1)}
    for d in axes:
        if shape[d] != 1:
            raise _Unsupported(f"squeezing dim {d} of size {shape[d]}")
    return [s for i, s in enumerate(shape) if i not in axes]


def _reshape_target(shape, target, a, where) -> list[int]:
    target = [int(s) for s in np.asarray(target).reshape(-1)]
    if not a.get("allowzero", 0):
        target = [shape[i] if s == 0 else s for i, s in enumerate(target)]
    return resolve_shape(target, int(np.prod(shape, dtype=np.int64)), f"reshape at {where}")


def _flatten_shape(shape, axis) -> list[int]:
    axis = norm_dim(axis, len(shape))
    return [int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64))]


def _split_sizes(total, split, a, n_outputs) -> list[int]:
    if split is not None:
        return [int(s) for s in np.asarray(split).reshape(-1)]
    if "split" in a:
        return [int(s) for s in a["split"]]
    n = a.get("num_outputs", n_outputs)
    chunk = -(-total // n)
    return [min(chunk, total - i * chunk) for i in range(n)]


def _reduce_dims(im, node, rank, a, axes_input) -> list[int] | None:
    """Sorted reduce dims; None for a no-op (noop_with_empty_axes with no axes)."""
    axes = a.get("axes")
    if axes_input is not None:
        axes = np.asarray(axes_input).reshape(-1).tolist()
    if not axes:
        return None if a.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({norm_dim(int(d), rank) for d in axes})


# =============================================================================================
# Op handlers: (importer, onnx node, attrs) -> Value | tuple (one entry per output) | ndarray
# =============================================================================================
HANDLERS, handles = handler_table()


def _two_operands(im):
    """A binary node's operands as Values of one dtype (a constant takes the other's)."""
    x, y = im.operand(0), im.operand(1)
    if not isinstance(x, Value):
        x = im.like(x, y)
    if not isinstance(y, Value):
        y = im.like(y, x)
    if x.dtype != y.dtype:
        raise _Unsupported(f"operands of different dtypes {x.dtype} and {y.dtype}")
    return x, y


def _binary(op):
    def handler(im, node, a):
        x, y = _two_operands(im)
        # a bias-like param goes second: `add` marks its input 1 as the bias (PEFT BiasOnly)
        if op in ("add", "mul") and x.kind == "param" and y.kind != "param":
            x, y = y, x
        return im.emit1(op, [x, y])
    return handler


for _onnx_op, _op in (("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Div", "div")):
    HANDLERS[_onnx_op] = _binary(_op)


@handles("Pow")
def _pow(im, node, a):
    e = im.static(1, "the exponent")
    if e.size != 1:
        raise _Unsupported("a non-scalar exponent")
    return im.emit1("pow_scalar", [im.inp(0)], {"exponent": float(e.reshape(()))})


for _onnx_op, _op in (("Relu", "relu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("Exp", "exp"), ("Log", "log"),
                      ("Sqrt", "sqrt"), ("Neg", "neg"), ("HardSwish", "hardswish")):
    HANDLERS[_onnx_op] = (lambda op: lambda im, node, a: im.emit1(op, [im.inp(0)]))(_op)


@handles("Reciprocal")
def _reciprocal(im, node, a):
    x = im.inp(0)
    return im.emit1("div", [im.b.const(1.0, x.dtype), x])


@handles("HardSigmoid")
def _hardsigmoid(im, node, a):
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    if not (_close(alpha, 1 / 6) and _close(beta, 0.5)):
        raise _Unsupported(f"alpha={alpha}, beta={beta} (only alpha=1/6, beta=0.5)")
    return im.emit1("hardsigmoid", [im.inp(0)])


@handles("Clip")
def _clip(im, node, a):
    x = im.inp(0)
    lo, hi = im.static(1, "the min bound"), im.static(2, "the max bound")
    lo = None if lo is None else float(lo.reshape(()))
    hi = None if hi is None else float(hi.reshape(()))
    if lo is not None and hi is not None:
        return im.emit1("hardtanh", [x], {"min": lo, "max": hi})
    if lo == 0 and hi is None:
        return im.emit1("relu", [x])
    if lo is None and hi is None:
        return x
    raise _Unsupported("a single bound other than min=0")


@handles("MatMul")
def _matmul(im, node, a):
    x = im.inp(0)
    wt = im.transposed.get(node.input[1])
    if wt is not None and node.input[1] not in im.env:
        w = im.value_of(wt)
        fused = im.fused_bias.get(id(node))
        bias = [im.value_of(fused[1])] if fused else []
        y = im.emit1("linear", [x, w] + bias)
        if fused:
            im.env[fused[0].output[0]] = y
        return y
    return lower_matmul(im, x, im.inp(1))


@handles("Gemm")
def _gemm(im, node, a):
    x, w, c = im.inp(0), im.inp(1), im.inp(2)
    alpha, beta = _f32(a.get("alpha", 1.0)), _f32(a.get("beta", 1.0))
    trans_b = bool(a.get("transB", 0))
    if a.get("transA", 0):
        x = im.emit1("permute", [x], {"dims": [1, 0]})
    n_out = w.shape[0] if trans_b else w.shape[1]
    fuse = trans_b and c is not None and alpha == 1.0 and beta == 1.0 and c.shape == (n_out,)
    if trans_b:
        y = im.emit1("linear", [x, w] + ([c] if fuse else []))
    else:
        y = im.emit1("matmul", [x, w])
    if alpha != 1.0:
        y = im.emit1("mul", [y, im.b.const(alpha, y.dtype)])
    if c is not None and not fuse:
        if beta != 1.0:
            c = im.emit1("mul", [c, im.b.const(beta, c.dtype)])
        y = im.emit1("add", [y, c])
    return y


def _spatial(a, key, n, default):
    v = a.get(key)
    return [int(s) for s in v] if v else [default] * n


def _sym_pads(a, x_shape, kernel, strides, dilations):
    n = len(kernel)
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            if total % 2:
                raise _Unsupported(f"auto_pad={auto_pad} needing asymmetric padding")
            pads.append(total // 2)
        return pads
    if auto_pad != "NOTSET":
        raise _Unsupported(f"auto_pad={auto_pad}")
    pads = _spatial(a, "pads", 2 * n, 0)
    if pads[:n] != pads[n:]:
        raise _Unsupported(f"asymmetric pads {pads}")
    return pads[:n]


@handles("Conv")
def _conv(im, node, a):
    x, w, b = im.inp(0), im.inp(1), im.inp(2)
    if x.type.rank not in (3, 4):
        raise _Unsupported(f"{x.type.rank - 2}-d convolution")
    n = x.type.rank - 2
    kernel = _spatial(a, "kernel_shape", n, 0) if a.get("kernel_shape") else list(w.shape[2:])
    strides, dilations = _spatial(a, "strides", n, 1), _spatial(a, "dilations", n, 1)
    pads = _sym_pads(a, x.shape, kernel, strides, dilations)
    groups = int(a.get("group", 1))
    bias = [b] if b is not None else []
    if n == 1:  # conv1d: run as conv2d over a height-1 image
        bn, c, length = x.shape
        x4 = im.emit1("reshape", [x], {"shape": [bn, c, 1, length]})
        w4 = im.emit1("reshape", [w], {"shape": [w.shape[0], w.shape[1], 1, w.shape[2]]})
        attrs = {"stride": [1, strides[0]], "padding": [0, pads[0]], "dilation": [1, dilations[0]], "groups": groups}
        y = im.emit1("conv2d", [x4, w4] + bias, attrs)
        return im.emit1("reshape", [y], {"shape": [y.shape[0], y.shape[1], y.shape[3]]})
    attrs = {"stride": strides, "padding": pads, "dilation": dilations, "groups": groups}
    return im.emit1("conv2d", [x, w] + bias, attrs)


def _pool_params(im, a, x):
    if x.type.rank != 4:
        raise _Unsupported(f"{x.type.rank - 2}-d pooling")
    kernel = [int(k) for k in a["kernel_shape"]]
    strides, dilations = _spatial(a, "strides", 2, 1), _spatial(a, "dilations", 2, 1)
    pads = _sym_pads(a, x.shape, kernel, strides, dilations)
    return kernel, strides, pads, dilations


@handles("MaxPool")
def _max_pool(im, node, a):
    x = im.inp(0)
    if im.output_used(1):
        raise _Unsupported("the Indices output")
    if a.get("storage_order", 0):
        raise _Unsupported("storage_order=1")
    kernel, strides, pads, dilations = _pool_params(im, a, x)
    attrs = {"kernel": kernel, "stride": strides, "padding": pads, "dilation": dilations,
             "ceil_mode": bool(a.get("ceil_mode", 0))}
    return im.emit("max_pool2d", [x], attrs)[0]


@handles("AveragePool")
def _avg_pool(im, node, a):
    x = im.inp(0)
    kernel, strides, pads, dilations = _pool_params(im, a, x)
    if dilations != [1, 1]:
        raise _Unsupported(f"dilations {dilations}")
    return im.emit1("avg_pool2d", [x], {"kernel": kernel, "stride": strides, "padding": pads,
                                        "ceil_mode": bool(a.get("ceil_mode", 0)),
                                        "count_include_pad": bool(a.get("count_include_pad", 0)),
                                        "divisor_override": None})


@handles("GlobalAveragePool")
def _global_avg(im, node, a):
    x = im.inp(0)
    return im.emit1("mean", [x], {"dims": list(range(2, x.type.rank)), "keepdim": True})


def _reduce(op):
    def handler(im, node, a):
        x = im.inp(0)
        dims = _reduce_dims(im, node, x.type.rank, a, im.static(1, "the axes"))
        if dims is None:
            return x
        return im.emit1(op, [x], {"dims": dims, "keepdim": bool(a.get("keepdims", 1))})
    return handler


HANDLERS["ReduceMean"] = _reduce("mean")
HANDLERS["ReduceSum"] = _reduce("sum")


@handles("BatchNormalization")
def _batch_norm(im, node, a):
    x, w, b, rm, rv = (im.inp(i) for i in range(5))
    eps = _f32(a.get("epsilon", 1e-5))
    training = bool(a.get("training_mode", 0)) if im.opset >= 14 else \
        any(o for o in node.output[1:])
    if not training:
        return im.emit1("batch_norm_infer", [x, w, b, rm, rv], {"eps": eps})
    if im.output_used(3) or im.output_used(4):
        raise _Unsupported("the saved mean/var outputs")
    for v in (rm, rv):
        if v.kind != "buffer":
            raise _Unsupported(f"training-mode running stat '{v.name}' that is not an initializer")
    im.train_mode = True
    momentum = _f32(1.0 - _f32(a.get("momentum", 0.9)))  # ONNX weighs the old stat, edgetune the new one
    y, _, _, new_rm, new_rv = im.emit("batch_norm_train", [x, w, b, rm, rv], {"momentum": momentum, "eps": eps})
    im.g.assigns[rm.name] = new_rm
    im.g.assigns[rv.name] = new_rv
    return (y, new_rm, new_rv)


@handles("LayerNormalization")
def _layer_norm(im, node, a):
    x, w, b = im.inp(0), im.inp(1), im.inp(2)
    axis = norm_dim(int(a.get("axis", -1)), x.type.rank)
    shape = list(x.shape[axis:])
    if b is None:
        b = im.g.add_source(im.names("zeros"), "const", np.zeros(shape, numpy_dtype(x.dtype)))

    def fit(v, what):
        if list(v.shape) == shape:
            return v
        if v.type.numel == int(np.prod(shape)):
            return im.emit1("reshape", [v], {"shape": shape})
        raise _Unsupported(f"{what} of shape {list(v.shape)} broadcast over normalized shape {shape}")
    return tuple(im.emit("layer_norm", [x, fit(w, "scale"), fit(b, "bias")],
                         {"normalized_shape": shape, "eps": _f32(a.get("epsilon", 1e-5))}))


@handles("Softmax", "LogSoftmax")
def _softmax(im, node, a):
    x = im.inp(0)
    op = "softmax" if node.op_type == "Softmax" else "log_softmax"
    return im.emit1(op, [x], {"dim": norm_dim(int(a.get("axis", -1)), x.type.rank)})


@handles("Shape")
def _shape(im, node, a):
    shape = im.shape_of(node.input[0])
    start, end = a.get("start", 0), a.get("end")
    return np.array(shape[slice(start, end)], dtype=np.int64)


@handles("Size")
def _size(im, node, a):
    return np.array(int(np.prod(im.shape_of(node.input[0]), dtype=np.int64)), dtype=np.int64)


@handles("Reshape")
def _reshape(im, node, a):
    x = im.inp(0)
    return lower_reshape(im, x, _reshape_target(x.shape, im.static(1, "the target shape"), a, im.source))


@handles("Flatten")
def _flatten(im, node, a):
    x = im.inp(0)
    return lower_reshape(im, x, _flatten_shape(x.shape, a.get("axis", 1)))


@handles("Squeeze")
def _squeeze(im, node, a):
    x = im.inp(0)
    return lower_reshape(im, x, _squeeze_shape(x.shape, im.static(1, "the axes")))


@handles("Unsqueeze")
def _unsqueeze(im, node, a):
    x = im.inp(0)
    return lower_reshape(im, x, _unsqueeze_shape(x.shape, im.static(1, "the axes")))


@handles("Transpose")
def _transpose(im, node, a):
    x = im.inp(0)
    perm = [norm_dim(int(d), x.type.rank) for d in a.get("perm", list(range(x.type.rank))[::-1])]
    if perm == list(range(x.type.rank)):
        return x
    return im.emit1("permute", [x], {"dims": perm})


@handles("Identity")
def _identity(im, node, a):
    return im.inp(0)


@handles("Dropout")
def _dropout(im, node, a):
    x = im.inp(0)
    ratio = im.static(1, "the ratio")
    training = im.static(2, "training_mode")
    p = 0.5 if ratio is None else _f32(ratio.reshape(()))
    training = training is not None and bool(training.reshape(()))
    im.train_mode = im.train_mode or training
    if not training or p == 0:
        mask = None
        if im.output_used(1):
            mask = im.g.add_source(im.names("c"), "const", np.ones(x.shape, np.bool_))
        return (x, mask)
    if im.output_used(1):
        raise _Unsupported("the mask output in training mode")
    counter = im.g.sources.get("rng.counter")
    if counter is None:
        counter = im.g.add_source("rng.counter", "state", np.asarray(0, dtype=np.int64))
        im.g.assigns["rng.counter"] = im.b.emit1("add", [counter, im.b.const(1, "i64")], out_names=["rng.counter.next"])
    stream = sum(1 for n in im.g.nodes if n.op == "dropout")
    return im.emit("dropout", [x, counter], {"p": p, "stream": stream})[0]


@handles("Cast")
def _cast(im, node, a):
    x = im.inp(0)
    dt = dtype_of_numpy(_np_dtype(a["to"], "the Cast target"))
    return x if dt == x.dtype else im.emit1("cast", [x], {"dtype": dt})


@handles("Concat")
def _concat(im, node, a):
    parts = [im.operand(i) for i in range(len(node.input))]
    ref = next(p for p in parts if isinstance(p, Value))
    parts = [im.like(p, ref) for p in parts]
    parts = [p for p in parts if p.type.numel > 0] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    return im.emit1("concat", parts, {"dim": norm_dim(int(a["axis"]), ref.type.rank)})


@handles("Slice")
def _slice(im, node, a):
    x = im.inp(0)
    starts, ends = im.static(1, "starts"), im.static(2, "ends")
    axes = im.static(3, "axes")
    steps = im.static(4, "steps")
    axes = range(len(starts)) if axes is None else axes.reshape(-1)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1)
    for s, e, ax, st in zip(starts.reshape(-1), ends.reshape(-1), axes, steps):
        if st < 1:
            raise _Unsupported(f"step {int(st)}")
        x = lower_slice(im, x, norm_dim(int(ax), x.type.rank), int(s), int(e), int(st))
    return x


@handles("Split")
def _split(im, node, a):
    x = im.inp(0)
    axis = norm_dim(int(a.get("axis", 0)), x.type.rank)
    sizes = _split_sizes(x.shape[axis], im.static(1, "the split sizes"), a, len(node.output))
    outs, offset = [], 0
    for s in sizes:
        outs.append(lower_slice(im, x, axis, offset, offset + s))
        offset += s
    return tuple(outs)


@handles("Gather")
def _gather(im, node, a):
    data = node.input[0]
    axis = int(a.get("axis", 0))
    idx = im.operand(1)
    is_weight = data in im.weights or (isinstance(im.env.get(data), Value) and im.env[data].kind == "param")
    if is_weight and norm_dim(axis, len(im.shape_of(data))) == 0:
        w = im.value_of(data)
        rows = w.shape[0]
        if not isinstance(idx, Value):
            idx = im.const(np.where(idx < 0, idx + rows, idx).astype(np.int64))
        if w.type.rank == 2:
            return im.emit1("embedding", [w, idx], {"padding_idx": None})
        rest = list(w.shape[1:])
        w2 = im.emit1("reshape", [w], {"shape": [rows, int(np.prod(rest, dtype=np.int64))]})
        y = im.emit1("embedding", [w2, idx], {"padding_idx": None})
        return im.emit1("reshape", [y], {"shape": list(idx.shape) + rest})
    if isinstance(idx, Value):
        raise _Unsupported("run-time indices into a tensor that is not a parameter")
    x = im.inp(0)
    axis = norm_dim(axis, x.type.rank)
    size = x.shape[axis]
    flat = [int(i) + size if i < 0 else int(i) for i in idx.reshape(-1)]
    out_shape = list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:])
    steps = {b - a for a, b in zip(flat, flat[1:])}
    if len(flat) == 1 or (len(steps) == 1 and min(steps) >= 1):
        step = steps.pop() if steps else 1
        y = lower_slice(im, x, axis, flat[0], flat[-1] + 1, step)
    elif len(flat) <= 64:
        y = im.emit1("concat", [lower_slice(im, x, axis, i, i + 1) for i in flat], {"dim": axis})
    else:
        raise _Unsupported(f"{len(flat)} scattered constant indices")
    return lower_reshape(im, y, out_shape)


# ---- comparisons, Not, CumSum, GatherElements (compiler/ops/elementwise.py, ops/indexing.py) -------
_COMPARE_DTYPES = ("f32", "f64", "i64", "i32", "bool")


def _compare(op):
    def handler(im, node, a):
        x, y = _two_operands(im)
        if x.dtype not in _COMPARE_DTYPES:
            raise _Unsupported(f"{x.dtype} operands (comparisons take {', '.join(_COMPARE_DTYPES)})")
        return im.emit1(op, [x, y])
    return handler


for _onnx_op, _op in (("Equal", "eq"), ("Less", "lt"), ("LessOrEqual", "le"), ("Greater", "gt"),
                      ("GreaterOrEqual", "ge")):
    HANDLERS[_onnx_op] = _compare(_op)


@handles("Not")
def _not(im, node, a):
    """Not(b) = (b == False)."""
    x = im.inp(0)
    if x.dtype != "bool":
        raise _Unsupported(f"Not of {x.dtype}")
    return im.emit1("eq", [x, im.b.const(False, "bool")])


@handles("CumSum")
def _cumsum(im, node, a):
    """Inclusive CumSum (reverse 0 or 1) along a compile-time axis; exclusive=1 is not lowered."""
    if a.get("exclusive", 0):
        raise _Unsupported("exclusive=1 (only the inclusive sum, exclusive=0)")
    x = im.inp(0)
    axis = im.static(1, "the axis")
    if x.dtype not in ("f32", "f64", "i64", "i32"):
        raise _Unsupported(f"a sum of {x.dtype} values")
    if x.type.rank == 0:
        return x
    attrs = {"dim": norm_dim(int(np.asarray(axis).reshape(())), x.type.rank)}
    if a.get("reverse", 0):
        attrs["reverse"] = True
    return im.emit1("cumsum", [x], attrs)


@handles("GatherElements")
def _gather_elements(im, node, a):
    """torch.gather's ONNX form. Compile-time indices may be negative (ONNX allows [-s, s)) and are
    wrapped here; run-time ones must be in [0, s), as torch.gather's are (the kernel refuses others)."""
    x = im.inp(0)
    axis = norm_dim(int(a.get("axis", 0)), x.type.rank)
    idx = im.operand(1)
    if not isinstance(idx, Value):
        idx = im.const(np.where(idx < 0, idx + x.shape[axis], idx).astype(np.int64))
    return im.emit1("gather", [x, idx], {"dim": axis})


@handles("Where")
def _where(im, node, a):
    cond, x, y = im.operand(0), im.operand(1), im.operand(2)
    if not isinstance(cond, Value):
        cond = im.const(cond.astype(np.bool_))
    ref = x if isinstance(x, Value) else y
    if not isinstance(ref, Value):
        x, y = im.const(x), im.const(y.astype(x.dtype))
    else:
        x, y = im.like(x, ref), im.like(y, ref)
    return im.emit1("where", [cond, x, y])


@handles("Expand")
def _expand(im, node, a):
    x = im.inp(0)
    shape = list(np.broadcast_shapes(tuple(x.shape), tuple(int(s) for s in im.static(1, "the target shape"))))
    if shape == list(x.shape):
        return x
    return im.emit1("expand", [x], {"shape": shape})


@handles("Trilu")
def _trilu(im, node, a):
    x = im.inp(0)
    k = im.static(1, "k")
    k = 0 if k is None else int(k.reshape(()))
    h, w = x.shape[-2:]
    keep = (np.triu if a.get("upper", 1) else np.tril)(np.ones((h, w), np.bool_), k)
    return im.emit1("where", [im.const(keep), x, im.b.const(0, x.dtype)])


@handles("ConstantOfShape", "Range")
def _runtime_shape(im, node, a):
    raise _Unsupported("its inputs are computed at run time")


# =============================================================================================
# Entry point
# =============================================================================================
def import_onnx(model, example_inputs) -> ImportedModel:
    mp, where, opset = load_model(model)
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    if isinstance(model, (str, os.PathLike)):
        name = os.path.splitext(os.path.basename(os.fspath(model)))[0]
    else:
        name = mp.graph.name or "onnx_model"
    g = Graph(name=re.sub(r"\W", "_", name).lower() or "onnx_model")
    importer = OnnxImporter(mp, g, opset, where)
    importer.load_initializers()
    importer.bind_inputs(example_inputs)
    importer.analyse()
    outputs = importer.run()
    if importer.unsupported:
        raise UnsupportedOpError(importer.unsupported, "ONNX")
    for i, v in enumerate(outputs):
        g.outputs["output" if len(outputs) == 1 else f"output{i}"] = v
    return ImportedModel(g, "onnx", [v.name for v in g.inputs], outputs, train_mode=importer.train_mode)
