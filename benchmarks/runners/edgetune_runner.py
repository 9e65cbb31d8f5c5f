"""edgetune's C++ CPU runtime on CELL_DIR/plan.etp. Loads the pybind11 module `_native` straight from
its file, so neither torch nor the compiler is imported: the peak RSS is the runtime's."""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ok_result, reset_peak_rss, run_main, time_steps  # noqa: E402


def body(cell, meta):
    spec = importlib.util.spec_from_file_location("edgetune._native", meta["native_path"])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t0 = time.perf_counter()
    with open(os.path.join(cell, "plan.etp"), "rb") as f:
        plan = f.read()
    rt = mod.Runtime(plan, "cpu", int(meta["threads"]))
    load_s = time.perf_counter() - t0
    specs = rt.inputs()  # [(name, dtype, shape)]
    x, y = np.load(os.path.join(cell, "x.npy")), np.load(os.path.join(cell, "y.npy"))
    dt = {"f32": np.float32, "i64": np.int64, "i32": np.int32}
    feeds = [np.ascontiguousarray(a.astype(dt.get(s[1], a.dtype))) for a, s in zip((x, y), specs)]
    del plan
    before = reset_peak_rss()  # the steps' own peak too: the plan's bytes are held while it loads
    ms, losses = time_steps(lambda: rt.step(feeds), meta["warmup"], meta["steps"])
    mem = rt.memory()
    return ok_result(ms, losses, before, runtime_memory=mem if isinstance(mem, dict) else str(mem), load_s=load_s)


if __name__ == "__main__":
    raise SystemExit(run_main("edgetune", body))
