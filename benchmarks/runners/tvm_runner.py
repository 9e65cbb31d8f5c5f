"""TVM Relax training (apache-tvm 0.27, its own venv, llvm target, no tuning).

    tvm-venv/bin/python tvm_runner.py CELL_DIR build   # ONNX -> Relax -> SetupTrainer -> compiled library
    tvm-venv/bin/python tvm_runner.py CELL_DIR run     # the measured process: load the library, train

Build: model.onnx's trainable initializers become graph inputs (the backbone's "parameters"), the
frozen ones stay constants; `relax.frontend.onnx.from_onnx` imports it, `SetupTrainer` appends the
cross-entropy loss, runs Relax's Gradient pass and adds the optimizer (MomentumSGD; Adam for --optimizer adamw: Relax has no AdamW), and
`tvm.compile` builds it for llvm (this CPU; schedules as legalized, untuned). Run: the relax VM calls
`backbone_loss_adjoint` then `optimizer` — what `training.Trainer.update` does, without the compiler
in the measured process. A model Relax cannot import or differentiate fails in build, and the
reason goes into its cell.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ok_result, onnx_names, run_main, time_steps  # noqa: E402


def build(cell, meta):
    import numpy as np
    import onnx
    import tvm
    from onnx import helper, numpy_helper
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.relax.training import SetupTrainer
    from tvm.relax.training.loss import CrossEntropyLoss
    from tvm.relax.training import optimizer as optim

    if "onnx" not in meta:
        raise RuntimeError(meta.get("onnx_error", "no ONNX export"))
    model = onnx.load(os.path.join(cell, meta["onnx"]))
    g = model.graph
    dims = g.output[0].type.tensor_type.shape.dim
    if len(dims) == 3:  # language model: logits [B, T, V] -> [B*T, V], targets [B, T] -> [B*T]
        vocab = dims[2].dim_value
        g.initializer.append(numpy_helper.from_array(np.array([-1, vocab], dtype=np.int64), "_bench_flat_shape"))
        g.node.append(helper.make_node("Reshape", [g.output[0].name, "_bench_flat_shape"], ["logits_flat"]))
        g.output.pop()
        g.output.append(helper.make_tensor_value_info("logits_flat", onnx.TensorProto.FLOAT, None))
    elif len(dims) != 2:
        raise RuntimeError(f"model output has rank {len(dims)}; the bench wires rank 2 and 3")
    inits = {i.name: i for i in g.initializer}
    trainable, missing = onnx_names(meta["trainable_names"], meta, inits)
    if missing:
        raise RuntimeError(f"trainable parameters not ONNX initializers: {missing[:4]}")
    values = []
    for n in trainable:  # trainable initializers -> graph inputs (in this order, after the data input)
        arr = numpy_helper.to_array(inits[n])
        values.append(np.ascontiguousarray(arr))
        g.initializer.remove(inits[n])
        g.input.append(helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                     list(arr.shape)))
    notes = _rewrite_for_relax(model) + _register_missing_gradients(model)
    x_shape = meta["x_shape"]
    x_dtype = meta.get("x_dtype", "float32")
    mod = from_onnx(model, shape_dict={"input": x_shape}, dtype_dict={"input": x_dtype},
                    keep_params_in_input=False)
    func = mod["main"]
    if len(func.params) != 1 + len(trainable):
        raise RuntimeError(f"imported function has {len(func.params)} inputs, expected {1 + len(trainable)}")
    backbone = func.without_attr("global_symbol").with_attr("global_symbol", "backbone")
    for key in ("num_input", "params"):
        if backbone.attrs is not None and key in backbone.attrs:
            backbone = backbone.without_attr(key)
    # keep the module's other functions (the importer's TIR PrimFuncs are called by GlobalVar)
    funcs = {gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}
    funcs[tvm.ir.GlobalVar("backbone")] = backbone
    bmod = tvm.IRModule(funcs).with_attrs({"param_num": len(trainable), "state_num": 0})
    out_sinfo = backbone.ret_ty
    if isinstance(out_sinfo, relax.TupleType):
        raise RuntimeError("imported backbone returns a tuple")
    n_classes = int(out_sinfo.shape[-1])
    rows = int(out_sinfo.shape[0])
    pred_ty = relax.TensorType((rows, n_classes), "float32")
    target_ty = relax.TensorType((rows,), "int64")
    opt = (optim.MomentumSGD(meta["lr"], meta["momentum"]) if meta["optimizer"] == "sgd"
           else optim.Adam(meta["lr"]))  # Relax has no AdamW
    train_mod = SetupTrainer(CrossEntropyLoss(reduction="mean"), opt, [pred_ty, target_ty])(bmod)
    target = tvm.target.Target({"kind": "llvm", "mcpu": _host_cpu(), "num-cores": int(meta["threads"])})
    ex = tvm.compile(train_mod, target=target)
    out = os.path.join(cell, "tvm")
    os.makedirs(out, exist_ok=True)
    ex.export_library(os.path.join(out, "train.so"))
    optim = [s.numpy() for s in train_mod.attrs["optim_state"]]
    np.savez(os.path.join(out, "state.npz"), *values)
    np.savez(os.path.join(out, "optim.npz"), *optim)
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump({"input_num": int(train_mod.attrs["input_num"]), "param_num": len(trainable),
                   "optim_num": len(optim), "target": str(target)}, f)
    with open(os.path.join(out, "notes.json"), "w") as f:
        json.dump(notes, f)
    return {"status": "ok", "target": str(target), "notes": notes}


def _rewrite_for_relax(model) -> list[str]:
    """Same math in ops Relax can differentiate: Clip(x, lo, hi) -> lo + Relu(x - lo) - Relu(x - hi)
    (Relax imports Clip as a call_tir, which has no gradient); train-mode Dropout -> Identity (relax.nn.dropout
    has no gradient; the other runtimes apply it, so TVM does slightly less work there); an embedding
    Gather on 2-d token ids -> Gather on the flattened ids + Reshape."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    notes = []
    new_nodes = []
    clips = drops = gathers = 0
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(inferred.value_info) + list(inferred.input)
             if v.type.tensor_type.HasField("shape")}
    # Relax legalizes take's gradient only for 1-d indices: flatten 2-d token ids before the lookup
    flat_ids = {}
    inp = g.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    if inp.type.tensor_type.elem_type == onnx.TensorProto.INT64 and len(dims) == 2 and all(dims):
        flat_ids[inp.name] = "_bench_ids_flat"
        g.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "_bench_flat1"))
        g.initializer.append(numpy_helper.from_array(np.array(dims + [-1], dtype=np.int64), "_bench_emb_shape"))
        new_nodes.append(helper.make_node("Reshape", [inp.name, "_bench_flat1"], ["_bench_ids_flat"]))
    for i, n in enumerate(g.node):
        if n.op_type == "Clip":  # lo + relu(x - lo) - relu(x - hi): ops with a Relax gradient
            x, out = n.input[0], n.output[0]
            lo = n.input[1] if len(n.input) > 1 and n.input[1] else None
            hi = n.input[2] if len(n.input) > 2 and n.input[2] else None
            bounds = {}
            for key, b in (("lo", lo), ("hi", hi)):
                if b is None:
                    continue
                if b not in consts:
                    raise RuntimeError("Clip with a non-constant bound")
                bounds[key] = f"_bench_clip{i}_{key}"
                g.initializer.append(numpy_helper.from_array(np.asarray(consts[b], dtype=np.float32).reshape(()),
                                                             bounds[key]))
            p = f"_bench_clip{i}"
            if "lo" in bounds:
                new_nodes += [helper.make_node("Sub", [x, bounds["lo"]], [p + "_xl"]),
                              helper.make_node("Relu", [p + "_xl"], [p + "_rl"])]
                low = p + "_rl"
            else:
                low = x
            if "hi" in bounds:
                new_nodes += [helper.make_node("Sub", [x, bounds["hi"]], [p + "_xh"]),
                              helper.make_node("Relu", [p + "_xh"], [p + "_rh"]),
                              helper.make_node("Sub", [low, p + "_rh"], [p + "_c"])]
                low = p + "_c"
            if "lo" in bounds:
                new_nodes.append(helper.make_node("Add", [low, bounds["lo"]], [out]))
            else:
                new_nodes.append(helper.make_node("Identity", [low], [out]))
            clips += 1
        elif n.op_type == "Gather" and n.input[1] in flat_ids:  # embedding lookup of 2-d ids
            p = f"_bench_gather{i}"
            new_nodes += [helper.make_node("Gather", [n.input[0], flat_ids[n.input[1]]], [p], axis=0),
                          helper.make_node("Reshape", [p, "_bench_emb_shape"], [n.output[0]])]
            gathers += 1
        elif n.op_type == "Gather" and n.input[1] in consts and np.ndim(consts[n.input[1]]) != 1:
            idx = np.asarray(consts[n.input[1]], dtype=np.int64)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            p = f"_bench_gather{i}"
            g.initializer.append(numpy_helper.from_array(idx.reshape(-1), p + "_idx"))
            new_nodes.append(helper.make_node("Gather", [n.input[0], p + "_idx"], [p], axis=axis))
            if idx.ndim == 0:  # x[:, k]: gather [k], then drop that axis (Reshape: squeeze has no gradient)
                r = ranks.get(n.input[0])
                if r is None or axis < 0 or axis < r - 2:
                    raise RuntimeError("Gather of a scalar index on an axis the bench does not rewrite")
                shape = [0] * axis + ([-1] if axis == r - 2 else [])
                g.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), p + "_shape"))
                new_nodes.append(helper.make_node("Reshape", [p, p + "_shape"], [n.output[0]]))
            elif axis == 0:
                g.initializer.append(numpy_helper.from_array(np.array(list(idx.shape) + [-1], dtype=np.int64),
                                                             p + "_shape"))
                new_nodes.append(helper.make_node("Reshape", [p, p + "_shape"], [n.output[0]]))
            else:
                raise RuntimeError("Gather with multi-dimensional constant indices on axis > 0")
            gathers += 1
        elif n.op_type == "Dropout":
            new_nodes.append(helper.make_node("Identity", [n.input[0]], [n.output[0]]))
            drops += 1
        else:
            new_nodes.append(n)
    if gathers:
        notes.append(f"{gathers} Gather given 1-d indices (+ Reshape; Relax's take gradient needs them)")
    if clips or drops or gathers:
        del g.node[:]
        g.node.extend(new_nodes)
    if clips:
        notes.append(f"{clips} Clip rewritten with Relu for Relax's gradient")
    if drops:
        notes.append(f"{drops} Dropout run as Identity (no Relax gradient)")
    return notes


def _register_missing_gradients(model) -> list[str]:
    """Relax 0.27 has no gradient for erf (exact GELU): register d erf(x) = 2/sqrt(pi) exp(-x^2)."""
    if not any(n.op_type == "Erf" for n in model.graph.node):
        return []
    import math

    from tvm import relax
    from tvm.relax.op.base import register_gradient

    def erf_grad(orig_var, orig_call, output_grad, ctx):
        x = orig_call.args[0]
        c = relax.const(2.0 / math.sqrt(math.pi), x.ty.dtype)
        return [output_grad * c * relax.op.exp(relax.op.negative(x * x))]

    try:
        register_gradient("relax.erf", erf_grad)
    except Exception:  # noqa: BLE001 - already registered (a later TVM)
        return []
    return ["gradient of erf registered by the bench (Relax has none)"]


def _host_cpu() -> str:
    """LLVM's name for this CPU (e.g. znver5), so the generated code uses its vector units."""
    try:
        from tvm.target import codegen
        return str(codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001
        return "x86-64-v3"


def run(cell, meta):
    import numpy as np
    import tvm
    from tvm import relax
    out = os.path.join(cell, "tvm")
    with open(os.path.join(out, "info.json")) as f:
        info = json.load(f)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(os.path.join(out, "train.so")), dev)
    params = list(np.load(os.path.join(out, "state.npz")).values())
    params = [tvm.runtime.tensor(p, dev) for p in params]
    optim = [tvm.runtime.tensor(s, dev) for s in np.load(os.path.join(out, "optim.npz")).values()]
    x = tvm.runtime.tensor(np.load(os.path.join(cell, "x.npy")).astype(meta.get("x_dtype", "float32")), dev)
    y = tvm.runtime.tensor(np.load(os.path.join(cell, "y.npy")).reshape(-1).astype(np.int64), dev)
    adjoint, optimizer = vm["backbone_loss_adjoint"], vm["optimizer"]
    state = {"params": params, "optim": optim}

    def step():
        loss, grads = adjoint(x, *state["params"], y)
        new_params, new_optim = optimizer(state["params"], grads, state["optim"])
        state["params"], state["optim"] = list(new_params), new_optim
        return float(loss.numpy())

    ms, losses = time_steps(step, meta["warmup"], meta["steps"])
    notes = ["untuned llvm schedules"]
    if os.path.exists(os.path.join(out, "notes.json")):
        with open(os.path.join(out, "notes.json")) as f:
            notes += json.load(f)
    return ok_result(ms, losses, tvm_version=tvm.__version__, target=info.get("target"), note="; ".join(notes))


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else "run"
    raise SystemExit(run_main("tvm_build" if mode == "build" else "tvm", build if mode == "build" else run))
