"""Everything the GPU check needs, made on the CPU (issue 12: "plans, reference outputs and expected
weights are produced on the CPU and saved; the GPU only runs and compares").

    EDGETUNE_NATIVE=<a module built with -DEDGETUNE_CUDA=ON> \\
        python benchmarks/gpu/prepare_cases.py build/gpu-cases [--quick]

The module must be built with the CUDA backend (no GPU needed): plans for the cuda target are
memory-planned with the cuda kernels' own workspace sizes (runtime/targets.py, CudaTarget).

Writes, per case folder:
  correctness/<case>/   a small zoo model (MobileNetV2, ResNet-18, BERT, the LLaMA-style decoder)
                        with one scheme and optimizer: plan.etp (cuda target), x.npy / y.npy
                        (STEPS batches in file order), expected.safetensors ("init/<name>" and
                        "reference/<name>", the numpy reference executor after STEPS steps, for
                        every tensor the steps change), meta.json (the CRC-32 of every other tensor,
                        which must come back bit-identical; the cpu backend's own score and losses)
  bench/<case>/         a benchmark-size model (224x224 images, 128 tokens): plan.etp.gz whose
                        persistent region is zeroed (timing only: the weights of a ResNet-18 would
                        not travel; zeros keep every step finite), meta.json (model config, the
                        batch's shapes and ranges — run_cases.py makes it —, trainable names,
                        optimizer) for the PyTorch CUDA eager run of the same model, batch and
                        trainable set
  ops/op_cases.safetensors
                        every cuda kernel name (variants included) on every op-sweep sample of its
                        op (compiler/ops/*.py samples, the seeds of tests/ops/test_op_sweep.py):
                        "c<N>/in<j>" inputs, "c<N>/out<j>" what the cpu kernel of that name gives,
                        and in the metadata "c<N>" = {"kernel", "sample", "attrs": {name: [kind,
                        value]}} (kinds i f I F s, as the plan file stores attributes);
                        benchmarks/gpu/op_check.cc runs them on the GPU
and cases.json listing them. benchmarks/gpu/run_cases.py reads these on the GPU with numpy only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
import zlib

import numpy as np
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler.plan_file import FOOTER, FOOTER_MAGIC, split_footer
from edgetune.compiler.generated.plan_schema import Plan as fb_plan

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "runners"))
sys.path.insert(0, HERE)
from prepare import make_spec  # noqa: E402  (benchmarks/runners/prepare.py: the bench's schemes)

STEPS = 3

# (name, model, model kwargs, input size, batch, scheme, optimizer)
# small widths: the weights travel to the GPU machine (the plan, and init/reference of what changes)
MNV2 = {"num_classes": 10, "width_mult": 0.35}
RESNET = {"num_classes": 10, "width": 8}
BERT = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128, "vocab_size": 500}
LLAMA = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128, "vocab_size": 500, "max_len": 64}
CORRECTNESS = [
    # 64x64 and batch 16: train-mode BatchNorm on MobileNetV2's small final maps is so ill-conditioned
    # that two float32 implementations drift apart within steps (the cpu backend's own error vs the
    # float32 reference: 0.04 with bias-only SGD, 0.7 full SGD, 1.6 with AdamW); the AdamW case
    # therefore trains in eval mode (BatchNorm statistics frozen), which is well conditioned
    ("mnv2_bias_sgd", "mobilenet_v2", MNV2, {"resolution": 64}, 16, "bias-only", "sgd"),
    ("mnv2_full_adamw_eval", "mobilenet_v2", MNV2, {"resolution": 64}, 16, "full", "adamw", "eval"),
    ("resnet18_lastk_sgd", "resnet18", RESNET, {"resolution": 32}, 8, "last-k", "sgd"),
    ("resnet18_sparse_adamw", "resnet18", RESNET, {"resolution": 32}, 8, "sparse", "adamw"),
    ("bert_bias_adamw", "bert", BERT, {"seq_len": 16}, 8, "bias-only", "adamw"),
    ("bert_full_sgd", "bert", BERT, {"seq_len": 16}, 8, "full", "sgd"),
    ("llama_lastk_adamw", "llama", LLAMA, {"seq_len": 32}, 4, "last-k", "adamw"),
    ("llama_sparse_sgd", "llama", LLAMA, {"seq_len": 32}, 4, "sparse", "sgd"),
]
BENCH_MODELS = [
    ("mobilenet_v2", {"num_classes": 1000}, {"resolution": 224}, 16),
    ("resnet18", {"num_classes": 1000}, {"resolution": 224}, 16),
    ("bert", {}, {"seq_len": 128}, 32),
    ("llama", {}, {"seq_len": 128}, 8),
]
BENCH_SCHEMES = ["bias-only", "last-k", "sparse", "full"]
LR = {"sgd": 0.05, "adamw": 1e-3}


def _optimizer(name: str):
    return et.optim.SGD(lr=LR[name], momentum=0.9) if name == "sgd" else et.optim.AdamW(lr=LR[name])


def _batches(model_name, model, batch, size, n, seed):
    xs, ys = [], []
    for i in range(n):
        (x,), y = models.example_inputs(model_name, model, batch=batch, seed=seed + i, **size)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _save_safetensors(path, tensors: dict) -> None:
    from safetensors.numpy import save_file
    save_file({k: np.array(v, order="C") for k, v in tensors.items()}, str(path))


BACKEND = "cuda"  # --backend cpu makes the same cases for the cpu backend: a smoke test of the scripts


def _meta(prog, model_name, kwargs, size, batch, scheme, optimizer, extra=None) -> dict:
    return {"model": model_name, "model_kwargs": kwargs, **size, "batch": batch, "scheme": scheme,
            "spec": repr(prog.spec), "optimizer": optimizer, "lr": LR[optimizer], "momentum": 0.9,
            "trainable_names": list(prog.trainable_names), "aliases": dict(prog.graph.aliases),
            "planned_total_bytes": int(prog.memory_plan(BACKEND).total_bytes), **(extra or {})}


def correctness_case(out: str, name, model_name, kwargs, size, batch, scheme, optimizer, mode="train") -> dict:
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = models.build(model_name, **kwargs).train(mode == "train")
    x, y = _batches(model_name, model, batch, size, STEPS, seed=1)
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "y.npy"), y.numpy())
    prog = et.compile(model, (x[:batch],), y[:batch], loss="cross_entropy", peft=make_spec(scheme),
                      optimizer=_optimizer(optimizer), backend=BACKEND)
    prog.save(os.path.join(out, "plan.etp"))
    ref, cpu = et.Session(prog), et.Session(prog, backend="cpu", threads=1)
    init = ref.state_dict()
    losses = {"reference": [], "cpu": []}
    for i in range(STEPS):
        xb, yb = x[i * batch:(i + 1) * batch].numpy(), y[i * batch:(i + 1) * batch].numpy()
        losses["reference"].append(ref.step(xb, yb))
        losses["cpu"].append(cpu.step(xb, yb))
    after = ref.state_dict()
    trainable = {prog.graph.aliases.get(n, n) for n in prog.trainable_names} | set(prog.trainable_names)
    # what the steps change travels as init/ + reference/; the rest must come back bit-identical: a CRC
    changed = sorted(n for n in init if n in trainable or not np.array_equal(init[n], after[n]))
    tensors = {f"init/{n}": init[n] for n in changed}
    tensors.update({f"reference/{n}": after[n] for n in changed})
    _save_safetensors(os.path.join(out, "expected.safetensors"), tensors)
    from run_cases import score  # the GPU side's own scoring, so both are scored alike
    cpu_score = score(cpu.state_dict(), after, init, trainable)
    meta = _meta(prog, model_name, kwargs, size, batch, scheme, optimizer,
                 {"steps": STEPS, "losses": losses, "cpu_score": cpu_score,
                  "frozen_crc32": {n: zlib.crc32(np.ascontiguousarray(v).tobytes()) for n, v in init.items()
                                   if n not in changed}})
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return {"name": name, "kind": "correctness", "dir": os.path.relpath(out, os.path.dirname(os.path.dirname(out)))}


def _array_spec(t: torch.Tensor, high) -> dict:
    """How run_cases.py makes an array like `t`: normal floats, or integers in [0, high)."""
    return {"shape": list(t.shape), "dtype": str(t.numpy().dtype), "high": int(high) if high else None}


def zero_persistent_init(plan: bytes) -> bytes:
    """The plan with its persistent region's initial bytes zeroed and the checksum redone."""
    body = bytearray(split_footer(plan))
    p = fb_plan.Plan.GetRootAs(body, 0)
    o = p._tab.Offset(36)  # persistent_init (csrc/schema/plan.fbs field 16)
    if o:
        start, n = p._tab.Vector(o), p.PersistentInitLength()
        body[start:start + n] = bytes(n)
    return bytes(body) + FOOTER.pack(zlib.crc32(body), FOOTER_MAGIC)


def bench_case(out: str, model_name, kwargs, size, batch, scheme) -> dict:
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = models.build(model_name, **kwargs).train()
    (x,), y = models.example_inputs(model_name, model, batch=batch, seed=0, **size)
    t0 = time.perf_counter()
    prog = et.compile(model, (x,), y, loss="cross_entropy", peft=make_spec(scheme), optimizer=_optimizer("sgd"),
                      backend=BACKEND)
    compile_s = time.perf_counter() - t0
    plan = zero_persistent_init(prog.plan_bytes())
    with gzip.open(os.path.join(out, "plan.etp.gz"), "wb", compresslevel=6) as f:
        f.write(plan)
    summ = prog.summary()
    meta = _meta(prog, model_name, kwargs, size, batch, scheme, "sgd",
                 {"compile_s": compile_s, "flops_per_step": int(sum(summ.flops.values())),
                  # the batch is made on the GPU machine (values do not change the time): shapes and ranges
                  "x": _array_spec(x, getattr(model, "vocab_size", None)),
                  "y": _array_spec(y, getattr(model, "vocab_size", None) if y.ndim > 1 else
                                   getattr(model, "num_classes", None)),
                  "params_trainable": summ.params_trainable, "params_frozen": summ.params_frozen,
                  "plan_bytes": len(plan)})
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return {"name": f"{model_name}_{scheme}", "kind": "bench",
            "dir": os.path.relpath(out, os.path.dirname(os.path.dirname(out)))}


def _attr_entry(name, v):
    """An IR attribute as [kind, value] with the plan file's kinds (compiler/plan_file._attr_value)."""
    from edgetune.compiler.plan_file import AttrKind, _attr_value
    kind, value = _attr_value(name, v, "op case")
    return [{AttrKind.int_: "i", AttrKind.float_: "f", AttrKind.ints: "I", AttrKind.floats: "F",
             AttrKind.string_: "s"}[kind], value]


def op_cases(out: str) -> int:
    """Every cuda kernel on every op-sweep sample, with the cpu kernel's outputs (see the docstring)."""
    from safetensors.numpy import save_file
    from edgetune.compiler.ir import TensorType, dtype_of_numpy
    from edgetune.compiler.ops import REGISTRY
    from edgetune.runtime.native import native
    mod = native()
    kernels = mod.kernel_names("cuda")
    tensors, meta, n = {}, {}, 0
    for name in sorted(REGISTRY):
        op = REGISTRY[name]
        samples = op.samples(np.random.default_rng(zlib.crc32(f"samples/{name}".encode())))
        for kernel in [k for k in kernels if k == name or k.startswith(name + ".")]:
            for i, sample in enumerate(samples):
                ins = [np.asarray(x) for x in sample.inputs]
                types = [TensorType(tuple(x.shape), dtype_of_numpy(x.dtype)) for x in ins]
                specs = [(t.dtype, list(t.shape)) for t in op.infer(types, sample.attrs)]
                try:
                    outs = mod.run_kernel("cpu", kernel, ins, specs, sample.attrs, 1)
                except mod.NativeError:
                    continue  # this cpu variant refuses the sample: nothing to compare with
                attrs = {k: _attr_entry(k, v) for k, v in sample.attrs.items() if v is not None}
                meta[f"c{n}"] = json.dumps({"kernel": kernel, "sample": i, "note": sample.note or "", "attrs": attrs})
                for j, x in enumerate(ins):
                    tensors[f"c{n}/in{j}"] = np.array(x, order="C")
                for j, y in enumerate(outs):
                    tensors[f"c{n}/out{j}"] = np.array(y, order="C")
                n += 1
    os.makedirs(out, exist_ok=True)
    meta["cases"] = str(n)
    save_file(tensors, os.path.join(out, "op_cases.safetensors"), metadata=meta)
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for the cases (e.g. build/gpu-cases)")
    ap.add_argument("--quick", action="store_true", help="two correctness cases and two bench cases (a smoke run)")
    ap.add_argument("--backend", default="cuda", choices=["cuda", "cpu"],
                    help="the plans' target (cpu: to smoke-test run_cases.py --backend cpu here; no op cases)")
    args = ap.parse_args(argv)
    global BACKEND
    BACKEND = args.backend
    from edgetune.runtime.native import native
    if BACKEND == "cuda" and "cuda" not in native().backends():
        print(f"{native().__file__} has no cuda backend: build one with -DEDGETUNE_CUDA=ON "
              "(csrc/dev-build.sh NAME -DEDGETUNE_CUDA=ON ...) and point EDGETUNE_NATIVE at it", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cases = []
    correctness = CORRECTNESS[:2] if args.quick else CORRECTNESS
    bench = [(m, s) for m in (BENCH_MODELS[:1] if args.quick else BENCH_MODELS)
             for s in (BENCH_SCHEMES[:2] if args.quick else BENCH_SCHEMES)]
    t0 = time.perf_counter()
    n_ops = op_cases(os.path.join(args.out, "ops")) if BACKEND == "cuda" else 0
    print(f"ops: {n_ops} kernel cases ({time.perf_counter() - t0:.1f}s)", flush=True)
    for name, *rest in correctness:
        t0 = time.perf_counter()
        cases.append(correctness_case(os.path.join(args.out, "correctness", name), name, *rest))
        print(f"correctness/{name}: {time.perf_counter() - t0:.1f}s", flush=True)
    from edgetune.compiler.errors import SpecError
    for (model_name, kwargs, size, batch), scheme in bench:
        t0 = time.perf_counter()
        try:
            cases.append(bench_case(os.path.join(args.out, "bench", f"{model_name}_{scheme}"), model_name, kwargs,
                                    size, batch, scheme))
        except SpecError as e:  # e.g. bias-only on the LLaMA-style decoder, which has no biases
            print(f"bench/{model_name}_{scheme}: skipped ({str(e).splitlines()[0][:120]})", flush=True)
            continue
        print(f"bench/{model_name}_{scheme}: {time.perf_counter() - t0:.1f}s", flush=True)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump({"backend": BACKEND, "steps": STEPS, "cases": cases, "op_cases": "ops/op_cases.safetensors", "op_case_count": n_ops,
                   "models_py": "edgetune/models.py"}, f, indent=1)
    size = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(args.out) for fn in fns)
    print(f"{len(cases)} cases in {args.out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
