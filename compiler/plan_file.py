"""The plan file (.etp): a compiled program, memory-planned for a backend, as FlatBuffers.

Schema: csrc/schema/plan.fbs (the Python builders in compiler/generated/plan_schema/ are
generated from it by csrc/schema/generate.py). File layout:

    [FlatBuffer, file identifier "ETPL"] [u32 LE CRC-32 of the FlatBuffer] [b"ETCK"]

The CRC footer lets the loader tell a damaged file (a flipped bit in the weights is valid
FlatBuffers) from a good one before trusting any byte of it.

`build_plan(program, backend)` plans memory (asking the backend's target description for kernel
workspaces, compiler/target.py) and
returns the bytes; `write_plan` writes them atomically. `read_plan_header` is a pure-Python
reader of the high-level fields, for tools and tests; `read_export` gives back the adapters'
export table (compiler/adapters/export.py) a plan carries, so a Session loaded from a plan file
exports what one built from the Program does (and edgetune-train --adapter-out the same files).
"""

from __future__ import annotations

import json
import struct
import zlib

import flatbuffers
import numpy as np

from . import __version__
from .generated.plan_schema import Attr as fb_attr
from .generated.plan_schema import Binding as fb_binding
from .generated.plan_schema import Copy as fb_copy
from .generated.plan_schema import Export as fb_export
from .generated.plan_schema import ExportStep as fb_export_step
from .generated.plan_schema import ExportTensor as fb_export_tensor
from .generated.plan_schema import Node as fb_node
from .generated.plan_schema import Plan as fb_plan
from .generated.plan_schema import Tensor as fb_tensor
from .generated.plan_schema.AttrKind import AttrKind
from .generated.plan_schema.Region import Region
from .generated.plan_schema.Section import Section
from .errors import PlanError
from .files import write_bytes_atomic as write_file_atomic
from .ir import DTYPES, Value
from .target import target_for
from .analysis.memory_plan import ALIGNMENT, MemoryPlan, check_plan, plan_memory

FORMAT_VERSION = 1
FILE_IDENTIFIER = b"ETPL"
FOOTER_MAGIC = b"ETCK"
FOOTER = struct.Struct("<I4s")

_DTYPE_CODE = {name: i for i, name in enumerate(DTYPES)}  # same order as the schema's DType
_REGION = {"persistent": Region.persistent, "arena": Region.arena, "input": Region.input}
_SECTION = {"forward": Section.forward, "loss": Section.loss, "backward": Section.backward, "update": Section.update}


def plan_program(program, backend="cpu") -> MemoryPlan:
    """The memory plan of `program` for `backend` (a name or a compiler.target.Target), with the
    backend's own kernel workspace sizes, so that planner and runtime agree to the byte."""
    target = target_for(backend, exact=True)
    plan = plan_memory(program.graph, target.node_workspace())
    check_plan(program.graph, plan)
    return plan


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _attr_value(name, v, where):
    """IR attr -> (kind, payload). Bools are ints; None is omitted by the caller."""
    if isinstance(v, (bool, np.bool_, int, np.integer)):
        return AttrKind.int_, int(v)
    if isinstance(v, (float, np.floating)):
        return AttrKind.float_, float(v)
    if isinstance(v, str):
        return AttrKind.string_, v
    if isinstance(v, (list, tuple)):
        if any(isinstance(e, (list, tuple, dict, str)) or e is None for e in v):
            raise PlanError(f"{where}: attribute '{name}'={v!r} is not a flat list of numbers")
        if any(isinstance(e, (float, np.floating)) for e in v):
            return AttrKind.floats, [float(e) for e in v]
        return AttrKind.ints, [int(e) for e in v]
    raise PlanError(f"{where}: attribute '{name}' has unsupported type {type(v).__name__}")


class _Writer:
    def __init__(self, size_hint: int):
        self.b = flatbuffers.Builder(size_hint)

    def strings(self, items: list[str]) -> int:
        offs = [self.b.CreateString(s) for s in items]
        return self.offsets(offs)

    def offsets(self, offs: list[int]) -> int:
        self.b.StartVector(4, len(offs), 4)
        for o in reversed(offs):
            self.b.PrependUOffsetTRelative(o)
        return self.b.EndVector()

    def scalars(self, items, prepend, size: int) -> int:
        self.b.StartVector(size, len(items), size)
        for x in reversed(items):
            prepend(x)
        return self.b.EndVector()

    def longs(self, items) -> int:
        return self.scalars([int(x) for x in items], self.b.PrependInt64, 8)

    def uints(self, items) -> int:
        return self.scalars([int(x) for x in items], self.b.PrependUint32, 4)

    def doubles(self, items) -> int:
        return self.scalars([float(x) for x in items], self.b.PrependFloat64, 8)

    def aligned_bytes(self, data: bytes, alignment: int) -> int:
        b = self.b
        b.StartVector(1, len(data), alignment)
        b.head = b.head - len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        return b.EndVector()

    def bindings(self, items: list[tuple[str, int]]) -> int:
        offs = []
        for name, index in items:
            n = self.b.CreateString(name)
            fb_binding.BindingStart(self.b)
            fb_binding.BindingAddName(self.b, n)
            fb_binding.BindingAddTensor(self.b, index)
            offs.append(fb_binding.BindingEnd(self.b))
        return self.offsets(offs)


def _json_text(config: dict) -> str:
    """A config as the adapter's .json file holds it (compiler/adapters/export.py adapter_files):
    edgetune-train writes this text verbatim, so both give byte-identical files."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _export_tensors(w: _Writer, recipes: dict) -> int:
    b = w.b
    offs = []
    for key, steps in recipes.items():
        step_offs = []
        for op, name, ints, f in steps:
            op_off = b.CreateString(op)
            name_off = b.CreateString(name) if name else None
            ints_off = w.longs(ints) if len(ints) else None
            fb_export_step.ExportStepStart(b)
            fb_export_step.ExportStepAddOp(b, op_off)
            if name_off is not None:
                fb_export_step.ExportStepAddName(b, name_off)
            if ints_off is not None:
                fb_export_step.ExportStepAddInts(b, ints_off)
            fb_export_step.ExportStepAddF(b, float(f))
            step_offs.append(fb_export_step.ExportStepEnd(b))
        steps_vec = w.offsets(step_offs)
        key_off = b.CreateString(key)
        fb_export_tensor.ExportTensorStart(b)
        fb_export_tensor.ExportTensorAddName(b, key_off)
        fb_export_tensor.ExportTensorAddSteps(b, steps_vec)
        offs.append(fb_export_tensor.ExportTensorEnd(b))
    return w.offsets(offs)


def _write_export(w: _Writer, table) -> int:
    """Plan.export (csrc/schema/plan.fbs) from an ExportTable."""
    b = w.b
    peft_config = b.CreateString(_json_text(table.peft_config)) if table.peft_config is not None else None
    peft_tensors = _export_tensors(w, table.peft_tensors)
    own_config = b.CreateString(_json_text(table.own_config))
    own_tensors = _export_tensors(w, table.own_tensors)
    merged = _export_tensors(w, table.merged)
    drop = w.strings(list(table.drop_when_merged))
    hidden = w.strings(list(table.hidden))
    unmergeable = w.strings(list(table.unmergeable))
    fb_export.ExportStart(b)
    if peft_config is not None:
        fb_export.ExportAddPeftConfig(b, peft_config)
    fb_export.ExportAddPeftTensors(b, peft_tensors)
    fb_export.ExportAddOwnConfig(b, own_config)
    fb_export.ExportAddOwnTensors(b, own_tensors)
    fb_export.ExportAddMerged(b, merged)
    fb_export.ExportAddDropWhenMerged(b, drop)
    fb_export.ExportAddHidden(b, hidden)
    fb_export.ExportAddUnmergeable(b, unmergeable)
    return fb_export.ExportEnd(b)


def model_label(program) -> str:
    """The plan's human label: model, spec, optimizer (edgetune-train --info prints it)."""
    return f"{program.graph.name} | {program.spec!r} | {program.optimizer!r}"


def build_plan(program, backend: str = "cpu", memory: MemoryPlan | None = None) -> bytes:
    g = program.graph
    memory = memory or plan_program(program, backend)

    # tensor table: inputs, sources, then node outputs in execution order
    values: list[Value] = list(g.inputs) + list(g.sources.values()) + [v for n in g.nodes for v in n.outputs]
    index = {id(v): i for i, v in enumerate(values)}

    image = bytearray(memory.persistent_bytes)
    for name, v in g.sources.items():
        p = memory.placements[id(v)]
        data = np.ascontiguousarray(g.initial[name]).tobytes()
        if len(data) != p.nbytes:
            raise PlanError(f"initial value of '{name}' has {len(data)} bytes, its type {v.type} needs {p.nbytes}")
        image[p.offset:p.offset + p.nbytes] = data

    w = _Writer(len(image) + 4096 * len(values) + 1024)
    b = w.b
    init_vec = w.aligned_bytes(bytes(image), ALIGNMENT)

    tensor_offs = []
    for v in values:
        p = memory.placements[id(v)]
        name = b.CreateString(v.name)
        shape = w.longs(v.shape)
        fb_tensor.TensorStart(b)
        fb_tensor.TensorAddName(b, name)
        fb_tensor.TensorAddDtype(b, _DTYPE_CODE[v.dtype])
        fb_tensor.TensorAddShape(b, shape)
        fb_tensor.TensorAddRegion(b, _REGION[p.region])
        fb_tensor.TensorAddOffset(b, p.offset)
        fb_tensor.TensorAddNbytes(b, p.nbytes)
        tensor_offs.append(fb_tensor.TensorEnd(b))
    tensors_vec = w.offsets(tensor_offs)

    node_offs = []
    for i, n in enumerate(g.nodes):
        where = f"node {i} ({n.op} -> %{n.outputs[0].name})"
        attr_offs = []
        for key in sorted(n.attrs):
            val = n.attrs[key]
            if val is None:
                continue
            kind, payload = _attr_value(key, val, where)
            key_off = b.CreateString(key)
            payload_off = None
            if kind == AttrKind.string_:
                payload_off = b.CreateString(payload)
            elif kind == AttrKind.ints:
                payload_off = w.longs(payload)
            elif kind == AttrKind.floats:
                payload_off = w.doubles(payload)
            fb_attr.AttrStart(b)
            fb_attr.AttrAddName(b, key_off)
            fb_attr.AttrAddKind(b, kind)
            if kind == AttrKind.int_:
                fb_attr.AttrAddI(b, payload)
            elif kind == AttrKind.float_:
                fb_attr.AttrAddF(b, payload)
            elif kind == AttrKind.string_:
                fb_attr.AttrAddS(b, payload_off)
            elif kind == AttrKind.ints:
                fb_attr.AttrAddInts(b, payload_off)
            else:
                fb_attr.AttrAddFloats(b, payload_off)
            attr_offs.append(fb_attr.AttrEnd(b))
        attrs_vec = w.offsets(attr_offs)
        op = b.CreateString(n.op)
        kernel = b.CreateString(n.kernel or n.op)  # the chosen variant, else the op's default kernel
        source = b.CreateString(n.source or "")
        ins = w.uints([index[id(v)] for v in n.inputs])
        outs = w.uints([index[id(v)] for v in n.outputs])
        ws_off, ws_bytes = memory.workspaces[i]
        fb_node.NodeStart(b)
        fb_node.NodeAddOp(b, op)
        fb_node.NodeAddKernel(b, kernel)
        fb_node.NodeAddInputs(b, ins)
        fb_node.NodeAddOutputs(b, outs)
        fb_node.NodeAddAttrs(b, attrs_vec)
        fb_node.NodeAddSection(b, _SECTION[n.section])
        fb_node.NodeAddWorkspaceOffset(b, ws_off)
        fb_node.NodeAddWorkspaceBytes(b, ws_bytes)
        fb_node.NodeAddSource(b, source)
        node_offs.append(fb_node.NodeEnd(b))
    nodes_vec = w.offsets(node_offs)

    step_inputs = program.model_inputs + [program.target_input]
    by_name = {v.name: v for v in g.inputs}
    inputs_vec = w.bindings([(name, index[id(by_name[name])]) for name in step_inputs])
    outputs_vec = w.bindings([(name, index[id(v)]) for name, v in g.outputs.items()])
    weights = [(n, index[id(v)]) for n, v in g.sources.items() if v.kind in ("param", "buffer")]
    weights += [(alias, index[id(g.sources[target])]) for alias, target in g.aliases.items()]
    weights_vec = w.bindings(weights)
    trainable_vec = w.strings(program.trainable_names)
    baked_names = sorted(g.baked | {a for a, t in g.aliases.items() if t in g.baked})
    baked_vec = w.strings(baked_names)
    state_vec = w.bindings([(n, index[id(v)]) for n, v in g.sources.items() if v.kind == "state"])
    copy_offs = []
    for new, state in memory.copies:
        fb_copy.CopyStart(b)
        fb_copy.CopyAddSrc(b, index[id(new)])
        fb_copy.CopyAddDst(b, index[id(state)])
        copy_offs.append(fb_copy.CopyEnd(b))
    copies_vec = w.offsets(copy_offs)
    producer = b.CreateString(f"edgetune {__version__}")
    label = b.CreateString(model_label(program))
    export = _write_export(w, g.adapters) if getattr(g, "adapters", None) is not None else None

    fb_plan.PlanStart(b)
    fb_plan.PlanAddFormatVersion(b, FORMAT_VERSION)
    fb_plan.PlanAddProducer(b, producer)
    fb_plan.PlanAddModel(b, label)
    fb_plan.PlanAddTensors(b, tensors_vec)
    fb_plan.PlanAddNodes(b, nodes_vec)
    fb_plan.PlanAddInputs(b, inputs_vec)
    fb_plan.PlanAddNumModelInputs(b, len(program.model_inputs))
    fb_plan.PlanAddOutputs(b, outputs_vec)
    fb_plan.PlanAddWeights(b, weights_vec)
    fb_plan.PlanAddTrainable(b, trainable_vec)
    fb_plan.PlanAddBaked(b, baked_vec)
    fb_plan.PlanAddOptimizerState(b, state_vec)
    fb_plan.PlanAddAssigns(b, copies_vec)
    fb_plan.PlanAddPersistentBytes(b, memory.persistent_bytes)
    fb_plan.PlanAddArenaBytes(b, memory.arena_bytes)
    fb_plan.PlanAddInputBytes(b, memory.input_bytes)
    fb_plan.PlanAddAlignment(b, ALIGNMENT)
    fb_plan.PlanAddPersistentInit(b, init_vec)
    if export is not None:
        fb_plan.PlanAddExport(b, export)
    root = fb_plan.PlanEnd(b)
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    body = bytes(b.Output())
    return body + FOOTER.pack(zlib.crc32(body), FOOTER_MAGIC)


def write_bytes_atomic(path, data: bytes) -> None:
    write_file_atomic(path, data, error=PlanError)


def write_plan(program, path, backend: str = "cpu", memory: MemoryPlan | None = None) -> int:
    data = build_plan(program, backend, memory)
    write_bytes_atomic(path, data)
    return len(data)


# ---------------------------------------------------------------------------------------------
# reading (Python side: tools and tests; the runtime has its own verified loader)
# ---------------------------------------------------------------------------------------------
def split_footer(data: bytes) -> bytes:
    """The FlatBuffer of a plan file after checking identifier and checksum (PlanError if not)."""
    if len(data) < 16 or data[4:8] != FILE_IDENTIFIER:
        raise PlanError("not an edgetune plan (file identifier is not 'ETPL')")
    crc, magic = FOOTER.unpack(data[-FOOTER.size:])
    if magic != FOOTER_MAGIC:
        raise PlanError("plan file is truncated (checksum footer missing)")
    body = data[:-FOOTER.size]
    if zlib.crc32(body) != crc:
        raise PlanError("plan file is corrupt (checksum mismatch)")
    return body


def read_plan_header(data: bytes) -> dict:
    """The plan's summary (no tensors or nodes). Python's FlatBuffers has no verifier: a buffer
    whose checksum matches but whose tables are damaged raises PlanError, not an IndexError."""
    body = split_footer(data)
    try:
        return _plan_header(fb_plan.Plan.GetRootAs(body, 0))
    except (IndexError, struct.error, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
        raise PlanError(f"plan file is damaged: its tables do not read ({type(e).__name__}: {e})") from None


def _plan_header(p) -> dict:
    def bindings(n, get):
        return [(get(i).Name().decode(), get(i).Tensor()) for i in range(n)]

    return {
        "format_version": p.FormatVersion(),
        "producer": (p.Producer() or b"").decode(),
        "model": (p.Model() or b"").decode(),
        "tensors": p.TensorsLength(),
        "nodes": p.NodesLength(),
        "inputs": bindings(p.InputsLength(), p.Inputs),
        "outputs": bindings(p.OutputsLength(), p.Outputs),
        "weights": bindings(p.WeightsLength(), p.Weights),
        "trainable": [p.Trainable(i).decode() for i in range(p.TrainableLength())],
        "baked": [p.Baked(i).decode() for i in range(p.BakedLength())],
        "persistent_bytes": p.PersistentBytes(),
        "arena_bytes": p.ArenaBytes(),
        "input_bytes": p.InputBytes(),
        "adapters": p.Export() is not None,  # an export table (edgetune-train --adapter-out works)
    }


def read_export(data: bytes):
    """The adapters' export table a plan carries (compiler/adapters/export.py ExportTable, its
    configs parsed back from JSON), or None for a plan without adapters. PlanError when the
    plan is damaged."""
    body = split_footer(data)
    try:
        e = fb_plan.Plan.GetRootAs(body, 0).Export()
        return None if e is None else _export_table(e)
    except (IndexError, struct.error, UnicodeDecodeError, ValueError, TypeError, AttributeError,
            RecursionError) as err:  # (RecursionError: JSON nested too deep)
        raise PlanError(f"plan file is damaged: its export table does not read ({type(err).__name__}: {err})") from None


def _export_table(e):
    from .adapters.export import ExportTable

    def strings(n, get):
        return [get(i).decode() for i in range(n)]

    def recipes(n, get):
        out = {}
        for i in range(n):
            t = get(i)
            steps = []
            for j in range(t.StepsLength()):
                s = t.Steps(j)
                steps.append((s.Op().decode(), (s.Name() or b"").decode(),
                              [int(s.Ints(k)) for k in range(s.IntsLength())], float(s.F())))
            out[t.Name().decode()] = steps
        return out

    peft = e.PeftConfig()
    own = e.OwnConfig()
    table = ExportTable(
        peft_config=json.loads(peft.decode()) if peft is not None else None,
        peft_tensors=recipes(e.PeftTensorsLength(), e.PeftTensors),
        own_tensors=recipes(e.OwnTensorsLength(), e.OwnTensors),
        merged=recipes(e.MergedLength(), e.Merged),
        drop_when_merged=strings(e.DropWhenMergedLength(), e.DropWhenMerged),
        hidden=strings(e.HiddenLength(), e.Hidden),
        unmergeable=strings(e.UnmergeableLength(), e.Unmergeable),
    )
    if own is not None:
        table.own_config = json.loads(own.decode())
    return table
