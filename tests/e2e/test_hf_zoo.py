"""Third-party models as a user brings them (issue 14): 16 Hugging Face families from small configs
(benchmarks/hf_zoo.py builds them), compiled from keyword inputs with a padding mask and the
built-in LM / classification losses, each with every spec that applies, 3 SGD steps on the
reference and cpu backends against PyTorch (losses and every state_dict entry).

BERT, GPT-2 and LLaMA run in the quick loop; the other families are marked slow (CI runs them)."""

from __future__ import annotations

import pytest

import edgetune as et
from benchmarks import hf_zoo

FAMILIES = hf_zoo.families()
QUICK = {"bert", "gpt2", "llama"}
CASES = [pytest.param(name, spec, id=f"{name}-{spec}",
                      marks=() if name in QUICK else (pytest.mark.slow,))
         for name, fam in FAMILIES.items() for spec in fam.specs]


@pytest.mark.parametrize("family,spec", CASES)
def test_family_trains_like_pytorch(family, spec):
    row = hf_zoo.run_family(FAMILIES[family], specs=[spec])[0]
    assert row["compiles"], row.get("error")
    assert row["matches"], row.get("diff")


@pytest.mark.parametrize("family", ["llama", "gemma", "qwen3"])
def test_bias_only_on_a_model_without_biases_is_refused(family):
    """RMSNorm scales are norm parameters whatever arithmetic the model uses (Gemma's x * (1 + w)
    included), so BiasOnly finds nothing to train and says so instead of training the norms."""
    import torch
    fam = FAMILIES[family]
    torch.manual_seed(0)
    model = fam.build()
    case = hf_zoo.make_case(fam, 1)
    with pytest.raises(et.SpecError, match="selects no parameter"):
        et.compile(model, case.inputs, case.target, loss=case.loss, peft=et.peft.BiasOnly())


def test_freeze_embeddings_keeps_backprop_off_the_tied_table():
    """GPT-2's LM head is its token embedding: LastK would train it and backprop to the first op;
    FreezeEmbeddings(LastK) leaves it and the program has no embedding gradient at all."""
    import torch
    fam = FAMILIES["gpt2"]
    torch.manual_seed(0)
    model = fam.build()
    case = hf_zoo.make_case(fam, 1)
    plain = hf_zoo.compile_case(fam, model, case, "last-k")
    frozen = hf_zoo.compile_case(fam, model, case, "freeze-emb")
    assert any("wte" in n for n in plain.trainable_names)
    assert not any("wte" in n or "wpe" in n for n in frozen.trainable_names)
    assert not any(n.op == "embedding_backward" for n in frozen.graph.nodes)
