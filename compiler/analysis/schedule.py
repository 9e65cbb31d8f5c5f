"""Shared machinery of the two scheduling passes (reorder_updates, schedule_memory): the
dependences a reordering must respect, and a list scheduler over the backward/update region.

Dependences inside the region:
  * data: a node runs after the producers of its inputs;
  * state: a node that writes a state value (its output is assigned to a param / optimizer state,
    which the memory planner then updates in place) runs after every other node that reads the
    old value — e.g. SGD on a conv weight waits for conv2d_grad_input, which reads that weight.
The forward and loss nodes keep their order and stay first (the runtime's forward() runs the
forward section as a prefix, and the NaN check sits right after the loss node).
"""

from __future__ import annotations

import heapq
from typing import Callable

from ..ir import Graph, Node


def split_region(g: Graph) -> tuple[list[Node], list[Node]]:
    """(prefix that stays: forward + loss, region that may be reordered: backward + update)."""
    prefix = [n for n in g.nodes if n.section in ("forward", "loss")]
    region = [n for n in g.nodes if n.section not in ("forward", "loss")]
    if g.nodes[:len(prefix)] != prefix:
        raise ValueError("forward/loss nodes are not a prefix of the program")
    return prefix, region


def region_predecessors(g: Graph, region: list[Node]) -> dict[int, set[int]]:
    """index in region -> indices in region that must run before it."""
    pos = {id(n): i for i, n in enumerate(region)}
    producer = {id(v): pos[id(n)] for n in region for v in n.outputs}
    readers: dict[int, list[int]] = {}  # id(source value) -> region nodes reading it
    for i, n in enumerate(region):
        for v in n.inputs:
            if v.producer is None:
                readers.setdefault(id(v), []).append(i)
    assigned_to = {id(v): g.sources[name] for name, v in g.assigns.items()}
    preds: dict[int, set[int]] = {i: set() for i in range(len(region))}
    for i, n in enumerate(region):
        for v in n.inputs:
            if id(v) in producer:
                preds[i].add(producer[id(v)])
        for o in n.outputs:
            state = assigned_to.get(id(o))
            if state is not None:
                preds[i].update(r for r in readers.get(id(state), []) if r != i)
    return preds


def list_schedule(region: list[Node], preds: dict[int, set[int]],
                  pick: Callable[[list[int], set[int]], int] | None = None,
                  priority: Callable[[int], tuple] | None = None) -> list[Node]:
    """Topological order of `region`. With `priority` (a static key, smaller first) a heap picks
    the ready node; with `pick(ready, done)` the caller chooses dynamically."""
    succs: dict[int, list[int]] = {i: [] for i in preds}
    missing = {i: len(p) for i, p in preds.items()}
    for i, p in preds.items():
        for j in p:
            succs[j].append(i)
    ready = [i for i, m in missing.items() if m == 0]
    done: set[int] = set()
    order: list[int] = []
    if priority is not None:
        heap = [(priority(i), i) for i in ready]
        heapq.heapify(heap)
        while heap:
            _, i = heapq.heappop(heap)
            order.append(i)
            for s in succs[i]:
                missing[s] -= 1
                if missing[s] == 0:
                    heapq.heappush(heap, (priority(s), s))
    else:
        ready_set = list(ready)
        while ready_set:
            i = pick(ready_set, done)
            ready_set.remove(i)
            done.add(i)
            order.append(i)
            for s in succs[i]:
                missing[s] -= 1
                if missing[s] == 0:
                    ready_set.append(s)
    if len(order) != len(region):
        raise ValueError("cyclic dependences in the backward/update region")
    return [region[i] for i in order]
