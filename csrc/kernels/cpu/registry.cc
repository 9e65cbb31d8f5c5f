// The CPU backend's kernel table: one registration function per op family, one family per
// file of compiler/ops/. Explicit calls (not static initialisers) so a static link can never
// drop a kernel without the registry test noticing.
#include "core/kernel.h"

namespace edgetune {

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
void register_winograd_kernels(KernelRegistry& r);
#ifdef EDGETUNE_HAVE_ONEDNN
void register_onednn_kernels(KernelRegistry& r);  // conv_onednn.cc: builds that found oneDNN only
#endif

void register_cpu_kernels(KernelRegistry& r) {
  register_elementwise_kernels(r);
  register_shape_kernels(r);
  register_reduce_kernels(r);
  register_matmul_kernels(r);
  register_conv_kernels(r);
  register_norm_kernels(r);
  register_softmax_kernels(r);
  register_pool_kernels(r);
  register_embedding_kernels(r);
  register_indexing_kernels(r);
  register_dropout_kernels(r);
  register_loss_kernels(r);
  register_optim_kernels(r);
  register_fused_kernels(r);
  register_mask_kernels(r);
  register_winograd_kernels(r);
#ifdef EDGETUNE_HAVE_ONEDNN
  register_onednn_kernels(r);
#endif
}

}  // namespace edgetune
