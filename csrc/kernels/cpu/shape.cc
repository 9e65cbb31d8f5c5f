// CPU kernels for compiler/ops/shape.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_shape_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
