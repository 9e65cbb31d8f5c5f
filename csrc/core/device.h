// Device: where a Runtime's memory lives and, for an accelerator, how its steps run.
//
// The Runtime holds one Device, chosen by RuntimeOptions::backend at load:
//
//   cpu   host memory (aligned_alloc), copies are memcpy, kernels get no context
//         (KernelArgs::device == nullptr); the runtime's own host loop runs the nodes.
//   cuda  (core/cuda_device.cu, only in a build with EDGETUNE_HAVE_CUDA) one cudaMalloc per plan
//         region, a pinned host mirror of the input region, the CudaContext kernels get as
//         KernelArgs::device, and step()/forward() as CUDA Graphs (see cuda_device.cu).
//
// The host never dereferences memory that allocate() returned unless host_accessible() says it
// may: everything that reads or writes weights, state or outputs goes through Runtime::read /
// Runtime::write, which call copy_to_host / copy_to_device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"

namespace edgetune {

class Runtime;

class Device {
 public:
  virtual ~Device() = default;

  virtual const std::string& backend() const = 0;  // "cpu", "cuda"
  // One line for people (--info, the training header): "host memory", "NVIDIA H100 ... (sm_90, ...)".
  virtual std::string description() const = 0;
  // True when the host may read and write what allocate() returns directly (cpu).
  virtual bool host_accessible() const = 0;

  // One plan region: max(bytes, 1) rounded up to `alignment` (a power of two <= 4096), zeroed and
  // aligned to `alignment`. kOutOfMemory (with the device's reason) when it cannot be had.
  virtual Result<uint8_t*> allocate(size_t bytes, size_t alignment) = 0;
  virtual void release(uint8_t* p) = 0;  // what allocate() returned, or null
  // Zeroed host memory the device can copy from asynchronously (cuda: pinned, cudaMallocHost):
  // the mirror of the input region that set_input writes. Only used when !host_accessible().
  virtual Result<uint8_t*> allocate_host(size_t bytes) = 0;
  virtual void release_host(uint8_t* p) = 0;

  // Synchronous copies between host memory and memory from allocate(): ordered after all work
  // queued on the device, and complete when they return.
  virtual Status copy_to_device(void* dst, const void* src, size_t n) = 0;
  virtual Status copy_to_host(void* dst, const void* src, size_t n) = 0;

  // What every kernel gets as KernelArgs::device (null on cpu; a CudaContext* on cuda).
  virtual void* kernel_context() = 0;

  // ---- step hooks -----------------------------------------------------------------------------
  // A device that runs steps itself returns true from runs_steps(); Runtime::step()/forward()
  // then call step()/forward() here instead of the host loop. prepare() runs once at the end of
  // load, when the runtime's nodes, bindings and copies are final.
  virtual bool runs_steps() const { return false; }
  virtual Status prepare(Runtime&) { return Status::Ok(); }
  virtual Result<float> step(Runtime&) { return unimplemented(backend() + " does not run steps"); }
  virtual Status forward(Runtime&) { return unimplemented(backend() + " does not run steps"); }
};

// The device of a backend: "cpu" always; "cuda" in a build with the CUDA backend and a usable GPU.
// kUnimplemented naming why otherwise (backend not built, no GPU, no driver: the CUDA error).
Result<std::unique_ptr<Device>> make_device(const std::string& backend);

std::unique_ptr<Device> make_cpu_device();
#ifdef EDGETUNE_HAVE_CUDA
Result<std::unique_ptr<Device>> make_cuda_device();  // core/cuda_device.cu
#endif

}  // namespace edgetune
