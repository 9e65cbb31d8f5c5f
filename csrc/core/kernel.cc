// The per-backend kernel registries.
#include "core/kernel.h"

namespace edgetune {

void register_cpu_kernels(KernelRegistry& r);  // kernels/cpu/registry.cc
#ifdef EDGETUNE_HAVE_CUDA
void register_cuda_kernels(KernelRegistry& r);  // kernels/cuda/registry.cu
#endif

const KernelRegistry* KernelRegistry::for_backend(const std::string& backend) {
  if (backend == "cpu") {
    static const KernelRegistry* cpu = [] {
      auto* r = new KernelRegistry();
      register_cpu_kernels(*r);
      return r;
    }();
    return cpu;
  }
#ifdef EDGETUNE_HAVE_CUDA
  if (backend == "cuda") {
    static const KernelRegistry* cuda = [] {
      auto* r = new KernelRegistry();
      register_cuda_kernels(*r);
      return r;
    }();
    return cuda;
  }
#endif
  return nullptr;
}

std::vector<std::string> KernelRegistry::backends() {
#ifdef EDGETUNE_HAVE_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

void KernelRegistry::add(KernelDef def) {
  if (def.name.empty()) def.name = def.op;
  kernels_[def.name] = std::move(def);
}

const KernelDef* KernelRegistry::find(const std::string& name) const {
  auto it = kernels_.find(name);
  return it == kernels_.end() ? nullptr : &it->second;
}

std::vector<std::string> KernelRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& kv : kernels_) out.push_back(kv.first);
  return out;
}

Status expect_dtype(const KernelArgs&, const char* what, const TensorView& t, DType want) {
  if (t.dtype == want) return Status::Ok();
  return unimplemented(std::string(what) + " is " + t.shape_string() + "; this kernel takes " + dtype_name(want));
}

Status expect_arity(const KernelArgs& a, const char* op, int min_in, int max_in, int num_out) {
  if (a.num_inputs < min_in || a.num_inputs > max_in || a.num_outputs != num_out)
    return invalid_argument(std::string(op) + ": got " + std::to_string(a.num_inputs) + " inputs and " +
                            std::to_string(a.num_outputs) + " outputs");
  return Status::Ok();
}

}  // namespace edgetune
