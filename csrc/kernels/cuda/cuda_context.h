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
//   cublas    null today: no kernel uses the cuBLAS (non-Lt) API, so the runtime (core/cuda_device.cu)
//             creates no handle (it would hold device memory outside the plan). A kernel that needs
//             one must have the runtime create it bound to `stream` (cublasSetStream), math mode
//             CUBLAS_DEFAULT_MATH or CUBLAS_PEDANTIC_MATH (never TF32), with a workspace set by the
//             runtime (cublasSetWorkspace) so that cuBLAS never allocates while a graph is captured.
//   cublaslt  a cuBLASLt handle. Its GEMMs take their workspace from the node's planned workspace
//             (kernels/cuda/cuda_gemm.h: kGemmWorkspaceBytes at the start of a GEMM kernel's
//             workspace), pick the algorithm by heuristic with that workspace limit and exclude
//             in-place (atomic) split-K reductions, so a GEMM's result does not depend on run order.
//   sm_count, cc_major, cc_minor   the device's properties, read once at load (kernels may size
//             grids by sm_count; no kernel queries the device in run()).
//   update_guard, node_tag   the non-finite update guard (kernels/cuda/optim.cu; the CPU's is in
//             kernels/cpu/optim.cc). update_guard is one unsigned int of device memory that the
//             runtime zeroes at the start of a step's backward/update part; node_tag is 1 + the index
//             of the node being launched, set by the runtime before each run(). An update kernel's
//             check pass sets the guard to its node_tag (atomicCAS from 0: the first refusal wins,
//             deterministically, since updates run in stream order) when any new value would be
//             inf/NaN or lr is not finite; every update kernel writes nothing while the guard is set.
//             The runtime reads the guard back after the step and reports the refusal as the CPU
//             does. update_guard null (a test-local context): no check, updates write unconditionally.
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
  unsigned int* update_guard = nullptr;  // device memory, owned by the runtime (see above)
  unsigned int node_tag = 0;             // 1 + the index of the node being launched
};

}  // namespace edgetune
