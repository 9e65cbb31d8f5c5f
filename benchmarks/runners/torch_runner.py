"""PyTorch eager on the cell's model: same weights (rebuilt with seed 0), same trainable set (read from
the compiled program), same optimizer, threads and batch (the pattern of benchmarks/step_time.py)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ok_result, run_main, time_steps  # noqa: E402


def body(cell, meta):
    import torch

    from zoo import build_model, load_models, time_torch_training
    torch.set_num_threads(int(meta["threads"]))
    model, _, _ = build_model(meta, load_models(meta["models_path"]))
    ms, losses = time_torch_training(model, cell, meta, time_steps)
    return ok_result(ms, losses, torch_version=torch.__version__)


if __name__ == "__main__":
    raise SystemExit(run_main("pytorch", body))
