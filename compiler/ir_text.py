"""Text form of the IR: `print_graph` and `parse_graph`, which round-trip exactly.

    program small_cnn {
      input %x: f32[8,3,32,32]
      param %conv1.weight: f32[16,3,3,3] trainable
      buffer %bn1.running_mean: f32[16]
      state %optim.lr: f32[]
      const %c0: f32[] = 1.0
      alias %lm_head.weight = %wte.weight

      forward:
        %t0: f32[8,16,32,32] = conv2d(%x, %conv1.weight) {dilation=[1, 1], groups=1, padding=[1, 1], stride=[1, 1]} @"model.py:12 conv1"
      loss:
      backward:
      update:

      output loss = %t9
      assign %conv1.weight <- %conv1.weight.next
    }

Names that are not plain identifiers (ONNX's "onnx::Conv_3") are written as %"...". Const
data is printed inline up to 64 elements; larger consts print `= <N values>` and their data
travels beside the text (as param data does), so `parse_graph(text, initial=...)` takes it.
Tests write expected programs in this form, so pass tests read as before/after text.
"""

from __future__ import annotations

import json
import re

import numpy as np

from .errors import IRError
from .ir import SECTIONS, Graph, Node, TensorType, Value, numpy_dtype

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
INLINE_CONST_LIMIT = 64


def fmt_name(name: str) -> str:
    return "%" + (name if _PLAIN.match(name) else json.dumps(name))


def fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # shortest repr that round-trips; inf/nan spelled inf, -inf, nan
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, (np.integer,)):
        return str(int(v))
    if isinstance(v, (np.floating,)):
        return repr(float(v))
    raise IRError(f"attribute value {v!r} of type {type(v).__name__} has no text form")


def fmt_attrs(attrs: dict) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k}={fmt_value(attrs[k])}" for k in sorted(attrs)) + "}"


def _fmt_const_data(arr: np.ndarray) -> str:
    if arr.size > INLINE_CONST_LIMIT:
        return f"<{arr.size} values>"
    flat = [x.item() for x in arr.reshape(-1)]
    if arr.dtype == np.bool_:
        flat = [bool(x) for x in flat]
    elif np.issubdtype(arr.dtype, np.floating):
        flat = [float(x) for x in flat]
    return fmt_value(flat[0]) if arr.ndim == 0 else fmt_value(flat)


_SOURCE_LINE = re.compile(r"^([^\s:]+):\d+")


def print_graph(g: Graph, source_lines: bool = True) -> str:
    """The text form. `source_lines=False` drops the line numbers from node sources
    ("models.py:78 layers.0" prints as "models.py layers.0"), so text compared across edits of
    the model's file (the golden programs) does not change when its lines move."""
    lines = [f"program {g.name} {{"]
    for v in g.inputs:
        lines.append(f"  input {fmt_name(v.name)}: {v.type}")
    for name, v in g.sources.items():
        extra = ""
        if v.kind == "param" and v.trainable:
            extra = " trainable"
        if v.kind == "const":
            extra = " = " + _fmt_const_data(g.initial[name])
        lines.append(f"  {v.kind} {fmt_name(name)}: {v.type}{extra}")
    for alias, target in sorted(g.aliases.items()):
        lines.append(f"  alias {fmt_name(alias)} = {fmt_name(target)}")
    # A section header starts every run of nodes of one section: after update reordering,
    # update nodes sit between backward nodes, and the text keeps the execution order.
    current = None
    for n in g.nodes or [None]:
        section = n.section if n is not None else "forward"
        if section != current:
            if current is None and section != "forward":
                lines += ["", "  forward:"]
            lines += ["", f"  {section}:"]
            current = section
        if n is None:
            break
        outs = ", ".join(f"{fmt_name(v.name)}: {v.type}" for v in n.outputs)
        ins = ", ".join(fmt_name(v.name) for v in n.inputs)
        kernel = f" kernel {json.dumps(n.kernel)}" if n.kernel else ""
        source = n.source if source_lines or not n.source else _SOURCE_LINE.sub(r"\1", n.source)
        src = f" @{json.dumps(source)}" if source else ""
        lines.append(f"    {outs} = {n.op}({ins}){fmt_attrs(n.attrs)}{kernel}{src}")
    lines.append("")
    for key, v in g.outputs.items():
        lines.append(f"  output {key} = {fmt_name(v.name)}")
    for name, v in g.assigns.items():
        lines.append(f"  assign {fmt_name(name)} <- {fmt_name(v.name)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Parser: a small tokenizer + recursive descent over one line at a time.
# ---------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<name>%(?:"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_.]*))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:(?:inf|nan)(?![A-Za-z0-9_])|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<arrow><-)
  | (?P<punct>[\[\]{}(),:=@<>])
""", re.VERBOSE)


class _Tokens:
    def __init__(self, text: str, lineno: int):
        self.toks: list[tuple[str, str]] = []
        self.lineno = lineno
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise IRError(f"line {lineno}: cannot read {text[pos:pos + 20]!r}")
            pos = m.end()
            if m.lastgroup != "ws":
                self.toks.append((m.lastgroup, m.group()))
        self.i = 0

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return value is None or self.toks[self.i][1] == value

    def next(self, kind: str | None = None, value: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise IRError(f"line {self.lineno}: unexpected end of line")
        k, v = self.toks[self.i]
        if (kind and k != kind) or (value and v != value):
            raise IRError(f"line {self.lineno}: expected {value or kind}, got {v!r}")
        self.i += 1
        return v

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def name(self) -> str:
        raw = self.next("name")[1:]
        return json.loads(raw) if raw.startswith('"') else raw

    def type(self) -> TensorType:
        dtype = self.next("word")
        self.next(value="[")
        dims = []
        while not self.peek("]"):
            dims.append(int(self.next("number")))
            if self.peek(","):
                self.next()
        self.next(value="]")
        return TensorType(tuple(dims), dtype)

    def value(self):
        kind, tok = self.toks[self.i]
        if tok == "[":
            self.next()
            items = []
            while not self.peek("]"):
                items.append(self.value())
                if self.peek(","):
                    self.next()
            self.next(value="]")
            return items
        self.i += 1
        if kind == "string":
            return json.loads(tok)
        if kind == "number":
            if tok in ("inf", "-inf", "nan") or any(c in tok for c in ".eEn"):
                return float(tok)
            return int(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "null":
            return None
        if tok in ("inf", "nan"):
            return float(tok)
        raise IRError(f"line {self.lineno}: bad value {tok!r}")


def parse_graph(text: str, initial: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse text from `print_graph`. Data of large consts (and of params etc., optionally)
    comes from `initial`."""
    g = Graph()
    values: dict[str, Value] = {}
    section = None
    lines = text.splitlines()
    header = next((i for i, l in enumerate(lines) if l.strip()), None)
    if header is None:
        raise IRError("empty IR text")
    m = re.match(r"\s*program\s+(\S+)\s*\{\s*$", lines[header])
    if not m:
        raise IRError(f"line {header + 1}: expected 'program NAME {{'")
    g.name = m.group(1)

    def lookup(name: str, lineno: int) -> Value:
        if name not in values:
            raise IRError(f"line {lineno}: %{name} used before it is defined")
        return values[name]

    for lineno, raw in enumerate(lines[header + 1:], start=header + 2):
        line = raw.strip()
        if not line:
            continue
        if line == "}":
            break
        if line.endswith(":") and line[:-1] in SECTIONS:
            section = line[:-1]
            continue
        t = _Tokens(line, lineno)
        first_kind, first = t.toks[0]
        if first_kind == "word" and first in ("input", "param", "buffer", "state", "const"):
            t.next()
            name = t.name()
            t.next(value=":")
            ty = t.type()
            if first == "input":
                v = g.add_input(name, ty)
            else:
                trainable = False
                data = (initial or {}).get(name)
                if t.peek("trainable"):
                    t.next()
                    trainable = True
                if first == "const":
                    t.next(value="=")
                    if t.peek("<"):
                        t.i = len(t.toks)  # "<N values>": data must come from `initial`
                        if data is None:
                            raise IRError(f"line {lineno}: large const %{name} needs its data in `initial`")
                    else:
                        data = np.asarray(t.value(), dtype=numpy_dtype(ty.dtype)).reshape(ty.shape)
                v = g.add_source(name, first, data, ty, trainable=trainable)
            values[name] = v
        elif first_kind == "word" and first == "alias":
            t.next()
            alias = t.name()
            t.next(value="=")
            g.aliases[alias] = t.name()
        elif first_kind == "word" and first == "output":
            t.next()
            key = t.next("word")
            t.next(value="=")
            g.outputs[key] = lookup(t.name(), lineno)
        elif first_kind == "word" and first == "assign":
            t.next()
            target = t.name()
            t.next("arrow")
            g.assigns[target] = lookup(t.name(), lineno)
        elif first_kind == "name":
            if section is None:
                raise IRError(f"line {lineno}: node outside a section")
            outs: list[tuple[str, TensorType]] = []
            while True:
                name = t.name()
                t.next(value=":")
                outs.append((name, t.type()))
                if t.peek(","):
                    t.next()
                    continue
                break
            t.next(value="=")
            op = t.next("word")
            t.next(value="(")
            inputs = []
            while not t.peek(")"):
                inputs.append(lookup(t.name(), lineno))
                if t.peek(","):
                    t.next()
            t.next(value=")")
            attrs = {}
            if t.peek("{"):
                t.next()
                while not t.peek("}"):
                    key = t.next("word")
                    t.next(value="=")
                    attrs[key] = t.value()
                    if t.peek(","):
                        t.next()
                t.next(value="}")
            kernel = None
            if t.peek("kernel"):
                t.next()
                kernel = json.loads(t.next("string"))
            source = None
            if t.peek("@"):
                t.next()
                source = json.loads(t.next("string"))
            if not t.done():
                raise IRError(f"line {lineno}: unexpected {t.toks[t.i][1]!r} after node")
            node = Node(op, inputs, [], attrs, section, source, kernel)
            for name, ty in outs:
                if name in values:
                    raise IRError(f"line {lineno}: %{name} defined twice")
                v = Value(name, ty, "activation", producer=node)
                node.outputs.append(v)
                values[name] = v
            g.nodes.append(node)
        else:
            raise IRError(f"line {lineno}: cannot parse {line!r}")
    return g

