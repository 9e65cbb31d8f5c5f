"""The numpy reference executor: sections, assignments, compute dtype, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.errors import IRError
from edgetune.compiler.ir_text import parse_graph
from edgetune.runtime.reference import ReferenceExecutor

PROGRAM = '''program p {
  input %x: f32[3]
  param %w: f32[3] trainable
  buffer %count: i64[]
  const %one: i64[] = 1
  const %lr: f32[] = 0.5

  forward:
    %y: f32[3] = mul(%x, %w)
    %next: i64[] = add(%count, %one)

  update:
    %step: f32[3] = mul(%y, %lr)
    %w2: f32[3] = sub(%w, %step)

  output out = %y
  assign %w <- %w2
  assign %count <- %next
}
'''


def state():
    return {"w": np.array([1.0, 2.0, 3.0], np.float32), "count": np.asarray(4, np.int64)}


def test_run_applies_assignments_and_keeps_dtypes():
    g = parse_graph(PROGRAM)
    out, new = ReferenceExecutor(g).run({"x": np.ones(3, np.float32)}, state())
    np.testing.assert_array_equal(out["out"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(new["w"], [0.5, 1.0, 1.5])
    assert new["w"].dtype == np.float32 and int(new["count"]) == 5


def test_sections_limit_what_runs_and_what_is_assigned():
    g = parse_graph(PROGRAM)
    s = state()
    out, new = ReferenceExecutor(g).run({"x": np.ones(3, np.float32)}, s, sections=("forward",))
    np.testing.assert_array_equal(new["w"], s["w"])  # the update section did not run
    assert int(new["count"]) == 5


def test_compute_dtype_float64_runs_float_math_in_float64():
    g = parse_graph(PROGRAM)
    out, new = ReferenceExecutor(g, compute_dtype=np.float64).run({"x": np.full(3, 0.1, np.float32)}, state())
    assert out["out"].dtype == np.float64 and new["count"].dtype == np.int64


def test_missing_state_is_named():
    g = parse_graph(PROGRAM)
    with pytest.raises(IRError, match="no data for param 'w'"):
        ReferenceExecutor(g).run({"x": np.ones(3, np.float32)}, {"count": np.asarray(0)})


def test_missing_input_is_named():
    g = parse_graph(PROGRAM)
    with pytest.raises(IRError, match="mul producing %y reads 'x' which was not computed"):
        ReferenceExecutor(g).run({}, state())
