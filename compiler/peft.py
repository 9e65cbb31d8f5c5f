"""Parameter-efficient fine-tuning specs: which parameters a program trains.

    Full()                         every parameter
    BiasOnly()                     every bias: conv/linear biases, norm shifts, 1-d params added to an output
    LastK(k)                       the k parameterized layers nearest the output, with their biases and norm params
    Select(include=[..], exclude=[..])   glob patterns over parameter names (fnmatch; aliases of tied weights match too)

Specs read the *graph*, not module types: an op declares which input slots hold a layer
weight, a bias or a norm parameter (`OpDef.param_roles`), so the same spec means the same
thing for a torch.export capture and an ONNX file. A spec that selects nothing, or a pattern
that matches no parameter, is a SpecError — never a silent no-op training run.

Subclass `Spec` (implement `select`) to add adapter-style specs later.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .errors import SpecError
from .ir import Graph, Value
from .ops.registry import get_op

_NORM_OPS = ("batch_norm_train", "batch_norm_infer", "layer_norm")


def param_roles(graph: Graph) -> dict[str, set[str]]:
    """param name -> roles it plays somewhere in the forward graph ("weight", "bias", "norm")."""
    roles: dict[str, set[str]] = {p.name: set() for p in graph.params()}
    for node in graph.nodes:
        if node.section != "forward":
            continue
        if node.op == "add":  # a 1-d parameter added to an activation is a bias (e.g. ONNX MatMul+Add)
            for v in node.inputs:
                if v.kind == "param" and v.type.rank == 1:
                    roles[v.name].add("bias")
            continue
        for slot, role in get_op(node.op).param_roles.items():
            if slot < len(node.inputs) and node.inputs[slot].kind == "param":
                roles[node.inputs[slot].name].add(role)
    return roles


def layers(graph: Graph) -> list[list[str]]:
    """Parameterized layers in forward order, each as [weight, bias..., attached norm params...].

    A layer is an op reading a parameter as its weight (conv, linear, matmul, embedding); it is
    ordered by its weight's *last* use, so a tied embedding/LM-head weight counts where the head
    is. Norm parameters and added biases attach to the closest layer before them."""
    entries: list[tuple[int, str, list[str]]] = []  # (position, weight, owned params)
    position_of: dict[str, int] = {}
    pending_norm: list[tuple[int, str]] = []
    forward = [n for n in graph.nodes if n.section == "forward"]
    for pos, node in enumerate(forward):
        op = get_op(node.op)
        weight = next((node.inputs[s].name for s, r in op.param_roles.items()
                       if r == "weight" and s < len(node.inputs) and node.inputs[s].kind == "param"), None)
        if weight is not None and node.op != "add":
            owned = [node.inputs[s].name for s, r in op.param_roles.items()
                     if r == "bias" and s < len(node.inputs) and node.inputs[s].kind == "param"]
            position_of[weight] = pos
            entries.append((pos, weight, owned))
            continue
        for v in node.inputs:
            if v.kind == "param" and (node.op in _NORM_OPS or node.op == "add" and v.type.rank == 1):
                pending_norm.append((pos, v.name))
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
    for pos, name in pending_norm:
        idx = max((i for i, s in enumerate(starts) if s < pos), default=0)
        if not any(name in g for g in groups):
            groups[idx].append(name)
    return groups


class Spec:
    """Base class of fine-tuning specs. `select` returns the names of trainable params."""

    def select(self, graph: Graph) -> list[str]:
        raise NotImplementedError

    def apply(self, graph: Graph) -> list[Value]:
        names = self.select(graph)
        if not names:
            raise SpecError(f"{self!r} selects no parameter of '{graph.name}' "
                            f"({len(graph.params())} parameters: {_preview([p.name for p in graph.params()])})")
        chosen = set(names)
        for p in graph.params():
            p.trainable = p.name in chosen
        return [p for p in graph.params() if p.trainable]


def _preview(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


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

    def __repr__(self):
        return " + ".join(repr(s) for s in self.specs)


def parse_spec(text: str) -> Spec:
    """A spec from its command-line form: 'full', 'bias-only', 'last-k:N', 'select:GLOB[,GLOB]'
    (prefix a glob with ! to exclude)."""
    kind, _, arg = text.partition(":")
    kind = kind.replace("_", "-").lower()
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
    raise SpecError(f"unknown spec {text!r}: use full, bias-only, last-k:N or select:GLOBS")
