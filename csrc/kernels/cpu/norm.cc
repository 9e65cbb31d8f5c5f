// CPU kernels for compiler/ops/norm.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_norm_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
