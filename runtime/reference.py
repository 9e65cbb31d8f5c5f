"""The numpy reference executor: runs a compiled program node by node with each op's reference.

It is the oracle every backend is checked against, so it is written for clarity, not speed:
one environment dict, no buffer reuse. `compute_dtype` lets tests run a float32 program in
float64 to separate rounding from real mismatches.
"""

from __future__ import annotations

import numpy as np

from ..compiler.errors import IRError
from ..compiler.ir import Graph, numpy_dtype
from ..compiler.ops.registry import get_op


class ReferenceExecutor:
    def __init__(self, graph: Graph, compute_dtype=None):
        self.graph = graph
        self.compute_dtype = np.dtype(compute_dtype) if compute_dtype is not None else None

    def _cast(self, arr: np.ndarray) -> np.ndarray:
        if self.compute_dtype is not None and np.issubdtype(arr.dtype, np.floating):
            return arr.astype(self.compute_dtype)
        return arr

    def run(self, feeds: dict[str, np.ndarray], state: dict[str, np.ndarray],
            sections: tuple[str, ...] | None = None, collect: bool = False):
        """Execute; returns (outputs, new_state[, env]). `state` holds params, buffers and
        optimizer states by name; consts come from the graph. Only nodes of `sections` run
        (default: all), and only assignments whose value was computed are applied."""
        g = self.graph
        env: dict[str, np.ndarray] = {}
        for v in g.inputs:
            if v.name in feeds:
                env[v.name] = self._cast(np.asarray(feeds[v.name]))
        for name, v in g.sources.items():
            data = g.initial[name] if v.kind == "const" else state.get(name)
            if data is None:
                raise IRError(f"no data for {v.kind} '{name}'")
            env[name] = self._cast(np.asarray(data))
        for node in g.nodes:
            if sections is not None and node.section not in sections:
                continue
            try:
                args = [env[v.name] for v in node.inputs]
            except KeyError as e:
                raise IRError(f"{node.op} producing %{node.outputs[0].name} reads {e} which was not computed") from None
            results = get_op(node.op).reference(args, node.attrs)
            for v, r in zip(node.outputs, results):
                env[v.name] = self._cast(np.asarray(r))  # a `cast` to f32 stays in compute_dtype
        outputs = {k: env[v.name] for k, v in g.outputs.items() if v.name in env}
        new_state = dict(state)
        for name, v in g.assigns.items():
            if v.name in env:
                src = g.sources[name]
                new_state[name] = env[v.name].astype(numpy_dtype(src.dtype), copy=False) \
                    if self.compute_dtype is None else env[v.name]
        if collect:
            return outputs, new_state, env
        return outputs, new_state
