"""Third-party models as a user brings them: Hugging Face families built from small configs (random
weights, no download), compiled straight from keyword inputs with padding masks, trained against
PyTorch. tests/e2e/test_hf_zoo.py asserts the training matches; `python -m benchmarks.hf_zoo`
prints the closing table (family x spec -> compiles / matches PyTorch / ms per step vs PyTorch,
same run):

    python -m benchmarks.hf_zoo [--families bert,llama,...] [--steps 3] [--out DIR]

Every family runs in train mode with its dropout probabilities set to 0 (edgetune's dropout
stream differs from PyTorch's, so exact comparison needs none; attention dropout is covered by
tests/e2e/test_torch_lowerings.py). Batch 2, sequence 8, the second sentence padded after 5
tokens (masked in attention, ignored by the loss: target -100).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass, field

import numpy as np

VOCAB = 64
BATCH, SEQ, REAL = 2, 8, 5  # the second row has REAL tokens, then padding


@dataclass
class Family:
    name: str
    build: object  # () -> torch model (train mode, dropout 0)
    kind: str  # "causal" (loss causal_lm), "cls" (sequence classification), "encoder" (mse on hidden states),
    #            "vision" (image classification), "audio" (mse on encoder states)
    specs: tuple = ("full", "bias-only", "last-k")
    slow: bool = False
    output: str | None = None
    notes: str = ""
    mask: bool = True  # takes an attention_mask


def _no_dropout(config):
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and ("dropout" in key or "pdrop" in key or key.endswith("_prob")):
            setattr(config, key, 0.0)
    return config


def _families() -> dict[str, Family]:
    import transformers as tf

    def hf(cls, config_cls, **kw):
        def build():
            config = _no_dropout(config_cls(**kw))
            config._attn_implementation = "sdpa" if hasattr(config, "_attn_implementation") else None
            return cls(config).train()
        return build

    llm = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=32)
    bert = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=32)

    def whisper():
        config = _no_dropout(tf.WhisperConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                                              encoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16,
                                              decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64,
                                              pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                              decoder_start_token_id=1))
        return tf.WhisperModel(config).get_encoder().train()

    fams = [
        Family("bert", hf(tf.BertForSequenceClassification, tf.BertConfig, **bert), "cls"),
        Family("roberta", hf(tf.RobertaForSequenceClassification, tf.RobertaConfig,
                             **{**bert, "max_position_embeddings": 40}), "cls",
               notes="position ids from the padding: ne, cumsum, gather"),
        Family("distilbert", hf(tf.DistilBertForSequenceClassification, tf.DistilBertConfig, vocab_size=VOCAB, dim=32,
                                n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32), "cls"),
        Family("albert", hf(tf.AlbertForSequenceClassification, tf.AlbertConfig, vocab_size=VOCAB, embedding_size=16,
                            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=32), "cls"),
        Family("mobilebert", hf(tf.MobileBertForSequenceClassification, tf.MobileBertConfig, vocab_size=VOCAB,
                                hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, intra_bottleneck_size=16, true_hidden_size=16,
                                max_position_embeddings=32, num_feedforward_networks=2), "cls"),
        Family("gpt2", hf(tf.GPT2LMHeadModel, tf.GPT2Config, vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                          n_positions=32), "causal", specs=("full", "bias-only", "last-k", "freeze-emb")),
        Family("opt", hf(tf.OPTForCausalLM, tf.OPTConfig, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, ffn_dim=64, max_position_embeddings=32, word_embed_proj_dim=32),
               "causal", specs=("full", "bias-only", "last-k", "freeze-emb"), notes="positions from cumsum of the mask"),
        Family("llama", hf(tf.LlamaForCausalLM, tf.LlamaConfig, **llm), "causal",
               specs=("full", "last-k", "freeze-emb"), notes="no biases: bias-only does not apply"),
        Family("qwen2", hf(tf.Qwen2ForCausalLM, tf.Qwen2Config, **llm), "causal",
               specs=("full", "bias-only", "last-k")),
        Family("qwen3", hf(tf.Qwen3ForCausalLM, tf.Qwen3Config, **llm, head_dim=8), "causal",
               specs=("full", "last-k")),
        Family("mistral", hf(tf.MistralForCausalLM, tf.MistralConfig, **llm, sliding_window=None), "causal",
               specs=("full", "last-k")),
        Family("phi3", hf(tf.Phi3ForCausalLM, tf.Phi3Config, **llm, pad_token_id=0), "causal",
               specs=("full", "last-k")),
        Family("gemma", hf(tf.GemmaForCausalLM, tf.GemmaConfig, **llm, head_dim=8), "causal",
               specs=("full", "last-k", "freeze-emb"), notes="x * (1 + w) norms: roles from the norm pattern"),
        Family("t5-encoder", hf(tf.T5EncoderModel, tf.T5Config, vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64,
                                num_layers=2, num_heads=4), "encoder", specs=("full", "last-k"),
               output="last_hidden_state"),
        Family("vit", hf(tf.ViTForImageClassification, tf.ViTConfig, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, image_size=16, patch_size=4, num_labels=3),
               "vision", mask=False),
        Family("whisper-encoder", whisper, "audio", output="last_hidden_state", mask=False),
    ]
    return {f.name: f for f in fams}


def families() -> dict[str, Family]:
    return _families()


def spec_of(name: str):
    import edgetune as et
    return {"full": et.peft.Full(), "bias-only": et.peft.BiasOnly(), "last-k": et.peft.LastK(2),
            "freeze-emb": _freeze_embeddings(et.peft.LastK(2))}[name]


def _freeze_embeddings(spec):
    import edgetune as et
    make = getattr(et.peft, "FreezeEmbeddings", None)
    if make is None:
        raise NotImplementedError("et.peft.FreezeEmbeddings is not available")
    return make(spec)


@dataclass
class Case:
    inputs: dict  # keyword inputs (torch tensors)
    target: object  # torch tensor
    loss: str
    batches: list = field(default_factory=list)  # [(inputs dict, target)] per step


def make_case(fam: Family, steps: int, seed: int = 0) -> Case:
    import torch
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        if fam.kind == "vision":
            inputs = {"pixel_values": torch.randn(BATCH, 3, 16, 16, generator=g)}
            target = torch.randint(0, 3, (BATCH,), generator=g)
        elif fam.kind == "audio":
            inputs = {"input_features": torch.randn(BATCH, 8, 32, generator=g)}
            target = torch.randn(BATCH, 16, 32, generator=g)
        else:
            ids = torch.randint(3, VOCAB, (BATCH, SEQ), generator=g)
            mask = torch.ones(BATCH, SEQ, dtype=torch.long)
            mask[1, REAL:] = 0
            ids[1, REAL:] = 1  # the pad id of the configs above
            inputs = {"input_ids": ids, "attention_mask": mask}
            if fam.kind == "causal":
                target = ids.masked_fill(mask == 0, -100)
            elif fam.kind == "cls":
                target = torch.randint(0, 2, (BATCH,), generator=g)
            else:
                target = torch.randn(BATCH, SEQ, 32, generator=g)
        batches.append((inputs, target))
    loss = {"causal": "causal_lm", "cls": "cross_entropy", "vision": "cross_entropy"}.get(fam.kind, "mse")
    return Case(batches[0][0], batches[0][1], loss, batches)


def compile_case(fam: Family, model, case: Case, spec: str, backend: str = "cpu"):
    import edgetune as et
    return et.compile(copy.deepcopy(model), case.inputs, case.target, loss=case.loss, peft=spec_of(spec),
                      optimizer=et.optim.SGD(lr=0.05), output=fam.output)


def _torch_loss(fam: Family, out, target):
    import torch.nn.functional as F
    if fam.kind == "causal":
        logits = out.logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1),
                               ignore_index=-100)
    if fam.kind in ("cls", "vision"):
        return F.cross_entropy(out.logits, target)
    return F.mse_loss(getattr(out, fam.output), target)


def torch_run(fam: Family, model, prog, case: Case, repeat: int = 1):
    """PyTorch training of a copy of `model` with prog's trainable set; (losses, state_dict, ms/step:
    the median step of the last `repeat` passes over the batches, the first pass being warm-up)."""
    import torch
    model = copy.deepcopy(model)
    trainable = set(prog.trainable_names)
    aliases = prog.graph.aliases
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(aliases.get(name, name) in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05)
    losses, times = [], []
    for k in range(repeat):
        for inputs, target in case.batches:
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = _torch_loss(fam, model(**inputs), target)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            if k == 0:
                losses.append(float(loss.detach()))
        if k == 0:
            state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    timed = times[len(case.batches):] or times
    return losses, state, 1e3 * float(np.median(timed))


def edgetune_run(prog, case: Case, backend: str, repeat: int = 1):
    """(losses, state_dict after the first pass, ms/step as in torch_run)."""
    import edgetune as et
    sess = et.Session(prog, backend=backend)
    losses, times = [], []
    for k in range(repeat):
        for inputs, target in case.batches:
            arrays = [v.numpy() for v in inputs.values()] + [target.numpy()]
            t0 = time.perf_counter()
            loss = sess.step(*arrays)
            times.append(time.perf_counter() - t0)
            if k == 0:
                losses.append(loss)
        if k == 0:
            state = sess.state_dict()
    timed = times[len(case.batches):] or times
    return losses, state, 1e3 * float(np.median(timed))


def compare(prog, ours, theirs, rtol=2e-4, atol=2e-6) -> str | None:
    """None when losses and every state_dict entry agree, else what differs first."""
    ours_losses, ours_state = ours
    their_losses, their_state = theirs
    if not np.allclose(ours_losses, their_losses, rtol=1e-4, atol=1e-6):
        return f"losses {ours_losses} vs {their_losses}"
    for k, expected in their_state.items():
        if k not in ours_state:
            return f"{k} missing"
        if not np.allclose(ours_state[k], expected, rtol=rtol, atol=atol):
            return f"{k}: max |diff| {np.abs(ours_state[k] - expected).max():.3g}"
    return None


def run_family(fam: Family, specs=None, steps: int = 3, backends=("reference", "cpu"), repeat: int = 1) -> list[dict]:
    """One row per spec. repeat > 1 also times (cpu and PyTorch: the median step of passes 2..repeat)."""
    import torch
    rows = []
    torch.manual_seed(0)
    model = fam.build()
    case = make_case(fam, steps)
    for spec in specs or fam.specs:
        row = {"family": fam.name, "spec": spec, "compiles": False, "matches": None}
        try:
            t0 = time.perf_counter()
            prog = compile_case(fam, model, case, spec)
            row["compile_s"] = time.perf_counter() - t0
            row["compiles"] = True
            row["trainable"] = len(prog.trainable_names)
            theirs_losses, theirs_state, torch_ms = torch_run(fam, model, prog, case, repeat)
            row["pytorch_ms"] = torch_ms
            diffs = []
            for backend in backends:
                losses, state, ms = edgetune_run(prog, case, backend, repeat if backend == "cpu" else 1)
                if backend == "cpu":
                    row["edgetune_ms"] = ms
                d = compare(prog, (losses, state), (theirs_losses, theirs_state))
                if d:
                    diffs.append(f"{backend}: {d}")
            row["matches"] = not diffs
            row["diff"] = "; ".join(diffs)
        except Exception as e:  # noqa: BLE001  the table reports every failure
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        rows.append(row)
    return rows


HEADER = ("Tiny configs (2 layers, width 32, batch 2, sequence 8): each step is a few hundred small ops, so "
          "the times measure per-op overhead (PyTorch eager + Hugging Face's Python vs edgetune's planned "
          "C++ program), not arithmetic. ms = median step of passes 2-4 over the 3 batches; matches = losses and "
          "every state_dict entry after 3 SGD steps on the reference and cpu backends vs PyTorch.\n\n")


def table(rows: list[dict]) -> str:
    out = ["| family | spec | compiles | matches PyTorch | edgetune ms | PyTorch ms | vs PyTorch | note |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = lambda k: (f"{r[k]:.2f}" if r[k] < 10 else f"{r[k]:.1f}") if k in r else "-"  # noqa: E731
        note = r.get("error") or r.get("diff") or ""
        ratio = f"{r['pytorch_ms'] / r['edgetune_ms']:.1f}x" if r.get("edgetune_ms") else "-"
        out.append(f"| {r['family']} | {r['spec']} | {'yes' if r['compiles'] else 'no'} | "
                   f"{'-' if r['matches'] is None else 'yes' if r['matches'] else 'no'} | {ms('edgetune_ms')} | "
                   f"{ms('pytorch_ms')} | {ratio} | {note} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="", help="comma-separated (default: all)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeat", type=int, default=4, help="passes over the steps' batches for timing (first: warm-up)")
    p.add_argument("--out", default="", help="directory for hf_zoo.md / hf_zoo.json")
    args = p.parse_args(argv)
    fams = families()
    names = [n for n in args.families.split(",") if n] or list(fams)
    rows = []
    for n in names:
        rows += run_family(fams[n], steps=args.steps, repeat=args.repeat)
        print(table(rows[-len(fams[n].specs):]).split("\n", 2)[-1], flush=True)
    md = table(rows)
    print(md)
    if args.out:
        import os
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "hf_zoo.md"), "w") as f:
            f.write("# Hugging Face families (`python -m benchmarks.hf_zoo`)\n\n" + HEADER + md + "\n")
        with open(os.path.join(args.out, "hf_zoo.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["compiles"] and r["matches"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
