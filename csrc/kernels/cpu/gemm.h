// Single-precision GEMM for the CPU kernels: one row-major entry point, two implementations.
//
//   sgemm      what the kernels call: OpenBLAS's cblas_sgemm when the build found OpenBLAS
//              (EDGETUNE_HAVE_OPENBLAS), otherwise the built-in packed kernel below. OpenBLAS is
//              kept single-threaded and sgemm spreads tiles of C over the pool itself (OpenBLAS's
//              own threading gives thread-count-dependent results).
//   sgemm_own  the built-in kernel (gemm.cc): packed A/B panels in stack buffers, a
//              register-blocked micro-kernel written with GCC/Clang vector extensions so the
//              same source becomes AVX-512, AVX2 or NEON code; compiled in every build, so the
//              benchmark (benchmarks/gemm_bench.cc) can compare both in one binary. It is what
//              the aarch64 build (-DEDGETUNE_BLAS=OWN) uses.
//
// Both are allocation-free at call time (OpenBLAS's internal buffer pool is set up on first use)
// and deterministic: every element of C is summed over K in an order fixed by the shape, never
// by the thread count, so 1 and N threads give identical results.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace edgetune {

// Optional bias added to the product once: row[i] to every element of row i (length M), col[j]
// to every element of column j (length N); either may be null. Fused into the GEMM's write-back
// (the own kernel) or written before it (OpenBLAS), so C is not read back for a separate add.
struct GemmBias {
  const float* row = nullptr;
  const float* col = nullptr;
};

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C + bias, every matrix row-major with row
// stride lda/ldb/ldc as stored (op(X) = X^T when trans_x, so a transposed A is stored [K,M]).
// beta == 0 overwrites C without reading it (C may hold garbage or NaN).
// pool: the threads to use; null = the calling thread only. The pool is not re-entrant: inside a
// parallel_for body pass null (concurrent null-pool calls from several threads are fine).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool, GemmBias bias = {});

// The built-in kernel, same contract.
void sgemm_own(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool,
               GemmBias bias = {});

// "openblas" or "own": what sgemm runs in this build.
const char* sgemm_backend();

}  // namespace edgetune
