// CPU kernels for compiler/ops/matmul.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_matmul_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
