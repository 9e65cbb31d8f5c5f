// Strided-batched single-precision GEMM over the built-in/library `sgemm` (gemm.h):
//
//   C_b = op(A_b) @ op(B_b)   for every element b of a batch of up to kMaxRank dims, where each
//   operand's matrix b starts at its base pointer + sum over batch dims of index * stride
//   (element strides, 0 = broadcast). C is row-major with leading dimension ldc.
//
// What matmul with strided operand views runs (kernels/cpu/matmul_views.cc): attention's
// per-head products read Q/K/V inside [B, T, H*D] tensors (batch strides T*H*D and D, leading
// dimension H*D) instead of from permuted copies. Tiny products (M, N, K <= 64) are direct loops
// rather than sgemm calls (packing costs more than the arithmetic there). Many small products run in parallel (one per
// thread, each single-threaded); a big one at a time with the pool. A batch whose A rows and C
// rows follow each other at one stride, with B the same matrix for every element, is one GEMM
// with the batch folded into M. Deterministic: which path runs depends only on the shapes.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/gemm.h"

namespace edgetune {

struct GemmBatch {
  int rank = 0;
  int64_t shape[kMaxRank] = {0};
  int64_t a[kMaxRank] = {0}, b[kMaxRank] = {0}, c[kMaxRank] = {0};  // element strides per batch dim
  // the epilogue's output mask index of batch element b is b * mask_stride (row-major outputs)
  int64_t mask_stride = 0;
};

void sgemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                   const float* B, int64_t ldb, float* C, int64_t ldc, const GemmBatch& batch, ThreadPool* pool,
                   GemmBias ep = {});

}  // namespace edgetune
