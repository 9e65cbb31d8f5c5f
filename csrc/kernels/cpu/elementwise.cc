// CPU kernels for compiler/ops/elementwise.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_elementwise_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
