"""The memory planner: lifetimes, arena reuse, in-place state updates, workspaces, and an
independent overlap check on every zoo model."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.compiler.ir_text import parse_graph
from edgetune.compiler.analysis.memory_plan import ALIGNMENT, _greedy_by_size, check_plan, plan_memory

CHAIN = """
program chain {
  input %x: f32[64]
  param %w: f32[64] trainable
  const %c0: f32[] = 1.0
  state %optim.lr: f32[]

  forward:
    %a: f32[64] = relu(%x)
    %b: f32[64] = mul(%a, %w)
    %c: f32[64] = relu(%b)
    %d: f32[64] = relu(%c)

  loss:
    %loss: f32[] = sum(%d)

  update:
    %w.next: f32[64] = sgd_update(%w, %b, %optim.lr) {dampening=0.0, maximize=false, momentum=0.0, nesterov=false, weight_decay=0.0}
  output loss = %loss
  assign %w <- %w.next
}
"""


def _graph(text=CHAIN):
    g = parse_graph(text)
    for name, v in g.sources.items():
        g.initial.setdefault(name, np.zeros(v.shape, dtype=np.float32))
    return g


def test_chain_reuses_dead_buffers():
    g = _graph()
    plan = plan_memory(g, lambda node: 0)
    check_plan(g, plan)
    p = {v.name: plan.placements[id(v)] for v in g.all_values()}
    # a dies after b, so c can take a's bytes; b lives to the update (read as the "gradient")
    assert p["a"].region == p["b"].region == "arena"
    assert p["c"].offset == p["a"].offset
    assert p["d"].offset not in (p["b"].offset, p["c"].offset)
    # three 256-byte tensors alive at once at most (b, c, d); the loss scalar takes c's bytes
    assert plan.arena_bytes == 3 * 256
    assert plan.input_bytes == 256


def test_optimizer_update_writes_the_parameter_in_place():
    g = _graph()
    plan = plan_memory(g, lambda node: 0)
    w, w_next = g.sources["w"], g.assigns["w"]
    assert plan.placements[id(w_next)] == plan.placements[id(w)]
    assert plan.placements[id(w)].region == "persistent"
    assert plan.inplace == ["w"] and plan.copies == []


def test_assign_becomes_a_copy_when_the_old_value_is_read_later():
    text = CHAIN.replace("  output loss = %loss", "    %late: f32[64] = mul(%w, %w)\n  output loss = %loss")
    g = _graph(text)
    plan = plan_memory(g, lambda node: 0)
    check_plan(g, plan)
    assert plan.inplace == [] and [s.name for _, s in plan.copies] == ["w"]
    assert plan.placements[id(g.assigns["w"])].region == "arena"


def test_workspace_is_planned_for_its_node_only():
    g = _graph()
    sizes = {"mul": 1000}
    plan = plan_memory(g, lambda node: sizes.get(node.op, 0))
    check_plan(g, plan)
    mul_index = [n.op for n in g.nodes].index("mul")
    offset, nbytes = plan.workspaces[mul_index]
    assert nbytes == 1000 and offset % ALIGNMENT == 0
    assert all(b == 0 for i, (_, b) in enumerate(plan.workspaces) if i != mul_index)
    assert plan.arena_bytes >= 1024 + 2 * 256  # workspace beside a and b, both alive during mul


def test_greedy_placement_never_overlaps_live_tensors():
    rng = np.random.default_rng(0)
    for _ in range(50):
        items = []
        for k in range(40):
            first = int(rng.integers(0, 30))
            items.append((first, first + int(rng.integers(0, 10)), int(rng.integers(1, 5000)), k))
        offsets, peak = _greedy_by_size(items)
        for a in items:
            for b in items:
                if a[3] >= b[3] or a[1] < b[0] or b[1] < a[0]:
                    continue
                oa, ob = offsets[a[3]], offsets[b[3]]
                assert oa + a[2] <= ob or ob + b[2] <= oa, (a, b)
        # never worse than giving every tensor its own bytes
        assert peak <= sum(-(-n // ALIGNMENT) * ALIGNMENT for _, _, n, _ in items)


def test_a_chain_of_near_equal_tensors_alternates_between_two_slots():
    """EfficientNet-Lite0 last-k's a -> b -> c -> d (each alive with the next): largest first with
    earliest use first stacks them three high (d, c, then a under d leaves b no room below c);
    the planner also tries latest use first, which needs only the two biggest side by side."""
    mib = 2 ** 20
    chain = [(11, 13, 36_800_000, "a"), (13, 14, 36_800_000, "b"), (14, 15, 37_100_000, "c"),
             (15, 16, 37_400_000, "d")]
    offsets, peak = _greedy_by_size(chain)
    assert peak <= 37_100_000 + 37_400_000 + 2 * ALIGNMENT, peak / mib
    assert offsets["a"] != offsets["b"] and offsets["b"] != offsets["c"] and offsets["c"] != offsets["d"]


@pytest.mark.parametrize("model_name", ["mlp", "small_cnn", "mobilenet_v2", "bert", "gpt"])
def test_zoo_plans_are_valid_and_smaller_than_keeping_everything(model_name):
    import edgetune as et
    from edgetune import models
    model = models.build(model_name)
    (x,), y = models.example_inputs(model_name, model, batch=2)
    prog = et.compile(model, (x,), y, peft=et.peft.BiasOnly(), optimizer=et.optim.AdamW(lr=1e-3))
    plan = plan_memory(prog.graph, lambda node: 0)
    check_plan(prog.graph, plan)
    everything = sum(v.type.nbytes for n in prog.graph.nodes for v in n.outputs)
    assert plan.arena_bytes < everything
    trainable = {p.name for p in prog.graph.trainable_params()}
    assert trainable <= set(plan.inplace)  # every trained parameter is updated in place
