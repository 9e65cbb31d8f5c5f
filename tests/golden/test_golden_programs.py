"""Golden programs: compiling these small models must give exactly the checked-in text IR.

A refactor of a frontend, autodiff, a spec or a pass must leave them byte-identical; a change
that means to alter them regenerates the files (`python tests/golden/test_golden_programs.py`)
and says why in its commit message. The text is printed without source line numbers
(`print_graph(g, source_lines=False)`: "models.py layers.0", not "models.py:78 layers.0"), so
editing edgetune/models.py does not break them; everything else is compared, module paths included.

small_cnn's program carries the kernels -O2 chose for the C++ cpu target, so that case needs the
native module; the others compile to the same text on the built-in target. The oneDNN conv
variants, which only some builds have (cmake/onednn.cmake), are left out (EDGETUNE_ONEDNN=0), so
the text is the same for every build.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler.ir_text import print_graph

HERE = os.path.dirname(os.path.abspath(__file__))


def _mlp():
    torch.manual_seed(0)
    m = models.MLP(in_features=8, hidden=8, num_classes=4, depth=3).train()
    (x,), y = models.example_inputs("mlp", m, batch=2)
    return et.compile(m, (x,), y, peft=et.peft.LastK(2), optimizer=et.optim.AdamW(lr=1e-3))


def _small_cnn():
    torch.manual_seed(0)
    m = models.SmallCNN(num_classes=4, width=4).train()
    (x,), y = models.example_inputs("small_cnn", m, batch=2, resolution=16)
    return et.compile(m, (x,), y, peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.01, momentum=0.9))


def _gpt():
    torch.manual_seed(0)
    m = models.GPTDecoder(vocab_size=16, hidden=8, layers=1, heads=2, max_len=4).eval()
    (ids,), target = models.example_inputs("gpt", m, batch=2, seq_len=4)
    return et.compile(m, (ids,), target, peft=et.peft.Select(include=["h.0.attn.*", "ln_f.*"]),
                      optimizer=et.optim.SGD(lr=0.1))


GOLDEN = {"mlp_lastk2_adamw": _mlp, "small_cnn_bias_only_sgd": _small_cnn, "gpt_select_attn_sgd": _gpt}
NEEDS_NATIVE = {"small_cnn_bias_only_sgd"}  # kernel choices for the cpu target


def golden_text(name: str) -> str:
    before = os.environ.get("EDGETUNE_ONEDNN")
    os.environ["EDGETUNE_ONEDNN"] = "0"  # the same kernel choices with or without oneDNN in the build
    try:
        return print_graph(GOLDEN[name]().graph, source_lines=False)
    finally:
        if before is None:
            del os.environ["EDGETUNE_ONEDNN"]
        else:
            os.environ["EDGETUNE_ONEDNN"] = before


def golden_path(name: str) -> str:
    return os.path.join(HERE, f"{name}.etir")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.native) if n in NEEDS_NATIVE else n
                                  for n in GOLDEN])
def test_compiled_program_matches_golden_text(name):
    with open(golden_path(name)) as f:
        expected = f.read()
    assert golden_text(name) == expected, f"{name} changed; if intended, regenerate: python {__file__}"


def test_golden_text_has_no_source_line_numbers():
    """Moving code in edgetune/models.py must not change a golden file."""
    for name in GOLDEN:
        with open(golden_path(name)) as f:
            text = f.read()
        assert "models.py " in text and "models.py:" not in text, name


if __name__ == "__main__":  # regenerate
    for name in GOLDEN:
        with open(golden_path(name), "w") as f:
            f.write(golden_text(name))
        print("wrote", golden_path(name), file=sys.stderr)
