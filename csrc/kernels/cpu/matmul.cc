// CPU kernels for compiler/ops/matmul.py: matmul (numpy semantics, batched, broadcasting batch
// dims) and linear (y = x W^T + b). Both are sgemm calls (gemm.h); f32 only.
//
//   matmul  a y without batch dims (or all of them 1) folds x's batch into M: one GEMM of
//           [B*M, K] @ [K, N], the shape of a linear layer written as matmul. Otherwise one GEMM
//           per output batch element, with broadcast batch dims mapped to offset 0: many small
//           products run in parallel (one thread each), big ones one after another (each threaded).
//   linear  one GEMM [rows, in] @ W^T with the bias as a per-column GemmBias, added as the
//           GEMM writes y (no separate pass over y).
//
// Epilogues (gemm.h), fused into the GEMM's write of the output:
//   matmul(a, b[, mask])               an optional 3rd input zeroes output elements: u8 bits or
//       the f32 activation output with attrs mask_min / mask_max (the backward of the activation
//       that produced the next layer's input: linear's grad-input product carries it).
//   linear(x, w[, b], activation=..)   relu / hardtanh(act_min, act_max) applied after the bias.
// A matmul with strided operand views (lhs_/rhs_/out_ shape+strides attrs) runs in
// matmul_views.cc (one strided-batched GEMM, gemm_batched.cc).
//
// Kernels: "matmul" and "linear" call sgemm, i.e. the GEMM library when the build has one (MKL,
// OpenBLAS: cmake/gemm.cmake); "matmul.own" and "linear.own" are the same kernels on the built-in
// GEMM (sgemm_own), so the kernel-selection pass can time both per node and pin the faster one
// (the library wins on large products, the built-in kernel can on small or skinny ones). Without
// a library both names run the built-in kernel. Same checks, no workspace.
#include <algorithm>
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/matmul_views.h"

namespace edgetune {
namespace {

// sgemm or sgemm_own: which GEMM a kernel runs on (same signature and contract, gemm.h)
using GemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                        float, float*, int64_t, ThreadPool*, GemmBias);

// Below this many multiply-adds per product, batches run in parallel rather than each GEMM threaded.
constexpr int64_t kSmallGemmMacs = int64_t{1} << 20;

// ---- matmul ----------------------------------------------------------------------------------

Status matmul_check(const KernelArgs& a) {
  if (cpu::matmul_has_views(a.attr())) return cpu::matmul_views_check(a);  // strided views: matmul_views.cc
  ET_RETURN_IF_ERROR(expect_arity(a, "matmul", 2, 3, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, "matmul", 2));
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  if (x.rank < 2 || y.rank < 2 || x.dim(-1) != y.dim(-2))
    return invalid_argument("matmul: " + x.shape_string() + " @ " + y.shape_string() + " is not a matrix product");
  const int r = std::max(x.rank, y.rank);
  if (out.rank != r || out.dim(-2) != x.dim(-2) || out.dim(-1) != y.dim(-1))
    return invalid_argument("matmul: output " + out.shape_string() + " does not fit " + x.shape_string() + " @ " +
                            y.shape_string());
  for (int d = 0; d < r - 2; ++d) {  // batch dims, aligned from the right
    const int xd = d - (r - x.rank), yd = d - (r - y.rank);
    const int64_t xs = xd >= 0 ? x.shape[xd] : 1, ys = yd >= 0 ? y.shape[yd] : 1;
    const int64_t o = out.shape[d];
    if ((xs != o && xs != 1) || (ys != o && ys != 1) || (xs != o && ys != o))
      return invalid_argument("matmul: batch dims of " + x.shape_string() + " and " + y.shape_string() +
                              " do not broadcast to " + out.shape_string());
  }
  OutputMask mask;
  return read_output_mask(a, 2, out, "matmul", &mask);
}

template <GemmFn gemm>
Status matmul_run(const KernelArgs& a) {
  if (cpu::matmul_has_views(a.attr())) return cpu::matmul_views_run(a);
  const TensorView &x = a.in(0), &y = a.in(1), &out = a.out(0);
  const int64_t M = x.dim(-2), K = x.dim(-1), N = y.dim(-1);
  const float* xp = x.as<float>();
  const float* yp = y.as<float>();
  float* op = out.as<float>();
  const int r = out.rank;
  int64_t batch = 1, y_batch = 1;
  for (int d = 0; d < r - 2; ++d) batch *= out.shape[d];
  for (int d = 0; d < y.rank - 2; ++d) y_batch *= y.shape[d];
  if (batch == 0 || M == 0 || N == 0) return Status::Ok();
  GemmBias ep;  // only the mask: element (i, j) of batch b's product is output element b*M*N + i*N + j
  ET_RETURN_IF_ERROR(read_output_mask(a, 2, out, "matmul", &ep.mask));

  if (y_batch == 1) {  // y is one matrix for every batch element: x's batch folds into M
    int64_t x_batch = 1;
    for (int d = 0; d < x.rank - 2; ++d) x_batch *= x.shape[d];
    if (x_batch == batch) {
      gemm(false, false, batch * M, N, K, 1.0f, xp, K, yp, N, 0.0f, op, N, a.pool, ep);
      return Status::Ok();
    }
  }

  // Per batch element: element strides of x and y per output batch dim (0 where broadcast).
  int64_t xstride[kMaxRank] = {0}, ystride[kMaxRank] = {0};
  cpu::matmul_batch_strides(x, y, r, M, K, N, xstride, ystride);
  auto one = [&](int64_t b, ThreadPool* pool) {
    int64_t xo = 0, yo = 0, rest = b;
    for (int d = r - 3; d >= 0; --d) {
      const int64_t i = rest % out.shape[d];
      rest /= out.shape[d];
      xo += i * xstride[d];
      yo += i * ystride[d];
    }
    GemmBias eb = ep;
    eb.mask_index = b * M * N;
    gemm(false, false, M, N, K, 1.0f, xp + xo, K, yp + yo, N, 0.0f, op + b * M * N, N, pool, eb);
  };
  if (M * N * K < kSmallGemmMacs && a.pool && a.pool->num_threads() > 1) {
    a.pool->parallel_for(batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) one(b, nullptr);
    });
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b, a.pool);
  }
  return Status::Ok();
}

// ---- linear ----------------------------------------------------------------------------------

Status linear_check(const KernelArgs& a) {
  ET_RETURN_IF_ERROR(expect_arity(a, "linear", 2, 3, 1));
  ET_RETURN_IF_ERROR(cpu::expect_all_f32(a, "linear", a.num_inputs));
  float lo, hi;
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "linear", &lo, &hi));
  const TensorView &x = a.in(0), &w = a.in(1), &out = a.out(0);
  if (w.rank != 2 || x.rank < 1 || x.dim(-1) != w.shape[1])
    return invalid_argument("linear: input " + x.shape_string() + " does not fit weight " + w.shape_string());
  if (a.num_inputs == 3 && (a.in(2).rank != 1 || a.in(2).shape[0] != w.shape[0]))
    return invalid_argument("linear: bias " + a.in(2).shape_string() + " does not fit weight " + w.shape_string());
  bool ok = out.rank == x.rank && out.dim(-1) == w.shape[0];
  for (int d = 0; ok && d < x.rank - 1; ++d) ok = out.shape[d] == x.shape[d];
  if (!ok) return invalid_argument("linear: output " + out.shape_string() + " does not fit input " + x.shape_string());
  return Status::Ok();
}

template <GemmFn gemm>
Status linear_run(const KernelArgs& a) {
  const TensorView &x = a.in(0), &w = a.in(1), &out = a.out(0);
  const int64_t in = w.shape[1], outf = w.shape[0];
  const int64_t rows = in ? x.numel() / in : out.numel() / std::max<int64_t>(outf, 1);
  float* y = out.as<float>();
  if (rows == 0 || outf == 0) return Status::Ok();
  GemmBias bias;
  if (a.num_inputs == 3) bias.col = a.in(2).as<float>();  // added in the GEMM's write-back
  ET_RETURN_IF_ERROR(read_activation(a.attr(), "linear", &bias.clamp_lo, &bias.clamp_hi));  // then clamped there
  gemm(false, true, rows, outf, in, 1.0f, x.as<float>(), in, w.as<float>(), in, 0.0f, y, outf, a.pool, bias);
  return Status::Ok();
}

}  // namespace

void register_matmul_kernels(KernelRegistry& r) {
  r.add({"matmul", "matmul", matmul_check, nullptr, matmul_run<&sgemm>});
  r.add({"linear", "linear", linear_check, nullptr, linear_run<&sgemm>});
  r.add({"matmul", "matmul.own", matmul_check, nullptr, matmul_run<&sgemm_own>});
  r.add({"linear", "linear.own", linear_check, nullptr, linear_run<&sgemm_own>});
}

}  // namespace edgetune
