// CPU kernels for compiler/ops/softmax.py (placeholder until the kernels land).
#include "core/kernel.h"

namespace edgetune {

void register_softmax_kernels(KernelRegistry& r) { (void)r; }

}  // namespace edgetune
