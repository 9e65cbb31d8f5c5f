"""The cell's model and batch, built the same way in every process that needs torch (seed 0, train
mode). `load_models(path)` loads edgetune/models.py by file, so a runner gets the plain-torch zoo
without importing the edgetune compiler."""

from __future__ import annotations

import importlib.util


def load_models(path: str):
    spec = importlib.util.spec_from_file_location("_bench_zoo_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_model(cfg: dict, models):
    import torch
    torch.manual_seed(0)
    model = models.build(cfg["model"], **cfg.get("model_kwargs", {})).train()
    kw = {}
    if "resolution" in cfg:
        kw["resolution"] = cfg["resolution"]
    if "seq_len" in cfg:
        kw["seq_len"] = cfg["seq_len"]
    (x,), y = models.example_inputs(cfg["model"], model, batch=cfg["batch"], **kw)
    return model, x, y
