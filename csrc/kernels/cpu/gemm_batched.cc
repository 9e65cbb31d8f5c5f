// Strided-batched sgemm (gemm_batched.h).
#include "kernels/cpu/gemm_batched.h"

namespace edgetune {
namespace {

// Below this many multiply-adds per product, batch elements run in parallel rather than each
// GEMM threaded (matmul.cc's rule).
constexpr int64_t kSmallGemmMacs = int64_t{1} << 20;

// Products with every one of M, N, K at most this run as direct loops (tiny_gemm) instead of
// sgemm, whose packing and blocking cost more than the arithmetic at attention's per-head sizes
// (seq 8, head dim 32: 2048 multiply-adds).
constexpr int64_t kTiny = 64;

// C = op(A) op(B) for a tiny product: op(B) staged row-major in 16-float vectors (columns padded
// with zeros to a multiple of 16, so a row of C is at most four vector accumulators whatever its
// transposition), then blocks of rows of C accumulated over K in order (a fixed order: the result
// depends on the shape only). GCC/Clang vector extensions: AVX-512, AVX2 or NEON code alike.
using V16 = float __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

// Rows [i0, i0 + MR) of C: MR * NV independent vector accumulators kept in registers (a
// dependency chain per accumulator, so the FMAs overlap instead of waiting on each other).
template <int NV, int MR>
void tiny_rows(bool ta, int64_t i0, int64_t N, int64_t K, const float* A, int64_t lda, const V16* staged, float* C,
               int64_t ldc, const GemmBias& ep) {
  V16 acc[MR][NV] = {};
  for (int64_t p = 0; p < K; ++p) {
    const V16* b = staged + p * NV;
    for (int r = 0; r < MR; ++r) {
      const int64_t i = i0 + r;
      const V16 a = V16{} + (ta ? A[p * lda + i] : A[i * lda + p]);
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* c = C + (i0 + r) * ldc;
    const float* row = reinterpret_cast<const float*>(acc[r]);
    for (int64_t j = 0; j < N; ++j) c[j] = row[j];
    if (ep.mask.active()) ep.mask.apply(c, ep.mask_index + (i0 + r) * ldc, N);
  }
}

template <int NV>
void tiny_all_rows(bool ta, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const V16* staged, float* C,
                   int64_t ldc, const GemmBias& ep) {
  constexpr int MR = NV == 1 ? 8 : NV == 2 ? 4 : 2;
  int64_t i = 0;
  for (; i + MR <= M; i += MR) tiny_rows<NV, MR>(ta, i, N, K, A, lda, staged, C, ldc, ep);
  for (; i < M; ++i) tiny_rows<NV, 1>(ta, i, N, K, A, lda, staged, C, ldc, ep);
}

void tiny_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, float* C, int64_t ldc, const GemmBias& ep) {
  const int64_t nv = (N + kLanes - 1) / kLanes;
  V16 staged[kTiny * (kTiny / kLanes)];
  for (int64_t p = 0; p < K; ++p) {
    float* row = reinterpret_cast<float*>(staged + p * nv);
    for (int64_t j = 0; j < N; ++j) row[j] = tb ? B[j * ldb + p] : B[p * ldb + j];
    for (int64_t j = N; j < nv * kLanes; ++j) row[j] = 0.0f;
  }
  switch (nv) {
    case 1: return tiny_all_rows<1>(ta, M, N, K, A, lda, staged, C, ldc, ep);
    case 2: return tiny_all_rows<2>(ta, M, N, K, A, lda, staged, C, ldc, ep);
    case 3: return tiny_all_rows<3>(ta, M, N, K, A, lda, staged, C, ldc, ep);
    default: return tiny_all_rows<4>(ta, M, N, K, A, lda, staged, C, ldc, ep);
  }
}

// Rows of batch element b follow those of b - 1 at one stride: row stride `ld` (not transposed),
// innermost batch stride M * ld, each outer one its size times the next.
bool rows_follow(const GemmBatch& g, const int64_t* s, int64_t M, int64_t ld) {
  int64_t expect = M * ld;
  for (int d = g.rank - 1; d >= 0; --d) {
    if (g.shape[d] != 1 && s[d] != expect) return false;
    expect *= g.shape[d];
  }
  return true;
}

}  // namespace

void sgemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, float* C, int64_t ldc, const GemmBatch& g, ThreadPool* pool, GemmBias ep) {
  int64_t batch = 1;
  bool b_shared = true;
  for (int d = 0; d < g.rank; ++d) {
    batch *= g.shape[d];
    if (g.shape[d] != 1 && g.b[d] != 0) b_shared = false;
  }
  if (batch == 0 || M == 0 || N == 0) return;
  if (batch == 1 || (b_shared && !ta && rows_follow(g, g.a, M, lda) && rows_follow(g, g.c, M, ldc) &&
                     (!ep.mask.active() || (ldc == N && g.mask_stride == M * N)))) {
    sgemm(ta, tb, batch * M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, pool, ep);
    return;
  }
  // matmul's epilogue is at most a mask (no bias or clamp): tiny_gemm applies only that
  const bool tiny = M <= kTiny && N <= kTiny && K <= kTiny && !ep.row && !ep.col && !ep.clamps();
  auto one = [&](int64_t b, ThreadPool* p) {
    int64_t ao = 0, bo = 0, co = 0, rest = b;
    for (int d = g.rank - 1; d >= 0; --d) {
      const int64_t i = rest % g.shape[d];
      rest /= g.shape[d];
      ao += i * g.a[d], bo += i * g.b[d], co += i * g.c[d];
    }
    GemmBias eb = ep;
    eb.mask_index = b * g.mask_stride;
    if (tiny) return tiny_gemm(ta, tb, M, N, K, A + ao, lda, B + bo, ldb, C + co, ldc, eb);
    sgemm(ta, tb, M, N, K, 1.0f, A + ao, lda, B + bo, ldb, 0.0f, C + co, ldc, p, eb);
  };
  if (M * N * K < kSmallGemmMacs && pool && pool->num_threads() > 1) {
    pool->parallel_for(batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) one(b, nullptr);
    });
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b, pool);
  }
}

}  // namespace edgetune
