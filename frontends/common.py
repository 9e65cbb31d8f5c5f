"""Helpers the frontends share. A frontend turns a foreign model into the compiler's
`ImportedModel` (compiler/program.py): forward IR, nothing else crosses the boundary.
"""

from __future__ import annotations

from ..compiler.program import ImportedModel  # noqa: F401  (re-exported for the frontends)


class Emitter:
    """What both importers share: `emit`/`emit1` through `self.b` (a Builder), tagging each new
    node with the source location of the foreign node being imported (`self.node`), which
    `source_of` (per frontend) turns into "file.py:LINE" or an ONNX node name."""

    b = None
    node = None

    def source_of(self, node):
        raise NotImplementedError

    @property
    def source(self):
        return self.source_of(self.node) if self.node is not None else None

    def emit(self, op, inputs, attrs=None):
        return self.b.emit(op, inputs, attrs, source=self.source)

    def emit1(self, op, inputs, attrs=None):
        return self.b.emit1(op, inputs, attrs, source=self.source)


def resolve_shape(shape, numel: int, where: str) -> list[int]:
    """Resolve one -1 in a reshape target."""
    from ..compiler.errors import ShapeError
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise ShapeError(f"{where}: more than one -1 in shape {shape}")
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if known == 0 or numel % known:
            raise ShapeError(f"{where}: cannot infer -1 in {shape} for {numel} elements")
        shape[shape.index(-1)] = numel // known
    return shape


def norm_dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


# ---- lowerings both frontends share; `im` is an importer with emit1(op, inputs, attrs) ----------
def lower_reshape(im, x, shape):
    """reshape to an explicit shape; no node when the shape already matches."""
    shape = [int(s) for s in shape]
    if list(x.shape) == shape:
        return x
    return im.emit1("reshape", [x], {"shape": shape})


def lower_matmul(im, a, b):
    """numpy matmul semantics, 1-d operands included, on top of the rank >= 2 `matmul` op."""
    if a.type.rank == 1:
        y = lower_matmul(im, im.emit1("reshape", [a], {"shape": [1, a.shape[0]]}), b)
        return im.emit1("reshape", [y], {"shape": list(y.shape[:-2]) + [y.shape[-1]]})
    if b.type.rank == 1:
        y = lower_matmul(im, a, im.emit1("reshape", [b], {"shape": [b.shape[0], 1]}))
        return im.emit1("reshape", [y], {"shape": list(y.shape[:-1])})
    return im.emit1("matmul", [a, b])


def lower_slice(im, x, dim, start, end, step=1):
    """Python-style slice (None and negative bounds, clamping) -> an explicit `slice` node."""
    size = x.shape[dim]
    start = 0 if start is None else (start + size if start < 0 else start)
    end = size if end is None else (end + size if end < 0 else end)
    start, end = max(0, min(start, size)), max(0, min(end, size))
    if (start, end, step) == (0, size, 1):
        return x
    return im.emit1("slice", [x], {"dim": dim, "start": start, "end": max(end, start), "step": int(step)})


def handler_table():
    """A fresh op-handler table and the decorator that fills it (`@handles("Conv", ...)`)."""
    table: dict = {}

    def handles(*names):
        def deco(fn):
            for n in names:
                table[n] = fn
            return fn
        return deco

    return table, handles
