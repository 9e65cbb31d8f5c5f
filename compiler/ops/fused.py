"""fused_elementwise: one node (one pass over memory) for a chain or DAG of elementwise ops.

A fusion pass (compiler/passes/) replaces a group of elementwise nodes whose outputs all have
one shape by a single node, so intermediates live in a small tile buffer instead of the arena:

    %y0, %y1 = fused_elementwise(%x0, %x1, ...) {shape=[N,C,H,W], program="..."}

Inputs are float tensors, each broadcastable (numpy rules) to `shape`. `program` is the chain,
readable in the text IR:

    t0=add(x0,x1); t1=hardtanh(t0,min=0.0,max=6.0); t2=mul(t1,0.5); y0=t1; y1=t2

  * `tK=op(arg, ..., name=value, ...)`: one instruction, an IR op of FUSABLE_OPS with its
    scalar attributes by name (numbers, or a word for gelu's approximate). Each tK (K < 64) is
    assigned once, before it is read.
  * arg: `xI` (input I), `tK` (an earlier result) or a number: an immediate f32 constant (the
    0-d consts of the unfused graph), written with repr() so it reads back exactly.
  * `yJ=arg`: output J is that value, at `shape`; outputs are y0, y1, ... each once, so a value
    also read outside the group can still be fused (several outputs).
  Statements are separated by ';' (whitespace is ignored).

The reference runs each instruction through the op's own registered numpy reference
(`run_reference`), so fused == unfused on the oracle by construction; torch_fn does the same
with each op's torch_fn. The C++ kernel (csrc/kernels/cpu/fused.cc) evaluates the program per
tile of the output with fixed-size stack buffers; its limits are the constants below, and
`infer` (hence the Builder and the verifier) rejects what the kernel would reject:

  * at most MAX_INSTRUCTIONS instructions, MAX_INPUTS inputs, MAX_OUTPUTS outputs;
  * at most MAX_TILE_BUFFERS tile buffers live at once (see `tile_buffers_needed`).

For the fusion pass: FUSABLE_OPS, `can_fuse(node, shape)` and `build_fused(nodes, outputs,
consts)` (which raises FusionTooLarge when a group exceeds the limits: split it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .registry import NOT_DIFFERENTIABLE, OpDef, Sample, T, check, get_op, rand, register, run_reference
from ..errors import ShapeError
from ..ir import Node, TensorType, Value

MAX_INSTRUCTIONS = 32
MAX_TILE_BUFFERS = 16
MAX_INPUTS = 16
MAX_OUTPUTS = 16
MAX_TEMP_NAME = 64  # tK needs K < 64
MAX_RANK = 8
MAX_PROGRAM_CHARS = 4096  # without whitespace

# op -> (number of tensor operands, {attr: (kind, required)}); kind "number" or "approximate".
_HARDTANH_ATTRS = {"min": ("number", True), "max": ("number", True)}
_GELU_ATTRS = {"approximate": ("approximate", False)}
_SIGNATURES: dict[str, tuple[int, dict[str, tuple[str, bool]]]] = {
    **{op: (2, {}) for op in ("add", "sub", "mul", "div")},
    **{op: (1, {}) for op in ("neg", "relu", "hardsigmoid", "hardswish", "sigmoid", "tanh", "silu",
                              "exp", "log", "sqrt", "rsqrt")},
    "hardtanh": (1, _HARDTANH_ATTRS),
    "gelu": (1, _GELU_ATTRS),
    "pow_scalar": (1, {"exponent": ("number", True)}),
    **{op: (2, {}) for op in ("relu_backward", "hardsigmoid_backward", "hardswish_backward", "sigmoid_backward",
                              "tanh_backward", "silu_backward")},
    "hardtanh_backward": (2, _HARDTANH_ATTRS),
    "gelu_backward": (2, _GELU_ATTRS),
}
FUSABLE_OPS: frozenset[str] = frozenset(_SIGNATURES)
APPROXIMATE_MODES = ("none", "tanh")


class FusionTooLarge(ValueError):
    """build_fused: the group exceeds the kernel's limits (instructions, inputs, outputs or live
    tile buffers); the pass should split it."""


# ---------------------------------------------------------------------------------------------
# the program: parsing, validation, formatting
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operand:
    kind: str  # "x" input, "t" earlier result, "imm" immediate constant
    index: int = 0
    value: float = 0.0

    def __str__(self) -> str:
        return repr(float(self.value)) if self.kind == "imm" else f"{self.kind}{self.index}"


@dataclass
class Instr:
    dest: int  # K of tK
    op: str
    args: list[Operand]
    attrs: dict = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [str(a) for a in self.args] + [f"{k}={_fmt_attr(v)}" for k, v in self.attrs.items()]
        return f"t{self.dest}={self.op}({','.join(parts)})"


@dataclass
class Program:
    instrs: list[Instr]
    outputs: list[Operand]

    def __str__(self) -> str:
        return "; ".join([str(i) for i in self.instrs] + [f"y{j}={o}" for j, o in enumerate(self.outputs)])


def _fmt_attr(v) -> str:
    return v if isinstance(v, str) else repr(float(v))


# Numbers as the C++ parser (std::from_chars) reads them: no '+', no '_', inf and nan spelled so.
_NUMBER = re.compile(r"-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)")
_REF = re.compile(r"([xty])(\d+)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _bad(program: str, msg: str):
    raise ShapeError(f"fused_elementwise program {program!r}: {msg}")


def _operand(program: str, tok: str) -> Operand:
    m = _REF.fullmatch(tok)
    if m and m.group(1) in "xt":
        return Operand(m.group(1), int(m.group(2)))
    if _NUMBER.fullmatch(tok):
        return Operand("imm", value=float(tok))
    _bad(program, f"bad operand {tok!r} (want xI, tK or a number)")


def parse_program(program: str, num_inputs: int) -> Program:
    """Parse and validate `program` for `num_inputs` inputs; ShapeError says what is wrong."""
    if not isinstance(program, str):
        raise ShapeError(f"fused_elementwise attribute 'program' must be a string, got {program!r}")
    text = re.sub(r"\s+", "", program)
    if len(text) > MAX_PROGRAM_CHARS:
        _bad(program, f"longer than {MAX_PROGRAM_CHARS} characters")
    statements = [s for s in text.split(";") if s]
    instrs: list[Instr] = []
    outputs: dict[int, Operand] = {}
    defined: set[int] = set()

    def use(o: Operand, where: str) -> Operand:
        if o.kind == "x" and o.index >= num_inputs:
            _bad(program, f"{where} reads x{o.index}, but the node has {num_inputs} inputs")
        if o.kind == "t" and o.index not in defined:
            _bad(program, f"{where} reads t{o.index} before it is assigned")
        return o

    for st in statements:
        dest, eq, rhs = st.partition("=")
        m = _REF.fullmatch(dest)
        if not eq or not m or m.group(1) == "x":
            _bad(program, f"statement {st!r} must be 'tK=op(...)' or 'yJ=operand'")
        kind, index = m.group(1), int(m.group(2))
        if kind == "y":
            if index in outputs:
                _bad(program, f"output y{index} assigned twice")
            outputs[index] = use(_operand(program, rhs), f"y{index}")
            continue
        if index >= MAX_TEMP_NAME:
            _bad(program, f"t{index}: temporaries are t0..t{MAX_TEMP_NAME - 1}")
        if index in defined:
            _bad(program, f"t{index} assigned twice")
        call = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)", rhs)
        if not call:
            _bad(program, f"t{index}={rhs!r}: expected op(args)")
        op, arg_text = call.group(1), call.group(2)
        if op not in _SIGNATURES:
            _bad(program, f"t{index}: op '{op}' cannot be fused (fusable: {', '.join(sorted(FUSABLE_OPS))})")
        arity, spec = _SIGNATURES[op]
        args, attrs = [], {}
        for tok in (arg_text.split(",") if arg_text else []):
            name, has_eq, value = tok.partition("=")
            if not has_eq:
                if attrs:
                    _bad(program, f"t{index}={op}: operand {tok!r} after attributes")
                args.append(use(_operand(program, tok), f"t{index}={op}"))
                continue
            if name not in spec:
                _bad(program, f"t{index}={op}: unknown attribute '{name}' (takes {sorted(spec) or 'none'})")
            if name in attrs:
                _bad(program, f"t{index}={op}: attribute '{name}' given twice")
            if spec[name][0] == "approximate":
                if value not in APPROXIMATE_MODES:
                    _bad(program, f"t{index}={op}: approximate={value!r}, want one of {APPROXIMATE_MODES}")
                attrs[name] = value
            else:
                if not _NUMBER.fullmatch(value):
                    _bad(program, f"t{index}={op}: attribute {name}={value!r} is not a number")
                attrs[name] = float(value)
        if len(args) != arity:
            _bad(program, f"t{index}={op} takes {arity} operand(s), got {len(args)}")
        missing = [k for k, (_, req) in spec.items() if req and k not in attrs]
        if missing:
            _bad(program, f"t{index}={op}: missing attribute(s) {missing}")
        instrs.append(Instr(index, op, args, attrs))
        defined.add(index)
    if not instrs and not outputs:
        _bad(program, "empty program")
    if not outputs:
        _bad(program, "no outputs (write yJ=tK)")
    if sorted(outputs) != list(range(len(outputs))):
        _bad(program, f"outputs must be y0..y{len(outputs) - 1}, got {['y%d' % j for j in sorted(outputs)]}")
    if len(instrs) > MAX_INSTRUCTIONS:
        _bad(program, f"{len(instrs)} instructions, the kernel takes at most {MAX_INSTRUCTIONS}")
    if len(outputs) > MAX_OUTPUTS:
        _bad(program, f"{len(outputs)} outputs, the kernel takes at most {MAX_OUTPUTS}")
    return Program(instrs, [outputs[j] for j in range(len(outputs))])


def tile_buffers_needed(prog: Program, input_numels: list[int], out_numel: int) -> int:
    """Peak number of tile buffers the C++ kernel holds at once for this program (the same
    simulation as its planner in fused.cc). An input of one element is a scalar, one of the
    output's size is read in place, any other is gathered into a buffer from its first to its
    last read by an instruction (outputs read inputs directly). A result is a scalar when all its
    operands are; otherwise it holds a buffer from its instruction to its last read (to the end
    when it is an output). Operands whose last read is instruction k are released before k's
    result is placed, so a result may reuse an operand's buffer."""
    def gathered(i):
        return input_numels[i] != 1 and input_numels[i] != out_numel

    scalar_t: dict[int, bool] = {}
    for ins in prog.instrs:
        scalar_t[ins.dest] = all(a.kind == "imm" or (a.kind == "x" and input_numels[a.index] == 1)
                                 or (a.kind == "t" and scalar_t[a.index]) for a in ins.args)
    n = len(prog.instrs)
    first_x: dict[int, int] = {}
    last: dict[tuple[str, int], int] = {}
    for k, ins in enumerate(prog.instrs):
        last[("t", ins.dest)] = k
        for a in ins.args:
            if a.kind == "x" and gathered(a.index):
                first_x.setdefault(a.index, k)
                last[("x", a.index)] = k
            elif a.kind == "t":
                last[("t", a.index)] = k
    for o in prog.outputs:
        if o.kind == "t":
            last[("t", o.index)] = n
    live = peak = 0
    for k, ins in enumerate(prog.instrs):
        live += sum(1 for i, f in first_x.items() if f == k)
        peak = max(peak, live)
        released = {(a.kind, a.index) for a in ins.args
                    if (a.kind == "x" and gathered(a.index)) or (a.kind == "t" and not scalar_t[a.index])}
        live -= sum(1 for key in released if last[key] == k)
        if not scalar_t[ins.dest]:
            live += 1
            peak = max(peak, live)
            if last[("t", ins.dest)] == k:
                live -= 1
    return peak


# ---------------------------------------------------------------------------------------------
# the op
# ---------------------------------------------------------------------------------------------
def _shape_attr(attrs) -> tuple[int, ...]:
    shape = attrs.get("shape")
    check(isinstance(shape, (list, tuple)) and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape),
          f"fused_elementwise attribute 'shape' must be a list of sizes, got {shape!r}")
    check(len(shape) <= MAX_RANK, f"fused_elementwise: rank {len(shape)} > {MAX_RANK}")
    return tuple(int(d) for d in shape)


def _infer(ts, attrs):
    shape = _shape_attr(attrs)
    check(1 <= len(ts) <= MAX_INPUTS, f"fused_elementwise takes 1..{MAX_INPUTS} inputs, got {len(ts)}")
    dtypes = {t.dtype for t in ts}
    check(len(dtypes) == 1 and ts[0].is_float, f"fused_elementwise inputs must share one float dtype, got "
                                                f"{[t.dtype for t in ts]}")
    for i, t in enumerate(ts):
        try:
            ok = np.broadcast_shapes(t.shape, shape) == shape
        except ValueError:
            ok = False
        check(ok, f"fused_elementwise input x{i} {t} does not broadcast to {list(shape)}")
    prog = parse_program(attrs.get("program"), len(ts))
    out_numel = int(np.prod(shape, dtype=np.int64))
    need = tile_buffers_needed(prog, [t.numel for t in ts], out_numel)
    check(need <= MAX_TILE_BUFFERS, f"fused_elementwise program needs {need} tile buffers at once, the kernel "
                                    f"has {MAX_TILE_BUFFERS}: split the group")
    return [TensorType(shape, ts[0].dtype) for _ in prog.outputs]


def _evaluate(xs, attrs, run_op, immediate, finish):
    """Run the program instruction by instruction: run_op(op, arrays, attrs) -> [array]."""
    prog = parse_program(attrs["program"], len(xs))
    temps = {}

    def value(o: Operand):
        if o.kind == "x":
            return xs[o.index]
        if o.kind == "t":
            return temps[o.index]
        return immediate(o.value)

    for ins in prog.instrs:
        temps[ins.dest] = run_op(ins.op, [value(a) for a in ins.args], dict(ins.attrs))[0]
    return [finish(value(o)) for o in prog.outputs]


def _reference(xs, attrs):
    shape, dtype = _shape_attr(attrs), xs[0].dtype
    return _evaluate(xs, attrs, run_reference, lambda v: np.asarray(v, dtype=dtype),
                     lambda v: np.array(np.broadcast_to(np.asarray(v, dtype=dtype), shape)))


def _torch_fn(ts, attrs):
    torch = T()
    shape, dtype = _shape_attr(attrs), ts[0].dtype
    return _evaluate(ts, attrs, lambda op, args, a: get_op(op).torch_fn(args, a),
                     lambda v: torch.tensor(v, dtype=dtype),
                     lambda v: torch.as_tensor(v).to(dtype).expand(shape).clone())


def _flops(in_types, out_types, attrs) -> int:
    prog = parse_program(attrs["program"], len(in_types))
    return max(1, len(prog.instrs)) * (out_types[0].numel if out_types else 0)


def _samples(rng):
    # sizes not a multiple of the kernel's tile (512 floats), some spanning several tiles
    n, c, h, w = 2, 3, 13, 17
    away = rand(rng, n, c, h, w, lo=-4, hi=8)
    away[np.abs(away) < 0.05] = 0.5  # keep off relu's kink so torch and numpy agree bit-wise
    return [
        Sample([rand(rng, n, c, h, w), rand(rng, 1, c, 1, 1), rand(rng, lo=0.5, hi=1.5)],
               {"shape": [n, c, h, w],
                "program": "t0=add(x0,x1); t1=mul(t0,x2); t2=sub(t1,0.25); t3=div(t2,1.5); t4=neg(t3); "
                           "t5=hardtanh(t4,min=0.0,max=6.0); y0=t5"},
               note="arith chain with channel broadcast and scalar input"),
        Sample([away, rand(rng, n, c, h, w)],
               {"shape": [n, c, h, w],
                "program": "t0=hardswish(x0); t1=hardswish_backward(x1,x0); t2=relu(x0); t3=relu_backward(t1,t2); "
                           "t4=hardtanh_backward(t3,x0,min=-1.0,max=6.0); t5=sigmoid(x0); "
                           "t6=sigmoid_backward(t4,t5); y0=t0; y1=t6"},
               note="activation and backward chain, two outputs"),
        Sample([rand(rng, 5, 203, lo=-3, hi=3), rand(rng, 203, lo=-1, hi=1)],
               {"shape": [5, 203],
                "program": "t0=add(x0,x1); t1=gelu(t0,approximate=tanh); t2=gelu(t0); "
                           "t3=gelu_backward(t1,t0,approximate=none); t4=gelu_backward(t2,t0,approximate=tanh); "
                           "t5=mul(t3,t4); y0=t1; y1=t5; y2=t0"},
               note="gelu chain, row broadcast, three outputs"),
        Sample([rand(rng, 3, 1, 7, lo=0.3, hi=2), rand(rng, 4, 1, lo=-1, hi=1)],
               {"shape": [3, 4, 7],
                "program": "t0=sqrt(x0); t1=rsqrt(x0); t2=log(t0); t3=exp(x1); t4=pow_scalar(t0,exponent=3.0); "
                           "t5=pow_scalar(x0,exponent=-1.5); t6=tanh(x1); t7=tanh_backward(t6,t6); t8=silu(t7); "
                           "t9=silu_backward(t8,x1); t10=hardsigmoid(x1); t11=hardsigmoid_backward(t10,t3); "
                           "t12=add(t1,t2); t13=add(t12,t4); t14=add(t13,t5); t15=mul(t14,t9); t16=add(t15,t11); "
                           "y0=t16; y1=x1"},
               note="math functions, both inputs broadcast, output copies an input"),
        Sample([rand(rng, 700), rand(rng)],
               {"shape": [700], "program": "t0=mul(x1,2.0); t1=exp(t0); t2=add(x0,t1); y0=t2; y1=t1"},
               note="scalar subchain, scalar output"),
    ]


register(OpDef("fused_elementwise", _infer, _reference, NOT_DIFFERENTIABLE, _samples, _torch_fn, flops=_flops,
               doc="a chain/DAG of elementwise ops in one pass: attrs shape, program (see compiler/ops/fused.py)"))


# ---------------------------------------------------------------------------------------------
# the contract with the fusion pass
# ---------------------------------------------------------------------------------------------
def _attr_ok(kind: str, value) -> bool:
    if kind == "approximate":
        return value in APPROXIMATE_MODES
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def can_fuse(node: Node, shape: tuple[int, ...] | list[int] | None = None) -> bool:
    """True when `node` can be an instruction of a fused_elementwise node whose output shape is
    `shape` (None: its own output shape): a FUSABLE op with scalar attrs the kernel reads, f32
    operands and one f32 output of that shape."""
    sig = _SIGNATURES.get(node.op)
    if sig is None or len(node.outputs) != 1 or len(node.inputs) != sig[0]:
        return False
    arity, spec = sig
    out = node.outputs[0]
    if out.dtype != "f32" or any(v.dtype != "f32" for v in node.inputs):
        return False
    if len(out.shape) > MAX_RANK or (shape is not None and tuple(out.shape) != tuple(shape)):
        return False
    if set(node.attrs) - set(spec):
        return False
    for name, (kind, required) in spec.items():
        if name in node.attrs:
            if not _attr_ok(kind, node.attrs[name]):
                return False
        elif required:
            return False
    return True


def build_fused(nodes: list[Node], outputs: list[Value],
                consts: dict[str, np.ndarray] | None = None) -> tuple[list[Value], dict]:
    """The inputs and attrs of the fused_elementwise node replacing `nodes`.

    nodes: the group, topologically ordered, each `can_fuse` at the group's shape (the shape of
    `outputs`). outputs: the values of the group read outside it, in the order the fused node
    produces them. consts: source name -> data (e.g. graph.initial); 0-d f32 consts found there
    become immediates in the program instead of inputs. Nodes that no output needs are dropped.
    Returns (inputs: deduplicated external values in first-use order, attrs: {shape, program}).
    Raises ValueError for a malformed group, FusionTooLarge when it exceeds the kernel's limits.
    """
    if not outputs:
        raise ValueError("build_fused: a group needs at least one output")
    shape = tuple(outputs[0].shape)
    for n in nodes:
        if not can_fuse(n, shape):
            raise ValueError(f"build_fused: {n} cannot be fused at shape {list(shape)}")
    producer = {id(n.outputs[0]): n for n in nodes}
    for v in outputs:
        if id(v) not in producer:
            raise ValueError(f"build_fused: output %{v.name} is not produced by the group")
    # keep only what the outputs need
    needed = {id(v) for v in outputs}
    kept = []
    for n in reversed(nodes):
        if id(n.outputs[0]) in needed:
            kept.append(n)
            needed.update(id(v) for v in n.inputs)
    kept.reverse()

    consts = consts or {}
    temp_of: dict[int, int] = {}
    input_of: dict[int, int] = {}
    inputs: list[Value] = []
    instrs = []
    for k, n in enumerate(kept):
        args = []
        for v in n.inputs:
            data = consts.get(v.name) if v.kind == "const" else None
            if id(v) in temp_of:
                args.append(Operand("t", temp_of[id(v)]))
            elif data is not None and np.ndim(data) == 0 and np.asarray(data).dtype == np.float32:
                args.append(Operand("imm", value=float(np.asarray(data))))
            else:
                if id(v) not in input_of:
                    input_of[id(v)] = len(inputs)
                    inputs.append(v)
                args.append(Operand("x", input_of[id(v)]))
        spec = _SIGNATURES[n.op][1]
        attrs = {k2: (n.attrs[k2] if spec[k2][0] == "approximate" else float(n.attrs[k2]))
                 for k2 in spec if k2 in n.attrs}
        instrs.append(Instr(k, n.op, args, attrs))
        temp_of[id(n.outputs[0])] = k
    prog = Program(instrs, [Operand("t", temp_of[id(v)]) for v in outputs])
    text = str(prog)
    attrs = {"shape": list(shape), "program": text}
    if not inputs:
        raise FusionTooLarge("build_fused: the group reads no tensor input (constant-fold it instead)")
    if len(inputs) > MAX_INPUTS or len(instrs) > MAX_INSTRUCTIONS or len(outputs) > MAX_OUTPUTS:
        raise FusionTooLarge(f"build_fused: {len(instrs)} instructions, {len(inputs)} inputs, {len(outputs)} "
                             f"outputs; the kernel takes {MAX_INSTRUCTIONS}, {MAX_INPUTS}, {MAX_OUTPUTS}")
    need = tile_buffers_needed(parse_program(text, len(inputs)), [v.type.numel for v in inputs],
                               int(np.prod(shape, dtype=np.int64)))
    if need > MAX_TILE_BUFFERS:
        raise FusionTooLarge(f"build_fused: the group needs {need} tile buffers at once, the kernel has "
                             f"{MAX_TILE_BUFFERS}")
    return inputs, attrs
