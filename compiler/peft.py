"""Parameter-efficient fine-tuning specs: which parameters a program trains.

    Full()                         every parameter
    BiasOnly()                     every bias: conv/linear biases, norm shifts, 1-d params added to an output
                                   (never a norm scale, whatever arithmetic the model spells it with)
    LastK(k)                       the k parameterized layers nearest the output, with their biases and norm params
    Select(include=[..], exclude=[..])   glob patterns over parameter names (fnmatch; aliases of tied weights match too)
    Union(a, b, ..)                every parameter any of the specs selects
    FreezeEmbeddings(spec)         what `spec` selects minus every parameter an embedding op reads
                                   (token/position tables, and so a tied LM head)

Specs read the *graph*, not module types: an op declares which input slots hold a layer
weight, a bias or a norm parameter (`OpDef.param_roles`), and element-wise arithmetic is read
for what it computes (`param_roles` below: a vector param added to an activation is a bias, one
multiplying an activation normalised by its own RMS/std is a norm scale — HF RMSNorm arrives as
pow/mean/add/rsqrt/mul, Gemma's as `x_hat * (1 + w)` — and one multiplying any other activation
is a "scale", e.g. ConvNeXt's layer scale). So the same spec means the same thing for a
torch.export capture and an ONNX file. A spec that selects nothing, or a pattern that matches
no parameter, is a SpecError — never a silent no-op training run.

Subclass `Spec` (implement `select`) to add adapter-style specs later.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .errors import SpecError
from .ir import Graph, NameGen, Value
from .spec import Spec, _preview
from .ops.registry import get_op

__all__ = ["Spec", "Full", "BiasOnly", "LastK", "Select", "Union", "FreezeEmbeddings", "parse_spec",
           "param_roles", "layers", "embedding_params", "LoRA", "SSF", "IA3", "Channels"]

_NORM_OPS = ("batch_norm_train", "batch_norm_infer", "layer_norm")
_LAYOUT_OPS = ("cast", "reshape", "expand", "permute")  # carry a parameter's identity (dtype / layout only)
_ARITH_OPS = ("add", "sub", "mul", "div")


def _vector_shaped(v: Value) -> bool:
    """At most one dim > 1: [C], [C,1,1], [1], [] — a per-channel (or single) scale or shift."""
    return sum(d != 1 for d in v.type.shape) <= 1


@dataclass
class _Unit:
    """A norm or scale in the forward graph: the params it owns, the value it normalises or
    scales (`x`), the value it yields (`out`) and where it sits."""
    params: list[str]
    x: Value
    out: Value
    pos: int


class _Facts:
    """What the specs read off a forward graph (computed once per spec call)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.forward = [n for n in graph.nodes if n.section == "forward"]
        self.pos = {id(n): i for i, n in enumerate(self.forward)}
        self.users: dict[int, list] = {}
        for n in self.forward:
            for v in dict.fromkeys(n.inputs):  # a node reading a value twice uses it once
                self.users.setdefault(id(v), []).append(n)
        self.outputs = {id(v) for v in graph.outputs.values()}
        # static: computed from params/buffers/consts only; const_only: from consts only
        self.static: set[int] = {id(v) for v in graph.sources.values()}
        self.const_only: set[int] = {id(v) for v in graph.sources.values() if v.kind == "const"}
        for n in self.forward:
            if n.inputs and all(id(v) in self.static for v in n.inputs):
                self.static.update(id(v) for v in n.outputs)
            if n.inputs and all(id(v) in self.const_only for v in n.inputs):
                self.const_only.update(id(v) for v in n.outputs)

    # ---- values -----------------------------------------------------------------------------------
    def data(self, v: Value) -> bool:
        """Does `v` depend on the program's inputs (an activation, not a weight transform)?"""
        return id(v) not in self.static

    def uncast(self, v: Value) -> Value:
        while v.producer is not None and v.producer.op == "cast":
            v = v.producer.inputs[0]
        return v

    def param_through(self, v: Value, arithmetic: bool) -> Value | None:
        """The parameter `v` is, up to casts/reshapes (and, with `arithmetic`, up to adding or
        multiplying constants: Gemma's `1 + w`), or None."""
        for _ in range(16):
            if v.kind == "param":
                return v
            n = v.producer
            if n is None or n.section != "forward":
                return None
            if n.op in _LAYOUT_OPS:
                v = n.inputs[0]
            elif arithmetic and n.op in _ARITH_OPS and len(n.inputs) == 2:
                a, b = n.inputs
                if id(b) in self.const_only:
                    v = a
                elif id(a) in self.const_only:
                    v = b
                else:
                    return None
            else:
                return None
        return None

    def mean_square_root(self, f: Value, want: float) -> Value | None:
        """If `f` is (mean or sum over the last dim of x*x) ** want, up to an added epsilon,
        casts, reshapes and constant factors: that x (uncast). `want` is -0.5 for a factor that
        multiplies (rsqrt) and 0.5 for a divisor (sqrt)."""
        power = 1.0
        for _ in range(16):
            n = f.producer
            if n is None or n.section != "forward":
                return None
            if n.op in ("cast", "reshape", "expand"):
                f = n.inputs[0]
            elif n.op == "rsqrt":
                power, f = power * -0.5, n.inputs[0]
            elif n.op == "sqrt":
                power, f = power * 0.5, n.inputs[0]
            elif n.op == "pow_scalar":
                power, f = power * float(n.attrs.get("exponent", 1.0)), n.inputs[0]
            elif n.op in _ARITH_OPS and len(n.inputs) == 2:
                a, b = n.inputs
                if id(b) in self.const_only:  # + eps, * c, / c
                    f = a
                elif id(a) in self.const_only and n.op in ("add", "mul"):
                    f = b
                elif id(a) in self.const_only and n.op == "div":  # c / y
                    power, f = -power, b
                else:
                    return None
            elif n.op in ("mean", "sum"):
                x = n.inputs[0]
                if abs(power - want) > 1e-9 or n.attrs.get("dims") != [x.type.rank - 1]:
                    return None
                sq = self.uncast(x).producer
                if sq is None:
                    return None
                if sq.op == "pow_scalar" and float(sq.attrs.get("exponent", 0.0)) == 2.0:
                    return self.uncast(sq.inputs[0])
                if sq.op == "mul" and len(sq.inputs) == 2 and self.uncast(sq.inputs[0]) is self.uncast(sq.inputs[1]):
                    return self.uncast(sq.inputs[0])
                return None
            else:
                return None
        return None

    def normalised(self, v: Value) -> Value | None:
        """If `v` is x normalised by its own RMS/std over the last dim — x * rsqrt(mean(x^2) + eps)
        or x / sqrt(mean(x^2) + eps), x possibly centred (hand-written LayerNorm), up to casts —
        that x; else None."""
        n = self.uncast(v).producer
        if n is None or n.section != "forward" or n.op not in ("mul", "div") or len(n.inputs) != 2:
            return None
        a, b = n.inputs
        pairs = [(a, b, -0.5), (b, a, -0.5)] if n.op == "mul" else [(a, b, 0.5)]
        for x, f, want in pairs:
            if self.data(x) and self.mean_square_root(f, want) is self.uncast(x):
                return self.uncast(x)
        return None

    # ---- roles --------------------------------------------------------------------------------------
    def biases(self, node) -> list[Value]:
        """The parameters an `add` node adds to an activation as a bias: vector-shaped, up to casts
        and reshapes. `w + 1` (a constant, not an activation) transforms w; it is no bias."""
        if node.op != "add" or len(node.inputs) != 2:
            return []
        out = []
        for v, other in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
            p = self.param_through(v, arithmetic=False)
            if p is not None and p.type.rank >= 1 and _vector_shaped(p) and id(other) not in self.const_only:
                out.append(p)
        return out

    def scale(self, node) -> tuple[Value, str, Value] | None:
        """(param, "norm" | "scale", the activation it multiplies) for a `mul` node that multiplies
        an activation by a vector-shaped param (up to casts, reshapes and `1 + w`): "norm" when the
        activation is normalised by its own RMS/std over the last dim (RMSNorm, hand-written
        LayerNorm), "scale" otherwise (e.g. ConvNeXt's layer scale)."""
        if node.op != "mul" or len(node.inputs) != 2:
            return None
        for pv, other in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
            p = self.param_through(pv, arithmetic=True)
            if p is not None and _vector_shaped(p) and self.data(other):
                return p, ("norm" if self.normalised(other) is not None else "scale"), other
        return None

    def roles(self) -> dict[str, set[str]]:
        roles: dict[str, set[str]] = {p.name: set() for p in self.graph.params()}
        for node in self.forward:
            if node.op == "add":
                for p in self.biases(node):
                    roles[p.name].add("bias")
                continue
            if node.op == "mul":
                hit = self.scale(node)
                if hit is not None:
                    roles[hit[0].name].add(hit[1])
                continue
            for slot, role in get_op(node.op).param_roles.items():
                if slot < len(node.inputs) and node.inputs[slot].kind == "param":
                    roles[node.inputs[slot].name].add(role)
        return roles

    # ---- layers -------------------------------------------------------------------------------------
    @staticmethod
    def weight_of(node) -> str | None:
        """The weight a layer node reads (conv, linear, matmul, embedding), else None."""
        if node.op == "add":
            return None
        for s, r in get_op(node.op).param_roles.items():
            if r == "weight" and s < len(node.inputs) and node.inputs[s].kind == "param":
                return node.inputs[s].name
        return None

    def units(self) -> tuple[list[_Unit], list[tuple[int, str]]]:
        """The norms/scales of the forward graph, and the remaining added biases (position, name)."""
        units: list[_Unit] = []
        merged: set[int] = set()  # add nodes whose bias belongs to a unit (w * x_hat + b)
        for pos, node in enumerate(self.forward):
            if node.op in _NORM_OPS:
                units.append(_Unit([v.name for v in node.inputs if v.kind == "param"],
                                   node.inputs[0], node.outputs[0], pos))
            elif node.op == "mul" and (hit := self.scale(node)) is not None:
                p, _, x = hit
                unit = _Unit([p.name], self.normalised(x) or x, node.outputs[0], pos)
                users = self.users.get(id(unit.out), [])
                if len(users) == 1 and (shift := self.biases(users[0])) and id(unit.out) not in self.outputs:
                    unit.params += [b.name for b in shift if b.name != p.name]
                    unit.out = users[0].outputs[0]
                    merged.add(id(users[0]))
                units.append(unit)
        biases = [(pos, p.name) for pos, node in enumerate(self.forward)
                  if node.op == "add" and id(node) not in merged for p in self.biases(node)]
        return units, biases

    def passes_through(self, node) -> Value | None:
        """The one activation a node transforms (cast, reshape, activation functions, dropout,
        adding a bias, scaling by a weight transform ...), or None when it combines activations."""
        data = [v for v in dict.fromkeys(node.inputs) if self.data(v)]
        return data[0] if len(data) == 1 else None

    def producing_layer(self, x: Value) -> str | None:
        """The weight of the layer whose output `x` is, up to single-activation ops (bias adds,
        activation functions, dropout, layout); embeddings do not count (a lookup is not a
        computation a norm could belong to)."""
        for _ in range(64):
            n = x.producer
            if n is None or n.section != "forward":
                return None
            w = self.weight_of(n)
            if w is not None:
                return None if n.op == "embedding" else w
            if n.op in _NORM_OPS or self.normalised(x) is not None:
                return None
            x = self.passes_through(n)
            if x is None:
                return None
        return None

    def follows_norm(self, x: Value, norm_outs: set[int]) -> bool:
        """Is `x` a residual sum one of whose terms is a norm's output (post-norm, BERT)?"""
        n = x.producer
        for _ in range(64):
            if n is None or n.section != "forward" or self.weight_of(n) is not None:
                return False
            inner = self.passes_through(n)
            if inner is None:
                break
            n = inner.producer
        if n is None or n.op not in ("add", "sub"):
            return False
        for term in n.inputs:
            for _ in range(64):
                if id(term) in norm_outs or self.normalised(term) is not None:
                    return True
                t = term.producer
                if t is None or t.section != "forward" or self.weight_of(t) is not None:
                    break
                term = self.passes_through(t)
                if term is None:
                    break
        return False

    def consuming_layers(self, out: Value) -> list | None:
        """The layer nodes `out` feeds when it feeds nothing else (through single-activation ops):
        a pre-norm (LLaMA's input_layernorm -> q/k/v, GPT-2's ln_f -> the head). None when some
        path merges it with another activation (a residual add, attention) or reaches an output."""
        found, todo, seen = [], [out], set()
        while todo:
            v = todo.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            if id(v) in self.outputs:
                return None
            for u in self.users.get(id(v), []):
                if self.weight_of(u) is not None:
                    slots = [i for i, w in enumerate(u.inputs) if w is v]
                    roles = get_op(u.op).param_roles
                    if any(roles.get(i) == "weight" for i in slots):
                        return None
                    found.append(u)
                elif self.passes_through(u) is v:
                    todo.extend(u.outputs)
                else:
                    return None
        return found or None


def param_roles(graph: Graph) -> dict[str, set[str]]:
    """param name -> roles it plays somewhere in the forward graph: "weight", "bias", "norm",
    "scale".

    Ops declare their slots (`OpDef.param_roles`: conv/linear/matmul/embedding weights and biases,
    BatchNorm/LayerNorm scales and shifts). Element-wise arithmetic is read for what it computes:
    a vector-shaped param added to an activation is a bias (ONNX MatMul+Add); one multiplying an
    activation is "norm" when that activation is normalised by its own RMS/std over the last dim
    (HF RMSNorm `w * (x * rsqrt(mean(x^2) + eps))`, Gemma's `x_hat * (1 + w)`, hand-written
    LayerNorm), else "scale" (ConvNeXt's layer scale). `1 + w`, `w.float()` and `w.view(..)` are
    w itself, not biases."""
    return _Facts(graph).roles()


def layers(graph: Graph) -> list[list[str]]:
    """Parameterized layers in forward order, each as [weight, bias..., attached norm/scale params...].

    A layer is an op reading a parameter as its weight (conv, linear, matmul, embedding); it is
    ordered by its weight's *last* use, so a tied embedding/LM-head weight counts where the head
    is. A norm (BatchNorm, LayerNorm, RMSNorm in any spelling) or scale attaches to the layer it
    belongs to:
      * the layer whose output it normalises (conv -> BN, q_proj -> q_norm, pwconv -> layer scale);
      * else, when its output feeds only layers (a pre-norm: LLaMA's input_layernorm -> q/k/v,
        the final norm -> the LM head), the first of those layers;
      * else (post-norm residual sums, BERT) the closest layer before it, as added biases do."""
    facts = _Facts(graph)
    entries: list[tuple[int, str, list[str]]] = []  # (position, weight, owned params)
    for pos, node in enumerate(facts.forward):
        weight = facts.weight_of(node)
        if weight is not None:
            owned = [node.inputs[s].name for s, r in get_op(node.op).param_roles.items()
                     if r == "bias" and s < len(node.inputs) and node.inputs[s].kind == "param"]
            entries.append((pos, weight, owned))
    # one entry per weight, at its last use
    last: dict[str, tuple[int, list[str]]] = {}
    for pos, weight, owned in entries:
        prev = last.get(weight, (pos, []))[1]
        last[weight] = (pos, list(dict.fromkeys(prev + owned)))
    ordered = sorted(last.items(), key=lambda kv: kv[1][0])
    if not ordered:
        return []
    groups = [[w] + owned for w, (_, owned) in ordered]
    starts = [p for _, (p, _) in ordered]
    index = {w: i for i, (w, _) in enumerate(ordered)}

    def closest_before(pos: int) -> int:
        return max((i for i, s in enumerate(starts) if s < pos), default=0)

    units, biases = facts.units()
    norm_outs = {id(u.out) for u in units}
    placed: list[tuple[int, int, list[str]]] = []  # (position, group, params)
    for u in units:
        owner = facts.producing_layer(u.x)
        if owner is None and not facts.follows_norm(u.x, norm_outs):
            consumers = facts.consuming_layers(u.out)
            if consumers:
                owner = facts.weight_of(min(consumers, key=lambda n: facts.pos[id(n)]))
        placed.append((u.pos, index[owner] if owner in index else closest_before(u.pos), u.params))
    placed += [(pos, closest_before(pos), [name]) for pos, name in biases]
    placed.sort(key=lambda t: t[0])
    taken = {name for g in groups for name in g}
    for _, idx, names in placed:
        for name in names:
            if name not in taken:
                groups[idx].append(name)
                taken.add(name)
    return groups


def embedding_params(graph: Graph) -> list[str]:
    """Parameters an `embedding` op reads (token and position tables; a tied LM head's weight is
    one of them)."""
    out = []
    for node in graph.nodes:
        if node.section == "forward" and node.op == "embedding":
            for s, r in get_op(node.op).param_roles.items():
                if r == "weight" and s < len(node.inputs) and node.inputs[s].kind == "param":
                    out.append(node.inputs[s].name)
    return list(dict.fromkeys(out))


@dataclass
class Full(Spec):
    def select(self, graph):
        return [p.name for p in graph.params()]


@dataclass
class BiasOnly(Spec):
    def select(self, graph):
        roles = param_roles(graph)
        return [name for name, r in roles.items() if "bias" in r and "weight" not in r]


@dataclass
class LastK(Spec):
    """The k layers nearest the output (`layers`), each with its biases and the norm/scale params
    that belong to it: on a pre-norm decoder (GPT-2, LLaMA, Gemma, Qwen) LastK(1) is the LM head
    and the final norm; a tied embedding/LM-head weight counts as the head (see FreezeEmbeddings)."""

    k: int = 1

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise SpecError(f"LastK(k): k must be a positive integer, got {self.k!r}")

    def select(self, graph):
        groups = layers(graph)
        if self.k > len(groups):
            raise SpecError(f"LastK({self.k}): '{graph.name}' has only {len(groups)} parameterized layers")
        return [name for group in groups[-self.k:] for name in group]


@dataclass
class Select(Spec):
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.include, str):
            self.include = [self.include]
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]

    def select(self, graph):
        canonical = [p.name for p in graph.params()]
        # every name a user may know a param by: its own, and aliases of tied weights
        known = {n: n for n in canonical}
        known.update({alias: target for alias, target in graph.aliases.items() if target in known})

        def matches(pattern):
            return {known[n] for n in known if fnmatch.fnmatchcase(n, pattern)}

        chosen: set[str] = set()
        for pattern in self.include:
            hit = matches(pattern)
            if not hit:
                raise SpecError(f"Select: include pattern {pattern!r} matches no parameter of '{graph.name}' "
                                f"(parameters: {_preview(canonical)})")
            chosen |= hit
        for pattern in self.exclude:
            hit = matches(pattern)
            if not hit:
                raise SpecError(f"Select: exclude pattern {pattern!r} matches no parameter of '{graph.name}' "
                                f"(parameters: {_preview(canonical)})")
            chosen -= hit
        return [n for n in canonical if n in chosen]


class Union(Spec):
    """Every parameter any of `specs` selects, e.g. PockEngine-style sparse updates:
    `Union(BiasOnly(), LastK(2))` = all biases + the weights of the last two layers."""

    def __init__(self, *specs: Spec):
        if not specs or not all(isinstance(s, Spec) for s in specs):
            raise SpecError(f"Union needs one or more peft specs, got {specs!r}")
        self.specs = list(specs)

    def select(self, graph):
        chosen: set[str] = set()
        for s in self.specs:
            chosen |= set(s.select(graph))
        return [p.name for p in graph.params() if p.name in chosen]

    def adapters(self):
        return [a for s in self.specs for a in s.adapters()]

    def __repr__(self):
        return " + ".join(repr(s) for s in self.specs)


@dataclass
class FreezeEmbeddings(Spec):
    """What `spec` selects, minus every parameter an `embedding` op reads: token and position
    tables, and so a tied embedding/LM-head weight (GPT-2, Gemma, LLaMA with
    tie_word_embeddings), which LastK would otherwise train as the last layer — dragging
    backprop back to the first op. `FreezeEmbeddings(LastK(1))` on a tied decoder trains the
    final norm only; wrap a Union to freeze the embeddings of all its members
    (`FreezeEmbeddings(Union(BiasOnly(), LastK(2)))`). A model without embeddings is a SpecError."""
    spec: Spec

    def __post_init__(self):
        if not isinstance(self.spec, Spec):
            raise SpecError(f"FreezeEmbeddings needs a peft spec, got {self.spec!r}")

    def select(self, graph):
        frozen = set(embedding_params(graph))
        if not frozen:
            raise SpecError(f"{self!r}: '{graph.name}' has no embedding to freeze")
        return [n for n in self.spec.select(graph) if n not in frozen]

    def adapters(self):
        return self.spec.adapters()


def parse_spec(text: str) -> Spec:
    """A spec from its command-line form: 'full', 'bias-only', 'last-k:N', 'select:GLOB[,GLOB]'
    (prefix a glob with ! to exclude), 'freeze-embeddings:SPEC' (SPEC in one of these forms), an
    adapter 'lora:r=8,alpha=16,targets=q_proj|v_proj' ('dora:...' = lora with use_dora; 'ssf:...',
    'ia3:...', 'channels:...' likewise: KEY=VALUE with the spec's own argument names, lists
    separated by |, a bare KEY for a true flag such as dora or rslora), and several of these
    joined by + for their Union ('lora:r=4,targets=*attn*+bias-only')."""
    parts = [p for p in text.split("+") if p.strip()]
    if len(parts) > 1:
        return Union(*(parse_spec(p) for p in parts))
    text = text.strip()
    kind, _, arg = text.partition(":")
    kind = kind.replace("_", "-").lower()
    if kind in _ADAPTER_KINDS:
        return _parse_adapter(kind, arg)
    if kind in ("freeze-embeddings", "freeze-embedding", "freeze-emb"):
        if not arg:
            raise SpecError("freeze-embeddings needs a spec, e.g. freeze-embeddings:last-k:2")
        return FreezeEmbeddings(parse_spec(arg))
    if kind == "full":
        return Full()
    if kind in ("bias-only", "bias"):
        return BiasOnly()
    if kind in ("last-k", "lastk", "last"):
        try:
            return LastK(int(arg or 1))
        except ValueError:
            raise SpecError(f"last-k needs an integer, got {arg!r}") from None
    if kind == "select":
        globs = [g for g in arg.split(",") if g]
        if not globs:
            raise SpecError("select needs patterns, e.g. select:classifier.*,!*.bias")
        include = [g for g in globs if not g.startswith("!")] or ["*"]
        return Select(include=include, exclude=[g[1:] for g in globs if g.startswith("!")])
    raise SpecError(f"unknown spec {text!r}: use full, bias-only, last-k:N, select:GLOBS, freeze-embeddings:SPEC, "
                    f"{', '.join(k + ':...' for k in _ADAPTER_KINDS)}, or several joined by +")


# command-line adapter kind -> (spec class name in compiler/adapters, fixed arguments)
_ADAPTER_KINDS = {"lora": ("LoRA", {}), "dora": ("LoRA", {"use_dora": True}), "ssf": ("SSF", {}),
                  "ia3": ("IA3", {}), "channels": ("Channels", {})}
_KEY_ALIASES = {"target": "targets", "dora": "use_dora", "rslora": "use_rslora", "lora-alpha": "alpha",
                "lora-dropout": "dropout", "feedforward-modules": "feedforward", "rank": "r"}


def _parse_value(cls_name: str, key: str, default, value: str):
    try:
        if key == "channels":  # 0-31|40|48-55
            out = []
            for piece in value.split("|"):
                lo, dash, hi = piece.partition("-")
                out += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
            return out
        if isinstance(default, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float) or key in ("fraction", "alpha", "dropout"):
            return float(value)
        if isinstance(default, (list, tuple)):
            return [v for v in value.split("|") if v]
        return value
    except ValueError:
        raise SpecError(f"{cls_name}: {key}={value!r} is not a valid value") from None


def _parse_adapter(kind: str, arg: str) -> Spec:
    import dataclasses
    from . import adapters
    cls_name, fixed = _ADAPTER_KINDS[kind]
    cls = getattr(adapters, cls_name, None)
    if cls is None:
        raise SpecError(f"{kind}: this edgetune has no {cls_name} adapter")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = dict(fixed)
    for item in (i for i in arg.split(",") if i.strip()):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        key = _KEY_ALIASES.get(key, key).replace("-", "_")
        if key not in fields:
            known = ", ".join(n for n in fields if n not in ("calibration",))
            raise SpecError(f"{kind}: unknown option {key!r} (options: {known})")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else \
            (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if not eq:
            if not isinstance(default, bool):
                raise SpecError(f"{kind}: option {key!r} needs a value ({key}=...)")
            kwargs[key] = True
        else:
            kwargs[key] = _parse_value(cls_name, key, default, value.strip())
    return cls(**kwargs)


# adapter specs (graph rewrites) live in compiler/adapters/; they subclass Spec, so they come last
from .adapters import LoRA, SSF, IA3, Channels  # noqa: E402
