"""This machine's sgemm peak, measured with edgetune's own GEMM (the `matmul` CPU kernel through
`_native.run_kernel`) on 1024x1024x1024, or with numpy when the native module is unavailable.

    python benchmarks/runners/gemm_peak.py THREADS [NATIVE_PATH]     -> one JSON line on stdout
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import numpy as np

N = 1024


def main() -> int:
    threads = int(sys.argv[1])
    native_path = sys.argv[2] if len(sys.argv) > 2 else ""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    how, why = None, None
    if native_path:
        try:
            spec = importlib.util.spec_from_file_location("edgetune._native", native_path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)

            def fn():
                return mod.run_kernel("cpu", "matmul", [a, b], [("f32", [N, N])], {}, threads)
            out = fn()[0]
            if not np.allclose(out[:4, :4], a[:4] @ b[:, :4], rtol=1e-3, atol=1e-3):
                raise RuntimeError("edgetune matmul result differs from numpy")
            how = f"edgetune matmul kernel ({getattr(mod, 'gemm_backend', '?')}), {threads} threads"
        except Exception as e:  # noqa: BLE001
            why = f"{type(e).__name__}: {e}"
    if how is None:
        def fn():
            return a @ b
        how = "numpy matmul (BLAS threads as configured)" + (f"; edgetune kernel unavailable: {why}" if why else "")
    fn()
    best = float("inf")
    t_end = time.perf_counter() + 2.0
    reps = 0
    while reps < 5 or (time.perf_counter() < t_end and reps < 50):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    gflops = 2 * N ** 3 / best / 1e9
    print(json.dumps({"gflops": gflops, "n": N, "best_s": best, "reps": reps, "how": how, "threads": threads}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
