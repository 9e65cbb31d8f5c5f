"""Time per training step: edgetune's C++ CPU runtime beside PyTorch eager, in the same run.

Both sides train the same model with the same trainable set (read from the compiled program),
the same optimizer, batch and thread count, on the same batch. Reported: median ms per step
after warm-up, and the ratio. (The full benchmark suite against PyTorch, ONNX Runtime and TVM,
with peak memory per process, is `edgetune bench`, a later issue.)

    python benchmarks/step_time.py                                   # MobileNetV2 224, batch 8, bias-only, SGD, 2 threads
    python benchmarks/step_time.py --model resnet18 --peft last-k:2 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import edgetune as et
from edgetune import models

CASES = {
    "mobilenet_v2": (lambda: models.MobileNetV2(num_classes=1000), {"resolution": 224}),
    "resnet18": (lambda: models.ResNet18(num_classes=1000), {"resolution": 224}),
    "bert": (lambda: models.BertEncoder(), {"seq_len": 128}),
    "small_cnn": (lambda: models.SmallCNN(), {"resolution": 32}),
}


def torch_step_fn(model, prog, optimizer_name, lr):
    trainable = set(prog.trainable_names)
    aliases = prog.graph.aliases
    params = []
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(aliases.get(name, name) in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9) if optimizer_name == "sgd" else \
        torch.optim.AdamW(params, lr=lr)

    def step(inputs, target):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(*inputs), target)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def timed(fn, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet_v2", choices=sorted(CASES))
    ap.add_argument("--peft", default="bias-only", help="full, bias-only, last-k:N or select:GLOBS")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--eval", action="store_true", help="BatchNorm in eval mode (frozen statistics)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--profile", action="store_true", help="also print edgetune's time per op")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    ctor, kw = CASES[args.model]
    torch.manual_seed(0)
    model = ctor().train(not args.eval)
    (x,), y = models.example_inputs(args.model, model, batch=args.batch, **kw)
    t0 = time.perf_counter()
    prog = et.compile(model, (x,), y, peft=et.peft.parse_spec(args.peft),
                      optimizer=et.optim.make_optimizer(args.optimizer, args.lr, 0.9, 0.0))
    compile_s = time.perf_counter() - t0
    plan = prog.memory_plan("cpu")
    sess = et.Session(prog, backend="cpu", threads=args.threads)
    xn, yn = x.numpy(), y.numpy()
    ours = timed(lambda: sess.step(xn, yn), args.warmup, args.steps)
    theirs_step = torch_step_fn(model, prog, args.optimizer, args.lr)
    theirs = timed(lambda: theirs_step((x,), y), args.warmup, args.steps)

    from edgetune.runtime.native import native
    result = {
        "model": args.model, "peft": repr(args.peft), "optimizer": args.optimizer, "batch": args.batch,
        "threads": args.threads, "train_mode_bn": not args.eval, "gemm": native().gemm_backend,
        "edgetune_ms": statistics.median(ours), "torch_ms": statistics.median(theirs),
        "speedup": statistics.median(theirs) / statistics.median(ours),
        "planned_arena_mib": plan.arena_bytes / 2**20, "planned_total_mib": plan.total_bytes / 2**20,
        "compile_s": compile_s, "cpu": os.uname().machine,
    }
    print(f"{args.model} batch {args.batch}, {args.peft!r}, {args.optimizer}, {args.threads} threads "
          f"(GEMM: {result['gemm']})")
    print(f"  edgetune cpu runtime  {result['edgetune_ms']:8.1f} ms/step   (planned memory "
          f"{result['planned_total_mib']:.1f} MiB, arena {result['planned_arena_mib']:.1f} MiB)")
    print(f"  PyTorch eager         {result['torch_ms']:8.1f} ms/step")
    print(f"  speed-up              {result['speedup']:8.2f}x")
    if args.profile:
        prof = sess.profile(args.steps, xn, yn)
        print("  edgetune time per op (ms/step): " + ", ".join(
            f"{op} {ms:.1f}" for op, ms in list(prof["ops"].items())[:12]))
        print("  by section (ms/step): " + ", ".join(f"{k} {v:.1f}" for k, v in prof["sections"].items()))
        result["profile_ops_ms"] = prof["ops"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
