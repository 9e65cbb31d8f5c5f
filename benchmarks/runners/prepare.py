"""Prepare one (model, scheme) cell, in the main environment, in its own process.

    python benchmarks/runners/prepare.py CELL_DIR        (CELL_DIR/config.json written by bench.py)

Builds the zoo model (seed 0, train mode), compiles it with edgetune for the scheme, and writes
what the runners share, so that every runtime trains the same model, batch and trainable set:
  x.npy, y.npy        the batch
  plan.etp            the edgetune plan (the edgetune runner loads only this: no torch in its process)
  model.onnx          torch.onnx.export (TorchScript exporter, training mode, no constant folding,
                      opset 17): the input of the ONNX Runtime and TVM runners
  meta.json           trainable / frozen parameter names, FLOPs per step, planned memory, ...
An LLM cell (bench.py's LLM_CASES: a `transformers` causal LM, scheme "lora") is compiled from
{"input_ids": ids} with loss="causal_lm" and its LoRA spec, and writes adapter_init.npz (the
adapters' initial values, which the PyTorch + PEFT runner starts from) instead of an ONNX export.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

import edgetune as et
from edgetune import models

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_rss_mb, reset_peak_rss  # noqa: E402
from zoo import build_model  # noqa: E402


def make_spec(scheme: str, cfg: dict | None = None):
    if scheme == "lora":  # an LLM case's adapters (bench.py's LLM_CASES: r, alpha, targets)
        lora = (cfg or {}).get("lora")
        if not lora:
            raise ValueError("the lora scheme runs on the LLM cases only (bench.py's LLM_CASES)")
        return et.peft.LoRA(r=lora["r"], alpha=lora["alpha"], targets=lora["targets"])
    if scheme == "full":
        return et.peft.Full()
    if scheme == "bias-only":
        return et.peft.BiasOnly()
    if scheme == "last-k":
        return et.peft.LastK(4)
    if scheme == "sparse":
        return et.peft.Union(et.peft.BiasOnly(), et.peft.LastK(2))
    if scheme == "head-only":
        return et.peft.LastK(1)
    raise ValueError(f"unknown scheme {scheme!r}")


def main(cell: str) -> int:
    with open(os.path.join(cell, "config.json")) as f:
        cfg = json.load(f)
    torch.set_num_threads(cfg["threads"])
    model, x, y = build_model(cfg, models)
    np.save(os.path.join(cell, "x.npy"), x.numpy())
    np.save(os.path.join(cell, "y.npy"), y.numpy())
    opt = (et.optim.SGD(lr=cfg["lr"], momentum=cfg["momentum"]) if cfg["optimizer"] == "sgd"
           else et.optim.AdamW(lr=cfg["lr"]))
    llm = "hf_config" in cfg
    rss_before_compile = reset_peak_rss() is not None and peak_rss_mb()  # the model is built: count from here
    t0 = time.perf_counter()
    if llm:
        prog = et.compile(model, {"input_ids": x}, y, loss="causal_lm", peft=make_spec(cfg["scheme"], cfg),
                          optimizer=opt)
    else:
        prog = et.compile(model, (x,), y, loss="cross_entropy", peft=make_spec(cfg["scheme"]), optimizer=opt)
    compile_s = time.perf_counter() - t0
    compile_peak = peak_rss_mb() if rss_before_compile else None
    t0 = time.perf_counter()
    prog.save(os.path.join(cell, "plan.etp"))
    save_s = time.perf_counter() - t0
    plan = prog.memory_plan("cpu")
    summ = prog.summary()
    from edgetune.runtime.native import native
    params = [p.name for p in prog.graph.params()]
    trainable = list(prog.trainable_names)
    meta = {
        **cfg,
        "spec": repr(prog.spec),
        "trainable_names": trainable,
        "frozen_names": [p for p in params if p not in set(trainable)],
        "aliases": dict(prog.graph.aliases),
        "params_trainable": summ.params_trainable,
        "params_frozen": summ.params_frozen,
        "flops_per_step": int(sum(summ.flops.values())),
        "flops_by_section": {k: int(v) for k, v in summ.flops.items()},
        "planned_arena_bytes": int(plan.arena_bytes),
        "planned_persistent_bytes": int(plan.persistent_bytes),
        "planned_input_bytes": int(plan.input_bytes),
        "planned_total_bytes": int(plan.total_bytes),
        "compile_s": compile_s,
        "plan_save_s": save_s,
        # the compiling process: its RSS with the torch model built, and its peak during et.compile (MiB)
        "rss_before_compile_mb": rss_before_compile or None, "compile_peak_rss_mb": compile_peak,
        "plan_bytes": os.path.getsize(os.path.join(cell, "plan.etp")),
        "native_path": native().__file__,
        "models_path": models.__file__,
        "x_dtype": str(x.numpy().dtype), "y_dtype": str(y.numpy().dtype),
        "x_shape": list(x.shape), "y_shape": list(y.shape),
    }
    if llm:
        np.savez(os.path.join(cell, "adapter_init.npz"), **{n: prog.graph.initial[n] for n in trainable})
        meta.update(params_total=sum(p.numel() for p in model.parameters()), tokens_per_step=int(x.numel()),
                    attn_implementation=getattr(model.config, "_attn_implementation", None),
                    onnx_error="the LLM row compares edgetune with PyTorch + PEFT only (no ONNX Runtime / TVM "
                               "training of a LoRA-adapted decoder here)")
        with open(os.path.join(cell, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
        return 0
    # ONNX for the peers (TorchScript exporter keeps the state_dict names as initializer names)
    onnx_path = os.path.join(cell, "model.onnx")
    try:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.onnx.export(model, (x,), onnx_path, dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
                          do_constant_folding=False, opset_version=17, input_names=["input"],
                          output_names=["output"])
        model.load_state_dict(state)  # export ran a train-mode forward (BN statistics)
        meta["onnx"] = "model.onnx"
    except Exception as e:  # noqa: BLE001 - the peers' cells say why
        meta["onnx_error"] = f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
    with open(os.path.join(cell, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
