"""dead_code_elimination, written as before/expected text IR (the pass tests' house style)."""

from __future__ import annotations

import numpy as np

from edgetune.compiler.ir_text import parse_graph, print_graph
from edgetune.compiler.passes.dce import dead_code_elimination
from edgetune.compiler.verify import verify
from passes.programs import edit
from support import assert_graph_equal

BEFORE = '''program p {
  input %x: f32[2,3]
  param %w: f32[3,3] trainable
  buffer %bn.running_mean: f32[3]
  const %unused: f32[] = 2.0
  const %ones: f32[3] = [1.0, 1.0, 1.0]
  const %zeros: f32[3] = [0.0, 0.0, 0.0]
  const %three: f32[] = 3.0

  forward:
    %a: f32[2,3] = linear(%x, %w)
    %dead: f32[2,3] = mul(%a, %unused)
    %dead2: f32[2,3] = relu(%dead)
    %b: f32[2,3] = mul(%a, %three)
    %y: f32[2,3], %mean: f32[2,1], %rstd: f32[2,1] = layer_norm(%b, %ones, %zeros) {eps=1e-05, normalized_shape=[3]}

  output out = %y
}
'''

# the dead nodes and the const only they read are gone; everything else is as it was
EXPECTED = edit(BEFORE, ("  const %unused: f32[] = 2.0\n", ""),
                ("    %dead: f32[2,3] = mul(%a, %unused)\n    %dead2: f32[2,3] = relu(%dead)\n", ""))


def test_dce_removes_unread_nodes_and_consts_but_keeps_state():
    """Dead nodes and the const only they read go; the unused buffer stays (it is model state);
    a multi-output node stays when any output is read."""
    data = {"w": np.eye(3, dtype=np.float32), "bn.running_mean": np.zeros(3, np.float32)}
    g = verify(parse_graph(BEFORE, initial=data))
    after = verify(dead_code_elimination(g))
    assert_graph_equal(after, parse_graph(EXPECTED, initial=data))
    assert print_graph(after) == EXPECTED  # and the text keeps the names it had


def test_dce_keeps_nodes_that_feed_assignments():
    text = '''program p {
  input %x: f32[4]
  buffer %s: f32[4]

  forward:
    %t: f32[4] = relu(%x)
    %u: f32[4] = add(%s, %t)

  assign %s <- %u
}
'''
    g = dead_code_elimination(parse_graph(text, initial={"s": np.zeros(4, np.float32)}))
    assert [n.op for n in g.nodes] == ["relu", "add"]
