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


def time_torch_training(model, cell: str, meta: dict, time_steps) -> tuple[list[float], list[float]]:
    """PyTorch eager training of `model` on the cell's batch with the trainable set and optimizer
    of the compiled program (meta.json): `time_steps(step, warmup, steps)`'s (ms, losses)."""
    import os

    import numpy as np
    import torch
    x = torch.from_numpy(np.load(os.path.join(cell, "x.npy")))
    y = torch.from_numpy(np.load(os.path.join(cell, "y.npy")))
    trainable = set(meta["trainable_names"])
    aliases = meta["aliases"]
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(aliases.get(name, name) in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    if meta["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=meta["lr"], momentum=meta["momentum"])
    else:
        opt = torch.optim.AdamW(params, lr=meta["lr"])

    return time_steps(torch_step(model, opt, x, y), meta["warmup"], meta["steps"])


def torch_step(model, opt, x, y):
    """One PyTorch eager training step (cross-entropy over the last dim, so token logits work too)
    as a closure returning the loss: what every benchmark times on the PyTorch side."""
    import torch

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()
    return step
