"""The `edgetune` command line (also `python -m edgetune`).

    edgetune           this help
    edgetune finetune  the main job: fine-tune pretrained EfficientNet-Lite0 and MiniLM on real data
                       under six schemes on the C++ runtime (edgetune/finetune.py; --long, --quick;
                       needs the `examples` extra); `python -m edgetune` with no arguments runs it
    edgetune demo      compile a zoo model with a sparse spec and train it a few steps
    edgetune bench     time and memory per step against PyTorch, ONNX Runtime and TVM
    edgetune op-profile  edgetune's per-op profile beside torch.profiler on the same training step,
                       by op family, with GFLOP/s against the sgemm peak (benchmarks/op_profile.py)
    edgetune compile   compile a zoo model or an ONNX file: summary, memory plan, and the plan
                       file (-o x.etp), a training binary with the plan inside (-o DIR
                       --emit-binary) or the text IR (-o x.etir)

Exit status: 0 on success, 2 on a user mistake (an edgetune error, printed without a
traceback), 3 when the demo's loss did not fall, 1 on anything unexpected. Files are written atomically: a failed run never
leaves a half-written program behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(soft_wrap=True)  # long summary lines stay whole in logs and pipes


def parse_peft(text: str):
    """An argparse type for peft.parse_spec."""
    from .compiler.errors import SpecError
    from .compiler.peft import parse_spec
    try:
        return parse_spec(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_model(name: str, num_classes: int):
    from . import models
    kwargs = {}
    if name == "small_cnn":
        kwargs = {"num_classes": num_classes, "width": 16}
    elif name == "mobilenet_v2":
        kwargs = {"num_classes": num_classes, "width_mult": 0.35}
    elif name == "resnet18":
        kwargs = {"num_classes": num_classes, "width": 16}
    elif name == "mlp":
        kwargs = {"num_classes": num_classes}
    return models.build(name, **kwargs)


def cmd_demo(args) -> int:
    import torch
    import edgetune as et
    from . import models as zoo
    torch.manual_seed(args.seed)
    model = build_model(args.model, 4).train(not args.eval)
    inputs, target = zoo.synthetic_task(args.model, model, args.batch, args.resolution, args.seed)
    started = time.perf_counter()
    prog = et.compile(model, inputs, target, loss="cross_entropy", peft=args.peft,
                      optimizer=et.optim.make_optimizer(args.optimizer, args.lr, args.momentum, args.weight_decay),
                      opt_level=args.opt_level, disable_passes=args.disable_pass, arch=args.arch)
    console.print(f"[bold]compiled[/bold] {args.model} in {time.perf_counter() - started:.2f} s")
    console.print(str(prog.summary()))
    sess = et.Session(prog, backend=args.backend, threads=args.threads)
    where = "the numpy reference executor" if args.backend == "reference" else f"the C++ runtime ({args.backend})"
    if sess.memory:
        console.print(str(prog.memory_plan(args.backend)))
    console.print(f"training on {where}: {args.steps} steps, batch {args.batch}, "
                  "a fresh synthetic batch each step")
    table = Table()
    table.add_column("step", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("ms", justify="right")
    losses = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("training", total=args.steps)
        for step in range(args.steps):
            batch_inputs, batch_target = (inputs, target) if step == 0 else \
                zoo.synthetic_task(args.model, model, args.batch, args.resolution, args.seed + step)
            t0 = time.perf_counter()
            loss = sess.step(*batch_inputs, batch_target)
            losses.append(loss)
            table.add_row(str(step + 1), f"{loss:.4f}", f"{(time.perf_counter() - t0) * 1e3:.0f}")
            progress.advance(task)
    console.print(table)
    first, last = _mean(losses[:3]), _mean(losses[-3:])
    trend = "fell" if last < first else "did NOT fall"
    console.print(f"loss {trend}: mean of the first 3 steps {first:.4f} -> mean of the last 3 steps {last:.4f}")
    if args.save:
        sess.save_weights(args.save)
        console.print(f"trained weights written to {args.save}")
    return 0 if last < first else 3


def _mean(xs):
    return sum(xs) / len(xs)


def write_atomically(path: str, write) -> None:
    """Write via a temporary file in the same folder, then rename: all or nothing."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".edgetune-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_compile(args) -> int:
    import torch
    import edgetune as et
    from . import models as zoo
    from .compiler.errors import InputError
    if args.source and args.onnx:
        raise InputError("give the ONNX file either as the argument or with --onnx, not both")
    args.onnx = args.onnx or args.source
    if args.onnx and not os.path.exists(args.onnx):
        raise InputError(f"{args.onnx}: no such file")
    if args.emit_binary and not args.out:
        raise InputError("--emit-binary needs -o DIR (the binary is written to DIR/train)")
    if args.onnx:
        from .frontends.from_onnx import load_model
        proto, _, _ = load_model(args.onnx)
        initializers = {init.name for init in proto.graph.initializer}
        # symbolic dims (usually the batch) take --batch; image/sequence data is random, as
        # only shapes and dtypes matter to compilation
        graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
        shapes = [[d.dim_value or args.batch for d in i.type.tensor_type.shape.dim] for i in graph_inputs]
        inputs = tuple(_onnx_example(torch, i.type.tensor_type.elem_type, s) for i, s in zip(graph_inputs, shapes))
        target = torch.zeros(shapes[0][0] if shapes and shapes[0] else args.batch, dtype=torch.int64)
        model = args.onnx  # the path, so the program is named after the file
    else:
        torch.manual_seed(args.seed)
        model = build_model(args.model, 10).train(not args.eval)
        inputs, target = zoo.synthetic_task(args.model, model, args.batch, args.resolution, args.seed)
    prog = et.compile(model, inputs, target, peft=args.peft,
                      optimizer=et.optim.make_optimizer(args.optimizer, args.lr, args.momentum, args.weight_decay),
                      opt_level=args.opt_level, disable_passes=args.disable_pass, arch=args.arch)
    console.print(str(prog.summary()))
    if not args.out:
        return 0
    out = args.out
    if out.endswith((".etir", ".txt")):
        text = str(prog)

        def write(path):
            with open(path, "w") as f:
                f.write(text)
        write_atomically(out, write)
        console.print(f"text IR ({len(prog.graph.nodes)} nodes) written to {out}")
        return 0
    console.print(str(prog.memory_plan(args.backend)))
    if args.emit_binary or out.endswith(os.sep) or os.path.isdir(out):
        os.makedirs(out, exist_ok=True)
        name = os.path.splitext(os.path.basename(args.onnx))[0] if args.onnx else args.model
        plan_path = os.path.join(out, f"{name}.etp")
    else:
        plan_path = out
    size = prog.save(plan_path, backend=args.backend)
    console.print(f"plan ({len(prog.graph.nodes)} nodes, {size / 2**20:.2f} MiB) written to {plan_path}")
    if args.emit_binary:
        from .runtime.binary import emit_binary
        binary = os.path.join(out, "train")
        with open(plan_path, "rb") as f:
            emit_binary(f.read(), binary)
        console.print(f"training binary with the plan inside written to {binary} "
                      f"(run: {binary} --inputs x.npy --targets y.npy --out tuned.safetensors)")
    return 0


def cmd_bench(argv: list[str]) -> int:
    """`edgetune bench ...`: the benchmark harness (benchmarks/bench.py, edgetune.benchmarks)."""
    from .benchmarks.bench import main as bench_main
    return bench_main(argv)


def cmd_op_profile(argv: list[str]) -> int:
    """`edgetune op-profile ...`: per-op families, edgetune vs torch.profiler (benchmarks/op_profile.py)."""
    from .benchmarks.op_profile import main as op_profile_main
    return op_profile_main(argv)


def _onnx_example(torch, elem_type: int, shape):
    """An example input of an ONNX graph input's element type: ids (int) are zeros, a mask (bool)
    all true, floats random; only shapes and dtypes matter to compilation."""
    import onnx
    dtype = {onnx.TensorProto.BOOL: torch.bool, onnx.TensorProto.INT64: torch.int64,
             onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.DOUBLE: torch.float64}.get(elem_type)
    if dtype is torch.bool:
        return torch.ones(*shape, dtype=torch.bool)
    if dtype is not None and not dtype.is_floating_point:
        return torch.zeros(*shape, dtype=dtype)
    return torch.randn(*shape, dtype=dtype or torch.float32)


def cmd_doctor(args) -> int:
    from .doctor import doctor_main
    return doctor_main(args.target, args.input)


def build_parser() -> argparse.ArgumentParser:
    from .compiler.passes.pipeline import DEFAULT_OPT_LEVEL, PASS_NAMES
    try:  # the zoo is plain torch; help and plan-file work must not need torch installed
        from . import models
        model_names = sorted(models.MODELS)
    except ImportError:
        model_names = None
    p = argparse.ArgumentParser(prog="edgetune", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command")

    def common(sp):
        sp.add_argument("--model", default="small_cnn", choices=model_names)
        sp.add_argument("--peft", default="last-k:3", type=parse_peft,
                        help="full | bias-only | last-k:N | select:GLOB,!GLOB | freeze-embeddings:SPEC | "
                             "lora:r=8,alpha=16,targets=q_proj|v_proj[,dropout=P,init=pissa,dora,rslora] | dora:... | "
                             "ssf:targets=... | ia3:targets=...,feedforward=... | channels:targets=...,fraction=F; "
                             "join several with + (default: last-k:3)")
        sp.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
        sp.add_argument("--lr", type=float, default=0.1)
        sp.add_argument("--momentum", type=float, default=0.9)
        sp.add_argument("--weight-decay", type=float, default=0.0)
        sp.add_argument("--batch", type=int, default=8)
        sp.add_argument("--resolution", type=int, default=32)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--eval", action="store_true", help="compile the model in eval mode (frozen BN stats)")
        sp.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "reference"],
                        help="runtime that trains (demo) or that the plan is made for (compile; cuda needs a "
                        "build with the CUDA backend, no GPU); default cpu")
        sp.add_argument("-O", dest="opt_level", type=int, default=DEFAULT_OPT_LEVEL, choices=[0, 1, 2, 3],
                        metavar="LEVEL", help="optimisation level -O0..-O3 (default -O2; -O3 times kernels here)")
        sp.add_argument("--disable-pass", action="append", default=[], choices=PASS_NAMES, metavar="NAME",
                        help=f"skip one optimisation pass (repeatable): {', '.join(PASS_NAMES)}")
        sp.add_argument("--arch", "--target", dest="arch", choices=["x86_64", "aarch64"], default=None,
                        help="compile for another machine: kernels chosen by the cost model (default: this one)")

    sub.add_parser("finetune", help="the main job (`python -m edgetune`): real pretrained models, real data, six schemes "
                   "(`edgetune finetune --help`)")
    demo = sub.add_parser("demo", help="compile a zoo model with a sparse spec and train it on synthetic data")
    common(demo)
    demo.add_argument("--steps", type=int, default=20)
    demo.add_argument("--threads", type=int, default=None, help="runtime threads (default: all cores)")
    demo.add_argument("--save", help="write the trained weights to this .safetensors file")
    sub.add_parser("bench", help="time and memory per step against PyTorch, ONNX Runtime and TVM "
                   "(benchmarks/bench.py; `edgetune bench --help`)")
    sub.add_parser("op-profile", help="edgetune's per-op profile beside torch.profiler on the same step, by op "
                   "family, GFLOP/s vs the sgemm peak (benchmarks/op_profile.py; `edgetune op-profile --help`)")
    doc = sub.add_parser("doctor", help="which ops a model uses and which edgetune cannot compile, without compiling")
    doc.add_argument("target", help="MODEL.onnx | package.module:attr (a module, class or factory) | "
                     "hf:MODEL_TYPE or hf:LOCAL_DIR (a Hugging Face architecture from its config, shrunk, random weights)")
    doc.add_argument("--input", action="append", default=[], metavar="SHAPExDTYPE",
                     help="an example input for module:attr targets, e.g. 2x3x32x32xf32 or 2x8xi64 (repeatable)")
    comp = sub.add_parser("compile", help="compile and write a plan file, a training binary or the text IR")
    common(comp)
    comp.add_argument("source", nargs="?", help="an ONNX file to compile (default: the zoo model --model)")
    comp.add_argument("--onnx", help="same as the positional ONNX file")
    comp.add_argument("--out", "-o", help="x.etp: plan file; DIR/: DIR/<model>.etp; x.etir: text IR")
    comp.add_argument("--emit-binary", action="store_true",
                      help="also write DIR/train: edgetune-train with the plan inside (one file for the device)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # the harness parses its own flags
        from .compiler.errors import EdgetuneError
        try:
            return cmd_bench(argv[1:])
        except EdgetuneError as e:
            console.print(f"[bold red]error:[/bold red] {e}", markup=True, highlight=False)
            return 2
    if argv and argv[0] == "op-profile":  # parses its own flags
        from .compiler.errors import EdgetuneError
        try:
            return cmd_op_profile(argv[1:])
        except EdgetuneError as e:
            console.print(f"[bold red]error:[/bold red] {e}", markup=True, highlight=False)
            return 2
    if argv and argv[0] == "finetune":  # the main job parses its own flags
        from .finetune import main as finetune_main
        return finetune_main(argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    from .compiler.errors import EdgetuneError
    try:
        return {"demo": cmd_demo, "compile": cmd_compile, "doctor": cmd_doctor}[args.command](args)
    except EdgetuneError as e:
        console.print(f"[bold red]error:[/bold red] {e}", markup=True, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
