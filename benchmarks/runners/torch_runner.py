"""PyTorch eager on the cell's model: same weights (rebuilt with seed 0), same trainable set (read from
the compiled program), same optimizer, threads and batch (the pattern of benchmarks/step_time.py)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ok_result, run_main, time_steps  # noqa: E402


def body(cell, meta):
    import numpy as np
    import torch

    from zoo import build_model, load_models
    torch.set_num_threads(int(meta["threads"]))
    model, _, _ = build_model(meta, load_models(meta["models_path"]))
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

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    ms, losses = time_steps(step, meta["warmup"], meta["steps"])
    return ok_result(ms, losses, torch_version=torch.__version__)


if __name__ == "__main__":
    raise SystemExit(run_main("pytorch", body))
