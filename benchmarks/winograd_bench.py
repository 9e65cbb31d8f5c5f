"""Winograd vs the default (im2col + GEMM) conv kernels on ResNet-18's 3x3 stride-1 layers.

    EDGETUNE_NATIVE=$(csrc/dev-build.sh h3) python benchmarks/winograd_bench.py [--batch 8] [--reps 10]

Times `conv2d` vs `conv2d.winograd` and `conv2d_grad_input` vs `conv2d_grad_input.winograd`
through `edgetune._native.run_kernel`, 1 and 2 threads, best of --reps runs, and prints a markdown
table. run_kernel includes Python overhead, a fresh thread pool, the output allocation (poisoned
with a memset) and a zero-filled workspace of the kernel's size; the "harness" column estimates
the last two (numpy doing the same fills), which matters for Winograd's larger workspace.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgetune.runtime.native import native

LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]  # channels, spatial size: ResNet-18 3x3 stride-1 convs


def _best_ms(fn, reps):
    fn()  # warm-up: page faults, OpenBLAS/pool start-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _fill_ms(out_shape, ws_bytes, reps):
    """What run_kernel's output poisoning and zeroed workspace cost, done by numpy."""
    def fills():
        np.full(out_shape, 1.0, np.float32)
        np.full(ws_bytes + 64, 0, np.uint8)  # touched, as std::vector zero-fills it
    return _best_ms(fills, reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    nat = native()
    rng = np.random.default_rng(0)
    rows = []
    for c, hw in LAYERS:
        n = args.batch
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        dy = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
        gattrs = {**attrs, "input_shape": [n, c, hw, hw]}
        shape = [n, c, hw, hw]
        spec_in = [("f32", list(x.shape)), ("f32", list(w.shape)), ("f32", [c])]
        for op, ins, a, specs in (("conv2d", [x, w, b], attrs, spec_in),
                                  ("conv2d_grad_input", [dy, w], gattrs, spec_in[:2])):
            ws = {k: nat.workspace_bytes("cpu", k, specs, [("f32", shape)], a) for k in (op, op + ".winograd")}
            for threads in args.threads:
                ms = {k: _best_ms(lambda k=k: nat.run_kernel("cpu", k, ins, [("f32", shape)], a, threads), args.reps)
                      for k in ws}
                fill = {k: _fill_ms(shape, ws[k], args.reps) for k in ws}
                rows.append((f"{c}ch {hw}x{hw}", op, threads, ms[op], ms[op + ".winograd"], fill[op],
                             fill[op + ".winograd"], ws[op], ws[op + ".winograd"]))
                r = rows[-1]
                print(f"{r[0]:>12} {r[1]:>18} t={r[2]}  default {r[3]:8.2f} ms  winograd {r[4]:8.2f} ms  "
                      f"x{r[3] / r[4]:.2f}", flush=True)
    print(f"\nbatch {args.batch}, best of {args.reps}, sgemm backend: "
          f"{getattr(nat, 'sgemm_backend', lambda: '?')()}\n")
    print("| layer | op | threads | default ms | winograd ms | speed-up | harness ms (default / winograd) "
          "| workspace MiB (default / winograd) |")
    print("|---|---|---|---|---|---|---|---|")
    for layer, op, t, d, wg, fd, fw, wsd, wsw in rows:
        print(f"| {layer} | {op} | {t} | {d:.2f} | {wg:.2f} | {d / wg:.2f}x | {fd:.2f} / {fw:.2f} "
              f"| {wsd / 2**20:.1f} / {wsw / 2**20:.1f} |")


if __name__ == "__main__":
    main()
