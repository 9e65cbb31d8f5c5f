"""One (model, scheme) cell of the optimisation ablation (benchmarks/ablation.py), in its own process.

    python benchmarks/runners/ablation_prepare.py CELL_DIR            compile once, write every config's plan
    python benchmarks/runners/ablation_prepare.py CELL_DIR pytorch    the PyTorch eager baseline

CELL_DIR/config.json (written by ablation.py) names the model, scheme, BN mode and the list of
configurations, each {"name", "slug", "opt_level", "passes", "kernel_selection"}.

prepare: builds the zoo model (seed 0) in eval mode (bn == "eval") or train mode, compiles it ONCE at
-O0 and derives every configuration from that program with `et.optimize` (cheap: no re-capture, so
every configuration starts from the same graph and weights). For each configuration it writes
CELL_DIR/configs/<slug>/ with plan.etp, the batch (x.npy, y.npy) and a meta.json, which is exactly
what runners/edgetune_runner.py times in a fresh process; and it records in CELL_DIR/meta.json the
planned arena / persistent bytes, op count and pass notes of each. A configuration whose passes
raise gets {"status": "error", "reason": ...} and the others go on: one broken pass must not hide
what the rest buy.

pytorch: PyTorch eager on the same model, mode, batch and trainable set (runners/torch_runner.py's
step, but honouring the BN mode: torch_runner always trains in train mode, and eval-mode BatchNorm
is the case BN folding exists for). torch is imported only in these two modes; the timed edgetune
configurations run in edgetune_runner.py, which never imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ok_result, run_main, time_steps  # noqa: E402


def _build(cfg: dict, models):
    """The cell's model and batch, in the mode the ablation asked for."""
    from zoo import build_model
    model, x, y = build_model(cfg, models)  # seed 0, train mode
    if cfg.get("bn", "eval") == "eval":
        model.eval()
    return model, x, y


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(src, dst)


def _error_text(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".strip().splitlines()[:3])[:400]


def _derive(program, conf: dict, threads: int):
    """The configuration's program, derived from the -O0 one (which is left untouched)."""
    import edgetune as et
    if conf["opt_level"] == 0 and not conf.get("passes"):
        return program
    return et.optimize(program, opt_level=conf["opt_level"], passes=conf.get("passes"),
                       kernel_selection=conf.get("kernel_selection"), threads=threads)


def _notes(program, baseline_records: int) -> list[dict]:
    """The PassRecords that the configuration's own passes added, as dicts."""
    return [r.as_dict() for r in list(getattr(program, "pass_report", []))[baseline_records:]]


def prepare(cell: str) -> int:
    import numpy as np
    import torch
    from edgetune.runtime.native import native
    from prepare import make_spec

    import edgetune as et
    from edgetune import models

    with open(os.path.join(cell, "config.json")) as f:
        cfg = json.load(f)
    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    model, x, y = _build(cfg, models)
    x_path, y_path = os.path.join(cell, "x.npy"), os.path.join(cell, "y.npy")
    np.save(x_path, x.numpy())
    np.save(y_path, y.numpy())
    opt = (et.optim.SGD(lr=cfg["lr"], momentum=cfg["momentum"]) if cfg["optimizer"] == "sgd"
           else et.optim.AdamW(lr=cfg["lr"]))
    t0 = time.perf_counter()
    base = et.compile(model, (x,), y, loss="cross_entropy", peft=make_spec(cfg["scheme"]), optimizer=opt,
                      opt_level=0)
    compile_s = time.perf_counter() - t0
    base_records = len(getattr(base, "pass_report", []))
    summ = base.summary()
    native_path = native().__file__
    trainable = list(base.trainable_names)
    meta = {
        **cfg,
        "spec": repr(base.spec),
        "train_mode": bool(base.train_mode),
        "trainable_names": trainable,
        "aliases": dict(base.graph.aliases),
        "params_trainable": summ.params_trainable,
        "params_frozen": summ.params_frozen,
        "flops_per_step": int(sum(summ.flops.values())),
        "compile_s": compile_s,
        "native_path": native_path,
        "models_path": models.__file__,
        "x_shape": list(x.shape), "y_shape": list(y.shape),
        "configs": [],
    }
    del model  # the configurations are derived from `base`; the module is no longer needed
    for conf in cfg["configs"]:
        record = {k: conf.get(k) for k in ("name", "slug", "opt_level", "passes", "kernel_selection")}
        conf_dir = os.path.join(cell, "configs", conf["slug"])
        os.makedirs(conf_dir, exist_ok=True)
        t0 = time.perf_counter()
        try:
            program = _derive(base, conf, threads)
            record["optimize_s"] = time.perf_counter() - t0
            plan = program.memory_plan("cpu")
            record.update(status="ok", ops=len(program.graph.nodes), arena_bytes=int(plan.arena_bytes),
                          persistent_bytes=int(plan.persistent_bytes), input_bytes=int(plan.input_bytes),
                          pass_report=_notes(program, base_records))
            record["plan_bytes"] = program.save(os.path.join(conf_dir, "plan.etp"))
            _link_or_copy(x_path, os.path.join(conf_dir, "x.npy"))
            _link_or_copy(y_path, os.path.join(conf_dir, "y.npy"))
            with open(os.path.join(conf_dir, "meta.json"), "w") as f:  # what edgetune_runner.py reads
                json.dump({**{k: v for k, v in cfg.items() if k != "configs"}, "config": conf["name"],
                           "native_path": native_path}, f, indent=2)
        except Exception as e:  # noqa: BLE001 - the row says why; the other configurations go on
            sys.stderr.write(f"--- {conf['name']}\n{traceback.format_exc()}")
            record.update(status="error", reason=_error_text(e), optimize_s=time.perf_counter() - t0)
        finally:
            program = None  # one optimised copy of the graph at a time
        meta["configs"].append(record)
    tmp = os.path.join(cell, "meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(cell, "meta.json"))
    return 0


def pytorch_body(cell: str, meta: dict) -> dict:
    import torch
    from zoo import load_models, time_torch_training
    torch.set_num_threads(int(meta["threads"]))
    model, _, _ = _build(meta, load_models(meta["models_path"]))
    ms, losses = time_torch_training(model, cell, meta, time_steps)
    return ok_result(ms, losses, torch_version=torch.__version__, mode="eval" if not model.training else "train")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "pytorch":
        raise SystemExit(run_main("pytorch", pytorch_body))
    raise SystemExit(prepare(sys.argv[1]))
