// Single-precision GEMM for the CUDA kernels, through cuBLASLt, row-major like kernels/cpu/gemm.h.
//
// Deterministic: the algorithm comes from cuBLASLt's heuristic for the shape, the pointers'
// alignment and a fixed workspace limit, with in-place (atomic) split-K reductions excluded, so
// the same plan computes the same bits every run on the same GPU. Compute type CUBLAS_COMPUTE_32F
// (no TF32). The workspace is the first kGemmWorkspaceBytes of the node's planned workspace: every
// kernel that calls gemm() counts them in its workspace() (gemm_workspace()).
#pragma once

#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {

constexpr size_t kGemmWorkspaceBytes = size_t{4} << 20;  // a multiple of 256: what follows stays aligned

// C[M,N] (+= when beta = 1) op(A)[M,K] @ op(B)[K,N] for `batch` matrices (element strides sA, sB,
// sC between them; 0 = the same matrix for every batch element). Row-major with row strides
// lda/ldb/ldc as stored (op(X) = X^T when tX, so a transposed A is stored [K,M]).
// Epilogue (cuBLASLt's): bias[j] added to column j of every C (row-major columns, length N), then
// relu. K == 0 gives C = beta * C + bias.
struct Gemm {
  bool ta = false, tb = false;
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0, sA = 0;
  const float* B = nullptr;
  int64_t ldb = 0, sB = 0;
  float* C = nullptr;
  int64_t ldc = 0, sC = 0;
  int64_t batch = 1;
  float beta = 0.0f;
  const float* bias = nullptr;
  bool relu = false;
};

// The workspace gemm() uses: the node's workspace (a.workspace, up to kGemmWorkspaceBytes of it).
Status gemm(const KernelArgs& a, CudaContext* ctx, const Gemm& g);

// What a GEMM kernel adds to its workspace(): kGemmWorkspaceBytes.
inline size_t gemm_workspace() { return kGemmWorkspaceBytes; }

// y[i] = mask(clamp(y[i] + bias[(i / inner) % channels], lo, hi)) over n elements (bias may be null;
// lo/hi = -inf/+inf for no clamp; mask index = i + mask_offset). Nothing to do: no launch.
Status epilogue(CudaContext* ctx, float* y, int64_t n, int64_t inner, int64_t channels, const float* bias, float lo,
                float hi, const DevMask& mask, int64_t mask_offset = 0);

// The optional output mask of input slot `slot` (gemm.h's read_output_mask) on the device.
Status read_dev_mask(const KernelArgs& a, int slot, const TensorView& out, const char* kernel, DevMask* m);

}  // namespace cuda
}  // namespace edgetune
