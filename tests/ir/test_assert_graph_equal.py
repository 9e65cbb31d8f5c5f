"""support.assert_graph_equal: equal up to value names, and nothing looser."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgetune.compiler.ir_text import parse_graph
from edgetune.compiler.verify import verify
from support import assert_graph_equal

PROGRAM = '''program p {
  input %x: f32[2,3]
  input %y: i64[2]
  param %fc.weight: f32[4,3] trainable
  param %fc.bias: f32[4]
  const %c0: f32[] = 1.0
  const %c1: f32[] = 0.5
  state %optim.lr: f32[]

  forward:
    %t0: f32[2,4] = linear(%x, %fc.weight, %fc.bias)
    %t1: f32[2,4] = relu(%t0)
    %t2: f32[2,4] = mul(%t1, %c1)

  loss:
    %t3: f32[] = cross_entropy(%t2, %y) {ignore_index=-100, label_smoothing=0.0, reduction="mean"}

  backward:
    %t4: f32[2,4] = cross_entropy_backward(%c0, %t2, %y) {ignore_index=-100, label_smoothing=0.0, reduction="mean"}
    %t5: f32[2,4] = mul(%t4, %c1)
    %t6: f32[2,4] = relu_backward(%t5, %t1)
    %t7: f32[4,2] = permute(%t6) {dims=[1, 0]}
    %t8: f32[4,3] = matmul(%t7, %x)

  update:
    %t9: f32[4,3] = sgd_update(%fc.weight, %t8, %optim.lr) {dampening=0.0, maximize=false, momentum=0.0, nesterov=false, weight_decay=0.0}

  output loss = %t3
  output output = %t2
  assign %fc.weight <- %t9
}
'''


def graph(text=PROGRAM):
    return verify(parse_graph(text))


def renamed(text):
    """Every generated name changed: activations t<n> -> a<n>_, consts c<n> -> k<n>, inputs too."""
    text = re.sub(r"%t(\d+)\b", r"%a\1_", text)
    text = re.sub(r"%c(\d+)\b(?!\.)", r"%k\1", text)
    return text.replace("%x", "%images").replace("%y", "%labels")


def test_a_renamed_copy_is_equal():
    other = renamed(PROGRAM)
    assert other != PROGRAM and "%t" not in other
    assert_graph_equal(graph(), graph(other))


def test_sources_are_ignored_unless_asked_for():
    a, b = graph(), graph()
    b.nodes[0].source = "models.py:12 fc"
    assert_graph_equal(a, b)
    with pytest.raises(AssertionError, match="source"):
        assert_graph_equal(a, b, sources=True)


@pytest.mark.parametrize("old,new,message", [
    ("= relu(%t0)", "= sigmoid(%t0)", "op"),                                  # a changed op
    ("reduction=\"mean\"}\n\n  backward", "reduction=\"sum\"}\n\n  backward", "attrs"),  # a changed attr
    ("mul(%t1, %c1)", "mul(%t0, %c1)", "input 0"),                            # rewired input
    ("mul(%t4, %c1)", "mul(%t4, %c0)", "input 1"),                            # another const read
    ("relu_backward(%t5, %t1)", "relu_backward(%t1, %t5)", "input 0"),        # swapped inputs
    ("param %fc.bias: f32[4]\n", "param %fc.bias: f32[4] trainable\n", "trainable"),
    ("const %c1: f32[] = 0.5", "const %c1: f32[] = 0.25", "data"),            # const value
    ("output output = %t2", "output output = %t1", "output output"),
    ("assign %fc.weight <- %t9", "assign %fc.weight <- %t8", "assign"),
    ("  update:\n", "  backward:\n", "section"),                              # section moved
])
def test_a_changed_program_is_not_equal(old, new, message):
    assert old in PROGRAM
    with pytest.raises(AssertionError, match=message):
        assert_graph_equal(graph(), graph(renamed(PROGRAM.replace(old, new))))


def test_a_changed_shape_is_not_equal():
    """Shapes change consistently (the text must still parse): input batch 2 -> 3 everywhere."""
    changed = PROGRAM.replace("[2,", "[3,").replace("i64[2]", "i64[3]").replace("[4,2]", "[4,3]")
    with pytest.raises(AssertionError, match="f32\\[2,3\\] vs .*f32\\[3,3\\]"):
        assert_graph_equal(graph(), graph(changed))


def test_renamed_params_and_extra_nodes_are_not_equal():
    with pytest.raises(AssertionError, match="only in a"):
        assert_graph_equal(graph(), graph(PROGRAM.replace("%fc.bias", "%fc.b")))
    extra = PROGRAM.replace("    %t2: f32[2,4] = mul(%t1, %c1)\n",
                            "    %t2: f32[2,4] = mul(%t1, %c1)\n    %t10: f32[2,4] = relu(%t2)\n")
    with pytest.raises(AssertionError, match="nodes"):
        assert_graph_equal(graph(), graph(extra))


def test_const_data_can_be_left_out_of_the_comparison():
    a, b = graph(), graph(PROGRAM.replace("= 0.5", "= 0.25"))
    assert_graph_equal(a, b, const_data=False)
    np.testing.assert_array_equal(a.initial["c1"], 0.5)
