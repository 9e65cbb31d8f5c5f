"""PyTorch eager on the cell's model: same weights (rebuilt with seed 0), same trainable set (read from
the compiled program), same optimizer, threads and batch (the pattern of benchmarks/step_time.py).
An LLM cell (bench.py's LLM_CASES) trains its LoRA adapters with Hugging Face PEFT instead
(`peft_lora_training`)."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ok_result, reset_peak_rss, run_main, time_steps  # noqa: E402


def body(cell, meta):
    import torch

    from zoo import build_model, load_models, time_torch_training
    torch.set_num_threads(int(meta["threads"]))
    t0 = time.perf_counter()
    model, _, _ = build_model(meta, load_models(meta["models_path"]))
    if "lora" in meta:
        import peft
        step, note = peft_lora_training(model, cell, meta)
        load_s = time.perf_counter() - t0
        before = reset_peak_rss()  # the steps' own peak too (building the model is not training it)
        ms, losses = time_steps(step, meta["warmup"], meta["steps"])
        return ok_result(ms, losses, before, torch_version=torch.__version__, peft_version=peft.__version__,
                         load_s=load_s, note=note)
    ms, losses = time_torch_training(model, cell, meta, time_steps)
    return ok_result(ms, losses, torch_version=torch.__version__)


def peft_lora_training(model, cell: str, meta: dict):
    """PyTorch + Hugging Face PEFT on an LLM cell: `get_peft_model` with the LoraConfig of the
    cell's LoRA spec (r, alpha, targets, no dropout), its adapters set to edgetune's initial values
    (adapter_init.npz, by PEFT's names less `.default`), the trainable set checked against the
    compiled program's, the same optimizer; train mode. Returns (a step closure, a note)."""
    import numpy as np
    import peft
    import torch

    from zoo import causal_lm_loss
    lora = meta["lora"]
    pm = peft.get_peft_model(model, peft.LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=0.0,
                                                    target_modules=lora["targets"], bias="none"))
    pm.train()
    init = np.load(os.path.join(cell, "adapter_init.npz"))
    params = {n.removeprefix("base_model.model.").replace(".default.", "."): p
              for n, p in pm.named_parameters() if p.requires_grad}
    differ = sorted(set(params) ^ set(meta["trainable_names"]))
    if differ:
        raise RuntimeError(f"PEFT trains other parameters than edgetune: {differ[:4]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(init[name]))
    if meta["optimizer"] == "sgd":
        opt = torch.optim.SGD(list(params.values()), lr=meta["lr"], momentum=meta["momentum"])
    else:
        opt = torch.optim.AdamW(list(params.values()), lr=meta["lr"])
    x = torch.from_numpy(np.load(os.path.join(cell, "x.npy")))
    y = torch.from_numpy(np.load(os.path.join(cell, "y.npy")))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = causal_lm_loss(pm(input_ids=x).logits, y)
        loss.backward()
        opt.step()
        return loss.item()
    attn = getattr(model.config, "_attn_implementation", None)
    return step, f"PyTorch + PEFT {peft.__version__} (get_peft_model, LoRA r={lora['r']}, alpha={lora['alpha']}, " \
                 f"{'/'.join(lora['targets'])}; attention: {attn})"


if __name__ == "__main__":
    raise SystemExit(run_main("pytorch", body))
