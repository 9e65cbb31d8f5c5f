"""ONNX Runtime on-device training (onnxruntime-training-cpu 1.19.2, its own venv, no torch).

    ort-venv/bin/python ort_runner.py CELL_DIR build   # artifacts from model.onnx (a process of its own)
    ort-venv/bin/python ort_runner.py CELL_DIR run     # the measured process: load artifacts, train

`import onnxruntime.training` imports torch (its optim/amp helpers); `onnxruntime.training.api` and
`.artifacts` do not need it, so the package `__init__` is bypassed with a bare package module.
ORT's SGD has no momentum (SGDOptimizerV2): with --optimizer sgd it runs plain SGD (noted per cell).
"""

from __future__ import annotations

import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ok_result, onnx_names, run_main, time_steps  # noqa: E402


def _training_pkg():
    import onnxruntime
    if "onnxruntime.training" not in sys.modules:
        pkg = types.ModuleType("onnxruntime.training")
        pkg.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
        sys.modules["onnxruntime.training"] = pkg
        onnxruntime.training = pkg
    return onnxruntime


def build(cell, meta):
    import onnx
    from onnx import helper
    _training_pkg()
    from onnxruntime.training import artifacts
    if "onnx" not in meta:
        raise RuntimeError(meta.get("onnx_error", "no ONNX export"))
    model = onnx.load(os.path.join(cell, meta["onnx"]))
    g = model.graph
    # the gradient builder aborts on LayerNormalization with one output: add Mean and InvStdDev
    for i, node in enumerate(g.node):
        if node.op_type == "LayerNormalization" and len(node.output) == 1:
            node.output.extend([f"{node.name or 'ln'}_{i}_mean", f"{node.name or 'ln'}_{i}_invstd"])
    # language models: logits [B, T, V] and targets [B, T] -> [B*T, V] for SoftmaxCrossEntropyLoss
    out = g.output[0]
    rank = len(out.type.tensor_type.shape.dim)
    if rank == 3:
        vocab = out.type.tensor_type.shape.dim[2].dim_value
        shape_name = "bench_flat_shape"
        g.initializer.append(onnx.numpy_helper.from_array(__import__("numpy").array([-1, vocab], dtype="int64"),
                                                          shape_name))
        g.node.append(helper.make_node("Reshape", [out.name, shape_name], ["logits_flat"]))
        g.output.pop()
        g.output.append(helper.make_tensor_value_info("logits_flat", onnx.TensorProto.FLOAT, [None, vocab]))
    inits = {i.name for i in g.initializer}
    trainable, missing = onnx_names(meta["trainable_names"], meta, inits)
    if missing:
        raise RuntimeError(f"trainable parameters not ONNX initializers: {missing[:4]}")
    frozen = [n for n in onnx_names(meta["frozen_names"], meta, inits)[0] if n not in set(trainable)]
    art = os.path.join(cell, "ort")
    os.makedirs(art, exist_ok=True)
    opt = artifacts.OptimType.SGD if meta["optimizer"] == "sgd" else artifacts.OptimType.AdamW
    artifacts.generate_artifacts(model, requires_grad=trainable, frozen_params=frozen,
                                 loss=artifacts.LossType.CrossEntropyLoss, optimizer=opt, artifact_directory=art)
    return {"status": "ok", "artifacts": sorted(os.listdir(art))}


def run(cell, meta):
    import numpy as np
    ort = _training_pkg()
    from onnxruntime.training.api import CheckpointState, Module, Optimizer
    art = os.path.join(cell, "ort")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(meta["threads"])
    so.inter_op_num_threads = 1
    state = CheckpointState.load_checkpoint(os.path.join(art, "checkpoint"))
    module = Module(os.path.join(art, "training_model.onnx"), state, device="cpu", session_options=so)
    optimizer = Optimizer(os.path.join(art, "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(float(meta["lr"]))
    module.train()
    x = np.load(os.path.join(cell, "x.npy"))
    y = np.load(os.path.join(cell, "y.npy")).reshape(-1).astype(np.int64)

    def step():
        loss = module(x, y)
        optimizer.step()
        module.lazy_reset_grad()
        return float(loss)

    ms, losses = time_steps(step, meta["warmup"], meta["steps"])
    note = "SGD without momentum (ORT has none)" if meta["optimizer"] == "sgd" and meta["momentum"] else ""
    return ok_result(ms, losses, ort_version=ort.__version__, note=note)


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else "run"
    raise SystemExit(run_main("ort_build" if mode == "build" else "ort", build if mode == "build" else run))
