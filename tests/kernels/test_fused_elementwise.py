"""fused_elementwise (compiler/ops/fused.py, csrc/kernels/cpu/fused.cc): one kernel for a chain of
elementwise ops.

Beyond the generic sweep (test_cpu_kernels.py, every sample): a fused node built by
`build_fused` from a small IR graph computes what running its nodes one by one computes, on the
reference (exactly: the same op references) and on the kernels (the same formulas from
elementwise_math.h); big shapes spanning many tiles and threads; 2 threads == 1 bit for bit;
the Python limits (infer) and the C++ ones (check) accept and reject the same programs; bad
programs are rejected with a clear error; the node survives the text IR.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.errors import ShapeError
from edgetune.compiler.ir import Graph, TensorType
from edgetune.compiler.ir_text import parse_graph, print_graph
from edgetune.compiler.ops import REGISTRY
from edgetune.compiler.ops.fused import (FUSABLE_OPS, MAX_TILE_BUFFERS, FusionTooLarge, build_fused, can_fuse,
                                         parse_program, tile_buffers_needed)
from edgetune.compiler.ops.registry import Builder, run_reference
from edgetune.runtime.native import native

OP = "fused_elementwise"


def _dt(a):
    return {np.float32: "f32", np.float64: "f64", np.int32: "i32"}[np.asarray(a).dtype.type]


def _specs(arrays, attrs):
    types = REGISTRY[OP].infer([TensorType(np.shape(a), _dt(a)) for a in arrays], attrs)
    return [(t.dtype, list(t.shape)) for t in types]


def _kernel(arrays, attrs, threads=1, op=OP, specs=None):
    arrays = [np.asarray(a) for a in arrays]
    if specs is None:
        types = REGISTRY[op].infer([TensorType(np.shape(a), _dt(a)) for a in arrays], attrs)
        specs = [(t.dtype, list(t.shape)) for t in types]
    return native().run_kernel("cpu", op, arrays, specs, attrs, threads)


# ---------------------------------------------------------------------------------------------
# fused node == its nodes one by one
# ---------------------------------------------------------------------------------------------
def _graph(shape=(2, 5, 23, 19)):
    """x -> add bias -> hardtanh -> mul 0.5 (a 0-d const) -> gelu -> silu_backward(dy, .), with the
    hardtanh result also read outside the group."""
    g = Graph("fuse")
    b = Builder(g)
    c = shape[1]
    x = g.add_input("x", TensorType(shape))
    dy = g.add_input("dy", TensorType(shape))
    bias = g.add_source("bias", "param", np.linspace(-1, 1, c, dtype=np.float32).reshape(1, c, 1, 1))
    half = b.const(0.5)
    t0 = b.emit1("add", [x, bias])
    t1 = b.emit1("hardtanh", [t0], {"min": 0.0, "max": 6.0})
    t2 = b.emit1("mul", [t1, half])
    t3 = b.emit1("gelu", [t2], {"approximate": "tanh"})
    t4 = b.emit1("silu_backward", [dy, t3])
    t5 = b.emit1("sigmoid", [x])  # needed by no output: build_fused drops it
    t6 = b.emit1("pow_scalar", [t4], {"exponent": 2.0})
    t7 = b.emit1("sub", [t6, t1])
    return g, [t0.producer, t1.producer, t2.producer, t3.producer, t4.producer, t5.producer, t6.producer,
               t7.producer], [t1, t7]


def _one_by_one(nodes, env, run):
    env = dict(env)
    for n in nodes:
        env[n.outputs[0].name] = run(n.op, [env[v.name] for v in n.inputs], n.attrs)[0]
    return env


def test_build_fused_program_and_inputs():
    g, nodes, outs = _graph()
    inputs, attrs = build_fused(nodes, outs, g.initial)
    assert [v.name for v in inputs] == ["x", "bias", "dy"]  # the 0-d const became an immediate
    assert attrs["shape"] == [2, 5, 23, 19]
    assert "sigmoid" not in attrs["program"]
    assert attrs["program"] == ("t0=add(x0,x1); t1=hardtanh(t0,min=0.0,max=6.0); t2=mul(t1,0.5); "
                                "t3=gelu(t2,approximate=tanh); t4=silu_backward(x2,t3); "
                                "t5=pow_scalar(t4,exponent=2.0); t6=sub(t5,t1); y0=t1; y1=t6")
    # the Builder accepts it: two outputs of the group's shape
    fused = Builder(g).emit(OP, inputs, attrs)
    assert [v.type for v in fused] == [o.type for o in outs]
    # without the consts the scalar stays an input
    inputs2, attrs2 = build_fused(nodes, outs)
    assert len(inputs2) == 4 and "x3" in attrs2["program"]


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_equals_unfused(threads):
    g, nodes, outs = _graph()
    rng = np.random.default_rng(5)
    feed = {"x": rng.uniform(-4, 10, (2, 5, 23, 19)).astype(np.float32),
            "dy": rng.standard_normal((2, 5, 23, 19)).astype(np.float32),
            **{k: np.asarray(v) for k, v in g.initial.items()}}
    inputs, attrs = build_fused(nodes, outs, g.initial)
    arrays = [feed[v.name] for v in inputs]

    # reference: the same op references, so exactly equal
    ref_env = _one_by_one(nodes, feed, run_reference)
    fused_ref = run_reference(OP, arrays, attrs)
    for got, v in zip(fused_ref, outs):
        np.testing.assert_array_equal(got, ref_env[v.name])

    # kernels: fused vs each node's own kernel
    def kernel(op, xs, a):
        return _kernel(xs, a, threads=threads, op=op)
    kernel_env = _one_by_one(nodes, feed, kernel)
    fused = _kernel(arrays, attrs, threads=threads)
    for got, v in zip(fused, outs):
        np.testing.assert_allclose(got, kernel_env[v.name], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got, ref_env[v.name], rtol=1e-5, atol=1e-6)


def test_every_fusable_op_matches_its_kernel():
    """One instruction per fusable op, on a vector and on a broadcast operand: the fused kernel
    computes each op as its own kernel does."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0.2, 3.0, (3, 700)).astype(np.float32)
    x[0] = rng.uniform(-5, 5, 700)  # negative values where the op allows them
    s = rng.uniform(0.2, 0.9, (3, 700)).astype(np.float32)
    row = rng.uniform(0.2, 0.9, (700,)).astype(np.float32)
    for op in sorted(FUSABLE_OPS):
        attrs = {"hardtanh": {"min": -1.0, "max": 2.0}, "hardtanh_backward": {"min": 0.3, "max": 0.7},
                 "pow_scalar": {"exponent": 1.7}, "gelu": {"approximate": "tanh"},
                 "gelu_backward": {"approximate": "none"}}.get(op, {})
        arity = 2 if op in ("add", "sub", "mul", "div") or op.endswith("_backward") else 1
        args = ",".join(["x0", "x1"][:arity] + [f"{k}={v}" for k, v in attrs.items()])
        for second in (s, row):
            ins = [x, second] if arity == 2 else [x]
            fused = _kernel(ins, {"shape": [3, 700], "program": f"t0={op}({args}); y0=t0"})[0]
            if arity == 2 and second is row:
                second = np.broadcast_to(row, x.shape).copy()
            alone = _kernel([x, second][:arity], attrs, op=op)[0]
            np.testing.assert_allclose(fused, alone, rtol=1e-6, atol=1e-7, err_msg=op)


# ---------------------------------------------------------------------------------------------
# big shapes, threads, input kinds
# ---------------------------------------------------------------------------------------------
BIG = {
    "chain": ([(4, 37, 33, 29), (1, 37, 1, 1), ()],
              "t0=add(x0,x1); t1=mul(t0,x2); t2=hardswish(t1); t3=hardswish_backward(t0,t1); t4=mul(t2,t3); "
              "y0=t4; y1=t2"),
    "gathered": ([(3, 1, 257), (1, 515, 1), (515, 257)],
                 "t0=sub(x0,x1); t1=tanh(t0); t2=tanh_backward(x2,t1); t3=add(t2,x1); y0=t3; y1=x1; y2=-2.5"),
    "scalars": ([(100_001,), (), ()],
                "t0=div(x1,x2); t1=sqrt(t0); t2=mul(x0,t1); t3=exp(x2); y0=t2; y1=t3; y2=t1"),
}


@pytest.mark.parametrize("case", sorted(BIG))
def test_big_shapes_and_threads(case):
    shapes, program = BIG[case]
    rng = np.random.default_rng(len(case))
    arrays = [rng.uniform(0.5, 2.0, s).astype(np.float32) for s in shapes]
    out_shape = list(np.broadcast_shapes(*shapes))
    attrs = {"shape": out_shape, "program": program}
    ref = run_reference(OP, arrays, attrs)
    one = _kernel(arrays, attrs, threads=1)
    two = _kernel(arrays, attrs, threads=2)
    assert len(one) == len(ref)
    for a, b, r in zip(one, two, ref):
        assert a.shape == tuple(out_shape)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)


def test_empty_and_0d_outputs():
    x = np.zeros((0, 3), dtype=np.float32)
    got = _kernel([x], {"shape": [0, 3], "program": "t0=relu(x0); y0=t0"})
    assert got[0].shape == (0, 3)
    # a 0-d group (e.g. a loss-scale chain): everything is a scalar, computed before the tiles
    s = np.asarray(np.float32(1.5))
    attrs = {"shape": [], "program": "t0=mul(x0,2.0); t1=exp(t0); y0=t1; y1=x0"}
    for g, r in zip(_kernel([s], attrs, threads=2), run_reference(OP, [s], attrs)):
        assert g.shape == ()
        np.testing.assert_allclose(g, r, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# limits: Python and C++ agree
# ---------------------------------------------------------------------------------------------
def _live_program(n_live: int) -> str:
    """n_live vector temps all alive at once (each read by the final sum or an output)."""
    temps = [f"t{k}=add(x0,{float(k)})" for k in range(n_live)]
    total = [f"t{n_live}=add(t{n_live - 2},t{n_live - 1})"]
    outs = [f"y{k}=t{k}" for k in range(n_live - 2)] + [f"y{n_live - 2}=t{n_live}"]
    return "; ".join(temps + total + outs)


def test_buffer_limit_is_the_same_in_python_and_cpp():
    x = np.ones((4, 600), dtype=np.float32)
    ok = {"shape": [4, 600], "program": _live_program(MAX_TILE_BUFFERS)}
    too_many = {"shape": [4, 600], "program": _live_program(MAX_TILE_BUFFERS + 1)}
    assert tile_buffers_needed(parse_program(ok["program"], 1), [2400], 2400) == MAX_TILE_BUFFERS
    got = _kernel([x], ok)
    # t14 + t15 = (1 + 14) + (1 + 15)
    np.testing.assert_array_equal(got[-1], np.full((4, 600), 2.0 * MAX_TILE_BUFFERS - 1, dtype=np.float32))
    with pytest.raises(ShapeError, match="tile buffers"):
        REGISTRY[OP].infer([TensorType((4, 600))], too_many)
    specs = [("f32", [4, 600])] * MAX_TILE_BUFFERS
    with pytest.raises(native().NativeError, match="tile buffers"):
        _kernel([x], too_many, specs=specs)
    # a scalar input makes the same temps scalars: no buffers at all
    assert tile_buffers_needed(parse_program(too_many["program"], 1), [1], 2400) == 0


def test_build_fused_refuses_groups_beyond_the_kernel():
    g = Graph("big")
    b = Builder(g)
    x = g.add_input("x", TensorType((8, 64)))
    vals = [b.emit1("add", [x, b.const(float(k))]) for k in range(MAX_TILE_BUFFERS + 1)]
    total = b.emit1("add", [vals[-2], vals[-1]])
    nodes = [v.producer for v in vals + [total]]
    with pytest.raises(FusionTooLarge, match="tile buffers"):
        build_fused(nodes, vals[:-2] + [total], g.initial)
    chain = [x]
    for _ in range(33):
        chain.append(b.emit1("neg", [chain[-1]]))
    with pytest.raises(FusionTooLarge, match="instructions"):
        build_fused([v.producer for v in chain[1:]], [chain[-1]], g.initial)


# ---------------------------------------------------------------------------------------------
# bad programs: rejected by check with NativeError, and by infer with ShapeError
# ---------------------------------------------------------------------------------------------
BAD = [
    ("t0=foo(x0); y0=t0", "cannot be fused"),
    ("t0=add(x0); y0=t0", "operand"),
    ("t0=relu(x0,x0); y0=t0", "operand"),
    ("t0=relu(t3); y0=t0", "before it is assigned"),
    ("t0=relu(x5); y0=t0", "x5"),
    ("t0=relu(x0); t0=relu(t0); y0=t0", "assigned twice"),
    ("t0=relu(x0)", "no outputs"),
    ("t0=relu(x0); y1=t0", "y0"),
    ("t0=relu(x0); y0=t0; y0=t0", "assigned twice"),
    ("t0=mul(x0,1.5.2); y0=t0", "bad operand"),
    ("t0=mul(x0,+1); y0=t0", "bad operand"),
    ("t0=hardtanh(x0,min=0.0); y0=t0", "missing attribute"),
    ("t0=hardtanh(x0,min=0.0,max=abc); y0=t0", "not a number"),
    ("t0=relu(x0,alpha=1.0); y0=t0", "unknown attribute"),
    ("t0=gelu(x0,approximate=erf); y0=t0", "approximate"),
    ("t0=relu x0; y0=t0", "op\\(args\\)"),
    ("x0=relu(x0); y0=x0", "must be"),
    ("t64=relu(x0); y0=t64", "t0..t63"),
    ("; ".join(f"t{k}=neg({'x0' if k == 0 else f't{k - 1}'})" for k in range(33)) + "; y0=t32", "instructions"),
]


@pytest.mark.parametrize("program,reason", BAD, ids=[r for _, r in BAD])
def test_bad_programs_are_rejected(program, reason):
    x = np.ones((2, 3), dtype=np.float32)
    attrs = {"shape": [2, 3], "program": program}
    with pytest.raises(native().NativeError, match=reason):
        native().run_kernel("cpu", OP, [x], [("f32", [2, 3])], attrs, 1)
    with pytest.raises(ShapeError):
        REGISTRY[OP].infer([TensorType((2, 3))], attrs)


def test_bad_nodes_are_rejected():
    k = native()
    x = np.ones((2, 3), dtype=np.float32)
    prog = {"shape": [2, 3], "program": "t0=relu(x0); y0=t0"}
    with pytest.raises(k.NativeError, match="takes f32"):
        k.run_kernel("cpu", OP, [x.astype(np.float64)], [("f64", [2, 3])], prog, 1)
    with pytest.raises(k.NativeError, match="does not broadcast"):
        k.run_kernel("cpu", OP, [np.ones((3, 2), dtype=np.float32)], [("f32", [2, 3])], prog, 1)
    with pytest.raises(k.NativeError, match="attribute shape"):
        k.run_kernel("cpu", OP, [x], [("f32", [3, 2])], prog, 1)
    with pytest.raises(k.NativeError, match="writes 1 outputs, the node has 2"):
        k.run_kernel("cpu", OP, [x], [("f32", [2, 3])] * 2, prog, 1)
    with pytest.raises(k.NativeError, match="'program'"):
        k.run_kernel("cpu", OP, [x], [("f32", [2, 3])], {"shape": [2, 3]}, 1)
    with pytest.raises(ShapeError, match="does not broadcast"):
        REGISTRY[OP].infer([TensorType((3, 2))], prog)


def test_can_fuse():
    g = Graph("cf")
    b = Builder(g)
    x = g.add_input("x", TensorType((2, 3)))
    r = g.add_input("r", TensorType((3,)))
    i = g.add_input("i", TensorType((2, 3), "i32"))
    assert can_fuse(b.emit1("relu", [x]).producer, (2, 3))
    assert not can_fuse(b.emit1("relu", [x]).producer, (4, 3))  # not the group's shape
    assert can_fuse(b.emit1("hardtanh", [x], {"min": 0.0, "max": 6.0}).producer)
    assert can_fuse(b.emit1("gelu", [x], {"approximate": "tanh"}).producer)
    assert can_fuse(b.emit1("add", [x, r]).producer, [2, 3])
    assert not can_fuse(b.emit1("relu", [r]).producer, (2, 3))
    assert not can_fuse(b.emit1("add", [i, i]).producer)  # not f32
    assert not can_fuse(b.emit1("sum", [x], {"dims": [0]}).producer)  # not elementwise
    assert "where" not in FUSABLE_OPS and "mask_grad" not in FUSABLE_OPS


# ---------------------------------------------------------------------------------------------
# the text IR
# ---------------------------------------------------------------------------------------------
def test_text_ir_round_trip():
    g, nodes, outs = _graph()
    inputs, attrs = build_fused(nodes, outs, g.initial)
    h = Graph("fused")
    hb = Builder(h)
    ins = [h.add_input(v.name, v.type) if v.kind == "input" else h.add_source(v.name, v.kind, g.initial[v.name])
           for v in inputs]
    y0, y1 = hb.emit(OP, ins, attrs)
    h.outputs["y0"], h.outputs["y1"] = y0, y1
    text = print_graph(h)
    assert "fused_elementwise(" in text and "t1=hardtanh(t0,min=0.0,max=6.0)" in text
    back = parse_graph(text, dict(h.initial))
    assert print_graph(back) == text
    assert back.nodes[0].attrs == attrs


def test_program_syntax_accepted_by_both_sides():
    """Whitespace anywhere, every number spelling the Python side writes or accepts, outputs in any
    order (each after its value): the kernel reads them as the reference does."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2, (3, 50)).astype(np.float32)
    program = (" t 0 = mul( x0 , 1. ) ;\n t1=add(t0,.5);t2=mul(t1,-2.5E+1); y1 = t2 ; t3=add(t2,1e-3);"
               " t4=hardtanh(t3, min=-inf, max=1e3); t5=mul(t4,0.1); y0 = t5 ;; y2=-0.0")
    attrs = {"shape": [3, 50], "program": program}
    ref = run_reference(OP, [x], attrs)
    got = _kernel([x], attrs)
    assert len(got) == 3
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7)
    assert np.signbit(got[2]).all()  # -0.0 kept its sign
