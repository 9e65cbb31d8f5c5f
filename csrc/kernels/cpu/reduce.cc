// CPU kernels for compiler/ops/reduce.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_reduce_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
