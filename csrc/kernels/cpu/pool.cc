// CPU kernels for compiler/ops/pool.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_pool_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
