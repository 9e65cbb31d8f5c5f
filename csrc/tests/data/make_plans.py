"""Writes the plan files and reference values the C++ tests load (csrc/tests/data/). Rerun after a
change to the plan format, the compiler's output for these models, an op's reference or samples,
or the set of CPU kernels:  python csrc/tests/data/make_plans.py

  mlp_sgd.etp            MLP 6-16-16-3, full fine-tuning, SGD with momentum, batch 8
  small_cnn_adamw.etp    SmallCNN (train-mode BN) 3x16x16, last-k 3, AdamW, batch 4
  mlp_sgd_version99.etp  mlp_sgd with format_version 99 (the loader must refuse it)
  mlp_sgd.x.bin / .y.bin one batch of inputs and targets for mlp_sgd (raw little-endian), same
                         for small_cnn_adamw
  reference.safetensors  + reference.json: values computed by the numpy reference executor in
                         float64, checked by tests/test_reference_values.cc (the C++ kernels and
                         runtime on every build: x86-64, ASan, aarch64 under qemu)

reference.json (the manifest; tensors are named by the ids it uses, in reference.safetensors)
--------------
  {"format": "edgetune-reference", "version": 1, "tensors": "reference.safetensors",
   "eps_f32": 2**-23, "kernel_factor": F, "winograd_factor": W, "plan_factor": C,
   "fixed_point": {tensor id: {"dtype": "f32"|"f64", "scale": 2**-e}, ...},
   "kernels": [CASE, ...], "skipped_samples": [{"op", "sample", "note", "bytes"}, ...],
   "plans": [PLAN, ...]}

  fixed_point: a tensor whose values are all k * 2**-e with small integers k (the op sweep's
    "exact" samples: multiples of 1/8, and their exact products and sums) is stored losslessly
    as I8/I16 k; its value is k * scale in dtype.
  CASE = {"id": "conv2d/5", "op": "conv2d", "sample": 5, "note": "...",
          "kernels": ["conv2d", "conv2d.im2col", "conv2d.winograd"],
          "attrs": [[name, kind, value], ...],   kind: "int" | "float" | "ints" | "floats" | "string"
                                                 (what edgetune._native.run_kernel makes of the
                                                 sample's Python attrs: bool -> int, None -> absent)
          "inputs": [tensor id, ...],            in the sample's own dtypes (f32, i64, u8, bool)
          "outputs": [{"dtype": "f32", "shape": [...], "ref": tensor id,
                       "terms": K, "scale": S}, ...]}
    One case per op-sweep sample of every registered op (tests/ops/test_op_sweep.py's samples:
    same seeds, crc32("samples/<op>")). `kernels`: the op's default kernel and every variant
    ("op.variant" in the native registry) whose check accepts the sample. Samples over
    SMALL_SAMPLE bytes past an op's OP_BUDGET are left out (listed in skipped_samples) unless a
    kernel would otherwise have no case; every registered CPU kernel has at least one case
    (asserted here and in the C++ test).
    `ref` holds the op's numpy reference on the inputs cast to float64 (float outputs; stored as
    F32 where that is lossless, e.g. the "exact" samples, else F64) or, for integer/bool outputs,
    the exact expected values in the output's dtype.
    Tolerance of a float output, element i (tests/test_reference_values.cc):
        |got_i - ref_i| <= F * eps_f32 * K * (|ref_i| + S)      (x W for a Winograd kernel)
    K = "terms": the number of float32 roundings one output element accumulates: the reduction
        length (matmul/linear inner size (+1 bias), conv C/g*kh*kw, batch statistics N*H*W, softmax
        width, ...; for scatter-adds the most updates one element receives, read from the indices;
        a fused program's instruction count), 1 for an element-wise op. Standard floating-point
        analysis bounds a K-term sum's error by K*u*sum|terms| (u = eps/2), hence the K.
    S = "scale": max(max|ref|, max|float input|) of the case: the magnitude the terms (and the
        cancelling parts of formulas such as softmax_backward's dy - sum(dy*y)) are made of, so
        an output that cancels to ~0 is judged against the size of what cancelled.
    F, W: see kernel_factor/winograd_factor below (why those values: comments there and in the
        C++ test).

  PLAN = {"plan": "mlp_sgd.etp", "steps": 3, "inputs": [x id, target id],
          "output": {"ref": id, "atol": a},     forward output under the initial weights
          "losses": {"ref": id, "atol": [a1, a2, a3]},   loss of each of the first steps
          "weights": [{"name": state_dict name, "ref": id, "atol": a}, ...]}
    weights: after `steps` steps, every float weight they changed (the trainable parameters and
    the BatchNorm running statistics; the C++ test also requires every trainable one here).
    References: et.Session(program, backend="reference", compute_dtype=float64) on the same
    program the .etp was written from: forward(x), then `steps` x step(x, y). A value's atol is
        C * (E + eps_f32 * max|ref|)
    E is the value's measured sensitivity to float32 rounding: the reference is rerun
    MC_TRIALS times with every node's float output element multiplied by (1 + d), d uniform in
    [-eps_f32*sqrt(K), eps_f32*sqrt(K)] with K the node's terms as above (Monte Carlo arithmetic:
    K roundings per element, growing like a random walk), and E is the largest deviation of the
    value (over its elements) from the unperturbed float64 run. E is large where the problem is
    ill-conditioned (AdamW dividing by a gradient near 0: small_cnn_adamw's conv4.weight), tiny
    where it is not.
"""

import json
import os
import zlib
from unittest import mock

import numpy as np
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler import plan_file
from edgetune.compiler.ir import TensorType, dtype_of_numpy
from edgetune.compiler.ops import REGISTRY

HERE = os.path.dirname(os.path.abspath(__file__))

MANIFEST = "reference.json"
TENSORS = "reference.safetensors"
EPS = float(np.finfo(np.float32).eps)  # 2**-23
# F: a kernel's float32 error is at most F*eps*K*(|ref| + S) (see the module docstring). F = 4:
# the K-term bound counts u = eps/2 per rounding, and a kernel adds a few roundings of its own
# per element on top of its reduction (bias, epilogue activation, the scale of a mean, the 3-6
# float32 operations of an optimizer update or a normalisation), and libm/vectorised exp, log,
# tanh, erf are within 1-4 ulp. Measured on x86-64 (own GEMM and OpenBLAS builds alike): every
# kernel stays below 0.55 eps*K*(|ref| + S), i.e. under F/7.
KERNEL_FACTOR = 4.0
# W: Winograd F(4x4, 3x3) transforms input, weights and output with matrices whose entries reach
# 8 (points 0, +-1, +-2, +-1/2), which amplifies rounding; measured it stays under the same
# 0.55 eps*K*(|ref| + S) as the direct kernels on these samples, W = 2 is a margin for that.
WINOGRAD_FACTOR = 2.0
# C: plan values (see PLAN above): 8 Monte Carlo trials show the spread of the rounding noise,
# not its extreme, and a real kernel's roundings are not the model's; measured on x86-64 the C++
# runtime stays below a fifth of the tolerance on every plan value.
PLAN_FACTOR = 4.0
MC_TRIALS = 8
# Committed data stay small: an op's samples are taken in order until their tensors reach this
# many bytes (the large "exact" GEMM/conv samples come first; their epilogue repeats are skipped,
# the epilogues being covered on the small samples).
OP_BUDGET = 128 * 1024
SMALL_SAMPLE = 16 * 1024  # smaller samples are always taken
PLAN_STEPS = 3


# ---------------------------------------------------------------------------------------------
# tensors: one safetensors file, each distinct array stored once
# ---------------------------------------------------------------------------------------------
class TensorStore:
    """Each distinct array once. A float array whose values are all k * 2**-e with small integers
    k (the op sweep's "exact" samples: multiples of 1/8, and their exact products and sums) is
    stored losslessly as I8/I16 k, and its id gets a `fixed_point` entry {"dtype", "scale"}."""

    def __init__(self):
        self.tensors: dict[str, np.ndarray] = {}
        self.fixed_point: dict[str, dict] = {}
        self._by_content: dict[tuple, str] = {}

    def add(self, arr: np.ndarray, hint: str) -> str:
        arr = np.array(arr, order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._by_content:
            return self._by_content[key]
        assert hint not in self.tensors, hint
        self._by_content[key] = hint
        stored, fixed = self._encode(arr)
        self.tensors[hint] = stored
        if fixed:
            self.fixed_point[hint] = fixed
        return hint

    @staticmethod
    def _encode(arr: np.ndarray):
        if not _is_float(arr) or arr.size == 0 or not np.isfinite(arr).all():
            return arr, None
        for e in range(0, 17):
            k = arr.astype(np.float64) * 2.0 ** e
            if np.array_equal(k, np.round(k)):
                m = np.abs(k).max()
                for t in (np.int8, np.int16):
                    if m <= np.iinfo(t).max and arr.itemsize > np.dtype(t).itemsize:
                        return np.asarray(k, dtype=t), {"dtype": dtype_of_numpy(arr.dtype), "scale": 2.0 ** -e}
                break
        return arr, None

    def add_reference(self, ref: np.ndarray, hint: str) -> str:
        """A float64 reference, stored as float32 when that loses nothing."""
        ref = np.asarray(ref, dtype=np.float64)
        narrow = ref.astype(np.float32)
        lossless = np.array_equal(narrow.astype(np.float64), ref, equal_nan=True)
        return self.add(narrow if lossless else ref, hint)

    def nbytes(self, ids) -> int:
        return sum(self.tensors[i].nbytes for i in set(ids) if i in self.tensors)

    def save(self, path: str) -> None:
        from safetensors.numpy import save
        data = save(self.tensors, metadata={"producer": "csrc/tests/data/make_plans.py"})
        plan_file.write_bytes_atomic(path, data)


# ---------------------------------------------------------------------------------------------
# kernels: every registered op on its op-sweep samples, plus the kernel variants
# ---------------------------------------------------------------------------------------------
def _samples(op):
    """The op sweep's samples (tests/ops/test_op_sweep.py: same seed)."""
    return op.samples(np.random.default_rng(zlib.crc32(f"samples/{op.name}".encode())))


def _attrs_json(attrs: dict) -> list:
    """The attrs as edgetune._native.run_kernel converts them (csrc/python/module.cc)."""
    out = []
    for name, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (bool, int, np.integer, np.bool_)):
            out.append([name, "int", int(v)])
        elif isinstance(v, (float, np.floating)):
            out.append([name, "float", float(v)])
        elif isinstance(v, str):
            out.append([name, "string", v])
        elif isinstance(v, (list, tuple)):
            if any(isinstance(e, (float, np.floating)) for e in v):
                out.append([name, "floats", [float(e) for e in v]])
            else:
                out.append([name, "ints", [int(e) for e in v]])
        else:
            raise TypeError(f"attribute {name}={v!r}: no run_kernel conversion")
    return out


def _is_float(a) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def _scatter_terms(idx: np.ndarray, nvalid: int | None = None) -> int:
    """The most entries of a scatter-add that land on one element (from its indices)."""
    flat = np.asarray(idx).reshape(-1)
    flat = flat[flat >= 0] if nvalid is None else flat
    return int(np.bincount(flat).max()) if flat.size else 1


def _terms(op: str, ins: list[np.ndarray], attrs: dict, outs: list[np.ndarray]) -> list[int]:
    """K per output: how many float32 roundings one element of it accumulates (docstring)."""
    x = ins[0]
    n = len(outs)
    if op in ("sum", "mean", "sum_to"):
        return [max(1, x.size // max(outs[0].size, 1))]
    if op == "matmul":
        return [x.shape[-1]]
    if op == "linear":
        return [x.shape[-1] + 1]
    if op == "conv2d":
        return [int(np.prod(ins[1].shape[1:])) + 1]
    if op == "conv2d_grad_input":
        w = ins[1]
        return [w.shape[0] // attrs.get("groups", 1) * w.shape[2] * w.shape[3]]
    if op == "conv2d_grad_weight":
        return [int(np.prod(x.shape)) // x.shape[1] if x.ndim == 4 else x.size]
    if op in ("batch_norm_train", "batch_norm_backward"):
        return [x.size // x.shape[1]] * n
    if op == "batch_norm_infer":
        return [1]
    if op == "layer_norm":
        return [int(np.prod(attrs["normalized_shape"]))] * n
    if op == "layer_norm_backward":
        inner = int(np.prod(attrs["normalized_shape"]))
        rows = x.size // inner
        mask = attrs.get("output_mask", [True, True, True])
        return [k for k, on in zip([inner, rows, rows], mask) if on]
    if op in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward"):
        return [x.shape[attrs["dim"]]]
    if op == "cross_entropy":
        return [x.shape[-1] + (x.shape[0] if attrs.get("reduction", "mean") != "none" else 0)]
    if op == "cross_entropy_backward":
        return [ins[1].shape[-1] + 1]
    if op == "nll_loss":
        return [x.shape[0] if attrs.get("reduction", "mean") != "none" else 1]
    if op == "mse_loss":
        return [x.size]
    if op == "avg_pool2d":
        return [int(np.prod(attrs["kernel"]))]
    if op == "avg_pool2d_backward":
        kh, kw = attrs["kernel"]
        sh, sw = attrs.get("stride") or attrs["kernel"]
        return [-(-kh // sh) * -(-kw // sw)]
    if op == "max_pool2d_backward":
        idx = ins[1].reshape(ins[1].shape[0] * ins[1].shape[1], -1)
        return [max(_scatter_terms(row) for row in idx)]
    if op == "embedding_backward":
        return [_scatter_terms(ins[1])]
    if op == "gather_backward":  # the most dy entries one dx element receives
        ones = np.ones(ins[1].shape, np.float64)
        return [max(1, int(REGISTRY[op].reference([ones, ins[1]], attrs)[0].max(initial=0)))]
    if op == "cumsum":
        return [x.shape[attrs["dim"]]]
    if op == "fused_elementwise":
        return [max(1, attrs["program"].count("("))] * n
    return [1] * n


def _out_types(op: str, inputs: list[np.ndarray], attrs: dict):
    types = [TensorType(tuple(np.shape(x)), dtype_of_numpy(np.asarray(x).dtype)) for x in inputs]
    return REGISTRY[op].infer(types, attrs)


def _accepts(kernel: str, inputs, out_types, attrs) -> bool:
    from edgetune.runtime.native import native
    specs = [(dtype_of_numpy(np.asarray(x).dtype), list(np.shape(x))) for x in inputs]
    try:
        native().workspace_bytes("cpu", kernel, specs, [(t.dtype, list(t.shape)) for t in out_types], attrs)
    except native().NativeError:
        return False
    return True


def _encoded_nbytes(arrays) -> int:
    return sum(TensorStore._encode(np.asarray(a))[0].nbytes for a in arrays)


# Kernels only builds with an optional library register (cmake/onednn.cmake's ".onednn" variants):
# no reference cases and no plan pins them, so the data is the same whichever build writes it and
# every C++ build (ASan, aarch64, the venv build without oneDNN's headers) loads it. The Python
# tests check those variants where the module has them (tests/kernels/test_conv_variants.py).
OPTIONAL_KERNEL_SUFFIXES = (".onednn",)


def kernel_cases(store: TensorStore) -> tuple[list[dict], list[dict]]:
    """(cases, skipped). A sample over SMALL_SAMPLE bytes whose tensors would take its op past
    OP_BUDGET bytes is left out (listed in `skipped`) unless a kernel accepting it has no case yet."""
    from edgetune.runtime.native import native
    registered = {k for k in native().kernel_names("cpu") if not k.endswith(OPTIONAL_KERNEL_SUFFIXES)}
    variants: dict[str, list[str]] = {}
    for k in sorted(registered):
        if "." in k:
            variants.setdefault(k.split(".", 1)[0], []).append(k)
    cases, skipped = [], []
    for name in sorted(REGISTRY):
        op = REGISTRY[name]
        used = 0
        for i, s in enumerate(_samples(op)):
            inputs = [np.asarray(x) for x in s.inputs]
            attrs = dict(s.attrs)
            out_types = _out_types(name, inputs, attrs)
            ref64 = [np.asarray(r) for r in op.reference(
                [x.astype(np.float64) if _is_float(x) else x for x in inputs], dict(attrs))]
            ref32 = [np.asarray(r) for r in op.reference(inputs, dict(attrs))]
            assert len(ref64) == len(out_types), f"{name}/{i}: reference and infer disagree on outputs"
            kernels = [k for k in [name] + variants.get(name, [])
                       if k == name or _accepts(k, inputs, out_types, attrs)]
            size = _encoded_nbytes(inputs + ref64)
            first = [k for k in kernels if not any(k in c["kernels"] for c in cases)]
            if size > SMALL_SAMPLE and used + size > OP_BUDGET and not first:
                skipped.append({"op": name, "sample": i, "note": s.note, "bytes": size})
                continue
            used += size
            in_ids = [store.add(x, f"{name}/{i}/in{k}") for k, x in enumerate(inputs)]
            scale = max((float(np.abs(a[np.isfinite(a)]).max()) for a in inputs + ref64
                         if _is_float(a) and np.isfinite(a).any()), default=0.0)
            terms = _terms(name, inputs, attrs, ref64)
            outputs = []
            for k, (t, r64, r32) in enumerate(zip(out_types, ref64, ref32)):
                assert tuple(r64.shape) == tuple(t.shape), f"{name}/{i} out{k}: shape"
                if t.is_float:
                    ref_id = store.add_reference(r64, f"{name}/{i}/ref{k}")
                else:  # exact: what the kernel computes from its (float32) inputs
                    np.testing.assert_array_equal(r64.astype(r32.dtype), r32, err_msg=f"{name}/{i} out{k}")
                    ref_id = store.add(r32, f"{name}/{i}/ref{k}")
                outputs.append({"dtype": t.dtype, "shape": list(t.shape), "ref": ref_id,
                                "terms": int(terms[k]), "scale": scale})
            cases.append({"id": f"{name}/{i}", "op": name, "sample": i, "note": s.note, "kernels": kernels,
                          "attrs": _attrs_json(attrs), "inputs": in_ids, "outputs": outputs})
    covered = {k for c in cases for k in c["kernels"]}
    missing = sorted(registered - covered)
    assert not missing, f"CPU kernels with no reference case (no op-sweep sample they accept): {missing}"
    return cases, skipped


# ---------------------------------------------------------------------------------------------
# plans: forward output, first losses and weights after a few steps, in float64
# ---------------------------------------------------------------------------------------------
class _NoisyOp:
    """An op whose reference multiplies each float output element by (1 + d), |d| <= eps_f32 *
    sqrt(K) (K: _terms, the roundings a float32 kernel accumulates per element; sqrt: random-walk
    growth of K independent rounding errors)."""

    def __init__(self, op, rng):
        self.op, self.rng = op, rng

    def reference(self, args, attrs):
        outs = [np.asarray(r) for r in self.op.reference(args, attrs)]
        terms = _terms(self.op.name, [np.asarray(a) for a in args], attrs, outs)
        for k, r in enumerate(outs):
            if _is_float(r):
                amp = EPS * np.sqrt(terms[k] if k < len(terms) else 1)
                outs[k] = r * (1.0 + amp * self.rng.uniform(-1.0, 1.0, size=r.shape))
        return outs


def _reference_run(prog, x, y, rng=None):
    import edgetune.runtime.reference as refmod
    get_op = refmod.get_op
    noisy = (lambda name: _NoisyOp(get_op(name), rng)) if rng is not None else get_op
    with mock.patch.object(refmod, "get_op", noisy):
        sess = et.Session(prog, backend="reference", compute_dtype=np.float64)
        output = np.asarray(sess.forward(x), dtype=np.float64)
        losses = np.array([sess.step(x, y) for _ in range(PLAN_STEPS)], dtype=np.float64)
        weights = {k: np.asarray(v) for k, v in sess.state_dict().items()}
    return output, losses, weights


def plan_reference(store: TensorStore, stem: str, prog, x: np.ndarray, y: np.ndarray) -> dict:
    output, losses, weights = _reference_run(prog, x, y)
    trials = [_reference_run(prog, x, y, np.random.default_rng(t)) for t in range(MC_TRIALS)]

    def atol(ref, noisy):
        e = np.max(np.abs(np.stack(noisy) - ref), axis=0)
        return PLAN_FACTOR * (e + EPS * np.abs(ref).max(initial=0.0))

    loss_tol = atol(losses, [t[1] for t in trials])
    out = {"plan": f"{stem}.etp", "steps": PLAN_STEPS,
           "inputs": [store.add(x, f"{stem}/x"), store.add(y, f"{stem}/y")],
           "output": {"ref": store.add_reference(output, f"{stem}/output"),
                      "atol": float(atol(output, [t[0] for t in trials]).max())},
           "losses": {"ref": store.add_reference(losses, f"{stem}/losses"), "atol": [float(a) for a in loss_tol]},
           "weights": []}
    initial = et.Session(prog, backend="reference").state_dict()
    for name in sorted(weights):
        w = weights[name]
        # the float weights the steps changed: trainable params, BatchNorm running statistics
        # (num_batches_tracked is an integer count; frozen weights stay what the plan holds)
        if not _is_float(w) or np.array_equal(w, initial[name]):
            continue
        out["weights"].append({"name": name, "ref": store.add_reference(w, f"{stem}/weight/{name}"),
                               "atol": float(atol(w, [t[2][name] for t in trials]).max())})
    return out


def _dump_json(manifest: dict) -> str:
    """One line per top-level key, one line per list entry (diffable, compact)."""
    dump = lambda v: json.dumps(v, separators=(",", ":"), allow_nan=False)  # noqa: E731
    parts = []
    for k, v in manifest.items():
        if isinstance(v, list) and v:
            parts.append(f"{dump(k)}:[\n" + ",\n".join(dump(e) for e in v) + "\n]")
        else:
            parts.append(f"{dump(k)}:{dump(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main():
    os.environ["EDGETUNE_ONEDNN"] = "0"  # plans pin no optional kernel (OPTIONAL_KERNEL_SUFFIXES)
    store = TensorStore()
    plans = []

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
    plans.append(plan_reference(store, "mlp_sgd", prog, x.numpy(), y.numpy()))

    cnn = models.SmallCNN(num_classes=4, width=8).train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(4, (4,))
    prog = et.compile(cnn, (x,), y, peft=et.peft.LastK(3), optimizer=et.optim.AdamW(lr=1e-3))
    prog.save(os.path.join(HERE, "small_cnn_adamw.etp"))
    x.numpy().tofile(os.path.join(HERE, "small_cnn_adamw.x.bin"))
    y.numpy().tofile(os.path.join(HERE, "small_cnn_adamw.y.bin"))
    plans.append(plan_reference(store, "small_cnn_adamw", prog, x.numpy(), y.numpy()))

    cases, skipped = kernel_cases(store)
    manifest = {"format": "edgetune-reference", "version": 1, "tensors": TENSORS, "eps_f32": EPS,
                "kernel_factor": KERNEL_FACTOR, "winograd_factor": WINOGRAD_FACTOR, "plan_factor": PLAN_FACTOR,
                "fixed_point": store.fixed_point, "kernels": cases, "skipped_samples": skipped, "plans": plans}
    store.save(os.path.join(HERE, TENSORS))
    text = _dump_json(manifest)
    plan_file.write_bytes_atomic(os.path.join(HERE, MANIFEST), text.encode())


if __name__ == "__main__":
    main()
