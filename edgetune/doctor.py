"""`et.check(model, example_inputs)` / `edgetune doctor MODEL`: will this model compile?

A user with a model they did not write wants to know in seconds, before choosing a spec or a
loss, whether edgetune can train it. The check captures the model exactly as `et.compile` does
(torch.export, or the ONNX file) and runs the frontend's import, which already collects every op
it cannot map with its source line; it stops there (no autodiff, no passes, no plan). The
report lists the model's source ops (ATen ops after torch.export's decompositions, or ONNX op
types) with how often each occurs and whether edgetune maps it, the unsupported occurrences
with their sources, and the edgetune ops the supported part becomes.

`edgetune doctor` takes an .onnx path, `module:attr` (a torch module, a class or a zero-argument
factory; example inputs from --input SHAPExDTYPE), or `hf:MODEL_TYPE` / `hf:LOCAL_DIR` (a
Hugging Face architecture built from its config with random weights and shrunk to one or two
small layers: which ops a model uses does not depend on its width or depth).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from .compiler.errors import CaptureError, EdgetuneError, UnsupportedOpError


@dataclass
class ModelReport:
    """What `check` found. `ok`: the model imports (every op maps); `source_ops`: source op name
    -> (occurrences, supported); `unsupported`: each unsupported occurrence with its source;
    `edgetune_ops`: the IR ops the import produced (empty when it failed); `error`: why the
    capture itself failed (torch.export could not trace the model), else None."""

    frontend: str
    ok: bool
    source_ops: dict[str, tuple[int, bool]] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)
    edgetune_ops: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def __str__(self) -> str:
        lines = [f"{self.frontend} model: " + ("every op is supported" if self.ok else
                                                f"capture failed: {self.error}" if self.error else
                                                f"{len(self.unsupported)} unsupported op occurrence(s)")]
        if self.source_ops:
            width = max(len(k) for k in self.source_ops)
            lines.append(f"  {'source op'.ljust(width)}  count  supported")
            for name, (count, ok) in sorted(self.source_ops.items(), key=lambda kv: (kv[1][1], kv[0])):
                lines.append(f"  {name.ljust(width)}  {count:5d}  {'yes' if ok else 'NO'}")
        if self.unsupported:
            lines.append("unsupported occurrences:")
            lines += [f"  - {u}" for u in self.unsupported]
        if self.edgetune_ops:
            lines.append("edgetune ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.edgetune_ops.items())))
        return "\n".join(lines)


def check(model, example_inputs) -> ModelReport:
    """The ops `model` uses and which of them edgetune cannot compile (see the module docstring).
    `example_inputs` as for `et.compile` (a tuple of tensors, or a dict of keyword inputs)."""
    from .api import import_for_compile
    from .frontends import is_onnx_model
    frontend = "ONNX" if is_onnx_model(model) else "PyTorch"
    try:
        inventory = _onnx_inventory(model) if frontend == "ONNX" else _torch_inventory(model, example_inputs)
    except CaptureError as e:
        return ModelReport(frontend, False, error=str(e))
    unsupported: list[str] = []
    ir_ops: dict[str, int] = {}
    try:
        imported = import_for_compile(model, example_inputs)
        ir_ops = dict(collections.Counter(n.op for n in imported.graph.nodes))
    except UnsupportedOpError as e:
        unsupported = list(e.items)
    except CaptureError as e:
        return ModelReport(frontend, False, error=str(e))
    bad = {u.split(" ", 1)[0] for u in unsupported}
    source_ops = {name: (count, name not in bad) for name, count in inventory.items()}
    return ModelReport(frontend, not unsupported, source_ops, unsupported, ir_ops)


def _torch_inventory(model, example_inputs) -> dict[str, int]:
    """ATen op name (as the frontend's handlers name them) -> occurrences in the exported graph,
    captured as import_module captures it (same keyword handling, use_cache=False for HF models)."""
    import operator

    import torch
    from .frontends.from_torch import _op_name, _training_kwargs, export_program
    if isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    else:
        args, kwargs = (tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)), {}
    args = tuple(torch.as_tensor(x) if isinstance(x, np.ndarray) else x for x in args)
    kwargs = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    ep = export_program(model, args, "the model", _training_kwargs(model, args, kwargs))
    counts: collections.Counter = collections.Counter()
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.target is not operator.getitem:
            counts[_op_name(node.target)] += 1
    return dict(counts)


def _onnx_inventory(model) -> dict[str, int]:
    from .frontends.from_onnx import load_model
    proto = load_model(model)[0]
    return dict(collections.Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                                    for n in proto.graph.node))


# ---- the CLI's model targets ------------------------------------------------------------------------
# Config attributes shrunk for `hf:` targets (whichever a family has): ops do not depend on them.
_HF_SMALL = {
    "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "encoder_layers": 2, "decoder_layers": 1,
    "hidden_size": 64, "d_model": 64, "n_embd": 64, "dim": 64, "embedding_size": 32,
    "intermediate_size": 128, "ffn_dim": 128, "d_ff": 128, "hidden_dim": 128, "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128, "n_inner": 128,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "num_heads": 4, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "head_dim": 16, "d_kv": 16,
    "vocab_size": 128, "max_position_embeddings": 64, "n_positions": 64, "max_source_positions": 32,
    "intra_bottleneck_size": 32, "true_hidden_size": 32,
}


def hf_target(spec: str, batch: int = 2, seq: int = 8):
    """(model, example_inputs) for `hf:MODEL_TYPE` or `hf:LOCAL_DIR`: the architecture from its config
    (no download: a model type builds its default config; a directory is read locally), shrunk."""
    import os

    import torch
    import transformers
    name = spec[3:]
    if os.path.isdir(name):
        config = transformers.AutoConfig.from_pretrained(name, local_files_only=True)
    else:
        try:
            config = transformers.AutoConfig.for_model(name)
        except ValueError as e:
            raise CaptureError(f"hf:{name}: not a Hugging Face model type or a local model directory ({e})") from None
    for key, value in _HF_SMALL.items():
        if hasattr(config, key) and isinstance(getattr(config, key), int):
            setattr(config, key, value)
    if hasattr(config, "num_key_value_heads") and isinstance(config.num_key_value_heads, int):
        config.num_key_value_heads = 2
    for token in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        if isinstance(getattr(config, token, None), int) and getattr(config, token) >= getattr(config, "vocab_size", 10**9):
            setattr(config, token, 0)
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification,
                 transformers.AutoModelForImageClassification, transformers.AutoModel):
        try:
            model = auto.from_config(config)
            break
        except ValueError:
            continue
    else:
        raise CaptureError(f"hf:{name}: no auto model class builds this config")
    model.train()
    main = getattr(model, "main_input_name", "input_ids")
    if main == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = size if isinstance(size, int) else 32
        inputs = {main: torch.randn(batch, getattr(config, "num_channels", 3), size, size)}
    elif main == "input_features":
        inputs = {main: torch.randn(batch, getattr(config, "num_mel_bins", 80), 2 * getattr(config, "max_source_positions", 32))}
    else:
        vocab = getattr(config, "vocab_size", 128)
        inputs = {main: torch.randint(1, vocab, (batch, seq)), "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    return model, inputs


def module_target(spec: str, input_specs: list[str]):
    """(model, example_inputs) for `package.module:attr` (a module, a class or a zero-argument
    factory) with example inputs from SHAPExDTYPE strings such as `2x3x32x32xf32`, `2x8xi64`."""
    import importlib

    import torch
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise CaptureError(f"{spec!r}: expected package.module:attr")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise CaptureError(f"cannot load {spec}: {e}") from None
    model = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(model, torch.nn.Module):
        raise CaptureError(f"{spec} gave a {type(model).__name__}, not a torch.nn.Module")
    if not input_specs:
        raise CaptureError(f"{spec}: give its example inputs with --input SHAPExDTYPE (e.g. 2x3x32x32xf32)")
    dtypes = {"f32": torch.float32, "f64": torch.float64, "i64": torch.int64, "i32": torch.int32, "bool": torch.bool}
    inputs = []
    for s in input_specs:
        *dims, dt = s.split("x")
        if dt not in dtypes or not dims or not all(d.isdigit() for d in dims):
            raise CaptureError(f"--input {s!r}: expected SHAPExDTYPE like 2x3x32x32xf32 (dtypes: {', '.join(dtypes)})")
        shape = [int(d) for d in dims]
        t = dtypes[dt]
        inputs.append(torch.randn(shape).to(t) if t.is_floating_point else torch.zeros(shape, dtype=t))
    return model, tuple(inputs)


def doctor_main(target: str, input_specs: list[str]) -> int:
    """`edgetune doctor`: print the report; exit 0 when every op is supported, 1 when not, 2 on a bad target."""
    try:
        if target.endswith(".onnx"):
            model, inputs = target, ()
        elif target.startswith("hf:"):
            model, inputs = hf_target(target)
        else:
            model, inputs = module_target(target, input_specs)
        report = check(model, inputs)
    except EdgetuneError as e:
        print(f"error: {e}")
        return 2
    print(report)
    return 0 if report.ok else 1
