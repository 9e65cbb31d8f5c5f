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


def test_out_of_order_nodes_are_rejected():
    g = small_graph()
    g.nodes.reverse()
    with pytest.raises(IRError, match=r"node 0 \(relu .*reads %t0 before it is defined"):
        verify(g)


def test_wrong_recorded_shape_is_rejected():
    g = small_graph()
    g.nodes[1].outputs[0].type = TensorType((2, 5))
    with pytest.raises(ShapeError, match=r"relu.*outputs \['f32\[2,5\]'\] but relu infers \['f32\[2,4\]'\]"):
        verify(g)


def test_unknown_op_is_rejected():
    g = small_graph()
    g.nodes[1].op = "frobnicate"
    with pytest.raises(IRError, match="unknown op 'frobnicate'"):
        verify(g)


def test_double_definition_is_rejected():
    g = small_graph()
    g.nodes[1].outputs[0].name = g.nodes[0].outputs[0].name
    with pytest.raises(IRError, match="defined more than once"):
        verify(g)


def test_sections_must_be_in_order():
    g = small_graph()
    g.nodes[0].section = "update"
    with pytest.raises(IRError, match="section 'forward' after a later section"):
        verify(g)


def test_assignment_type_must_match():
    g = small_graph()
    g.assigns["w"] = g.nodes[1].outputs[0]
    with pytest.raises(ShapeError, match=r"assign %w: f32\[4,3\] <- %t1: f32\[2,4\]"):
        verify(g)


def test_assignment_to_an_input_is_rejected():
    g = small_graph()
    g.assigns["x"] = g.nodes[1].outputs[0]
    with pytest.raises(IRError, match="not a param, buffer or state"):
        verify(g)


def test_const_data_must_match_its_type():
    g = small_graph()
    g.initial["w"] = np.ones((4, 3), np.float64)
    with pytest.raises(IRError, match=r"param %w: data float64\[4, 3\] does not match declared f32\[4,3\]"):
        verify(g)


def test_dangling_producer_is_rejected():
    g = small_graph()
    stray = Value("stray", TensorType((2, 4)), producer=Node("relu", [], []))
    g.nodes[1].outputs[0] = stray
    with pytest.raises(IRError, match="does not point back"):
        verify(g)
