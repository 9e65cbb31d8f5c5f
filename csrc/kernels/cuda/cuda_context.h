// The CUDA backend's per-runtime context: what every CUDA kernel needs besides its KernelArgs.
//
// One CudaContext per Runtime, created at load by the runtime and handed to every kernel as
// KernelArgs::device (null on the CPU backend). Kernels read it with
//   auto* ctx = static_cast<CudaContext*>(a.device);
//
// Contract between the runtime (which owns it) and the kernels (which only read it):
//   stream    every kernel launches its work, including cuBLAS calls, on this stream and nothing
//             else. No kernel synchronises, allocates (device or pinned memory), or copies between
//             host and device in run(): a whole step can be captured into a CUDA Graph and replayed.
//   cublas    a cuBLAS handle bound to `stream` (cublasSetStream), math mode CUBLAS_DEFAULT_MATH or
//             CUBLAS_PEDANTIC_MATH (never TF32: results must stay within the CPU's tolerances), with
//             a workspace set by the runtime (cublasSetWorkspace) so that cuBLAS never allocates
//             while a graph is captured. Kernels currently do all GEMMs through `cublaslt`.
//   cublaslt  a cuBLASLt handle. Its GEMMs take their workspace from the node's planned workspace
//             (kernels/cuda/cuda_gemm.h: kGemmWorkspaceBytes at the start of a GEMM kernel's
//             workspace), pick the algorithm by heuristic with that workspace limit and exclude
//             in-place (atomic) split-K reductions, so a GEMM's result does not depend on run order.
//   sm_count, cc_major, cc_minor   the device's properties, read once at load (kernels may size
//             grids by sm_count; no kernel queries the device in run()).
//
// Tensor data: TensorView::data holds device pointers (the arena is one cudaMalloc; persistent
// state and inputs live in device memory too). Pointers are at least 64-byte aligned where the
// plan places tensors (compiler/analysis/memory_plan.py ALIGNMENT), so the workspace is as well.
// Scalars that change between steps (lr, step, dropout's counter) stay in device memory: kernels
// read them on the device, never on the host.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace edgetune {

struct CudaContext {
  cudaStream_t stream = nullptr;     // every kernel launches on it; no kernel synchronises or allocates
  cublasHandle_t cublas = nullptr;   // bound to `stream`, workspace set by the runtime
  cublasLtHandle_t cublaslt = nullptr;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
};

}  // namespace edgetune
