"""What sparse backprop removes, measured on the compiled programs (no timing: static counts).

For each model at its benchmark size and each fine-tuning spec, compile the training program
and report: trainable parameters, backward ops and FLOPs, weight-gradient ops, bytes of
forward activations the backward graph keeps (vs all forward activations, what a framework
that saves everything for autograd would hold), and where backprop stops.

    python benchmarks/sparsity_report.py                 # all models, writes benchmarks/results/
    python benchmarks/sparsity_report.py --models mobilenet_v2 --batch 8

Time per step and peak memory against PyTorch / ONNX Runtime come with the C++ runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import edgetune as et
from edgetune import models

CASES = {
    "mobilenet_v2": dict(ctor=lambda: models.MobileNetV2(num_classes=1000), kw={"resolution": 224}),
    "resnet18": dict(ctor=lambda: models.ResNet18(num_classes=1000), kw={"resolution": 224}),
    "bert": dict(ctor=lambda: models.BertEncoder(), kw={"seq_len": 128}),
    "gpt": dict(ctor=lambda: models.GPTDecoder(), kw={"seq_len": 64}),
}
SPECS = {
    "full": et.peft.Full,
    "bias-only": et.peft.BiasOnly,
    "last-2": lambda: et.peft.LastK(2),
    "last-4": lambda: et.peft.LastK(4),
}


def measure(name: str, spec_name: str, batch: int) -> dict:
    torch.manual_seed(0)
    model = CASES[name]["ctor"]().eval()
    inputs, target = models.example_inputs(name, model, batch=batch, **CASES[name]["kw"])
    started = time.perf_counter()
    prog = et.compile(model, tuple(inputs), target, peft=SPECS[spec_name](),
                      optimizer=et.optim.SGD(lr=0.01, momentum=0.9))
    s = prog.summary()
    return {"model": name, "spec": spec_name, "batch": batch, "compile_s": round(time.perf_counter() - started, 2),
            "trainable_params": s.params_trainable, "frozen_params": s.params_frozen,
            "backward_ops": s.ops["backward"], "backward_gflops": s.flops["backward"] / 1e9,
            "forward_gflops": s.flops["forward"] / 1e9, "weight_grad_ops": s.weight_grad_ops,
            "kept_mib": s.activation_bytes_kept / 2**20, "all_forward_mib": s.forward_activation_bytes / 2**20,
            "first_grad_op": f"#{s.first_grad_index}/{s.forward_ops}"}


def to_markdown(rows: list[dict]) -> str:
    head = ("| model | spec | trainable params | backward ops | backward GFLOP | weight-grad ops | "
            "kept for backward | all forward activations | backprop starts at |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['spec']} | {r['trainable_params']:,} | {r['backward_ops']} | "
                     f"{r['backward_gflops']:.2f} | {r['weight_grad_ops']} | {r['kept_mib']:.1f} MiB | "
                     f"{r['all_forward_mib']:.1f} MiB | op {r['first_grad_op']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--specs", nargs="*", default=list(SPECS), choices=list(SPECS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args()
    rows = [measure(m, s, args.batch) for m in args.models for s in args.specs]
    table = to_markdown(rows)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sparsity.md"), "w") as f:
        f.write(f"Batch {args.batch}; eval-mode models; `python benchmarks/sparsity_report.py`\n\n" + table)
    with open(os.path.join(args.out, "sparsity.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
