// The CUDA backend's kernel table: one registration function per op family, one family per file,
// mirroring kernels/cpu/registry.cc. Registration only stores function pointers: building this
// registry calls no CUDA API, so it works on a machine without a GPU (test_registry_parity.cc).
#include "kernels/cuda/cuda_util.h"

namespace edgetune {
namespace cuda {

void register_elementwise_kernels(KernelRegistry& r);
void register_shape_kernels(KernelRegistry& r);
void register_reduce_kernels(KernelRegistry& r);
void register_matmul_kernels(KernelRegistry& r);
void register_conv_kernels(KernelRegistry& r);
void register_norm_kernels(KernelRegistry& r);
void register_softmax_kernels(KernelRegistry& r);
void register_pool_kernels(KernelRegistry& r);
void register_embedding_kernels(KernelRegistry& r);
void register_indexing_kernels(KernelRegistry& r);
void register_dropout_kernels(KernelRegistry& r);
void register_loss_kernels(KernelRegistry& r);
void register_optim_kernels(KernelRegistry& r);
void register_fused_kernels(KernelRegistry& r);
void register_mask_kernels(KernelRegistry& r);

KernelCheck cpu_check_of(const char* name) {
  const KernelRegistry* cpu = KernelRegistry::for_backend("cpu");
  const KernelDef* def = cpu ? cpu->find(name) : nullptr;
  return def ? def->check : nullptr;
}

void add_like_cpu(KernelRegistry& r, const char* op, const char* name, KernelWorkspace ws, KernelRun run) {
  r.add(KernelDef{op, name, cpu_check_of(name), ws, run});
}

}  // namespace cuda

void register_cuda_kernels(KernelRegistry& r) {
  cuda::register_elementwise_kernels(r);
  cuda::register_shape_kernels(r);
  cuda::register_reduce_kernels(r);
  cuda::register_matmul_kernels(r);
  cuda::register_conv_kernels(r);
  cuda::register_norm_kernels(r);
  cuda::register_softmax_kernels(r);
  cuda::register_pool_kernels(r);
  cuda::register_embedding_kernels(r);
  cuda::register_indexing_kernels(r);
  cuda::register_dropout_kernels(r);
  cuda::register_loss_kernels(r);
  cuda::register_optim_kernels(r);
  cuda::register_fused_kernels(r);
  cuda::register_mask_kernels(r);
}

}  // namespace edgetune
