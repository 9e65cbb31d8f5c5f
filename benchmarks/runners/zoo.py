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
    if "hf_config" in cfg:
        return build_hf_model(cfg)
    torch.manual_seed(0)
    model = models.build(cfg["model"], **cfg.get("model_kwargs", {})).train()
    kw = {}
    if "resolution" in cfg:
        kw["resolution"] = cfg["resolution"]
    if "seq_len" in cfg:
        kw["seq_len"] = cfg["seq_len"]
    (x,), y = models.example_inputs(cfg["model"], model, batch=cfg["batch"], **kw)
    return model, x, y


def build_hf_model(cfg: dict):
    """A `transformers` causal LM from the cell's config (an LLM case of bench.py: `hf_class`,
    `hf_config`), random weights (seed 0), train mode, and a batch of random token ids [batch,
    seq_len] (seed 1); the target is the ids themselves (causal-LM loss)."""
    import torch
    import transformers
    config = getattr(transformers, cfg["hf_config_class"])(**cfg["hf_config"])
    torch.manual_seed(0)
    model = getattr(transformers, cfg["hf_class"])(config).train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (cfg["batch"], cfg["seq_len"]), generator=g)
    return model, ids, ids.clone()


def causal_lm_loss(logits, target):
    """Next-token cross-entropy, Hugging Face's labels=input_ids: logits[:, :-1] against target[:, 1:]."""
    import torch
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1))


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
