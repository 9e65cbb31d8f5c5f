"""Writes the cuda-target twins of the runtime test plans (for csrc/tests/cuda/test_cuda_runtime.cc):

  mlp_sgd.cuda.etp          the model, weights, optimizer and batch of mlp_sgd.etp, compiled with
  small_cnn_adamw.cuda.etp  backend="cuda": the cuda kernels' workspaces (the .etp twins carry the
                            cpu kernels', which the cuda loader refuses) and default kernels

Same seeds and construction as make_plans.py, so the inputs (checked against the committed
*.x.bin / *.y.bin) and the weights are the same and reference.json's values apply to both plans.
Needs a module built with the CUDA backend (no GPU needed):

  EDGETUNE_NATIVE=$(csrc/dev-build.sh cu -DEDGETUNE_CUDA=ON -DEDGETUNE_CUDA_PYTHON=$(which python3) \\
      -DCMAKE_CUDA_ARCHITECTURES=90-real) python csrc/tests/data/make_cuda_plans.py
"""
import os

import numpy as np
import torch

import edgetune as et
from edgetune import models

HERE = os.path.dirname(os.path.abspath(__file__))


def _same_batch(stem: str, x: torch.Tensor, y: torch.Tensor) -> None:
    for part, t in (("x", x), ("y", y)):
        want = np.fromfile(os.path.join(HERE, f"{stem}.{part}.bin"), dtype=t.numpy().dtype)
        if not np.array_equal(want, t.numpy().ravel()):
            raise SystemExit(f"{stem}.{part}.bin differs from what this script makes: make_plans.py changed "
                             "its seeds or models; mirror it here")


def main():
    torch.manual_seed(0)  # as make_plans.py, in the same order
    mlp = models.MLP(in_features=6, hidden=16, num_classes=3, depth=2)
    x, y = torch.randn(8, 6), torch.randint(3, (8,))
    _same_batch("mlp_sgd", x, y)
    prog = et.compile(mlp, (x,), y, peft=et.peft.Full(), optimizer=et.optim.SGD(lr=0.1, momentum=0.9),
                      backend="cuda")
    prog.save(os.path.join(HERE, "mlp_sgd.cuda.etp"), backend="cuda")

    cnn = models.SmallCNN(num_classes=4, width=8).train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(4, (4,))
    _same_batch("small_cnn_adamw", x, y)
    prog = et.compile(cnn, (x,), y, peft=et.peft.LastK(3), optimizer=et.optim.AdamW(lr=1e-3), backend="cuda")
    prog.save(os.path.join(HERE, "small_cnn_adamw.cuda.etp"), backend="cuda")


if __name__ == "__main__":
    main()
