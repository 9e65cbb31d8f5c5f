"""The verifier catches each broken invariant and names the node and op."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.errors import IRError, ShapeError
from edgetune.compiler.ir import Graph, Node, TensorType, Value
from edgetune.compiler.ops.registry import Builder
from edgetune.compiler.verify import verify


def small_graph():
    g = Graph("g")
    x = g.add_input("x", TensorType((2, 3)))
    w = g.add_source("w", "param", np.ones((4, 3), np.float32), trainable=True)
    b = Builder(g)
    y = b.emit1("linear", [x, w])
    z = b.emit1("relu", [y])
    g.outputs["out"] = z
    return g


def test_valid_graph_passes():
    verify(small_graph())


def _retype_relu(g):
    g.nodes[1].outputs[0].type = TensorType((2, 5))


def _rename_relu_output_like_linear(g):
    g.nodes[1].outputs[0].name = g.nodes[0].outputs[0].name


def _set(obj_of, key, value_of):
    return lambda g: obj_of(g).__setitem__(key, value_of(g))


# (what breaks, how, the error and its message)
BROKEN = [
    ("out_of_order_nodes", lambda g: g.nodes.reverse(), IRError,
     r"node 0 \(relu .*reads %t0 before it is defined"),
    ("wrong_recorded_shape", _retype_relu, ShapeError,
     r"relu.*outputs \['f32\[2,5\]'\] but relu infers \['f32\[2,4\]'\]"),
    ("unknown_op", lambda g: setattr(g.nodes[1], "op", "frobnicate"), IRError, "unknown op 'frobnicate'"),
    ("double_definition", _rename_relu_output_like_linear, IRError, "defined more than once"),
    ("sections_out_of_order", lambda g: setattr(g.nodes[0], "section", "update"), IRError,
     "section 'forward' after a later section"),
    ("assignment_type", _set(lambda g: g.assigns, "w", lambda g: g.nodes[1].outputs[0]), ShapeError,
     r"assign %w: f32\[4,3\] <- %t1: f32\[2,4\]"),
    ("assignment_to_an_input", _set(lambda g: g.assigns, "x", lambda g: g.nodes[1].outputs[0]), IRError,
     "not a param, buffer or state"),
    ("const_data_type", _set(lambda g: g.initial, "w", lambda g: np.ones((4, 3), np.float64)), IRError,
     r"param %w: data float64\[4, 3\] does not match declared f32\[4,3\]"),
]


@pytest.mark.parametrize("break_it,error,message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_invariant_is_rejected(break_it, error, message):
    g = small_graph()
    break_it(g)
    with pytest.raises(error, match=message):
        verify(g)


def test_dangling_producer_is_rejected():
    g = small_graph()
    stray = Value("stray", TensorType((2, 4)), producer=Node("relu", [], []))
    g.nodes[1].outputs[0] = stray
    with pytest.raises(IRError, match="does not point back"):
        verify(g)
