// CPU kernels for compiler/ops/embedding.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_embedding_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
