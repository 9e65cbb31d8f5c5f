"""Writes the plan files the C++ tests load (csrc/tests/data/*.etp). Rerun after a change to the
plan format or the compiler's output for these models:  python csrc/tests/data/make_plans.py

  mlp_sgd.etp            MLP 6-16-16-3, full fine-tuning, SGD with momentum, batch 8
  small_cnn_adamw.etp    SmallCNN (train-mode BN) 3x16x16, last-k 3, AdamW, batch 4
  mlp_sgd_version99.etp  mlp_sgd with format_version 99 (the loader must refuse it)
  mlp_sgd.x.bin / .y.bin one batch of inputs and targets for mlp_sgd (raw little-endian)
"""

import os

import torch

import edgetune as et
from edgetune import models
from edgetune.compiler import plan_file

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    torch.manual_seed(0)
    mlp = models.MLP(in_features=6, hidden=16, num_classes=3, depth=2)
    x, y = torch.randn(8, 6), torch.randint(3, (8,))
    prog = et.compile(mlp, (x,), y, peft=et.peft.Full(), optimizer=et.optim.SGD(lr=0.1, momentum=0.9))
    prog.save(os.path.join(HERE, "mlp_sgd.etp"))
    x.numpy().tofile(os.path.join(HERE, "mlp_sgd.x.bin"))
    y.numpy().tofile(os.path.join(HERE, "mlp_sgd.y.bin"))
    plan_file.FORMAT_VERSION = 99
    plan_file.write_bytes_atomic(os.path.join(HERE, "mlp_sgd_version99.etp"), plan_file.build_plan(prog, "cpu"))
    plan_file.FORMAT_VERSION = 1

    cnn = models.SmallCNN(num_classes=4, width=8).train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(4, (4,))
    prog = et.compile(cnn, (x,), y, peft=et.peft.LastK(3), optimizer=et.optim.AdamW(lr=1e-3))
    prog.save(os.path.join(HERE, "small_cnn_adamw.etp"))
    x.numpy().tofile(os.path.join(HERE, "small_cnn_adamw.x.bin"))
    y.numpy().tofile(os.path.join(HERE, "small_cnn_adamw.y.bin"))


if __name__ == "__main__":
    main()
