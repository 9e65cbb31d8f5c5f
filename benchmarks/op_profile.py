"""Per-op profile: edgetune's C++ runtime beside torch.profiler on the same training step, matched by op family.

    edgetune op-profile                                   # main job (vision, text) + bench models, bias-only
    edgetune op-profile --models vision,text --schemes bias-only --readme   # the README's table (regenerates it)
    edgetune op-profile --models mobilenet_v2,bert --schemes full,sparse --steps 3
    edgetune op-profile --quick                           # SmallCNN 32x32, 2 steps (the test)
    python -m edgetune.benchmarks.op_profile ...          # the same

Cases: the main job's two models built exactly as `edgetune/finetune.py` builds them (`vision`:
EfficientNet-Lite0 with ImageNet weights, digits 32x32, batch 32; `text`: MiniLM-L6, 8 tokens,
batch 32; eval mode, AdamW with the main job's learning rate per scheme, `finetune.scheme_spec`)
and the bench models (`benchmarks/bench.py`'s CASES, built by runners/zoo.py in train mode, batch
8, SGD momentum 0.9, the bench's specs from runners/prepare.py).

Each case runs, in one process and one after the other: edgetune (`Session(prog, backend="cpu",
threads=T)`: warm-up, the median of unprofiled steps, then `Session.profile` over the same number of
steps), and PyTorch eager on a copy of the same model with the same trainable set (requires_grad
from prog.trainable_names and prog.graph.aliases), the same optimizer (torch.optim), batch and
thread count (warm-up, unprofiled median, then `torch.profiler.profile(activities=[CPU],
record_shapes=True)` over the same number of steps; self CPU time per event).

Matching is by op family (FAMILIES). edgetune's nodes map by op (ET_OPS); a conv's kind (1x1,
depthwise/grouped, kxk) comes from its weight shape and groups, its direction from the node's
section. PyTorch's events map by name (TORCH_OPS) with the time of everything an op calls counted
to the outermost op that names a family (aten::linear's aten::t and aten::addmm are GEMM; what
aten::conv2d calls is conv), so a family on either side is "the op and what it needs to run";
backward is whatever runs under `autograd::engine::evaluate_function`, the optimizer whatever runs
under `Optimizer.step`/`zero_grad`; a conv's kind comes from its recorded input shapes. The autograd
engine's own frames, AccumulateGrad and allocation go to "framework". Names nothing maps go to
"other" and are listed; the families add up to each side's profiled total, printed beside the
unprofiled median step.

Attention: PyTorch runs F.scaled_dot_product_attention as one fused op (flash attention for CPU);
edgetune decomposes it (permute, matmul, scale, mask, softmax, matmul). Both go to "attention
fwd/bwd": on edgetune's side every node whose source is such a call (attention_sources), so the
attention matmuls are not in GEMM on either side.

FLOPs per family (conv, GEMM and attention, forward and backward) are edgetune's own count for the
program's nodes (compiler op_flops, what `prog.summary()` adds up); PyTorch's GFLOP/s for a family
is the same FLOPs over its time. Both as % of this machine's sgemm peak (benchmarks/runners/
gemm_peak.py: edgetune's matmul kernel, 1024^3, T threads), beside PyTorch's own 1024^3 mm; both
measured at the start and the end of the run, the higher kept (shared cores make one measurement
unreliable; a family above 100% means the peak was measured in a busy moment).
Differences the matching cannot remove: edgetune fuses a conv's bias and activation into it
(PyTorch: separate ops); PyTorch's conv backward includes the bias gradient (edgetune: a `sum`
node, reductions).

Output: a table per case on the console, RESULTS/op_profile.json and op_profile.md; --readme
rewrites the README's op-profile table (between its op-profile markers) from this run.
Threads: OMP_WAIT_POLICY=PASSIVE unless --omp-active, as `edgetune bench` (set before torch loads).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

MAIN_JOB = ("vision", "text")
SCHEMES = ("full", "bias-only", "last-k", "sparse", "head-only")
BENCH_MODELS = ("mobilenet_v2", "resnet18", "efficientnet_lite0", "bert", "llama")
EXTRA_MODELS = {"small_cnn": {"model_kwargs": {}, "resolution": 32}}  # --quick (the test)
DEFAULT_SCHEMES = ("bias-only",)
README_MARK = ("<!-- op-profile:begin (edgetune op-profile --models vision,text --schemes bias-only --readme) -->",
               "<!-- op-profile:end -->")

CONV_KINDS = ("1x1", "depthwise", "kxk")
FAMILIES = ([f"conv fwd {k}" for k in CONV_KINDS] + [f"conv bwd {k}" for k in CONV_KINDS]
            + ["GEMM fwd", "GEMM bwd", "attention fwd", "attention bwd", "norms", "softmax", "activations", "elementwise", "reductions/pooling",
               "data movement", "loss", "optimizer", "framework", "other"])
FLOP_FAMILIES = tuple(f for f in FAMILIES if f.startswith(("conv", "GEMM", "attention")))

# ---------------------------------------------------------------------------------------------
# edgetune ops -> family (conv and GEMM get their kind and direction in et_family)
# ---------------------------------------------------------------------------------------------
ET_OPS = {
    "conv": ("conv2d", "conv2d_grad_input", "conv2d_grad_weight"),
    "GEMM": ("matmul", "linear"),
    "norms": ("batch_norm_train", "batch_norm_infer", "batch_norm_backward", "layer_norm", "layer_norm_backward"),
    "softmax": ("softmax", "softmax_backward"),
    "activations": ("relu", "relu_backward", "gelu", "gelu_backward", "hardtanh", "hardtanh_backward", "hardswish",
                    "hardswish_backward", "hardsigmoid", "hardsigmoid_backward", "sigmoid", "sigmoid_backward",
                    "silu", "silu_backward", "tanh", "tanh_backward", "activation_mask", "mask_grad"),
    "elementwise": ("add", "sub", "mul", "div", "exp", "log", "neg", "pow_scalar", "rsqrt", "sqrt", "where", "cast",
                    "fused_elementwise", "dropout"),
    "reductions/pooling": ("mean", "sum", "sum_to", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
                           "avg_pool2d_backward"),
    "data movement": ("permute", "reshape", "expand", "concat", "slice", "slice_backward", "embedding",
                      "embedding_backward"),
    "loss": ("cross_entropy", "cross_entropy_backward", "log_softmax", "log_softmax_backward", "nll_loss",
             "nll_loss_backward", "mse_loss"),
    "optimizer": ("adamw_update", "sgd_update"),
}
_ET_FAMILY = {op: fam for fam, ops in ET_OPS.items() for op in ops}

# ---------------------------------------------------------------------------------------------
# PyTorch profiler event names -> family
# ---------------------------------------------------------------------------------------------
TORCH_CONV_FWD = ("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
                  "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::_conv_depthwise2d",
                  "aten::_nnpack_spatial_convolution", "aten::conv_depthwise2d", "aten::slow_conv_dilated2d")
TORCH_CONV_BWD = ("aten::convolution_backward", "aten::_slow_conv2d_backward", "aten::mkldnn_convolution_backward",
                  "aten::_conv_depthwise2d_backward", "aten::slow_conv_dilated2d_backward")
TORCH_OPS = {
    "GEMM": ("aten::linear", "aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::baddbmm", "aten::addbmm",
             "aten::_addmm_activation", "aten::mkldnn_linear", "aten::dot", "aten::mv", "aten::einsum"),
    "norms": ("aten::batch_norm", "aten::_batch_norm_impl_index", "aten::native_batch_norm",
              "aten::_native_batch_norm_legit", "aten::_native_batch_norm_legit_no_training",
              "aten::native_batch_norm_backward", "aten::_batch_norm_impl_index_backward",
              "aten::batch_norm_backward", "aten::layer_norm", "aten::native_layer_norm",
              "aten::native_layer_norm_backward", "aten::rms_norm", "aten::_fused_rms_norm",
              "aten::_fused_rms_norm_backward", "aten::group_norm", "aten::native_group_norm"),
    "softmax": ("aten::softmax", "aten::_softmax", "aten::_softmax_backward_data"),
    "activations": ("aten::relu", "aten::relu_", "aten::threshold_backward", "aten::gelu", "aten::gelu_",
                    "aten::gelu_backward", "aten::hardtanh", "aten::hardtanh_", "aten::hardtanh_backward",
                    "aten::relu6", "aten::hardswish", "aten::hardswish_", "aten::hardswish_backward",
                    "aten::hardsigmoid", "aten::hardsigmoid_", "aten::hardsigmoid_backward", "aten::sigmoid",
                    "aten::sigmoid_", "aten::sigmoid_backward", "aten::silu", "aten::silu_", "aten::silu_backward",
                    "aten::tanh", "aten::tanh_", "aten::tanh_backward"),
    "elementwise": ("aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_",
                    "aten::div", "aten::div_", "aten::exp", "aten::exp_", "aten::log", "aten::neg", "aten::pow",
                    "aten::pow_", "aten::rsqrt", "aten::sqrt", "aten::where", "aten::masked_fill",
                    "aten::masked_fill_", "aten::clamp", "aten::clamp_", "aten::clamp_min", "aten::clamp_min_",
                    "aten::dropout", "aten::native_dropout", "aten::native_dropout_backward", "aten::bernoulli_",
                    "aten::feature_dropout", "aten::addcmul", "aten::addcmul_", "aten::addcdiv", "aten::addcdiv_",
                    "aten::lerp_", "aten::reciprocal", "aten::square", "aten::abs", "aten::sign", "aten::eq",
                    "aten::ne", "aten::gt", "aten::lt", "aten::ge", "aten::le", "aten::logical_not", "aten::erf"),
    "reductions/pooling": ("aten::mean", "aten::sum", "aten::adaptive_avg_pool2d", "aten::_adaptive_avg_pool2d",
                           "aten::_adaptive_avg_pool2d_backward", "aten::max_pool2d",
                           "aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward",
                           "aten::avg_pool2d", "aten::avg_pool2d_backward", "aten::amax", "aten::max",
                           "aten::norm", "aten::linalg_vector_norm"),
    "data movement": ("aten::view", "aten::_unsafe_view", "aten::reshape", "aten::permute", "aten::transpose",
                      "aten::t", "aten::expand", "aten::contiguous", "aten::clone", "aten::copy_", "aten::cat",
                      "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::flatten",
                      "aten::as_strided", "aten::as_strided_", "aten::split", "aten::chunk", "aten::narrow",
                      "aten::index_select", "aten::embedding", "aten::embedding_backward",
                      "aten::embedding_dense_backward", "aten::index", "aten::index_put_", "aten::_to_copy",
                      "aten::to", "aten::repeat", "aten::stack", "aten::unbind", "aten::expand_as",
                      "aten::view_as", "aten::_reshape_alias", "aten::unflatten", "aten::slice_backward",
                      "aten::select_backward", "aten::new_empty_strided", "aten::constant_pad_nd", "aten::pad",
                      "aten::arange", "aten::numpy_T", "aten::matrix_H", "aten::mT"),
    "loss": ("aten::cross_entropy_loss", "aten::log_softmax", "aten::_log_softmax", "aten::_log_softmax_backward_data",
             "aten::nll_loss", "aten::nll_loss_nd", "aten::nll_loss_forward", "aten::nll_loss_backward",
             "aten::nll_loss2d_forward", "aten::nll_loss2d_backward", "aten::mse_loss", "aten::mse_loss_backward"),
    # self time only (never claims what it calls): the autograd engine, allocation, bookkeeping
    "framework": ("aten::empty", "aten::empty_like", "aten::empty_strided", "aten::zeros", "aten::zeros_like",
                  "aten::ones_like", "aten::ones", "aten::zero_", "aten::fill_", "aten::resize_", "aten::detach",
                  "aten::detach_", "detach", "detach_", "aten::item", "aten::_local_scalar_dense", "aten::lift_fresh",
                  "aten::alias", "aten::set_", "aten::result_type", "aten::scalar_tensor", "aten::full",
                  "aten::new_zeros", "aten::new_empty", "aten::_has_compatible_shallow_copy_type", "aten::is_nonzero",
                  "torch::autograd::AccumulateGrad", "aten::full_like", "aten::record_stream"),
}
TORCH_ATTENTION_PREFIX = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_")
_TORCH_FAMILY = {name: fam for fam, names in TORCH_OPS.items() for name in names}
_TORCH_FAMILY.update({n: "conv fwd" for n in TORCH_CONV_FWD})
_TORCH_FAMILY.update({n: "conv bwd" for n in TORCH_CONV_BWD})
_SELF_ONLY = ("framework",)  # families that classify only their own frame, not their children


def conv_kind(weight_shape, groups: int) -> str:
    if groups and groups > 1:
        return "depthwise"  # depthwise and other grouped convolutions
    return "1x1" if tuple(weight_shape[2:]) == (1, 1) else "kxk"


def attention_sources(nodes) -> set[str]:
    """Sources of decomposed scaled_dot_product_attention calls (frontends/from_torch.py: permute,
    matmul, scale, mask, softmax, matmul, all with the call's source): a source with a forward
    softmax and a matmul. Every node of such a source (their backward too) is attention."""
    soft = {n.source for n in nodes if n.op == "softmax" and n.section == "forward" and n.source}
    return soft & {n.source for n in nodes if n.op == "matmul"}


def et_family(op: str, section: str, node=None, kernel: str = "", attention: bool = False) -> str:
    """The family of one edgetune node: by op; conv and GEMM also by section (backward or not) and,
    for conv, by kind: from the node's weight shape and groups, else from the kernel's name.
    `attention`: the node is part of a decomposed attention call (attention_sources)."""
    direction = "bwd" if section == "backward" else "fwd"
    if attention:
        return f"attention {direction}"
    fam = _ET_FAMILY.get(op, "other")
    if fam == "GEMM":
        return f"GEMM {direction}"
    if fam != "conv":
        return fam
    if node is not None:
        w = node.attrs["weight_shape"] if op == "conv2d_grad_weight" else node.inputs[1].shape
        kind = conv_kind(w, int(node.attrs.get("groups", 1)))
    else:  # by the kernel's name: conv2d.depthwise / .pointwise / .im2col / .winograd
        suffix = kernel.rsplit(".", 1)[-1] if "." in kernel else ""
        kind = {"depthwise": "depthwise", "pointwise": "1x1"}.get(suffix, "kxk")
    return f"conv {direction} {kind}"


def torch_own_family(name: str, shapes, backward: bool) -> str | None:
    """The family one profiler event names by itself (None: it names none)."""
    if name.startswith(("Optimizer.step#", "Optimizer.zero_grad#")):
        return "optimizer"
    if name.startswith("autograd::engine::evaluate_function") or name.endswith(("Backward0", "Backward1")):
        return "framework"
    fam = "attention" if name.startswith(TORCH_ATTENTION_PREFIX) else _TORCH_FAMILY.get(name)
    if fam is None:
        return None
    if fam in ("conv fwd", "conv bwd"):
        direction = "bwd" if (backward or fam == "conv bwd") else "fwd"
        return f"conv {direction} {torch_conv_kind(name, shapes)}"
    if fam in ("GEMM", "attention"):
        return f"{fam} {'bwd' if backward else 'fwd'}"
    return fam


def torch_conv_kind(name: str, shapes) -> str:
    """1x1 / depthwise / kxk from a conv event's recorded input shapes (input [N,C,H,W], weight
    [O,C/groups,KH,KW]; convolution_backward records grad_output, input, weight)."""
    i = 1 if name in TORCH_CONV_BWD else 0
    try:
        x, w = shapes[i], shapes[i + 1]
        if len(x) == 4 and len(w) == 4 and w[1]:
            return conv_kind(w, x[1] // w[1])
    except (IndexError, TypeError):
        pass
    return "kxk"


def torch_event_family(chain: list[tuple[str, list]]) -> str:
    """`chain`: (name, input shapes) from the outermost event down to this one. The outermost
    event that names a family claims the time (framework frames claim only their own)."""
    names = [n for n, _ in chain]
    if any(n.startswith(("Optimizer.step#", "Optimizer.zero_grad#")) for n in names):
        return "optimizer"
    backward = any(n.startswith("autograd::engine::evaluate_function") for n in names)
    for k, (name, shapes) in enumerate(chain):
        fam = torch_own_family(name, shapes, backward)
        if fam is None or (fam in _SELF_ONLY and k != len(chain) - 1):
            continue
        return fam
    return "other"


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    model: str
    scheme: str
    torch_model: object
    x: object
    y: object
    prog: object
    optimizer: object  # edgetune.compiler.optim.SGD / AdamW
    batch: int
    desc: str
    compile_s: float = 0.0
    info: dict = field(default_factory=dict)


_TASK_CACHE: dict = {}


def _main_job_case(task: str, scheme: str, seed: int = 0) -> Case:
    import torch

    import edgetune as et
    from edgetune import finetune
    from edgetune.compiler import optim
    st = getattr(finetune.preset("default"), task)
    if task not in _TASK_CACHE:
        model0, data, info = finetune.load_task(task, st, seed)
        batches = finetune.batch_order(len(data.y_train), st.batch, st.steps, seed)
        import numpy as np
        # the main job's first batch, compiled as it compiles it: vision one tensor, text (ids, attention_mask)
        xs = tuple(torch.from_numpy(a) for a in finetune.take(data.x_train, batches[0]))
        x0 = xs[0] if len(xs) == 1 else xs
        y0 = torch.from_numpy(np.ascontiguousarray(data.y_train[batches[0]]))
        _TASK_CACHE[task] = (model0, x0, y0, info)
    model0, x0, y0, info = _TASK_CACHE[task]
    opt = optim.AdamW(lr=st.lr[scheme], weight_decay=0.01)
    model = copy.deepcopy(model0)
    t0 = time.perf_counter()
    prog = et.compile(model, _as_inputs(x0), y0, loss="cross_entropy", peft=finetune.scheme_spec(scheme, model),
                      optimizer=opt, name=f"{task}-{scheme}")
    shape = f"{st.size}x{st.size}" if task == "vision" else f"seq {st.seq_len}"
    return Case(task, scheme, copy.deepcopy(model0), x0, y0, prog, opt, st.batch,
                f"{info['model']}, {shape}, batch {st.batch}, eval mode, {opt!r} (main job)",
                time.perf_counter() - t0, {"data": info.get("data")})


def _as_inputs(x) -> tuple:
    """A case's model inputs as a tuple: Case.x is one tensor, or a tuple of them (the main job's
    text model takes (ids, attention_mask))."""
    return tuple(x) if isinstance(x, tuple) else (x,)


def _bench_case(name: str, scheme: str, batch: int, lr: float, momentum: float) -> Case:
    import edgetune as et
    from edgetune import models

    from .bench import CASES
    from .runners.prepare import make_spec
    from .runners.zoo import build_model
    cfg = {"model": name, **({**CASES, **EXTRA_MODELS}[name]), "batch": batch}
    model, x, y = build_model(cfg, models)
    opt = et.optim.SGD(lr=lr, momentum=momentum)
    t0 = time.perf_counter()
    prog = et.compile(copy.deepcopy(model), (x,), y, loss="cross_entropy", peft=make_spec(scheme), optimizer=opt)
    size = f"{cfg['resolution']}x{cfg['resolution']}" if "resolution" in cfg else \
        f"seq {cfg['seq_len']}" if "seq_len" in cfg else ""
    return Case(name, scheme, model, x, y, prog, opt, batch,
                f"{name} {size}, batch {batch}, train mode, {opt!r} (bench spec {prog.spec!r})",
                time.perf_counter() - t0)


def build_case(model: str, scheme: str, args) -> Case:
    if model in MAIN_JOB:
        return _main_job_case(model, scheme)
    return _bench_case(model, scheme, args.batch, args.lr, args.momentum)


# ---------------------------------------------------------------------------------------------
# the two sides
# ---------------------------------------------------------------------------------------------

def _timed(fn, warmup: int, steps: int) -> list[float]:
    from .step_time import timed  # one timing loop for the benchmarks (step_time imports torch)
    return timed(fn, warmup, steps)


def _side(families: dict[str, dict[str, float]], median_ms: float, steps: int, **extra) -> dict:
    fams = {f: {"ms": sum(ops.values()), "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}
            for f, ops in families.items()}
    return {"median_ms": median_ms, "profiled_ms": sum(f["ms"] for f in fams.values()), "steps": steps,
            "families": fams, **extra}


def run_edgetune(case: Case, threads: int, warmup: int, steps: int) -> tuple[dict, dict]:
    """(side, FLOPs per family) for edgetune's C++ runtime."""
    import edgetune as et
    from edgetune.compiler.ops.registry import op_flops
    xs, y = [t.numpy() for t in _as_inputs(case.x)], case.y.numpy()
    sess = et.Session(case.prog, backend="cpu", threads=threads)
    median = statistics.median(_timed(lambda: sess.step(*xs, y), warmup, steps))
    prof = sess.profile(steps, *xs, y)
    nodes = case.prog.graph.nodes
    records = list(sess._impl.rt.profile())  # node order (Session.profile's "nodes" are sorted by time)
    aligned = len(records) == len(nodes) and all(r[0] == n.op for r, n in zip(records, nodes))
    families: dict[str, dict[str, float]] = {}
    flops: dict[str, int] = {}
    attn = attention_sources(nodes)
    for n in nodes:
        fam = et_family(n.op, n.section, n, attention=n.source in attn)
        if fam in FLOP_FAMILIES:
            flops[fam] = flops.get(fam, 0) + op_flops(n)
    if aligned:
        rows = [(r[0], r[1], n.section, r[4] * 1e3 / steps, n, n.source) for r, n in zip(records, nodes)]
    else:  # the runtime ran other nodes than the graph's: classify by op, section and kernel name
        rows = [(op, kernel, section, ms, None, src) for op, src, section, ms, kernel in prof["nodes"]]
    for op, kernel, section, ms, node, src in rows:
        fam = et_family(op, section, node, kernel, attention=bool(src) and src in attn)
        d = families.setdefault(fam, {})
        d[kernel] = d.get(kernel, 0.0) + ms
    from edgetune.runtime.native import native
    return _side(families, median, steps, aligned_with_graph=aligned, gemm=getattr(native(), "gemm_backend", "?"),
                 sections=prof["sections"], sections_total_ms=sum(prof["sections"].values())), flops


def torch_step_fn(model, prog, optimizer, x, y):
    """PyTorch eager: the program's trainable set (aliases too), the same optimizer."""
    from edgetune.finetune import torch_optimizer

    from .runners.zoo import torch_step
    trainable = set(prog.trainable_names)
    aliases = prog.graph.aliases
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(aliases.get(name, name) in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(x, tuple):  # several inputs (the main job's text model: ids, attention_mask)
        return torch_step(lambda xs: model(*xs), torch_optimizer(params, optimizer), x, y)
    return torch_step(model, torch_optimizer(params, optimizer), x, y)


def run_torch(case: Case, threads: int, warmup: int, steps: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    torch.set_num_threads(threads)
    step = torch_step_fn(case.torch_model, case.prog, case.optimizer, case.x, case.y)
    median = statistics.median(_timed(step, warmup, steps))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    # key_averages: the same self CPU time per op name, summed by torch itself (a check on the families' sum)
    by_key = {k.key: k.self_cpu_time_total / 1e3 / steps for k in prof.key_averages()}
    return _side(torch_families(prof.events(), steps), median, steps, key_averages_total_ms=sum(by_key.values()))


def torch_families(events, steps: int) -> dict[str, dict[str, float]]:
    """Self CPU time per event name (ms per step), grouped by family (torch_event_family)."""
    families: dict[str, dict[str, float]] = {}

    def chain(e):
        out = []
        while e is not None:
            out.append((e.name, e.input_shapes))
            e = e.cpu_parent
        return out[::-1]

    for e in events:
        fam = torch_event_family(chain(e))
        d = families.setdefault(fam, {})
        d[e.name] = d.get(e.name, 0.0) + e.self_cpu_time_total / 1e3 / steps
    return families


# ---------------------------------------------------------------------------------------------
# machine: CPU model, sgemm peak, PyTorch's mm
# ---------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from .bench import machine_info
    return machine_info(0)["cpu"]


def torch_mm_gflops(threads: int, n: int = 1024, seconds: float = 1.5) -> float:
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)
    best, reps, end = float("inf"), 0, time.perf_counter() + seconds
    while reps < 5 or (time.perf_counter() < end and reps < 50):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2 * n ** 3 / best / 1e9


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

def case_report(case: Case, threads: int, warmup: int, steps: int) -> dict:
    et_side, flops = run_edgetune(case, threads, warmup, steps)
    torch_side = run_torch(case, threads, warmup, steps)
    summ = case.prog.summary()
    return {"model": case.model, "scheme": case.scheme, "desc": case.desc, "spec": repr(case.prog.spec),
            "optimizer": repr(case.optimizer), "batch": case.batch, "compile_s": round(case.compile_s, 2),
            "trainable_params": summ.params_trainable, "flops_per_step": int(sum(summ.flops.values())),
            "family_flops": flops, "edgetune": et_side, "torch": torch_side, **case.info}


def gflops(flop: int | None, ms: float | None) -> float | None:
    if not flop or not ms:
        return None
    return flop / (ms / 1e3) / 1e9


def family_rows(rep: dict, peak: float | None, top: int = 3) -> list[dict]:
    """One row per family present on either side, in FAMILIES order, then the totals."""
    rows = []
    et_f, th_f = rep["edgetune"]["families"], rep["torch"]["families"]
    for fam in FAMILIES:
        if fam not in et_f and fam not in th_f:
            continue
        e = et_f.get(fam, {"ms": 0.0, "ops": {}})
        t = th_f.get(fam, {"ms": 0.0, "ops": {}})
        flop = rep["family_flops"].get(fam)
        ge, gt = gflops(flop, e["ms"]), gflops(flop, t["ms"])
        rows.append({"family": fam, "edgetune_ms": e["ms"], "torch_ms": t["ms"], "gflop": flop / 1e9 if flop else None,
                     "edgetune_gflops": ge, "torch_gflops": gt,
                     "edgetune_pct_peak": 100 * ge / peak if ge and peak else None,
                     "torch_pct_peak": 100 * gt / peak if gt and peak else None,
                     "edgetune_ops": list(e["ops"].items())[:top], "torch_ops": list(t["ops"].items())[:top],
                     "edgetune_n_ops": len(e["ops"]), "torch_n_ops": len(t["ops"])})
    return rows


def _f(v, nd=1, suffix=""):
    if v is None:
        return "–"
    if v != 0 and abs(v) < 10 ** -nd:
        return f"{v:.2g}{suffix}"
    return f"{v:.{nd}f}{suffix}"


def _ratio(e, t):
    return f"{t / e:.2f}×" if e and t else "–"


def _ops(items, n_total) -> str:
    s = ", ".join(f"{name.replace('aten::', '')} {ms:.2g}" for name, ms in items)
    return s + (f" +{n_total - len(items)}" if n_total > len(items) else "")


COLUMNS = ("family", "edgetune ms", "PyTorch ms", "PyTorch/edgetune", "GFLOP", "edgetune GFLOP/s (% peak)",
           "PyTorch GFLOP/s (% peak)")


def row_cells(r: dict) -> list[str]:
    return [r["family"], _f(r["edgetune_ms"], 2), _f(r["torch_ms"], 2), _ratio(r["edgetune_ms"], r["torch_ms"]),
            _f(r["gflop"], 3), f"{_f(r['edgetune_gflops'])} ({_f(r['edgetune_pct_peak'], 0, '%')})"
            if r["gflop"] else "", f"{_f(r['torch_gflops'])} ({_f(r['torch_pct_peak'], 0, '%')})" if r["gflop"] else ""]


def total_cells(rep: dict, peak: float | None) -> list[list[str]]:
    e, t = rep["edgetune"], rep["torch"]
    flop = rep["flops_per_step"]
    ge, gt = gflops(flop, e["profiled_ms"]), gflops(flop, t["profiled_ms"])
    pct = (lambda g: f"{_f(g)} ({_f(100 * g / peak if g and peak else None, 0, '%')})")
    return [["profiled total", _f(e["profiled_ms"], 2), _f(t["profiled_ms"], 2), _ratio(e["profiled_ms"], t["profiled_ms"]),
             _f(flop / 1e9, 3), pct(ge), pct(gt)],
            ["median step, unprofiled", _f(e["median_ms"], 2), _f(t["median_ms"], 2), _ratio(e["median_ms"], t["median_ms"]),
             "", "", ""]]


def case_title(rep: dict) -> str:
    return f"{rep['model']} / {rep['scheme']}: {rep['desc']}"


def print_report(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    if console is None:
        console = Console(soft_wrap=True)
        if not console.is_terminal:
            console = Console(soft_wrap=True, width=200)
    peak = report["sgemm_peak"].get("gflops")
    console.print(header_line(report), highlight=False)
    for rep in report["cases"]:
        t = Table(title=case_title(rep), title_justify="left")
        for c in COLUMNS + ("edgetune ops (ms)", "PyTorch ops (ms)"):
            t.add_column(c, justify="left" if c in ("family",) or "ops" in c else "right", overflow="fold")
        for r in family_rows(rep, peak):
            t.add_row(*row_cells(r), _ops(r["edgetune_ops"], r["edgetune_n_ops"]), _ops(r["torch_ops"], r["torch_n_ops"]))
        t.add_section()
        for cells in total_cells(rep, peak):
            t.add_row(*cells, "", "")
        console.print(t)
        other = rep["torch"]["families"].get("other", {}).get("ops", {})
        other_et = rep["edgetune"]["families"].get("other", {}).get("ops", {})
        if other or other_et:
            console.print("  other (unmatched): " + "; ".join(
                f"{side}: " + ", ".join(f"{k} {v:.3g} ms" for k, v in ops.items())
                for side, ops in (("edgetune", other_et), ("PyTorch", other)) if ops), highlight=False)


def header_line(report: dict) -> str:
    m, pk = report["machine"], report["sgemm_peak"]
    return (f"CPU: {m['cpu']} ({m['cores']} cores), {report['config']['threads']} threads, "
            f"OMP_WAIT_POLICY={report['config']['omp_wait_policy'] or 'unset'}; sgemm peak {_f(pk.get('gflops'))} GFLOP/s "
            f"({pk.get('how', '')}, 1024³); PyTorch mm 1024³ {_f(report['torch_mm_gflops'])} GFLOP/s; "
            f"{report['config']['steps']} profiled steps after {report['config']['warmup']} warm-up + "
            f"{report['config']['steps']} timed")


def markdown_table(rep: dict, peak: float | None, ops: bool = True) -> list[str]:
    cols = COLUMNS + (("edgetune ops (ms)", "PyTorch ops (ms)") if ops else ())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in family_rows(rep, peak):
        extra = [_ops(r["edgetune_ops"], r["edgetune_n_ops"]), _ops(r["torch_ops"], r["torch_n_ops"])] if ops else []
        lines.append("| " + " | ".join(row_cells(r) + extra) + " |")
    for cells in total_cells(rep, peak):
        lines.append("| " + " | ".join([f"**{cells[0]}**"] + cells[1:] + ([""] * 2 if ops else [])) + " |")
    return lines


def markdown(report: dict) -> str:
    peak = report["sgemm_peak"].get("gflops")
    lines = [f"# Per-op profile: edgetune's C++ runtime vs PyTorch eager (torch.profiler) ({report['started']})", "",
             f"`{report['command']}`", "", header_line(report) + ".", "",
             "ms per training step by op family (edgetune: `Session.profile`, per node; PyTorch: self CPU time per "
             "event, what an op calls counted to the outermost op that names a family). GFLOP: edgetune's count "
             "for the family's nodes; PyTorch's GFLOP/s is the same FLOPs over its time; % of the sgemm peak "
             "above. The families add up to the profiled total; the median step is measured without a profiler.",
             ""]
    for rep in report["cases"]:
        lines += [f"## {rep['model']} / {rep['scheme']}", "", rep["desc"] + f"; {rep['trainable_params']:,} trainable "
                  f"parameters; edgetune GEMM backend {rep['edgetune'].get('gemm', '?')}.", ""]
        lines += markdown_table(rep, peak)
        unmatched = [(side, rep[key]["families"].get("other", {}).get("ops", {}))
                     for side, key in (("edgetune", "edgetune"), ("PyTorch", "torch"))]
        unmatched = [(s, o) for s, o in unmatched if o]
        lines += ["", "other (unmatched): " + ("; ".join(f"{s}: " + ", ".join(f"`{k}` {v:.3g} ms" for k, v in o.items())
                                                        for s, o in unmatched) if unmatched else "none"), ""]
    return "\n".join(lines)


def readme_block(report: dict) -> str:
    peak = report["sgemm_peak"].get("gflops")
    lines = [README_MARK[0], "", header_line(report) + f" ({report['started'][:10]}):", ""]
    for rep in report["cases"]:
        lines += [f"**{rep['model']} / {rep['scheme']}** — {rep['desc']}", ""]
        lines += markdown_table(rep, peak, ops=False) + [""]
    lines.append(README_MARK[1])
    return "\n".join(lines)


def update_readme(report: dict, path: str) -> bool:
    with open(path) as f:
        text = f.read()
    i, j = text.find(README_MARK[0]), text.find(README_MARK[1])
    if i < 0 or j < i:
        return False
    text = text[:i] + readme_block(report) + text[j + len(README_MARK[1]):]
    with open(path, "w") as f:
        f.write(text)
    return True


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def _csv(allowed):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad) or 'empty list'} (choose from {', '.join(allowed)})")
        return items
    return parse


def parse_args(argv):
    from .locations import HERE, results_dir
    models = MAIN_JOB + BENCH_MODELS + ("mlp",) + tuple(EXTRA_MODELS)
    ap = argparse.ArgumentParser(prog="edgetune op-profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=_csv(models), default=list(MAIN_JOB + BENCH_MODELS),
                    help=f"comma-separated from {', '.join(models)} (default: {', '.join(MAIN_JOB + BENCH_MODELS)})")
    ap.add_argument("--schemes", type=_csv(SCHEMES), default=list(DEFAULT_SCHEMES),
                    help=f"comma-separated from {', '.join(SCHEMES)} (default: {', '.join(DEFAULT_SCHEMES)})")
    ap.add_argument("--steps", type=int, default=5, help="timed steps, then as many profiled steps (default 5)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="bench models' batch (the main job's is its own, 32)")
    ap.add_argument("--lr", type=float, default=0.01, help="bench models' SGD learning rate (momentum 0.9)")
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--quick", action="store_true", help="SmallCNN 32x32 batch 4, full, 1 warm-up + 2 steps (the test)")
    ap.add_argument("--out", default=results_dir(), help="folder for op_profile.json and op_profile.md ('' for none)")
    ap.add_argument("--readme", nargs="?", const=os.path.join(os.path.dirname(HERE), "README.md"), default=None,
                    metavar="PATH", help="also rewrite the op-profile tables in the checkout's README.md (between "
                    "its op-profile markers) from this run")
    ap.add_argument("--omp-active", action="store_true", help="leave OMP_WAIT_POLICY as it is (default PASSIVE)")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.schemes, args.batch, args.warmup, args.steps = ["small_cnn"], ["full"], 4, 1, 2
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--steps and --threads must be >= 1, --warmup >= 0")
    return args


def run(args, log=print) -> dict:
    import torch

    from .bench import gemm_peak, machine_info
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    machine["cpu"] = cpu_model()
    report = {"started": _dt.datetime.now().isoformat(timespec="seconds"),
              "command": "edgetune op-profile " + " ".join(args.argv),
              "machine": machine, "torch": torch.__version__,
              "config": {"threads": args.threads, "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
                         "models": args.models, "schemes": args.schemes,
                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
              "sgemm_peak": gemm_peak(args.threads), "torch_mm_gflops": torch_mm_gflops(args.threads), "cases": []}
    log(f"sgemm peak (first of two measurements) {_f(report['sgemm_peak'].get('gflops'))} GFLOP/s, PyTorch mm {_f(report['torch_mm_gflops'])} GFLOP/s")
    for model in args.models:
        for scheme in args.schemes:
            t0 = time.perf_counter()
            case = build_case(model, scheme, args)
            rep = case_report(case, args.threads, args.warmup, args.steps)
            report["cases"].append(rep)
            log(f"[{model}/{scheme}] edgetune {rep['edgetune']['median_ms']:.1f} ms/step "
                f"(profiled {rep['edgetune']['profiled_ms']:.1f}), PyTorch {rep['torch']['median_ms']:.1f} "
                f"(profiled {rep['torch']['profiled_ms']:.1f}); {time.perf_counter() - t0:.0f} s")
    # the peaks again at the end, keeping the higher: on shared cores one measurement can land in a busy moment
    again = gemm_peak(args.threads)
    first = report["sgemm_peak"]
    report["sgemm_peak"] = max(first, again, key=lambda r: r.get("gflops") or 0)
    report["sgemm_peak"]["measured"] = [first.get("gflops"), again.get("gflops")]
    report["torch_mm_gflops"] = max(report["torch_mm_gflops"], torch_mm_gflops(args.threads))
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    if not args.omp_active and "torch" not in sys.modules:  # libgomp reads it when torch loads
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    report = run(args)
    print_report(report)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        jpath, mpath = os.path.join(args.out, "op_profile.json"), os.path.join(args.out, "op_profile.md")
        with open(jpath, "w") as f:
            json.dump(report, f, indent=2)
        with open(mpath, "w") as f:
            f.write(markdown(report))
        print(f"wrote {jpath} and {mpath}")
    if args.readme:
        if not update_readme(report, args.readme):
            print(f"error: {args.readme} has no op-profile markers ({README_MARK[0]} ... {README_MARK[1]})",
                  file=sys.stderr)
            return 2
        print(f"rewrote the op-profile table in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
