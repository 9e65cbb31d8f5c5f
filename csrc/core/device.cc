// The cpu Device (host memory) and the choice of device by backend name (core/device.h).
#include "core/device.h"

#include <cstdlib>
#include <cstring>

namespace edgetune {
namespace {

class CpuDevice final : public Device {
 public:
  const std::string& backend() const override { return name_; }
  std::string description() const override { return "host memory"; }
  bool host_accessible() const override { return true; }

  Result<uint8_t*> allocate(size_t bytes, size_t alignment) override {
    size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    if (rounded == 0) rounded = alignment;
    void* p = std::aligned_alloc(alignment, rounded);
    if (!p) return out_of_memory("cannot allocate " + std::to_string(rounded) + " bytes of host memory");
    std::memset(p, 0, rounded);
    return static_cast<uint8_t*>(p);
  }
  void release(uint8_t* p) override { std::free(p); }

  // The cpu runtime writes inputs straight into its input region; this is here for completeness.
  Result<uint8_t*> allocate_host(size_t bytes) override { return allocate(bytes, 64); }
  void release_host(uint8_t* p) override { std::free(p); }

  Status copy_to_device(void* dst, const void* src, size_t n) override {
    if (n) std::memcpy(dst, src, n);
    return Status::Ok();
  }
  Status copy_to_host(void* dst, const void* src, size_t n) override {
    if (n) std::memcpy(dst, src, n);
    return Status::Ok();
  }
  void* kernel_context() override { return nullptr; }

 private:
  const std::string name_ = "cpu";
};

}  // namespace

std::unique_ptr<Device> make_cpu_device() { return std::unique_ptr<Device>(new CpuDevice()); }

Result<std::unique_ptr<Device>> make_device(const std::string& backend) {
  if (backend == "cpu") return make_cpu_device();
#ifdef EDGETUNE_HAVE_CUDA
  if (backend == "cuda") return make_cuda_device();
#else
  if (backend == "cuda")
    return unimplemented(
        "backend 'cuda' is not built into this runtime (it was built without the CUDA backend: configure with "
        "-DEDGETUNE_CUDA=ON on a machine with nvcc and cuBLAS)");
#endif
  return unimplemented("backend '" + backend + "' is not built into this runtime");
}

}  // namespace edgetune
