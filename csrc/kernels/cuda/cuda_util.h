// Helpers shared by the CUDA kernels: cudaError_t / cublasStatus_t as edgetune Status, the context,
// launch sizes and grid-stride loops, the CPU check a kernel shares, broadcast indexing, the output
// mask epilogue and a fixed-order block reduction.
//
// Rules every CUDA kernel follows (csrc/README.md, "CUDA backend"):
//   * run() launches on ctx->stream only; no allocation, no synchronisation, no host<->device copy,
//     no reading device data on the host (a step is captured into a CUDA Graph);
//   * scratch only from the node's workspace (workspace(args), the same function the compiler asks);
//   * check(args) at load touches no device memory and accepts exactly what run() runs: most CUDA
//     kernels accept exactly what the CPU kernel of the same name accepts and use its check;
//   * deterministic: no float atomics; every sum runs in an order fixed by the shapes (two-pass /
//     tree reductions), so two runs give the same bits;
//   * data-dependent errors the CPU reports from run() (an index outside the table, a target outside
//     the classes) cannot be returned without a sync: the CUDA kernels write NaN (losses) or zeros
//     (embedding rows) for such entries instead, and the CPU backend's check of the same plan
//     reports them.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/kernel.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cuda/cuda_context.h"

namespace edgetune {
namespace cuda {

// ---- errors as Status ---------------------------------------------------------------------------
inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return internal_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

inline Status cublas_status(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return internal_error(std::string(what) + ": " + cublasGetStatusString(e));
}

#define ET_CUDA_CHECK(expr) ET_RETURN_IF_ERROR(::edgetune::cuda::cuda_status((expr), #expr))
#define ET_CUBLAS_CHECK(expr) ET_RETURN_IF_ERROR(::edgetune::cuda::cublas_status((expr), #expr))
// After a <<<...>>> launch: a bad configuration shows up here (cudaGetLastError is capture-safe).
#define ET_CUDA_LAUNCHED(what) ET_RETURN_IF_ERROR(::edgetune::cuda::cuda_status(cudaGetLastError(), what))

// ---- the context ------------------------------------------------------------------------------
inline CudaContext* context_of(const KernelArgs& a) { return static_cast<CudaContext*>(a.device); }

#define ET_CUDA_CONTEXT(ctx, a)                                                                   \
  CudaContext* ctx = ::edgetune::cuda::context_of(a);                                            \
  if (!ctx) return internal_error("cuda kernel called without a CudaContext (KernelArgs::device)")

// ---- launch sizes -------------------------------------------------------------------------------
constexpr int kBlock = 256;
// Grid-stride loops cover whatever the grid does not, so the grid is capped well below 2^31 - 1.
constexpr int64_t kMaxGrid = int64_t{1} << 20;

inline unsigned grid_for(int64_t n, int block = kBlock) {
  int64_t g = (n + block - 1) / block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(g, kMaxGrid)));
}

#define ET_GRID_LOOP(i, n)                                                                  \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// ---- the CPU kernel's check ---------------------------------------------------------------------
// The check of the CPU kernel registered under `name` (what the CUDA kernel of that name accepts
// too). Null when the CPU has no such kernel or it has no check; the registry parity test proves
// every CUDA kernel name is a CPU kernel name.
KernelCheck cpu_check_of(const char* name);

// Registers a CUDA kernel that accepts what the CPU kernel `name` accepts.
void add_like_cpu(KernelRegistry& r, const char* op, const char* name, KernelWorkspace ws, KernelRun run);

// ---- indexing -----------------------------------------------------------------------------------
// Element offsets of N inputs broadcast to an output (cpu::Broadcast's merged dims), by value into
// kernels: offset(k, i) is input k's element for output element i.
template <int N>
struct BcastIndex {
  int rank = 1;
  int64_t shape[kMaxRank] = {1};
  int64_t stride[N][kMaxRank] = {{0}};

  __host__ __device__ int64_t offset(int k, int64_t i) const {
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t s = shape[d];
      off += (i % s) * stride[k][d];
      i /= s;
    }
    return off;
  }
};

template <int N>
inline BcastIndex<N> bcast_index(const cpu::Broadcast<N>& bc) {
  BcastIndex<N> b;
  b.rank = bc.rank;
  for (int d = 0; d < bc.rank; ++d) {
    b.shape[d] = bc.shape[d];
    for (int k = 0; k < N; ++k) b.stride[k][d] = bc.stride[k][d];
  }
  return b;
}

// ---- the output mask (gemm.h's OutputMask, on the device) ----------------------------------------
// keep element e where: bit e of `bits` (LSB first), or lo < values[e] (&& values[e] < hi when bounded).
struct DevMask {
  const uint8_t* bits = nullptr;
  const float* values = nullptr;
  float lo = 0.0f, hi = 0.0f;
  bool bounded = true;

  __device__ bool keep(int64_t e) const {
    if (bits) return (bits[e >> 3] >> (e & 7)) & 1;
    if (values) {
      const float v = values[e];
      return v > lo && (!bounded || v < hi);
    }
    return true;
  }
  bool active() const { return bits || values; }
};

// ---- fixed-order block reduction ----------------------------------------------------------------
// Sum of one value per thread over the block (blockDim.x a power of two <= 1024), the same tree
// every time: thread 0 gets the result. `smem` holds blockDim.x values. Ends with __syncthreads().
template <typename T>
__device__ inline T block_sum(T v, T* smem) {
  const int t = threadIdx.x;
  smem[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) smem[t] = smem[t] + smem[t + s];
    __syncthreads();
  }
  T r = smem[0];
  __syncthreads();
  return r;
}

template <typename T>
__device__ inline T block_max(T v, T* smem) {
  const int t = threadIdx.x;
  smem[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) {
      const T o = smem[t + s];
      smem[t] = o > smem[t] ? o : smem[t];
    }
    __syncthreads();
  }
  T r = smem[0];
  __syncthreads();
  return r;
}

// Zero `bytes` at `p` on the context's stream (capturable: a memset node).
inline Status zero_async(const CudaContext* ctx, void* p, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  ET_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx->stream));
  return Status::Ok();
}

inline Status copy_async(const CudaContext* ctx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return Status::Ok();
  ET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
  return Status::Ok();
}

}  // namespace cuda
}  // namespace edgetune
